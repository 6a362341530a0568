"""`GET /trade/bucketed` over the recorded 1-minute bars.

The recorded bars are the simulated market's past (the feed replays them), so a
bucket is served once its END time has passed on the simulated clock, and never
before: no look-ahead. That includes every bar recorded before the replay started.
Timestamps are bucket ends, and a bucket's open is the previous close, both as BitMEX
does. With a loop `period` the bars repeat as the looping feed replays them: cycle c
is the recording shifted by c * period, and its first bar opens at the recording's
last close. Fields the bars do not record are derived: `trades` counts the traded
minutes, and `vwap` and `turnover` use each minute's typical price (h+l+c)/3.
"""

from __future__ import annotations

import math

import numpy as np

from sniper.model import iso

BIN_SECONDS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
MAX_COUNT = 1000


class Buckets:
    """Aggregates 1-minute bars (bar open times, ascending) into BitMEX trade bins."""

    def __init__(self, bars, symbol: str, period: float | None = None) -> None:
        self.symbol = symbol
        self.period = period
        self.time = np.asarray(bars["time"], dtype=np.int64)
        self.open = np.asarray(bars["open"], dtype=np.float64)
        self.high = np.asarray(bars["high"], dtype=np.float64)
        self.low = np.asarray(bars["low"], dtype=np.float64)
        self.close = np.asarray(bars["close"], dtype=np.float64)
        self.volume = np.asarray(bars["volume"], dtype=np.int64)
        typical = (self.high + self.low + self.close) / 3.0
        self._pv = self.volume * typical
        self._turnover = np.rint(self.volume * 1e8 / typical).astype(np.int64)

    def query(self, bin_size: str, now: float, *, count: int = 100, start: int = 0, reverse: bool = False,
              start_time: float | None = None, end_time: float | None = None) -> list[dict]:
        """Completed buckets (end <= now) within [start_time, end_time], BitMEX paging rules."""
        step = BIN_SECONDS[bin_size]
        if len(self.time) == 0:
            return []
        first = int(self.time[0]) // step + 1  # bucket k covers [(k-1)*step, k*step)
        last = int(math.floor(now)) // step
        if self.period is None:
            last = min(last, (int(self.time[-1]) + 60 + step - 1) // step)
        if start_time is not None:
            first = max(first, int(math.ceil(start_time / step)))
        if end_time is not None:
            last = min(last, int(math.floor(end_time)) // step)
        if last < first:
            return []
        if reverse:
            hi = last - start
            ks = np.arange(hi, max(first, hi - count + 1) - 1, -1, dtype=np.int64)
        else:
            lo = first + start
            ks = np.arange(lo, min(last, lo + count - 1) + 1, dtype=np.int64)
        if len(ks) == 0:
            return []
        lo_idx = self._index((ks - 1) * step)
        hi_idx = self._index(ks * step)
        return [self._row(int(k) * step, int(a), int(b)) for k, a, b in zip(ks, lo_idx, hi_idx, strict=True)
                if b > a]

    def _index(self, t: np.ndarray) -> np.ndarray:
        """Position of the first replayed minute at or after each time `t`, counting the
        minutes of all cycles before it (the recording's own positions without a loop)."""
        if self.period is None:
            return np.searchsorted(self.time, t, "left")
        cycle = np.maximum(0, (t - int(self.time[0])) // int(self.period))
        return cycle * len(self.time) + np.searchsorted(self.time, t - cycle * int(self.period), "left")

    def _row(self, end: int, a: int, b: int) -> dict:
        """The bucket ending at `end` over replayed minutes a..b-1."""
        n = len(self.time)
        sel = slice(a % n, (b - 1) % n + 1) if a // n == (b - 1) // n else np.arange(a, b) % n
        volume = int(self.volume[sel].sum())
        turnover = int(self._turnover[sel].sum())
        return {
            "timestamp": iso(end),
            "symbol": self.symbol,
            "open": float(self.close[-1] if a >= n and a % n == 0 else self.open[a % n]),
            "high": float(self.high[sel].max()),
            "low": float(self.low[sel].min()),
            "close": float(self.close[(b - 1) % n]),
            "trades": int(np.count_nonzero(self.volume[sel])),
            "volume": volume,
            "vwap": round(float(self._pv[sel].sum()) / volume, 4) if volume else None,
            "lastSize": None,
            "turnover": turnover,
            "homeNotional": turnover / 1e8,
            "foreignNotional": float(volume),
        }
