"""The funding schedule: the rate of each 8-hourly settlement, when the next one falls,
and the settled history, served up to the simulated now and never beyond it."""

from __future__ import annotations

import bisect

from sniper.model import FUNDING_INTERVAL_S, iso, next_funding_time
from sniper.sim.rows import funding_row, query_rows

BASE_RATE = 0.0001  # BitMEX's interest-rate component alone: 0.01 % per 8 hours


class Funding:
    """Settlement rates from the recorded history: the rate recorded at a settlement, else
    the latest earlier one, else `default_rate`. With `cycle=(origin, period)` the rates
    repeat every `period` seconds from `origin + period` on, as a looping replay repeats
    its bars; recorded rates past that point are not used, and the repeated settlements
    before `now` are history from the start, like the looped bars."""

    def __init__(self, symbol: str, history, now: float, default_rate: float | None = None,
                 cycle: tuple[float, float] | None = None) -> None:
        self.symbol = symbol
        self.default_rate = BASE_RATE if default_rate is None else float(default_rate)
        self.cycle = cycle
        hist = sorted((float(t), float(r)) for t, r in history)
        if cycle is not None:
            hist = [(t, r) for t, r in hist if t < cycle[0] + cycle[1]]
        self._times = [t for t, _ in hist]
        self._rates = [r for _, r in hist]
        self._rows = [funding_row(symbol, t, r) for t, r in hist]
        self.next = next_funding_time(now)  # the next settlement to run
        if cycle is not None:
            t = next_funding_time(cycle[0] + cycle[1] - 1)
            while t < self.next:
                self._record(t, self.rate_at(t))
                t += FUNDING_INTERVAL_S

    def _index(self, t: float) -> tuple[int, bool]:
        """Where settlement `t` is or would go in the history, and whether it is recorded."""
        i = bisect.bisect_left(self._times, t - 1)
        return i, i < len(self._times) and abs(self._times[i] - t) < 1

    def rate_at(self, t: float) -> float:
        """The rate of the settlement at `t`."""
        if self.cycle is not None and t >= self.cycle[0] + self.cycle[1]:
            origin, period = self.cycle
            t = origin + (t - origin) % period
        i, recorded = self._index(t)
        if recorded:
            return self._rates[i]
        return self._rates[i - 1] if i > 0 else self.default_rate

    def settle(self, t: float) -> tuple[float, dict]:
        """Settle at `t`: its rate and funding row, now part of the history; the schedule
        moves on to the next settlement."""
        rate = self.rate_at(t)
        row = self._record(t, rate)
        self.next = t + FUNDING_INTERVAL_S
        return rate, row

    def _record(self, t: float, rate: float) -> dict:
        """The settlement at `t` joins the history (unless recorded); its row."""
        row = funding_row(self.symbol, t, rate)
        i, recorded = self._index(t)
        if not recorded:
            self._times.insert(i, t)
            self._rates.insert(i, rate)
            self._rows.insert(i, row)
        return row

    def instrument_fields(self) -> dict:
        """The instrument's funding fields: the next settlement and its rate, and the rate after it."""
        nxt = self.next
        return {"fundingTimestamp": iso(nxt), "fundingRate": self.rate_at(nxt),
                "indicativeFundingRate": self.rate_at(nxt + FUNDING_INTERVAL_S)}

    def rows(self, now: float, count=100, start=0, reverse=False, startTime=None, endTime=None) -> list[dict]:
        """Settlements at or before `now` (recorded and simulated), BitMEX history paging."""
        n = bisect.bisect_right(self._times, now)
        return query_rows(self._rows[:n], self._times[:n], count, start, reverse, startTime, endTime)
