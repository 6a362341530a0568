"""The Strategy protocol: what a strategy is given, what it answers, and the helpers every
strategy shares (which bars are new, how big a position is).

A strategy is a pure function of the sequence of its inputs: `decide(bars, funding, account,
now)` reads nothing else (no clock, files, network, orders or websocket), so the daemon's loop
and the backtester run the very same objects bar by bar. Strategies keep incremental caches
(EMAs, the motif index); each is tested to equal a fresh object fed the same bars at once.
The one state that is more than a cache is the funding logic's: per leg, its size is fixed
when the leg starts and a stop keeps it flat to the leg's end, and it remembers the rates it
saw announced until the settlement rows arrive (funding.py).

Inputs
- `bars`: a read-only BAR_DTYPE view, oldest first, whose last row is the last CLOSED minute.
  Successive calls normally extend it at the end (and may drop rows at the start, a sliding
  lookback). A strategy takes the rows after the last one it saw as new; when that row is no
  longer in the view or has changed (a backfill, a rewound backtest), it starts again from
  the view, exactly as a fresh object would. Rows dropped at the start are not forgotten at
  once (trend's EMAs run on; the motif index is rebuilt from the view past 1/8 of its length).
- `funding`: the next settlement (time and rate) and the past ones, see `Funding`.
- `account`: the exchange's view of us, see `Account`.
- `now`: the clock time, epoch seconds (float). Only window timing uses it.

Output: a `Decision`: a `model.Target` (absolute signed contracts, style, reason) or None, and
`seen`, a dict of what it looked at, for the log and /health. Every dict has at least "logic"
(which logic produced the target) and "reason". None means "not mine": only a component
(the funding logic outside its window) answers None; every object `strategies.build` returns
answers a Target on every call (`OrFlat` turns a component's None into flat).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from sniper.model import Target

# the last rows scanned for the previously seen bar before a binary search over the view
_SCAN_BACK = 64


@dataclass(frozen=True)
class Funding:
    """The settlement schedule as the exchange announces it.

    next_time / rate: the next settlement (epoch s) and its fundingRate, the rate that will be
    paid then (None when not known yet); past_times / past_rates: the settlements so far and
    the rates that were paid, oldest first. The post-settlement logic needs the latter: by the
    time it acts, the exchange already announces the next settlement."""

    next_time: float | None
    rate: float | None
    past_times: Sequence[float] | np.ndarray = ()
    past_rates: Sequence[float] | np.ndarray = ()

    def last(self, now: float) -> tuple[float, float] | None:
        """(time, rate) of the latest past settlement at or before `now`, or None."""
        i = int(np.searchsorted(np.asarray(self.past_times, dtype=np.float64), now, side="right")) - 1
        return (float(self.past_times[i]), float(self.past_rates[i])) if i >= 0 else None


@dataclass(frozen=True)
class Account:
    """A snapshot of our side at the exchange.

    position: signed contracts; margin_balance_xbt: margin balance in XBT; mark: mark price;
    best_bid/best_ask: the touch (None when a side is empty); avg_entry / liquidation_price: of
    the open position (None when flat); taker_fee / maker_fee: the account's fee rates
    (reported; positions are sized with the fee the strategy was built with, so a backtest and
    the daemon size alike)."""

    position: int = 0
    margin_balance_xbt: float = 0.0
    mark: float | None = None
    best_bid: float | None = None
    best_ask: float | None = None
    avg_entry: float | None = None
    liquidation_price: float | None = None
    taker_fee: float = 0.0
    maker_fee: float = 0.0


@dataclass(frozen=True)
class Decision:
    """What a strategy asks for, and what it saw while deciding (a plain dict for logs)."""

    target: Target | None
    seen: dict[str, Any] = field(default_factory=dict)


class Strategy(Protocol):
    name: str
    warmup: int  # bars of history before the strategy can hold a position of its own

    def decide(self, bars: np.ndarray, funding: Funding, account: Account, now: float) -> Decision: ...


def contracts(balance: float, price: float, leverage: float, taker_fee: float) -> int:
    """Whole contracts (1 USD each) worth `balance` XBT at `leverage`, less the taker fee of
    getting there: crossing the spread costs taker_fee x leverage of the margin, and the rest
    of the margin carries the position, hence balance x price x leverage x (1 - fee x leverage).
    0 without a positive balance and price."""
    if not (balance > 0 and price > 0):
        return 0
    return math.floor(balance * price * leverage * (1.0 - taker_fee * leverage))


def reference_price(account: Account, bars: np.ndarray) -> float:
    """The price positions are sized at: the mark, or the last close while no mark is known."""
    if account.mark and account.mark > 0:
        return account.mark
    return float(bars["close"][-1]) if len(bars) else 0.0


class BarCursor:
    """Which rows of successive bar views are new: remembers the time and close of the last
    row it handed out and finds it again in the next view."""

    def __init__(self) -> None:
        self._time: int | None = None
        self._close = math.nan

    def advance(self, bars: np.ndarray) -> tuple[np.ndarray, bool]:
        """(rows after the last one seen, restart). restart is True when the caller must start
        again from the whole view: the first call, or the last row seen is gone or changed."""
        n = len(bars)
        if not n:
            restart = self._time is not None
            self._time = None
            return bars, restart
        times, closes = bars["time"], bars["close"]
        # the usual call, every bar of a backtest and every minute of the daemon: one row more
        i = n - 2 if n > 1 and times.item(n - 2) == self._time else self._find(times)
        restart = i < 0 or closes.item(i) != self._close
        self._time, self._close = times.item(-1), closes.item(-1)
        return (bars, True) if restart else (bars[i + 1:], False)

    def _find(self, times: np.ndarray) -> int:
        """The row holding the last seen time, or -1 (compared as Python ints from item(), which
        is cheaper than comparing numpy scalars)."""
        seen = self._time
        if seen is None:
            return -1
        n = len(times)
        for i in range(n - 1, max(n - 1 - _SCAN_BACK, -1), -1):
            t = times.item(i)
            if t <= seen:
                return i if t == seen else -1
        i = int(np.searchsorted(times, seen))
        return i if i < n and times.item(i) == seen else -1


class Flat:
    """Holds nothing: the `flat` strategy, and what a component falls back to (`OrFlat`)."""

    name = "flat"
    warmup = 0

    def decide(self, bars: np.ndarray, funding: Funding, account: Account, now: float) -> Decision:
        return Decision(Target(0, "passive", "flat"), {"logic": "flat", "reason": "flat holds no position"})


class OrFlat:
    """A component strategy run on its own: where it answers None (not its window), hold
    nothing, so that a top-level strategy always names a Target."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name, self.warmup = inner.name, inner.warmup

    def decide(self, bars: np.ndarray, funding: Funding, account: Account, now: float) -> Decision:
        d = self.inner.decide(bars, funding, account, now)
        if d.target is not None:
            return d
        reason = f"flat: {d.seen.get('reason', 'no target')}"
        return Decision(Target(0, "passive", reason), {**d.seen, "reason": reason})
