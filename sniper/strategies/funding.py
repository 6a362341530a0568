"""The short-term logic around the 8-hourly funding settlement (04:00, 12:00, 20:00 UTC).

The band table (FundingConfig.positive for rate > 0, .negative for rate < 0) maps |rate| to a
plan: the band with the largest `above` that |rate| exceeds gives `enter_minutes` and
`reverse`; a rate in no band means no trade. The plan has up to three legs around a
settlement at T (now is compared with these times, half-open intervals):

  receive   [T - enter_minutes, T + exit_after_minutes)   the side that receives funding:
            short when rate > 0 (longs pay shorts), long when rate < 0
  reverse   [T + exit_after_minutes, + reverse_minutes)    the opposite side, only if `reverse`
  after     None: not this logic's window any more ("returns control")

Before T the plan follows the announced rate (Funding.rate, the rate to be paid at
Funding.next_time); from T on the rate paid at T (Funding.last): the latest past settlement,
or, until the exchange's settlement row reaches the caller, the rate this strategy saw
announced for T (BitMEX fixes a settlement's rate in advance, so that is the rate paid). Where
the previous settlement's legs and the next one's entry overlap (only with extreme tables),
the previous settlement's legs win.

Risk: a leg is refused (not entered: the window is not claimed, in_window is False) when the
liquidation price of its position lies within `min_liquidation_distance` of mark. Sized at the
whole margin balance times the leverage (cross margin), a position is liquidated when its loss
leaves only the maintenance margin, maint_margin x notional: at price P that is
bankruptcy_price(P, leverage / (1 - maint_margin x leverage)), a fixed fraction of P per side
and leverage. While a leg's position is held, it is closed early (Target 0 for the rest of the
leg) once the adverse move from its average entry reaches stop_fraction of the distance from
that entry to its bankruptcy price at the configured leverage (model.bankruptcy_price).

A leg's size is fixed at its first decision (balance x price x leverage x (1 - taker fee x
leverage), `base.contracts`), so a move against it never adds to it. That size, the stop and
the last two announced rates are the strategy's only state.
"""

from __future__ import annotations

import math

import numpy as np

from sniper.model import MINUTE, Target, bankruptcy_price

from .base import Account, Decision, Funding, contracts, reference_price

RECEIVE, REVERSE = "receive", "reverse"


def liquidation_price(price: float, leverage: float, long: bool, maint_margin: float) -> float:
    """Where a position worth leverage x balance, opened at `price`, is liquidated (module docs);
    `price` itself when the maintenance margin alone exceeds the balance."""
    if maint_margin * leverage >= 1.0:
        return price
    return bankruptcy_price(price, leverage / (1.0 - maint_margin * leverage), long)


class FundingStrategy:
    """The settlement table (module docs). A component: None outside its window."""

    name = "funding"
    warmup = 0

    def __init__(self, cfg, *, taker_fee: float, min_liquidation_distance: float = 0.15,
                 maint_margin: float = 0.005) -> None:
        """cfg: a config.FundingConfig. min_liquidation_distance: the risk limit's
        (risk.min_liquidation_distance); maint_margin: XBTUSD's maintenance margin."""
        self.cfg, self.taker_fee = cfg, taker_fee
        self.min_liquidation_distance, self.maint_margin = min_liquidation_distance, maint_margin
        self._announced: dict[float, float] = {}  # next_time -> rate, the last two announced
        self._sized: tuple[tuple[float, str], int] | None = None  # (leg, its contracts)
        self._stopped: tuple[float, str] | None = None  # the leg (settlement, kind) stopped out

    def band(self, rate: float | None):
        """The FundingBand that `rate` falls in, or None."""
        if not rate:
            return None
        rows = [b for b in (self.cfg.positive if rate > 0 else self.cfg.negative) if abs(rate) > b.above]
        return max(rows, key=lambda b: b.above, default=None)

    def leg(self, now: float, funding: Funding) -> tuple[float, str, int, float] | None:
        """The leg in force at `now`: (settlement time, RECEIVE | REVERSE, side +1/-1, rate),
        or None. The table alone decides; see `in_window` for the liquidation refusal."""
        hold, turn = self.cfg.exit_after_minutes * MINUTE, self.cfg.reverse_minutes * MINUTE
        settled = self._settled(now, funding)
        if settled is not None:
            last, rate = settled
            band, side = self.band(rate), -1 if rate > 0 else 1
            if band is not None and now < last + hold:
                return last, RECEIVE, side, rate
            if band is not None and band.reverse and last + hold <= now < last + hold + turn:
                return last, REVERSE, -side, rate
        band, upcoming = self.band(funding.rate), funding.next_time
        if band is not None and upcoming is not None and upcoming - band.enter_minutes * MINUTE <= now < upcoming:
            return upcoming, RECEIVE, -1 if funding.rate > 0 else 1, funding.rate
        return None

    def _settled(self, now: float, funding: Funding) -> tuple[float, float] | None:
        """(time, rate) of the latest settlement at or before `now` (module docs)."""
        last = funding.last(now)
        seen = max((t for t in self._announced if t <= now), default=None)
        if seen is not None and (last is None or last[0] < seen):
            return seen, self._announced[seen]
        return last

    def liquidation_gap(self, side: int) -> float:
        """Relative distance from mark to the liquidation price of a `side` position at the
        configured leverage (the same at any price)."""
        return abs(1.0 - liquidation_price(1.0, self.cfg.leverage, side > 0, self.maint_margin))

    def in_window(self, now: float, funding: Funding) -> bool:
        """Does this logic hold control at `now`: a leg is in force and not refused for its
        liquidation distance. The motif switch gives way to it exactly then."""
        leg = self.leg(now, funding)
        return leg is not None and self.liquidation_gap(leg[2]) >= self.min_liquidation_distance

    def decide(self, bars: np.ndarray, funding: Funding, account: Account, now: float) -> Decision:
        leg = self.leg(now, funding)
        if funding.next_time is not None and funding.rate is not None and funding.next_time > now:
            self._announced[funding.next_time] = funding.rate
            self._announced = dict(sorted(self._announced.items())[-2:])
        if leg is None:
            return Decision(None, {"logic": "funding", "reason": "funding: not in a settlement window"})
        settlement, kind, side, rate = leg
        gap = self.liquidation_gap(side)
        seen = {"logic": "funding", "settlement": settlement, "rate": rate, "leg": kind,
                "side": side, "liquidation_distance": gap}
        if gap < self.min_liquidation_distance:
            reason = (f"funding: {kind} leg refused, liquidation {gap:.1%} from mark "
                      f"< {self.min_liquidation_distance:.1%}")
            return Decision(None, {**seen, "reason": reason})
        key = (settlement, kind)
        if self._stopped != key and self._hit_stop(account, side):
            self._stopped = key
        if self._stopped == key:
            reason = f"funding: {kind} leg stopped out, flat until the leg ends"
            return Decision(Target(0, self.cfg.style, reason), {**seen, "reason": reason})
        if self._sized is None or self._sized[0] != key:
            self._sized = key, side * contracts(account.margin_balance_xbt, reference_price(account, bars),
                                                self.cfg.leverage, self.taker_fee)
        qty = self._sized[1]
        reason = (f"funding: {kind} {'long' if side > 0 else 'short'} for the settlement at "
                  f"{settlement:.0f}, rate {rate:+.4%}")
        return Decision(Target(qty, self.cfg.style, reason), {**seen, "reason": reason})

    def _hit_stop(self, account: Account, side: int) -> bool:
        """The held position is on this leg's side and has lost stop_fraction of the way from
        its average entry to its bankruptcy price."""
        entry, mark = account.avg_entry, account.mark
        if not (account.position * side > 0 and entry and mark > 0):
            return False
        bankrupt = bankruptcy_price(entry, self.cfg.leverage, side > 0)
        if math.isinf(bankrupt):
            return False
        return side * (entry - mark) >= self.cfg.stop_fraction * abs(entry - bankrupt)
