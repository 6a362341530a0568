"""The order manager: pure decisions, state in, actions out. No threads, no I/O, no clock.

Given the target, the position, our working orders and the top of book it says what to send:
place, amend or cancel. The rules that keep the position from ever overshooting live here:
  * at most ONE working order; a second one is canceled before anything else;
  * quantity = target - position - working leaves, capped by the leg: a move that crosses
    zero is two legs (first reduce to flat with ReduceOnly, then open), each at most the
    risk gate's order cap and a whole number of lots;
  * passive joins the touch post-only (never crosses, so never canceled for crossing);
    market is an IOC limit a band beyond the far touch, so a thin book cannot fill us at any price.
And one decision is one intent: `goal` rounds a Target to the lot once, before it is journaled.
The executor (executor.py) turns these actions into requests; it never decides quantities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sniper.journal import OrderRecord
from sniper.model import BUY, GTC, IOC, POST_ONLY, REDUCE_ONLY, SELL, Target, has_inst
from sniper.orders.venue import VenueError, number


@dataclass(frozen=True)
class Market:
    """The top of book and the instrument's grid, as the planner needs them."""

    best_bid: float | None
    best_ask: float | None
    tick: float
    lot: int = 1

    @classmethod
    def of(cls, snap) -> Market:
        """From a venue snapshot (its touch and its instrument's tickSize/lotSize). A grid that is
        garbled, not positive or a fraction of a contract raises VenueError: no order is priced
        or sized on it (float() and int() would fail unexpectedly, or turn a lot of 1.9 into 1)."""
        inst = snap.instrument or {}
        tick = number(inst.get("tickSize"), "instrument tickSize") or 0.5
        lot = number(inst.get("lotSize"), "instrument lotSize") or 1
        if not (tick > 0 and lot >= 1 and lot == int(lot)):
            raise VenueError(f"unusable instrument grid: tickSize {tick!r}, lotSize {lot!r}")
        return cls(snap.best_bid, snap.best_ask, float(tick), int(lot))


@dataclass(frozen=True)
class Place:
    side: str
    qty: int
    price: float
    ord_type: str
    exec_inst: str
    time_in_force: str
    why: str

    @property
    def reduce_only(self) -> bool:
        return has_inst(self.exec_inst, REDUCE_ONLY)


@dataclass(frozen=True)
class Amend:
    clordid: str
    price: float | None  # None = unchanged
    order_qty: int | None  # absolute orderQty = cumQty + wanted leaves; None = unchanged
    leaves: int  # the leaves the amend aims for
    why: str


@dataclass(frozen=True)
class Cancel:
    clordid: str
    why: str


Action = Place | Amend | Cancel


def to_tick(price: float, tick: float, direction: int = 0) -> float:
    """Round `price` to the tick grid: down (-1), up (+1) or nearest (0)."""
    steps = price / tick
    steps = math.floor(steps + 1e-9) if direction < 0 else math.ceil(steps - 1e-9) if direction > 0 else round(steps)
    return round(steps * tick, 10)


def round_lot(qty: int, lot: int) -> int:
    """Toward zero to a whole number of lots (the exchange refuses other sizes)."""
    lot = max(1, int(lot))
    return int(math.copysign(abs(int(qty)) // lot * lot, qty)) if qty else 0


def goal(target: Target, lot: int) -> Target:
    """The target as the exchange can hold it: rounded toward zero to the lot. The executor
    journals this, once, as the decision's intent."""
    qty = round_lot(target.qty, lot)
    return target if qty == target.qty else Target(qty, target.style, target.reason)


def leg(position: int, need: int, max_order_qty: int, lot: int = 1) -> tuple[int, bool]:
    """The next order's size and whether it is reduce-only. A move that crosses zero is two
    legs: first reduce to flat (ReduceOnly), then open; each capped at max_order_qty."""
    reducing = position != 0 and need != 0 and (position > 0) != (need > 0)
    qty = min(abs(need), abs(position)) if reducing else abs(need)
    return round_lot(min(qty, max_order_qty), lot), reducing


def passive_price(side: str, mkt: Market) -> float | None:
    """Join the touch on our side; never cross (post-only would be canceled)."""
    if side == BUY:
        if mkt.best_bid is not None:
            return mkt.best_bid
        return to_tick(mkt.best_ask - mkt.tick, mkt.tick) if mkt.best_ask is not None else None
    if mkt.best_ask is not None:
        return mkt.best_ask
    return to_tick(mkt.best_bid + mkt.tick, mkt.tick) if mkt.best_bid is not None else None


def market_price(side: str, mkt: Market, band: float) -> float | None:
    """The limit of an aggressive IOC order: the far touch plus a band, so a thin book
    cannot fill us at any price."""
    if side == BUY:
        return to_tick(mkt.best_ask * (1 + band), mkt.tick, -1) if mkt.best_ask is not None else None
    return to_tick(mkt.best_bid * (1 - band), mkt.tick, +1) if mkt.best_bid is not None else None


def order_style(order: OrderRecord) -> str:
    return "market" if order.time_in_force == IOC else "passive"


def plan(target: Target, position: int, working: list[OrderRecord], mkt: Market, *, max_order_qty: int,
         reprice_ticks: int = 0, band: float = 0.005) -> list[Action]:
    """The actions that move `position` (plus `working`, our live orders) toward `target`.
    Never more than one working order; never leaves that would overshoot the target."""
    if len(working) > 1:
        return [Cancel(o.clordid, "more than one working order") for o in working[1:]]
    need = target.qty - position
    side = BUY if need > 0 else SELL
    qty, reduce = leg(position, need, max_order_qty, mkt.lot)
    if working:
        return _adjust(working[0], target, side, qty, reduce, mkt, reprice_ticks, need)
    if qty == 0:
        return []
    if target.style == "passive":
        price = passive_price(side, mkt)
        inst = f"{POST_ONLY},{REDUCE_ONLY}" if reduce else POST_ONLY
        tif = GTC
    else:
        price = market_price(side, mkt, band)
        inst = REDUCE_ONLY if reduce else ""
        tif = IOC
    if price is None:
        return []
    return [Place(side, qty, price, "Limit", inst, tif, target.reason or "target")]


def _adjust(order: OrderRecord, target: Target, side: str, qty: int, reduce: bool, mkt: Market,
            reprice_ticks: int, need: int) -> list[Action]:
    """What to do with the one working order: keep, amend (price to the touch, leaves to the
    leg) or cancel when it no longer fits the leg (goal reached, other side, other style)."""
    if need == 0 or qty == 0:
        return [Cancel(order.clordid, "target reached")]
    if order.side != side:
        return [Cancel(order.clordid, "direction changed")]
    if order.reduce_only != reduce:
        return [Cancel(order.clordid, "reduce-only no longer matches the leg")]
    if order_style(order) != target.style:
        return [Cancel(order.clordid, f"style changed to {target.style}")]
    if target.style == "market":
        return []  # an IOC order ends by itself
    price = passive_price(side, mkt)
    if price is not None and order.price is not None and abs(price - order.price) <= reprice_ticks * mkt.tick + 1e-9:
        price = None
    order_qty = order.cum_qty + qty if order.leaves_qty != qty else None
    if price is None and order_qty is None:
        return []
    why = "follow the touch" if order_qty is None else "target changed"
    return [Amend(order.clordid, price, order_qty, qty, why)]
