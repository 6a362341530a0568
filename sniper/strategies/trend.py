"""The long-term logic: the reference system's dual EMA.

EMA(fast_period) of the 1-minute closes, then EMA(slow_period) of that series; long while the
second rises, short while it falls (flat on an exact tie, which only a constant history gives).
Size: margin balance x price x leverage x (1 - taker fee x leverage) (`base.contracts`); the
risk gate caps it later.

Seeding is TA-Lib's (talib.EMA, its default compatibility): an EMA's first value is the simple
mean of its first `period` inputs, at input index period - 1, then
ema = (x - ema) * 2 / (period + 1) + ema. The slow EMA starts at the fast one's first value, so
its first value is at bar fast + slow - 2 and its first slope at bar fast + slow - 1: the
strategy needs fast + slow bars (1,424 by default) and holds NO position until then (Target 0,
the reason says how many bars it has), so a short history never leaves a stale position open.

Per bar the update is O(1) (`_Ema.push`); on a (re)start with a full warm-up of history the
state comes from talib.EMA over the whole history at once, which the incremental update is
tested to match to 1e-9.
"""

from __future__ import annotations

import math

import numpy as np

from sniper.model import Target
from sniper.ta import talib

from .base import Account, BarCursor, Decision, Funding, contracts, reference_price

_REASONS = {1: "trend: slow EMA rising", -1: "trend: slow EMA falling", 0: "trend: slow EMA flat"}  # by side


class _Ema:
    """TA-Lib's EMA, one input at a time (same seeding, same arithmetic order)."""

    __slots__ = ("period", "k", "count", "total", "value")

    def __init__(self, period: int) -> None:
        self.period, self.k = period, 2.0 / (period + 1)
        self.count, self.total, self.value = 0, 0.0, math.nan

    def push(self, x: float) -> float:
        """Take the next input; the EMA so far (NaN until `period` inputs)."""
        self.count += 1
        if self.count < self.period:
            self.total += x
        elif self.count == self.period:
            self.value = (self.total + x) / self.period
        else:
            self.value = (x - self.value) * self.k + self.value
        return self.value

    def resume(self, value: float, count: int) -> None:
        """Continue after `count` inputs whose EMA is `value` (count >= period)."""
        self.count, self.value = count, value


class TrendStrategy:
    """Dual EMA of the closes (module docs); `ema_fast`/`ema_slow`/`slope` are the latest."""

    name = "trend"

    def __init__(self, cfg, *, taker_fee: float) -> None:
        """cfg: a config.TrendConfig (fast_period, slow_period, leverage, style)."""
        self.cfg, self.taker_fee = cfg, taker_fee
        self.warmup = cfg.fast_period + cfg.slow_period
        self._cursor = BarCursor()
        self._restart(np.empty(0))

    @property
    def ema_fast(self) -> float:
        return self._fast.value

    @property
    def ema_slow(self) -> float:
        return self._slow.value

    @property
    def slope(self) -> float:
        """Latest change of the slow EMA (NaN before two of its values exist)."""
        return self._slow.value - self._prev_slow

    def _restart(self, closes: np.ndarray) -> None:
        self._fast, self._slow = _Ema(self.cfg.fast_period), _Ema(self.cfg.slow_period)
        self._prev_slow = math.nan
        if len(closes) < self.warmup:
            for c in closes:
                self._push(float(c))
            return
        fast = talib.EMA(closes, self.cfg.fast_period)
        slow = talib.EMA(fast, self.cfg.slow_period)
        self._fast.resume(float(fast[-1]), len(closes))
        self._slow.resume(float(slow[-1]), len(closes) - self.cfg.fast_period + 1)
        self._prev_slow = float(slow[-2])

    def _push(self, close: float) -> None:
        fast = self._fast.push(close)
        if fast == fast:  # the slow EMA runs over the fast one's values only
            self._prev_slow = self._slow.value
            self._slow.push(fast)

    def decide(self, bars: np.ndarray, funding: Funding, account: Account, now: float) -> Decision:
        rows, restart = self._cursor.advance(bars)
        if restart:
            self._restart(np.ascontiguousarray(rows["close"], dtype=np.float64))
        else:
            for close in rows["close"].tolist():
                self._push(close)
        fast, slow = self._fast.value, self._slow.value
        slope = slow - self._prev_slow
        if slope == slope:
            side = (slope > 0) - (slope < 0)
            qty = side * contracts(account.margin_balance_xbt, reference_price(account, bars), self.cfg.leverage,
                                   self.taker_fee)
            reason = _REASONS[side]
        else:
            qty, reason = 0, f"trend: warm-up, {self._fast.count} of {self.warmup} bars"
        return Decision(Target(qty, self.cfg.style, reason),
                        {"logic": "trend", "ema_fast": fast, "ema_slow": slow, "slope": slope, "reason": reason})
