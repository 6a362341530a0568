"""Drives the simulated exchange from recorded 1-minute bars.

Why: clients (the daemon, third-party BitMEX libraries, the backtester) need a market
that moves like the real one. For every recorded minute the feed prints trades that
walk previous close -> nearer extreme -> other extreme -> close, so a bar rebuilt from
the simulator's trades has the recorded high, low, close and volume (its open is the
previous close, as BitMEX's bucketed bars). Around the path it keeps `levels`
price levels per side of replayed liquidity, one tick wide at the touch, and jitters
their sizes `l2_rate` times per simulated second (one orderBookL2 message each).

Every minute's events are drawn from an RNG seeded by (seed, cycle, the minute's recorded
open time), so a replay is identical for a given seed however `step_until` is called,
and a minute plays the same whichever file or slice of the recording holds it.

The bundled default is 94 days of real XBTUSD minutes (2018-08-20 to 2018-11-22 UTC,
tick 0.5, lot 1) with their funding rates. A replay starts by default three days
before the data's end (`default_start`: 2018-11-19 00:00 for the bundled data), so
everything before it is history that the simulator serves from the first request, as
BitMEX does. With `loop=True` (the server's) the replay starts again at the first bar
once it passes the last: cycle c replays the bars `c * span` seconds later (see
`replay_span`), beginning from the last bar's close. From the default start that
happens three days in, and the price jumps from the data's last close to the first
bars' level (4,537 to about 6,490 for the bundled data), as a looped recording must.
The REST history (buckets.py) and the funding rates (funding.py) loop with the bars.
`l2_rate` counts orderBookL2 messages per simulated second, besides the level moves
around each trade.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np

from sniper import history
from sniper.model import BUY, SELL
from sniper.sim.exchange import Exchange

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
DEFAULT_BARS = DATA_DIR / "xbtusd_1m_20180820_20181122.csv.gz"
DEFAULT_FUNDING = DATA_DIR / "xbtusd_funding_20180819_20181122.csv.gz"
DEFAULT_INSTRUMENT = DATA_DIR / "xbtusd_instrument_2018.json"
REPLAY_S = 3 * 86400  # by default a replay starts this long before the data's end

_MINUTE, _TRADE, _JITTER = 0, 1, 2
SIZE_SIGMA = 0.8  # lognormal spread of level sizes
SIZE_GROWTH = 0.04  # median level size grows 4 % per tick away from the touch


def load_bars(path: str | Path = DEFAULT_BARS) -> np.ndarray:
    """A bars CSV(.gz) (time = bar open, open, high, low, close, volume), the bundled minutes by
    default, read and checked by sniper.history: a bad file raises HistoryError naming it, the
    line and the field."""
    return _as_bars(history.load_bars_csv(path), str(path))


def _as_bars(bars, source: str = "bars") -> np.ndarray:
    """`bars` (a BAR_DTYPE array) once history's checks hold and there is a minute to replay;
    HistoryError naming `source` otherwise."""
    if len(bars) == 0:
        raise history.HistoryError(f"{source}: no bars (a replay needs at least one minute)")
    return history.check_bars(bars, source)


def load_funding(path: str | Path = DEFAULT_FUNDING) -> list[tuple[float, float]]:
    """A funding CSV (time = settlement, funding_rate), the bundled rates by default, read and
    checked by sniper.history -> [(settlement epoch, rate)] in time order."""
    times, rates = history.load_funding_csv(path)
    return list(zip(times.astype(float).tolist(), rates.tolist(), strict=True))


def load_instrument(path: str | Path = DEFAULT_INSTRUMENT) -> dict:
    with open(path) as f:
        return json.load(f)


def instrument_for(bars, path: str | Path = DEFAULT_INSTRUMENT) -> dict:
    """The instrument definition with the tick and lot of the bars' era: the coarsest
    tick (0.5, 0.1, 0.01) all prices sit on; lot 100 only for 0.1-tick bars whose
    volumes are all multiples of 100 (today's XBTUSD), else 1."""
    bars = _as_bars(bars)
    prices = np.concatenate([bars[c] for c in ("open", "high", "low", "close")])
    inst = load_instrument(path)
    for tick in (0.5, 0.1, 0.01):
        if np.all(np.abs(prices / tick - np.round(prices / tick)) < 1e-6):
            break
    inst["tickSize"] = tick
    inst["lotSize"] = 100 if tick == 0.1 and np.all(bars["volume"] % 100 == 0) else 1
    return inst


def replay_span(bars) -> tuple[float, float]:
    """(first bar's open time, seconds from it to the last bar's end). A looping replay
    repeats the bars every `span` seconds."""
    times = _as_bars(bars)["time"]
    return float(times[0]), float(times[-1] + 60 - times[0])


def default_start(bars) -> float:
    """Where a replay of `bars` starts by default: REPLAY_S before their end, so that what
    comes before is already history when the replay starts; the first bar for shorter data."""
    first, span = replay_span(bars)
    return max(first, first + span - REPLAY_S)


class Feed:
    """Replays `bars` into `exchange`. Call `step_until(t)` with non-decreasing sim
    times; it applies every event due by `t` and returns how many it applied. With
    `start=None` the replay begins at the minute holding the first `step_until` time."""

    def __init__(
        self,
        exchange: Exchange,
        bars,
        *,
        seed: int = 0,
        levels: int = 50,
        l2_rate: float = 20.0,
        trades_per_minute: float = 30.0,
        loop: bool = True,
        start: float | None = None,
    ) -> None:
        if levels < 1:
            raise ValueError("levels must be >= 1")
        if l2_rate < 0 or trades_per_minute < 1:
            raise ValueError("l2_rate must be >= 0 and trades_per_minute >= 1")
        self.exchange = exchange
        self.bars = _as_bars(bars)
        self.seed = int(seed)
        self.levels = int(levels)
        self.l2_rate = float(l2_rate)
        self.trades_per_minute = float(trades_per_minute)
        self.loop = loop
        self._first, self.span = replay_span(self.bars)
        # The replay begins with the minute holding `start` (epoch seconds). None: the
        # minute holding the first step_until time, or the first bar if that is earlier.
        self.start = None if start is None else float(start)
        if self.start is not None and not loop and not self._first <= self.start < self._first + self.span:
            raise ValueError("start is outside the bars (and loop is off)")
        self._ts = exchange.tick_size
        self._lot = exchange.lot_size
        self._cycle = 0
        self._next_bar = None  # index of the next minute to plan; None until the first step
        self._events: list[tuple] = []
        self._pos = 0
        self._bid_top = self._ask_top = 0  # ticks of the replayed touch
        self._planned_last = 0  # tick of the last planned trade (decides aggressor sides)
        self._taken_seen = exchange.replay_taken
        self._rng = random.Random(self.seed)  # sizes drawn while applying (order is fixed)
        self.finished = False

    @property
    def end(self) -> float | None:
        """Sim time after which nothing more happens (None when looping)."""
        return None if self.loop else self._first + self.span

    def bar_time(self, i: int, cycle: int = 0) -> float:
        return float(self.bars["time"][i]) + cycle * self.span

    # ------------------------------------------------------------------ driving
    def step_until(self, sim_time: float) -> int:
        ex = self.exchange
        if self._next_bar is None:
            if self.start is None:
                self.start = max(self._first, float(sim_time))
                if not self.loop:
                    self.start = min(self.start, self._first + self.span - 60)
            if sim_time < self.start:
                ex.advance()
                return 0
            self._begin()
        applied = 0
        try:
            while True:
                if self._pos >= len(self._events):
                    if not self._plan_next(sim_time):
                        break
                    continue
                ev = self._events[self._pos]
                if ev[0] > sim_time:
                    break
                self._pos += 1
                if ev[0] < self.start:  # the part of the first minute before the start
                    continue
                ex.event_time = ev[0]
                self._apply(ev)
                applied += 1
        finally:
            ex.event_time = None
        ex.advance()
        return applied

    def next_event_time(self) -> float | None:
        """When something will next happen (None once a non-looping replay is over)."""
        if self._pos < len(self._events):
            return self._events[self._pos][0]
        if self._next_bar is None:
            return self.start if self.start is not None else self._first
        if self._next_bar < len(self.bars):
            return self.bar_time(self._next_bar, self._cycle)
        return self.bar_time(0, self._cycle + 1) if self.loop else None

    def _begin(self) -> None:
        """Start at the minute containing `self.start` with a full book at its open."""
        times = self.bars["time"]
        cycle = max(0, math.floor((self.start - self._first) / self.span)) if self.loop else 0
        i = int(np.searchsorted(times + cycle * self.span, self.start, side="right")) - 1
        i = min(max(i, 0), len(times) - 1)
        self._cycle, self._next_bar = cycle, i
        price = self._prev_close(i)
        tick = self._tick(price)
        self.exchange.event_time = max(self.start, self.bar_time(i, cycle))
        self._planned_last = tick
        self._rng = random.Random(f"{self.seed}:{cycle}:{int(self.bars['time'][i])}")
        try:
            base = self._size_base(i)
            changes = []
            for d in range(self.levels):
                changes.append((BUY, (tick - 1 - d) * self._ts, self._draw_size(base, d)))
                changes.append((SELL, (tick + d) * self._ts, self._draw_size(base, d)))
            self._bid_top, self._ask_top = tick - 1, tick
            self.exchange.set_levels(changes)
            self.exchange.set_mark_price(price)
        finally:
            self.exchange.event_time = None

    def _plan_next(self, sim_time: float) -> bool:
        """Plan the next minute if it has begun by `sim_time`."""
        if self.finished:
            return False
        if self._next_bar >= len(self.bars):
            if not self.loop:
                self.finished = True
                return False
            self._cycle += 1
            self._next_bar = 0
        i = self._next_bar
        if self.bar_time(i, self._cycle) > sim_time:
            return False
        self._events = self._plan_minute(i, self._cycle)
        self._pos = 0
        self._next_bar = i + 1
        return True

    def _prev_close(self, i: int) -> float:
        if i > 0:
            return float(self.bars["close"][i - 1])
        if self._cycle > 0:
            return float(self.bars["close"][-1])
        return float(self.bars["open"][0])

    def _tick(self, price: float) -> int:
        return int(round(price / self._ts))

    # ------------------------------------------------------------------ planning
    def _size_base(self, i: int) -> float:
        """Typical level size: a fraction of the minute's average trade, at least 1,000."""
        v = float(self.bars["volume"][i])
        return max(1000.0, v / max(self.trades_per_minute, 1.0) * 0.5)

    @staticmethod
    def _median_size(base, depth):
        """Level sizes are lognormal around `base`, growing away from the touch."""
        return base * (1 + SIZE_GROWTH * depth)

    def _draw_size(self, base: float, depth: int) -> int:
        return max(1, int(self._rng.lognormvariate(math.log(self._median_size(base, depth)), SIZE_SIGMA)))

    def _plan_minute(self, i: int, cycle: int) -> list[tuple]:
        bar = self.bars[i]
        t0 = self.bar_time(i, cycle)
        rng = np.random.default_rng([self.seed, cycle, int(bar["time"])])
        events: list[tuple] = [(t0, _MINUTE)]
        events += self._plan_trades(rng, t0, self._prev_close(i), bar, self._size_base(i))
        n_jitter = int(rng.poisson(self.l2_rate * 60)) if self.l2_rate > 0 else 0
        if n_jitter:
            times = np.sort(rng.uniform(t0, t0 + 60, n_jitter))
            sides = rng.random(n_jitter) < 0.5
            depths = np.minimum(rng.geometric(0.12, n_jitter) - 1, self.levels - 1)
            sizes = np.maximum(1, rng.lognormal(0.0, SIZE_SIGMA, n_jitter) * self._median_size(self._size_base(i), depths))
            events += [
                (t, _JITTER, BUY if s else SELL, int(d), int(z))
                for t, s, d, z in zip(times.tolist(), sides.tolist(), depths.tolist(), sizes.tolist(), strict=True)
            ]
        events.sort(key=lambda e: (e[0], e[1]))
        return events

    def _plan_trades(self, rng, t0: float, prev_close: float, bar, base: float) -> list[tuple]:
        """Trades for one bar: they reach the high and the low, end at the close and
        sum to the volume; in between they follow the path tick by tick."""
        volume = int(bar["volume"])
        if volume <= 0:
            return []
        hi, lo, close = self._tick(bar["high"]), self._tick(bar["low"]), self._tick(bar["close"])
        start = self._tick(prev_close)
        if abs(start - hi) < abs(start - lo) or (abs(start - hi) == abs(start - lo) and rng.random() < 0.5):
            first, second = hi, lo
        else:
            first, second = lo, hi
        walk = [start]
        marks = []
        for target in (first, second, close):
            here = walk[-1]
            step = 1 if target >= here else -1
            walk.extend(range(here + step, target + step, step) if target != here else [target])
            marks.append(len(walk) - 1)
        walk = np.asarray(walk)
        # the last visit of each required price (high, low, close) must be a trade
        required = [p for j, p in enumerate(marks) if walk[p] not in walk[marks[j + 1 :]]]
        candidates = np.flatnonzero((walk >= lo) & (walk <= hi))
        units = max(1, volume // self._lot)
        n = min(max(len(required), int(rng.poisson(self.trades_per_minute))), units)
        extra = rng.choice(candidates, max(0, n - len(required)))
        picks = np.sort(np.concatenate([np.asarray(required), extra]))[-n:]
        sizes = self._split(rng, volume, len(picks))
        times = np.sort(rng.uniform(t0 + 0.001, t0 + 59.999, len(picks)))
        out = []
        last = self._planned_last
        for t, k, q in zip(times.tolist(), walk[picks].tolist(), sizes, strict=True):
            if k > last:
                side = BUY
            elif k < last:
                side = SELL
            else:
                side = BUY if rng.random() < 0.5 else SELL
            out.append((t, _TRADE, side, int(k), int(q)))
            last = k
        self._planned_last = last
        return out

    def _split(self, rng, volume: int, n: int) -> list[int]:
        """`n` positive trade sizes in lots summing to `volume` (odd lots go last)."""
        units = volume // self._lot
        rest = volume - units * self._lot
        if units == 0:
            return [volume]
        weights = rng.lognormal(0.0, 1.0, n)
        parts = 1 + rng.multinomial(units - n, weights / weights.sum())
        sizes = (parts * self._lot).tolist()
        sizes[-1] += rest
        return sizes

    # ------------------------------------------------------------------ applying
    def _apply(self, ev: tuple) -> None:
        if self.exchange.replay_taken != self._taken_seen:
            self._refill()
        kind = ev[1]
        if kind == _TRADE:
            _, _, side, tick, qty = ev
            self._trade(side, tick, qty)
        elif kind == _JITTER:
            _, _, side, depth, size = ev
            tick = self._bid_top - depth if side == BUY else self._ask_top + depth
            self.exchange.set_level(side, tick * self._ts, size)
        else:
            self.exchange.advance()

    def _trade(self, side: str, tick: int, qty: int) -> None:
        """Put the replayed touch at the trade price with enough size, then take it."""
        bid_top, ask_top = (tick - 1, tick) if side == BUY else (tick, tick + 1)
        changes = self._recenter(bid_top, ask_top)
        touch = SELL if side == BUY else BUY
        have = self.exchange.market_size(touch, tick * self._ts)
        pending = [c for c in changes if c[0] == touch and c[1] == tick * self._ts]
        if pending:
            have = pending[-1][2]
        if have < qty:
            residual = max(1, int(have or qty * 0.5))
            changes.append((touch, tick * self._ts, qty + residual))
        if changes:
            self.exchange.set_levels(changes)
        self.exchange.market_order(side, qty, tick * self._ts)

    def _refill(self) -> None:
        """Accounts took replayed liquidity: market makers restore the empty levels."""
        self._taken_seen = self.exchange.replay_taken
        base = self._touch_base()
        changes = []
        for side, top, step in ((BUY, self._bid_top, -1), (SELL, self._ask_top, 1)):
            for d in range(self.levels):
                price = (top + step * d) * self._ts
                if self.exchange.market_size(side, price) == 0:
                    changes.append((side, price, self._draw_size(base, d)))
        if changes:
            self.exchange.set_levels(changes)

    def _recenter(self, bid_top: int, ask_top: int) -> list[tuple]:
        """Level changes that shift the book window to the new touch: removals first so
        replayed liquidity never crosses itself."""
        n = self.levels
        old_b = range(self._bid_top - n + 1, self._bid_top + 1)
        old_a = range(self._ask_top, self._ask_top + n)
        new_b = range(bid_top - n + 1, bid_top + 1)
        new_a = range(ask_top, ask_top + n)
        removals, additions = [], []
        base = self._touch_base()
        for side, old, new, top in ((BUY, old_b, new_b, bid_top), (SELL, old_a, new_a, ask_top)):
            for t in self._outside(old, new):
                removals.append((side, t * self._ts, 0))
            for t in self._outside(new, old):
                additions.append((side, t * self._ts, self._draw_size(base, abs(t - top))))
        self._bid_top, self._ask_top = bid_top, ask_top
        return removals + additions

    @staticmethod
    def _outside(a: range, b: range):
        """Ticks of range `a` not in range `b` (both step 1), without scanning overlap."""
        if a.stop <= b.start or a.start >= b.stop:
            return a
        return list(range(a.start, b.start)) + list(range(b.stop, a.stop))

    def _touch_base(self) -> float:
        i = min(max((self._next_bar or 1) - 1, 0), len(self.bars) - 1)
        return self._size_base(i)
