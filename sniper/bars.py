"""Live 1-minute bars for the strategy loop.

Two sources, one authority. The websocket's `trade` rows arrive first, so `BarBuilder` folds
them into minute bars the way BitMEX buckets them (high, low, close and volume from the
minute's trades; the open is the previous bar's close; a minute without trades is flat at the
previous close with volume 0). BitMEX's REST `trade/bucketed` is the authority: when a minute
has closed, `LiveBars.update` asks for its bucket, compares it with the bar built from the
trades, logs a mismatch with both values and keeps the exchange's. Only exchange buckets are
written to the store; a bar built from trades stands in (in memory only, "provisional") while
the exchange has not published the bucket yet or REST fails, and is replaced as soon as it does.

When may a bar built from trades be trusted at all? Only when every trade of its minute was
seen. `LiveBars` reads the trade table (State.table_rows: a copy under the lock, so the
websocket thread never waits on us) and folds only the rows after the last one it folded; if
that row is gone (the table keeps its newest 1,000 rows and a busy minute can push it out), or
the websocket reconnected or is not ready, trades may be missing and coverage restarts at the
next minute (`BarBuilder.restart`). A gap of any length (websocket down, process stopped) is
therefore simply fetched from REST, page by page, like the start-up backfill.

Threads: all of this runs on the strategy loop's thread, including the store's disk I/O. The
RestClient must be one that thread owns (RestClient is not thread-safe).

Memory: the window is one BAR_DTYPE array of `lookback` rows plus a day of headroom (a year is
~25 MB); per-minute Python objects exist only for minutes not yet settled.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping

import numpy as np

from sniper.history import HistoryError, Store, find_gaps, rest_bars, rest_funding
from sniper.model import BAR_DTYPE, MINUTE, iso, next_funding_time, parse_time
from sniper.rest import ExchangeError

logger = logging.getLogger(__name__)

HEADROOM = 1440  # bars appended before the window array is compacted (one copy a day)
REST_RETRY_S = 5.0  # market seconds between REST attempts while the exchange lags or fails
FUNDING_RETRY_S = 60.0  # market seconds between funding requests while a settlement is not published


def _bar_text(bar) -> str:
    return (f"open {bar['open']:g} high {bar['high']:g} low {bar['low']:g} close {bar['close']:g} "
            f"volume {int(bar['volume'])}")


class BarBuilder:
    """Folds websocket trade rows into minute bars; pure (no clock, no I/O).

    Feed each trade once, in arrival order (`add`). `bar(minute, prev_close)` is the minute's
    bar as BitMEX would bucket it, or None when the trades seen cannot vouch for it: a minute
    is vouched for only from `covered_from` on, which `restart(now)` moves past any minute
    whose trades may be incomplete. `settle(minute)` forgets minutes up to it; trades that
    arrive later for them are counted in `late` and ignored."""

    def __init__(self, symbol: str = "XBTUSD") -> None:
        self.symbol = symbol
        self.covered_from: int | None = None  # open time of the first minute with every trade seen
        self.late = 0  # trades for minutes already settled
        self.bad = 0  # rows without a usable timestamp, price or size
        self._settled_until = -math.inf  # minutes opening before this are settled
        self._minutes: dict[int, list] = {}  # open time -> [high, low, close, volume, close's timestamp]

    def restart(self, now: float) -> None:
        """Trades up to `now` may be missing: vouch only for minutes opening after it."""
        self.covered_from = int(now // MINUTE) * MINUTE + MINUTE

    def add(self, rows: Iterable[Mapping]) -> int:
        """Fold trade rows (BitMEX shape: timestamp ISO, price, size, side); returns how many counted."""
        counted = 0
        for row in rows:
            if row.get("symbol", self.symbol) != self.symbol:
                continue
            try:
                t = parse_time(row["timestamp"])
                price, size = float(row["price"]), int(row["size"])
            except (KeyError, TypeError, ValueError):
                self.bad += 1
                continue
            minute = int(t // MINUTE) * MINUTE
            if minute < self._settled_until:
                self.late += 1
                continue
            bar = self._minutes.get(minute)
            if bar is None:
                self._minutes[minute] = [price, price, price, size, t]
            else:
                bar[0] = max(bar[0], price)
                bar[1] = min(bar[1], price)
                if t >= bar[4]:  # the minute's last trade closes it (same stamp: the later arrival)
                    bar[2], bar[4] = price, t
                bar[3] += size
            counted += 1
        return counted

    def bar(self, minute: int, prev_close: float) -> np.ndarray | None:
        """Minute `minute`'s bar (one BAR_DTYPE row), or None when it is not vouched for."""
        if self.covered_from is None or minute < self.covered_from or minute < self._settled_until:
            return None
        high, low, close, volume, _ = self._minutes.get(minute) or (prev_close, prev_close, prev_close, 0, 0)
        out = np.empty(1, dtype=BAR_DTYPE)
        out[0] = (minute, prev_close, high, low, close, volume)
        return out

    def settle(self, minute: int) -> None:
        """Minutes opening at or before `minute` are final: forget them."""
        self._settled_until = max(self._settled_until, minute + MINUTE)
        for m in [m for m in self._minutes if m < self._settled_until]:
            del self._minutes[m]


class LiveBars:
    """The strategy loop's bars: the store's newest `lookback` minutes, kept current from the
    websocket and checked against REST (see the module docstring).

    `backfill()` once at start, then `update(now)` at each minute's close; `bars` is a read-only
    view of the window (newest last), valid until the next update: copy it to keep it."""

    def __init__(self, store: Store, rest, state, clock, *, symbol: str = "XBTUSD", lookback: int = 525_600) -> None:
        if lookback < 1:
            raise ValueError(f"lookback must be >= 1 bar, got {lookback}")
        self.store, self.rest, self.state, self.clock = store, rest, state, clock
        self.symbol = symbol
        self.lookback = int(lookback)
        self.builder = BarBuilder(symbol)
        self.checked = 0  # bars built from websocket trades that an exchange bucket was compared with
        self.mismatches = 0  # ... and that the bucket contradicted
        self._buf = np.zeros(0, dtype=BAR_DTYPE)
        self._n = 0  # rows in use
        self._confirmed = 0  # rows [0, _confirmed) are the exchange's; the rest are provisional
        self._loaded = False
        self._returned_until: int | None = None  # newest open time handed out as new
        self._rest_retry_at = -math.inf
        self._funding = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))
        self._funding_retry_at = -math.inf
        self._session: int | None = None  # the websocket session (reconnect count) of the last look, if ready
        self._marker: str | None = None  # trdMatchID of the newest trade folded (None: the table was empty)

    # ---- what the strategy reads -----------------------------------------------------------------
    @property
    def bars(self) -> np.ndarray:
        view = self._buf[max(0, self._n - self.lookback):self._n]
        view.flags.writeable = False
        return view

    @property
    def funding_history(self) -> tuple[np.ndarray, np.ndarray]:
        """Past settlements (times, rates), oldest first, read-only."""
        times, rates = (a.view() for a in self._funding)
        times.flags.writeable = rates.flags.writeable = False
        return times, rates

    @property
    def provisional(self) -> int:
        """Newest bars in the window built from trades and not yet confirmed by the exchange."""
        return self._n - self._confirmed

    # ---- start and each minute -------------------------------------------------------------------
    def backfill(self) -> int:
        """Load the store's newest `lookback` bars, then fetch from REST every bar after the
        store's last up to the last completed minute (the last `lookback` minutes when the
        store is empty) and every new funding settlement, into the store. Returns the bars
        added. Exchange errors propagate: the daemon does not start on history it could not
        bring up to date."""
        now = self.clock.now()
        self._load(now)
        added = self._catch_up(now)
        self._sync_funding()
        self._read_trades(now)
        self._returned_until = self._newest()
        logger.info("bars: %d fetched from the exchange; window of %d bars ends %s", added, len(self.bars),
                    "nowhere" if self._newest() is None else iso(self._newest() + MINUTE))
        return added

    def update(self, now: float) -> list[int]:
        """Bring the window up to the last minute closed at market time `now`; returns the open
        times of the bars new since the last call (provisional ones included, once)."""
        self._load(now)
        self._read_trades(now)
        last_closed = int(now // MINUTE) * MINUTE - MINUTE
        newest_confirmed = self._newest(confirmed=True)
        if (newest_confirmed is None or newest_confirmed < last_closed) and now >= self._rest_retry_at:
            try:
                self._catch_up(now)
            except (ExchangeError, HistoryError) as exc:
                logger.warning("bars: the exchange's buckets after %s are not available (%s)",
                               "none" if newest_confirmed is None else iso(newest_confirmed + MINUTE), exc)
            if self._newest(confirmed=True) != last_closed:
                self._rest_retry_at = now + REST_RETRY_S
        self._stand_in(last_closed)
        try:
            self._refresh_funding(now)
        except (ExchangeError, HistoryError) as exc:
            logger.warning("funding: settlements not available (%s)", exc)
        newest = self._newest()
        if newest is None or (self._returned_until is not None and newest <= self._returned_until):
            return []
        times = self._buf["time"][:self._n]
        start = 0 if self._returned_until is None else int(np.searchsorted(times, self._returned_until, "right"))
        self._returned_until = newest
        return [int(t) for t in times[start:]]

    # ---- the window ------------------------------------------------------------------------------
    def _load(self, now: float) -> None:
        """The window from the store, up to the last minute closed at `now`: a store written by
        an earlier run of a replayed market (the simulator restarts its replay) may hold bars
        after now, and a strategy must never see them."""
        if self._loaded:
            return
        stored = self.store.bars(end=int(now // MINUTE) * MINUTE, last=self.lookback)
        self._buf = np.empty(len(stored) + HEADROOM, dtype=BAR_DTYPE)
        self._buf[:len(stored)] = stored
        self._n = self._confirmed = len(stored)
        self._returned_until = self._newest()  # what the store already held is not news
        self._funding = self.store.funding()
        self._loaded = True

    def _newest(self, confirmed: bool = False) -> int | None:
        n = self._confirmed if confirmed else self._n
        return int(self._buf["time"][n - 1]) if n else None

    def _append(self, rows: np.ndarray) -> None:
        """Append to the window; a full array is replaced by a new one holding the newest
        `lookback` rows (views handed out earlier keep the old one)."""
        n, k = self._n, len(rows)
        if n + k > len(self._buf):
            keep = min(n, max(self.lookback - k, 0))
            buf = np.empty(max(self.lookback, keep + k) + HEADROOM, dtype=BAR_DTYPE)
            buf[:keep] = self._buf[n - keep:n]
            self._confirmed -= n - keep
            self._buf, n = buf, keep
        self._buf[n:n + k] = rows
        self._n = n + k

    def _catch_up(self, now: float) -> int:
        """Fetch the exchange's bars after the newest confirmed one up to the last closed minute,
        reconcile each with the bar built from trades, store and append them; returns how many."""
        last_closed = int(now // MINUTE) * MINUTE - MINUTE
        after = self._newest(confirmed=True)
        if after is None:
            after = last_closed - self.lookback * MINUTE
        added = 0
        for page in rest_bars(self.rest, after=after, until=last_closed):
            self._confirm(page)
            added += self.store.append_bars(page)
            after = int(page["time"][-1])
        return added

    def _confirm(self, page: np.ndarray) -> None:
        """The exchange's bars replace any provisional ones; each is compared with the bar
        built from trades for its minute first."""
        self._n = self._confirmed
        prev_close = float(self._buf["close"][self._n - 1]) if self._n else None
        if self._n:
            for gap_start, minutes in find_gaps(np.concatenate(([self._newest()], page["time"]))):
                logger.warning("bars: the exchange has no bucket for %d minute(s) from %s; kept as a gap",
                               minutes, iso(gap_start))
        for i in range(len(page)):
            t = int(page["time"][i])
            built = None if prev_close is None else self.builder.bar(t, prev_close)
            self.checked += built is not None
            if built is not None and built[0].tolist()[1:] != page[i].tolist()[1:]:
                self.mismatches += 1
                logger.warning("bar %s: built from websocket trades %s, but the exchange's bucket is %s; "
                               "keeping the exchange's", iso(t), _bar_text(built[0]), _bar_text(page[i]))
            prev_close = float(page["close"][i])
        self._append(page)
        self._confirmed = self._n
        self.builder.settle(int(page["time"][-1]))

    def _stand_in(self, last_closed: int) -> None:
        """Minutes the exchange has not confirmed yet, up to `last_closed`: the bars built from
        trades, while every one of them is vouched for."""
        if not self._n:
            return
        t = self._newest() + MINUTE
        while t <= last_closed:
            built = self.builder.bar(t, float(self._buf["close"][self._n - 1]))
            if built is None:
                return
            self._append(built)
            logger.info("bar %s: the exchange has not confirmed it yet; using the websocket's (%s)", iso(t),
                        _bar_text(built[0]))
            t += MINUTE

    # ---- the websocket's trades ------------------------------------------------------------------
    def _read_trades(self, now: float) -> None:
        """Fold the trades that arrived since the last look; restart coverage when some may be
        missing."""
        before = self.state.snapshot(0)
        rows = self.state.table_rows("trade")
        after = self.state.snapshot(0)
        ids = [row.get("trdMatchID") for row in rows]
        start = self._first_new(ids, before, after)
        if start is None:
            self.builder.restart(now)
            start = len(rows)
        self.builder.add(rows[start:])
        self._session = after.reconnects if before.ready and after.ready else None
        self._marker = ids[-1] if ids else None

    def _first_new(self, ids: list, before, after) -> int | None:
        """Index of the first trade row not folded yet, or None when trades may have been
        missed: the websocket is not ready, reconnected since the last look (or this is the
        first), or the last folded trade has left the table."""
        if not (before.ready and after.ready) or not self._session == before.reconnects == after.reconnects:
            return None
        if self._marker is None:
            return 0  # the table was empty at the last look
        try:
            return len(ids) - ids[::-1].index(self._marker)
        except ValueError:
            return None

    # ---- funding ---------------------------------------------------------------------------------
    def _refresh_funding(self, now: float) -> None:
        """Fetch settlements once the next one is due (and, while it is not published, once a minute)."""
        times = self._funding[0]
        due = len(times) == 0 or now >= next_funding_time(float(times[-1]))
        if due and now >= self._funding_retry_at:
            self._funding_retry_at = now + FUNDING_RETRY_S
            self._sync_funding()

    def _sync_funding(self) -> int:
        times = self._funding[0]
        added = 0
        for page in rest_funding(self.rest, after=int(times[-1]) if len(times) else None):
            added += self.store.append_funding(*page)
        if added:
            self._funding = self.store.funding()
        return added
