"""Inverse-contract arithmetic in whole satoshis (XBt): pure functions, so the simulated
exchange and the backtester book fills, fees, PnL, funding and margin identically.

Units and signs are BitMEX's. One contract is 1 USD. A trade of q contracts at price P
is worth `value = round(|q| * 1e8 / P)` XBt, rounded once per fill. A buy costs
`-value` (`execCost`), a sell `+value`, and a position's `cost` is the sum of its
fills' costs, so a long's is negative. Commission is `round(value * rate)`; a maker
rebate is a negative rate. `sniper.model.inverse_pnl` is the same PnL in float XBT,
computed from prices instead of satoshi costs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from sniper.model import BUY, SATOSHI, SELL


@dataclass(frozen=True)
class Contract:
    """The instrument's terms the arithmetic needs, named after BitMEX's instrument fields
    (defaults: XBTUSD in 2018)."""

    symbol: str = "XBTUSD"
    tick_size: float = 0.5  # tickSize
    lot_size: int = 1  # lotSize
    max_price: float = 1_000_000.0  # maxPrice
    max_order_qty: int = 10_000_000  # maxOrderQty
    init_margin: float = 0.01  # initMargin: 100x at most
    maint_margin: float = 0.005  # maintMargin
    risk_limit: int = 20_000_000_000  # riskLimit, XBt
    maker_fee: float = -0.00025  # makerFee (a rebate)
    taker_fee: float = 0.00075  # takerFee

    @classmethod
    def of(cls, instrument: dict) -> Contract:
        """The terms of a BitMEX instrument row; missing fields keep the defaults."""
        d = cls()
        get = instrument.get
        return cls(
            symbol=get("symbol", d.symbol), tick_size=float(get("tickSize", d.tick_size)),
            lot_size=int(get("lotSize", d.lot_size)), max_price=float(get("maxPrice", d.max_price)),
            max_order_qty=int(get("maxOrderQty", d.max_order_qty)),
            init_margin=float(get("initMargin", d.init_margin)),
            maint_margin=float(get("maintMargin", d.maint_margin)),
            risk_limit=int(get("riskLimit", d.risk_limit)), maker_fee=float(get("makerFee", d.maker_fee)),
            taker_fee=float(get("takerFee", d.taker_fee)),
        )


def contract_value(qty: int, price: float) -> int:
    """XBt value of |qty| contracts at `price`: round(|qty| * 1e8 / price)."""
    return int(round(abs(qty) * SATOSHI / price))


def exec_cost(qty: int, price: float) -> int:
    """XBt cost of a fill of `qty` signed contracts (> 0 buys): -value for a buy, +value for a sell."""
    value = contract_value(qty, price)
    return -value if qty > 0 else value


def commission(value: int, rate: float) -> int:
    """Fee on `value` XBt: round(value * rate); negative for a maker rebate."""
    return int(round(value * rate))


def avg_entry_price(qty: int, cost: int) -> float | None:
    """avgEntryPrice = |qty| * 1e8 / |cost|: the contract-weighted harmonic mean of the fills."""
    return abs(qty) * SATOSHI / abs(cost) if qty else None


class PositionChange(NamedTuple):
    qty: int  # signed contracts after the fill
    cost: int  # XBt cost of what is still open (0 when flat)
    realised: int  # gross PnL booked by the part of the fill that closed contracts
    opened: bool  # a new position began (from flat, or the fill flipped the side)


def position_after_fill(qty: int, cost: int, fill_qty: int, fill_cost: int) -> PositionChange:
    """A position of `qty` contracts costing `cost` XBt after a fill of `fill_qty` signed
    contracts costing `fill_cost`. A fill on the position's side adds both. One against it
    closes c = min(|fill_qty|, |qty|) contracts and realises
    `-(round(cost * c / |qty|) + round(fill_cost * c / |fill_qty|))`: minus the summed cost of
    the closed part and of the closing part of the fill. The rest of the fill, if any, opens
    the other side at its pro-rata cost."""
    if qty == 0 or (qty > 0) == (fill_qty > 0):
        after = qty + fill_qty
        return PositionChange(after, cost + fill_cost if after else 0, 0, qty == 0)
    closed = min(abs(fill_qty), abs(qty))
    cost_closed = int(round(cost * closed / abs(qty)))
    fill_closed = int(round(fill_cost * closed / abs(fill_qty)))
    sign = 1 if fill_qty > 0 else -1
    qty, cost = qty + sign * closed, cost - cost_closed
    opened = abs(fill_qty) - closed
    if opened:
        qty, cost = qty + sign * opened, cost + fill_cost - fill_closed
    return PositionChange(qty, cost if qty else 0, -(cost_closed + fill_closed), opened > 0)


def mark_value(qty: int, mark: float) -> int:
    """markValue = round(-qty * 1e8 / mark) XBt: what closing at the mark would cost (long < 0)."""
    return int(round(-qty * SATOSHI / mark)) if qty else 0


def unrealised_pnl(qty: int, cost: int, mark: float) -> int:
    """markValue - cost: qty * (1/entry - 1/mark) * 1e8 for a long, in whole XBt."""
    return mark_value(qty, mark) - cost if qty else 0


def funding_payment(qty: int, mark: float, rate: float) -> int:
    """XBt a position of `qty` signed contracts pays at a settlement at `rate`:
    sign(qty) * round(round(|qty| * 1e8 / mark) * rate). Positive means it pays: longs
    pay shorts when the rate is positive, shorts pay longs when it is negative."""
    if not qty:
        return 0
    paid = commission(contract_value(qty, mark), rate)
    return paid if qty > 0 else -paid


def initial_margin_req(cross: bool, leverage: float, init_margin: float) -> float:
    """initMarginReq: the instrument's under cross margin, else 1/leverage (never below it)."""
    return init_margin if cross else max(1.0 / leverage, init_margin)


def open_exposure(orders: Iterable[tuple[str, int, float | None, bool]], qty: int) -> float:
    """grossOpenCost: XBt value of the open orders (side, leavesQty, price, reduce_only) that
    would grow a position of `qty` contracts. Reduce-only orders and the part of a side
    that would only close the position do not count, and only the larger side counts,
    since both sides cannot fill into new exposure."""
    contracts = {BUY: 0, SELL: 0}
    value = {BUY: 0.0, SELL: 0.0}
    for side, leaves, price, reduce_only in orders:
        if reduce_only or not price or leaves <= 0:
            continue
        contracts[side] += leaves
        value[side] += leaves * SATOSHI / price
    grow = {BUY: max(0, contracts[BUY] - max(0, -qty)), SELL: max(0, contracts[SELL] - max(0, qty))}
    return max(value[s] * grow[s] / contracts[s] if contracts[s] else 0.0 for s in (BUY, SELL))


def price_at_loss(qty: int, cost: int, loss: float, max_price: float) -> float:
    """Price at which a position of `qty` contracts costing `cost` XBt has lost `loss` XBt:
    long 1/P = 1/E + loss/(|qty| * 1e8), short 1/P = 1/E - loss/(|qty| * 1e8), E the entry.
    The bankruptcy price is the loss of all the position's margin, the break-even price
    the loss of minus its commissions; capped at `max_price`."""
    n = abs(qty) * SATOSHI
    inv = abs(cost) / n + (loss / n if qty > 0 else -loss / n)
    if inv <= 1.0 / max_price:
        return max_price
    return 1.0 / inv


def liquidation_price(qty: int, cost: int, loss: float, tick: float, max_price: float) -> float:
    """`price_at_loss` rounded to a tick towards the entry (a long's up, a short's down), as
    BitMEX rounds liquidation prices; 0.0 when flat."""
    if not qty:
        return 0.0
    steps = price_at_loss(qty, cost, loss, max_price) / tick
    steps = math.ceil(steps - 1e-9) if qty > 0 else math.floor(steps + 1e-9)
    return min(max_price, steps * tick)


class Margins(NamedTuple):
    """One account's margin figures (XBt unless a price), as the position and margin rows show them."""

    mark: float | None  # the mark used (the entry price when no market price exists yet)
    mark_value: int
    upnl: int
    pos_init: int  # round(|cost| * initMarginReq)
    pos_comm: int  # round(|cost| * taker fee): the exit commission held in reserve
    pos_margin: int  # pos_init + pos_comm (0 when flat)
    pos_maint: int  # round(|cost| * maintMargin) + pos_comm (0 when flat)
    order_margin: int  # round(open exposure * initMarginReq)
    open_value: int  # round(open exposure)
    available: int  # wallet - order_margin - pos_margin (+ upnl under cross margin)
    liq: float  # where the position's margin left is its maintenance margin
    bankrupt: float  # where the position's margin is all lost


def margins(qty: int, cost: int, wallet: int, mark: float | None, exposure: float, *, cross: bool, imr: float,
            contract: Contract) -> Margins:
    """The margin figures of a position of `qty` contracts costing `cost`, with `wallet` XBt
    and open orders worth `exposure` (see `open_exposure`), at initial margin `imr` (see
    `initial_margin_req`). Isolated, the position may lose its own margin; cross, the
    whole wallet except what the open orders hold."""
    c = contract
    if qty and not mark:
        mark = avg_entry_price(qty, cost)
    value = mark_value(qty, mark) if qty else 0
    upnl = unrealised_pnl(qty, cost, mark) if qty else 0
    pos_init = int(round(abs(cost) * imr))
    pos_comm = int(round(abs(cost) * c.taker_fee))
    pos_margin = pos_init + pos_comm if qty else 0
    pos_maint = int(round(abs(cost) * c.maint_margin)) + pos_comm if qty else 0
    order_margin = int(round(exposure * imr))
    available = wallet - order_margin - pos_margin + (upnl if cross else 0)
    cover = wallet - order_margin if cross else pos_margin
    return Margins(
        mark=mark, mark_value=value, upnl=upnl, pos_init=pos_init, pos_comm=pos_comm, pos_margin=pos_margin,
        pos_maint=pos_maint, order_margin=order_margin, open_value=int(round(exposure)), available=available,
        liq=liquidation_price(qty, cost, cover - pos_maint, c.tick_size, c.max_price),
        bankrupt=price_at_loss(qty, cost, cover, c.max_price) if qty else 0.0,
    )
