"""The order book and what happens in it: price levels of replayed liquidity and resting
account orders, price-time matching, the tape of trades it prints, and each account
order's life from entry through fills and amends to its end.

`Matching` owns the book and the tape and works on `accounts.Account` objects. It is
given four callables: `now()` (the exchange's time), `new_id()` (orderIDs, execIDs,
trdMatchIDs), and the two through which its changes reach subscribers,
`emit(table, action, row, account_key)`, which queues a row, and `touched(account)`,
which marks an account whose position, margin and wallet rows must be sent. Margin
checks are not its business: the exchange makes them between `amend_request` and
`amend`, and between `new_order` and `enter`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from sniper.model import (
    BUY,
    CANCELED,
    CLOSE,
    EXEC_INSTS,
    FILLED,
    FOK,
    GTC,
    IOC,
    NEW,
    OPEN_ORD_STATUSES,
    PARTIALLY_FILLED,
    POST_ONLY,
    REDUCE_ONLY,
    SELL,
    TIMES_IN_FORCE,
    has_inst,
    iso,
)
from sniper.sim import rows
from sniper.sim.accounts import Account
from sniper.sim.margin import Contract, commission, contract_value, exec_cost
from sniper.sim.rows import (
    ERR_DUPLICATE,
    ERR_INVALID_STATUS,
    ERR_NOT_FOUND,
    TEXT_AMENDED,
    TEXT_CLOSE,
    TEXT_FOK,
    TEXT_IOC,
    TEXT_NO_LIQUIDITY,
    TEXT_POST_ONLY,
    TEXT_REDUCE_ONLY,
    TEXT_REDUCE_ONLY_AMENDED,
    TEXT_SUBMITTED,
    ExchangeError,
)

LIMIT, MARKET = "Limit", "Market"
REVIVE_WINDOW_S = 60.0  # a Filled order can be revived by a leavesQty amend this long after its fill
RECENT_TRADES = 50_000
UNSUPPORTED = ("stopPx", "pegPriceType", "pegOffsetValue", "contingencyType")


def other_side(side: str) -> str:
    return SELL if side == BUY else BUY


@dataclass(slots=True, eq=False)
class Order:
    id: str
    clid: str
    acct: Account
    side: str
    qty: int
    price: float | None
    tick: int | None
    ord_type: str
    tif: str
    exec_inst: str
    text: str
    created: float
    status: str = NEW
    leaves: int = 0
    cum: int = 0
    inv_sum: float = 0.0  # sum(qty / price) of fills: avgPx is the harmonic mean
    updated: float = 0.0
    ahead: int = 0  # market-maker contracts queued ahead of this order at its level
    resting: bool = False  # in the book

    @property
    def post_only(self) -> bool:
        return has_inst(self.exec_inst, POST_ONLY)

    @property
    def reduce_only(self) -> bool:
        return has_inst(self.exec_inst, REDUCE_ONLY) or has_inst(self.exec_inst, CLOSE)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_ORD_STATUSES

    def reducible(self) -> int:
        """Contracts of this order that would reduce its account's position."""
        return self.acct.reducible(self.side)


@dataclass(slots=True, eq=False)
class Level:
    mm: int = 0  # replayed market liquidity
    user: int = 0  # sum of resting account orders' leavesQty
    orders: list = field(default_factory=list)  # account orders in time priority

    @property
    def size(self) -> int:
        return self.mm + self.user


@dataclass(slots=True)
class Amend:
    """A checked amend request, not yet applied (the exchange checks its margin first)."""

    order: Order
    leaves: int
    price: float | None
    tick: int | None
    clid: str | None  # a new clOrdID, or None to keep the order's
    text: str
    revive: bool  # makes a just-Filled order live again


class Book:
    """Both sides' price levels in ticks, and the size each changed level had before the
    current exchange call, from which the orderBookL2 delta is cut."""

    def __init__(self, tick_size: float) -> None:
        self.tick_size = tick_size
        self.levels: dict[str, dict[int, Level]] = {BUY: {}, SELL: {}}
        self.ticks: dict[str, list[int]] = {BUY: [], SELL: []}  # sorted ascending
        self.dirty: dict[tuple[str, int], int] = {}  # (side, tick) -> size before this call

    def to_tick(self, price: float) -> int:
        return int(round(float(price) / self.tick_size))

    def is_tick(self, price: float) -> bool:
        return abs(float(price) / self.tick_size - round(float(price) / self.tick_size)) < 1e-9

    def best_tick(self, side: str) -> int | None:
        ticks = self.ticks[side]
        if not ticks:
            return None
        return ticks[-1] if side == BUY else ticks[0]

    def best_price(self, side: str) -> float | None:
        t = self.best_tick(side)
        return None if t is None else t * self.tick_size

    @staticmethod
    def crosses(side: str, tick: int, opp_tick: int | None) -> bool:
        if opp_tick is None:
            return False
        return tick >= opp_tick if side == BUY else tick <= opp_tick

    def crosses_book(self, side: str, tick: int) -> bool:
        """Would an order on `side` at `tick` trade against the other side's best level?"""
        return self.crosses(side, tick, self.best_tick(other_side(side)))

    def level(self, side: str, tick: int, create: bool = False) -> Level | None:
        level = self.levels[side].get(tick)
        if level is None and create:
            level = self.levels[side][tick] = Level()
            bisect.insort(self.ticks[side], tick)
        return level

    def mark_dirty(self, side: str, tick: int, level: Level | None) -> None:
        key = (side, tick)
        if key not in self.dirty:
            self.dirty[key] = level.size if level is not None else 0

    def drop_if_empty(self, side: str, tick: int, level: Level) -> None:
        if level.size == 0 and not level.orders and self.levels[side].get(tick) is level:
            del self.levels[side][tick]
            ticks = self.ticks[side]
            del ticks[bisect.bisect_left(ticks, tick)]

    def crossed_ticks(self, side: str, tick: int) -> list[int]:
        """The other side's ticks an order on `side` at `tick` reaches."""
        opp_ticks = self.ticks[other_side(side)]
        if side == BUY:
            return opp_ticks[: bisect.bisect_right(opp_ticks, tick)]
        return opp_ticks[bisect.bisect_left(opp_ticks, tick) :]

    def available(self, side: str, limit: int | None, want: int) -> int:
        """Contracts the other side offers an order on `side` up to `limit`, counted until `want`."""
        opp = other_side(side)
        ticks = self.ticks[opp] if side == BUY else reversed(self.ticks[opp])
        total = 0
        for t in ticks:
            if limit is not None and not self.crosses(side, limit, t) or total >= want:
                break
            total += self.levels[opp][t].size
        return total

    def rest(self, o: Order) -> None:
        level = self.level(o.side, o.tick, create=True)
        self.mark_dirty(o.side, o.tick, level)
        o.ahead = level.mm
        level.orders.append(o)
        level.user += o.leaves
        o.resting = True

    def unrest(self, o: Order) -> None:
        level = self.levels[o.side][o.tick]
        self.mark_dirty(o.side, o.tick, level)
        level.user -= o.leaves
        level.orders.remove(o)
        o.resting = False
        self.drop_if_empty(o.side, o.tick, level)

    def shrink(self, o: Order, cut: int) -> None:
        """A resting order's leavesQty falls by `cut` (it keeps its place in the queue)."""
        level = self.levels[o.side][o.tick]
        self.mark_dirty(o.side, o.tick, level)
        level.user -= cut

    def touch(self) -> tuple:
        """(bid tick, bid size, ask tick, ask size), None for an empty side."""
        b, a = self.best_tick(BUY), self.best_tick(SELL)
        return (
            b, self.levels[BUY][b].size if b is not None else None,
            a, self.levels[SELL][a].size if a is not None else None,
        )

    def image(self, depth: int | None = None) -> list[tuple[str, float, int]]:
        """(side, price, size) as BitMEX lists the book: asks then bids, each from high to low."""
        asks = self.ticks[SELL] if depth is None else self.ticks[SELL][: max(0, depth)]
        bids = self.ticks[BUY] if depth is None else self.ticks[BUY][len(self.ticks[BUY]) - max(0, depth):]
        return [(side, tick * self.tick_size, self.levels[side][tick].size)
                for side, ticks in ((SELL, asks), (BUY, bids)) for tick in reversed(ticks)]

    def delta(self, symbol: str, ts: str) -> dict[str, list[dict]]:
        """orderBookL2 rows by action (delete, update, insert) for the levels whose size
        changed since the last call."""
        groups: dict[str, list[dict]] = {"delete": [], "update": [], "insert": []}
        for (side, tick), before in self.dirty.items():
            level = self.levels[side].get(tick)
            after = level.size if level is not None else 0
            if after == before:
                continue
            if after == 0:
                groups["delete"].append(rows.level_row(symbol, side, tick * self.tick_size))
            else:
                groups["insert" if before == 0 else "update"].append(
                    rows.level_row(symbol, side, tick * self.tick_size, after, ts))
        self.dirty = {}
        return groups


class Matching:
    """The book, the tape, and the order lifecycle of one instrument. Single-threaded."""

    def __init__(self, contract: Contract, *, now: Callable[[], float], new_id: Callable[[], str],
                 emit: Callable[..., None], touched: Callable[[Account], None]) -> None:
        self.contract = contract
        self.symbol = contract.symbol
        self.book = Book(contract.tick_size)
        self.now = now
        self.new_id = new_id
        self.emit = emit
        self.touched = touched
        # the tape
        self.last_price: float | None = None
        self.tick_direction = "ZeroPlusTick"
        self.volume = 0
        self.turnover = 0
        self.traded = False  # a trade printed since the exchange last read this flag
        self.trades: list[dict] = []  # recent trades, trimmed in chunks (GET /trade)
        self.trade_times: list[float] = []
        self._printed: list | None = None  # trades printed by the current outside taker
        self.replay_taken = 0  # replayed contracts taken by account orders (the feed refills)

    # ------------------------------------------------------------------ replayed liquidity
    def set_market(self, side: str, price: float, size: int) -> None:
        """Replayed liquidity at `price` becomes `size` (0 removes it)."""
        if side not in (BUY, SELL):
            raise ValueError(f"side must be Buy or Sell, got {side!r}")
        self.set_market_tick(side, self.book.to_tick(price), int(size))

    def set_market_tick(self, side: str, tick: int, size: int) -> None:
        book = self.book
        opp = other_side(side)
        if size > 0 and book.crosses(side, tick, book.best_tick(opp)):
            # The market moved through: its stale opposite quotes vanish, and
            # account orders in the way are filled by the incoming liquidity.
            for t in book.crossed_ticks(side, tick):
                level = book.levels[opp][t]
                if level.mm:
                    book.mark_dirty(opp, t, level)
                    level.mm = 0
                    for o in level.orders:
                        o.ahead = 0
                    book.drop_if_empty(opp, t, level)
            size = self.match(side, size, tick, None)
        level = book.level(side, tick, create=size > 0)
        if level is None:
            return
        book.mark_dirty(side, tick, level)
        if size < level.mm:
            for o in level.orders:  # cancellations are taken from behind the queue
                o.ahead = min(o.ahead, size)
        level.mm = max(0, size)
        book.drop_if_empty(side, tick, level)

    def clear_market(self) -> None:
        """Remove all replayed liquidity; account orders stay in the book."""
        for side in (BUY, SELL):
            for tick in list(self.book.ticks[side]):
                self.set_market_tick(side, tick, 0)

    def market_size(self, side: str, price: float) -> int:
        """Replayed liquidity at `price`, excluding account orders."""
        level = self.book.levels[side].get(self.book.to_tick(price))
        return 0 if level is None else level.mm

    def outside_taker(self, side: str, qty: int, limit_price: float | None) -> list[dict]:
        """A taker from outside the accounts trades against the book; returns the trade rows."""
        if side not in (BUY, SELL):
            raise ValueError(f"side must be Buy or Sell, got {side!r}")
        limit = None if limit_price is None else self.book.to_tick(limit_price)
        self._printed = []
        try:
            self.match(side, int(qty), limit, None)
            return self._printed
        finally:
            self._printed = None

    # ------------------------------------------------------------------ matching
    def match(self, side: str, qty: int, limit: int | None, taker: Order | None) -> int:
        """Take up to `qty` from the opposite side at prices no worse than `limit`;
        returns the quantity left untraded."""
        book = self.book
        opp = other_side(side)
        while qty > 0:
            tick = book.best_tick(opp)
            if tick is None or (limit is not None and not book.crosses(side, limit, tick)):
                break
            level = book.levels[opp][tick]
            book.mark_dirty(opp, tick, level)
            before = qty
            qty = self._take_level(side, level, tick, qty, taker)
            book.drop_if_empty(opp, tick, level)
            if taker is not None and taker.reduce_only and taker.reducible() == 0:
                break
            if qty == before and book.levels[opp].get(tick) is level:
                break
        return qty

    def _take_level(self, side: str, level: Level, tick: int, qty: int, taker: Order | None) -> int:
        """Price-time priority inside a level: market liquidity that was queued ahead
        of an account order trades before it; liquidity added later trades after."""
        price = tick * self.book.tick_size
        for o in list(level.orders):
            if qty <= 0:
                break
            if not o.is_open:
                continue
            if o.ahead:
                amount = self._clip(min(qty, o.ahead), taker)
                if amount <= 0:
                    break
                self._trade_market(side, level, price, amount, taker)
                qty -= amount
                if qty <= 0:
                    break
            if o.reduce_only and o.reducible() == 0:
                self.close(o, TEXT_REDUCE_ONLY)
                continue
            fill = min(qty, o.leaves, o.reducible() if o.reduce_only else qty)
            fill = self._clip(fill, taker)
            if fill <= 0:
                break
            qty -= fill
            match_id = self._print_trade(side, fill, price)
            self.fill(o, fill, price, maker=True, match_id=match_id)
            if taker is not None:
                self.fill(taker, fill, price, maker=False, match_id=match_id)
        if qty > 0 and level.mm:
            amount = self._clip(min(qty, level.mm), taker)
            if amount > 0:
                self._trade_market(side, level, price, amount, taker)
                qty -= amount
        return qty

    @staticmethod
    def _clip(amount: int, taker: Order | None) -> int:
        if taker is not None and taker.reduce_only:
            return min(amount, taker.reducible())
        return amount

    def _trade_market(self, side: str, level: Level, price: float, amount: int, taker: Order | None) -> None:
        level.mm -= amount
        for o in level.orders:
            o.ahead = max(0, o.ahead - amount)
        match_id = self._print_trade(side, amount, price)
        if taker is not None:
            self.replay_taken += amount
            self.fill(taker, amount, price, maker=False, match_id=match_id)

    def _print_trade(self, side: str, size: int, price: float) -> str:
        last = self.last_price
        if last is None or price == last:
            up = self.tick_direction in ("PlusTick", "ZeroPlusTick")
            direction = "ZeroPlusTick" if up else "ZeroMinusTick"
        else:
            direction = "PlusTick" if price > last else "MinusTick"
        self.tick_direction = direction
        self.last_price = price
        self.traded = True
        gross = contract_value(size, price)
        self.volume += size
        self.turnover += gross
        match_id = self.new_id()
        now = self.now()
        ts = iso(now)
        row = rows.trade_row(self.symbol, ts, side, size, price, direction, match_id, gross)
        self.trades.append(row)
        self.trade_times.append(now)
        if len(self.trades) > 2 * RECENT_TRADES:
            del self.trades[:RECENT_TRADES], self.trade_times[:RECENT_TRADES]
        if self._printed is not None:
            self._printed.append(row)
        self.emit("trade", "insert", row)
        self.emit("instrument", "update", {
            "symbol": self.symbol, "lastPrice": price, "lastTickDirection": direction, "volume": self.volume,
            "turnover": self.turnover, "totalVolume": self.volume, "totalTurnover": self.turnover,
            "timestamp": ts,
        })
        return match_id

    # ------------------------------------------------------------------ fills and closes
    def fill(self, o: Order, qty: int, price: float, *, maker: bool, match_id: str = "",
             rate: float | None = None) -> None:
        """`qty` of `o` trades at `price`: the order, its account's position and wallet,
        the execution row; a position that shrank trims its reduce-only orders."""
        acct = o.acct
        signed = qty if o.side == BUY else -qty
        cost = exec_cost(signed, price)
        if rate is None:
            rate = self.contract.maker_fee if maker else self.contract.taker_fee
        comm = commission(contract_value(qty, price), rate)
        if o.resting:
            self.book.levels[o.side][o.tick].user -= qty
        o.leaves -= qty
        o.cum += qty
        o.inv_sum += qty / price
        o.status = FILLED if o.leaves == 0 else PARTIALLY_FILLED
        o.updated = self.now()
        if o.leaves == 0:
            if o.resting:
                self.book.unrest(o)
            acct.open.pop(o.id, None)
        before = acct.qty
        acct.apply_fill(signed, cost, comm, self.now())
        self.touched(acct)
        self.record(acct, rows.fill_row(o, self.symbol, self.new_id(), qty, price, maker=maker, rate=rate,
                                        match_id=match_id, cost=cost, comm=comm))
        self.emit("order", "update", self.order_row(o), acct.key)
        if o.leaves == 0:
            acct.retire(o)
        if abs(acct.qty) < abs(before) or acct.qty * before < 0:
            self._trim_reduce_only(acct)

    def _trim_reduce_only(self, acct: Account) -> None:
        """As BitMEX does when the position shrinks: resting ReduceOnly orders that together
        exceed what is left to reduce are amended down, least aggressive first (sells from
        the highest price, buys from the lowest; the later order first at one price), and
        canceled once nothing is left, so they can never open a position."""
        for side in (BUY, SELL):
            orders = [o for o in acct.open.values() if o.resting and o.reduce_only and o.side == side]
            if not orders:
                continue
            excess = sum(o.leaves for o in orders) - acct.reducible(side)
            if excess <= 0:
                continue
            orders.sort(key=lambda o: (o.tick if side == SELL else -o.tick, o.created))
            for o in reversed(orders):
                if excess <= 0:
                    break
                cut = min(excess, o.leaves)
                excess -= cut
                if cut == o.leaves:
                    self.close(o, TEXT_REDUCE_ONLY)
                else:
                    self._shrink(o, cut)

    def _shrink(self, o: Order, cut: int) -> None:
        """The exchange amends a resting order down by `cut` contracts (it keeps its place)."""
        self.book.shrink(o, cut)
        o.leaves -= cut
        o.qty -= cut
        o.text = TEXT_REDUCE_ONLY_AMENDED
        o.updated = self.now()
        self.record(o.acct, self.execution_row(o, "Replaced"))
        self.emit("order", "update", self.order_row(o), o.acct.key)
        self.touched(o.acct)

    def close(self, o: Order, text: str) -> dict:
        """Cancel what is left of `o` with BitMEX's `text`; returns its row."""
        if o.resting:
            self.book.unrest(o)
        o.status = CANCELED
        o.leaves = 0
        o.text = text
        o.updated = self.now()
        o.acct.open.pop(o.id, None)
        self.record(o.acct, self.execution_row(o, "Canceled"))
        row = self.order_row(o)
        self.emit("order", "update", row, o.acct.key)
        o.acct.retire(o)
        self.touched(o.acct)
        return row

    def close_all(self, orders, text: str) -> list[dict]:
        return [self.close(o, text) for o in orders]

    def record(self, acct: Account, row: dict) -> None:
        acct.executions.append(row)
        self.emit("execution", "insert", row, acct.key)

    def order_row(self, o: Order) -> dict:
        return rows.order_row(o, self.symbol)

    def execution_row(self, o: Order, exec_type: str) -> dict:
        return rows.execution_row(o, self.symbol, self.new_id(), exec_type)

    # ------------------------------------------------------------------ entry
    def new_order(self, acct: Account, p: dict) -> Order:
        """A new order from POST /order parameters, checked as BitMEX checks them."""
        if p.get("symbol") not in (None, "", self.symbol):
            raise ExchangeError(400, f"Invalid symbol: {p.get('symbol')}")
        unsupported = [k for k in UNSUPPORTED if p.get(k)]
        if unsupported:
            raise ExchangeError(400, f"Unsupported parameter in simulator: {unsupported[0]}")
        inst = [x.strip() for x in str(p.get("execInst") or "").split(",") if x.strip()]
        if any(x not in EXEC_INSTS for x in inst):
            raise ExchangeError(400, f"Invalid execInst: {p.get('execInst')}")
        close = CLOSE in inst
        side = p.get("side") or None
        qty = int_param(p, "orderQty")
        if qty is not None and qty < 0:
            if side not in (None, SELL):
                raise ExchangeError(400, "Invalid side")
            side, qty = SELL, -qty
        if side is None:
            if qty is not None and not close:
                side = BUY
            elif acct.qty:
                side = SELL if acct.qty > 0 else BUY
            else:
                raise ExchangeError(400, "Invalid side")
        if side not in (BUY, SELL):
            raise ExchangeError(400, f"Invalid side: {side}")
        if qty is None:
            if not close:
                raise ExchangeError(400, "Invalid orderQty")
            qty = abs(acct.qty)
        if qty <= 0 and not close or qty > self.contract.max_order_qty:
            raise ExchangeError(400, "Invalid orderQty")
        if qty % self.contract.lot_size:
            raise ExchangeError(400, f"Order quantity must be a multiple of lot size: {self.contract.lot_size}")
        price = p.get("price")
        ord_type = p.get("ordType") or (MARKET if price is None else LIMIT)
        if ord_type not in (LIMIT, MARKET):
            raise ExchangeError(400, f"Unsupported ordType in simulator: {ord_type}")
        price, tick = self._price_param(price) if ord_type == LIMIT else (None, None)
        tif = p.get("timeInForce") or (IOC if ord_type == MARKET else GTC)
        if tif not in TIMES_IN_FORCE:
            raise ExchangeError(400, f"Invalid timeInForce: {tif}")
        if POST_ONLY in inst and (ord_type != LIMIT or tif != GTC):
            raise ExchangeError(400, "ParticipateDoNotInitiate requires a GoodTillCancel Limit order")
        clid = self._clid_param(acct, p.get("clOrdID"))
        now = self.now()
        return Order(
            id=self.new_id(), clid=clid, acct=acct, side=side, qty=qty, price=price, tick=tick,
            ord_type=ord_type, tif=tif, exec_inst=",".join(inst), text=str(p.get("text") or TEXT_SUBMITTED),
            created=now, leaves=qty, updated=now,
        )

    def entry_cancel_reason(self, o: Order) -> str | None:
        """The text of the cancel BitMEX's rules impose on `o` at entry, if any."""
        if o.reduce_only and o.reducible() == 0:
            return TEXT_CLOSE if has_inst(o.exec_inst, CLOSE) else TEXT_REDUCE_ONLY
        if o.post_only and self.book.crosses_book(o.side, o.tick):
            return TEXT_POST_ONLY
        if o.tif == FOK and self._fillable(o) < o.leaves:
            return TEXT_FOK
        return None

    def _fillable(self, o: Order) -> int:
        """Contracts the book could give `o` right now (FillOrKill pre-check)."""
        total = self.book.available(o.side, o.tick, o.leaves)
        return min(total, o.reducible()) if o.reduce_only else total

    def enter(self, o: Order, reason: str | None) -> dict:
        """Register a new order: canceled at once for `reason`, else matched and rested."""
        acct = o.acct
        acct.orders[o.id] = o
        if o.clid:
            acct.by_clid[o.clid] = o
        if reason is not None:
            o.leaves = 0
            o.status = CANCELED
            o.text = reason
            self.record(acct, self.execution_row(o, "Canceled"))
            self.emit("order", "insert", self.order_row(o), acct.key)
            acct.retire(o)
            return self.order_row(o)
        acct.open[o.id] = o
        self.record(acct, self.execution_row(o, "New"))
        self.emit("order", "insert", self.order_row(o), acct.key)
        self.touched(acct)
        self._execute(o)
        return self.order_row(o)

    def _execute(self, o: Order) -> None:
        """Match a new or repriced order as taker, then rest or cancel the rest."""
        self.match(o.side, o.leaves, o.tick, o)
        if not o.is_open:
            return
        if o.ord_type == MARKET:
            self.close(o, TEXT_NO_LIQUIDITY)
        elif o.tif == IOC:
            self.close(o, TEXT_IOC)
        elif o.reduce_only and o.reducible() == 0:
            self.close(o, TEXT_CLOSE if has_inst(o.exec_inst, CLOSE) else TEXT_REDUCE_ONLY)
        else:
            self.book.rest(o)

    def _price_param(self, price) -> tuple[float, int]:
        try:
            price = float(price)
        except (TypeError, ValueError):
            raise ExchangeError(400, "Invalid price") from None
        if not math.isfinite(price) or price <= 0 or price > self.contract.max_price:
            raise ExchangeError(400, "Invalid price")
        if not self.book.is_tick(price):
            raise ExchangeError(400, "Invalid price tickSize")
        tick = self.book.to_tick(price)
        return tick * self.book.tick_size, tick

    @staticmethod
    def _clid_param(acct: Account, clid) -> str:
        clid = "" if clid is None else str(clid)
        if len(clid) > 36:
            raise ExchangeError(400, "Invalid clOrdID: longer than 36 characters")
        if clid and clid in acct.by_clid:
            raise ExchangeError(400, ERR_DUPLICATE)
        return clid

    @staticmethod
    def find(acct: Account, order_id=None, clid=None) -> Order | None:
        if order_id:
            return acct.orders.get(str(order_id))
        if clid:
            return acct.by_clid.get(str(clid))
        return None

    # ------------------------------------------------------------------ amend
    def amend_request(self, acct: Account, params: dict) -> Amend:
        """Check a PUT /order request (price, orderQty or leavesQty) against its order."""
        if not params.get("orderID") and not params.get("origClOrdID"):
            raise ExchangeError(400, "Either an orderID or a origClOrdID must be provided")
        o = self.find(acct, params.get("orderID"), params.get("origClOrdID"))
        if o is None:
            raise ExchangeError(404, ERR_NOT_FOUND)
        order_qty = int_param(params, "orderQty")
        leaves_qty = int_param(params, "leavesQty")
        if order_qty is not None and leaves_qty is not None:
            raise ExchangeError(400, "Only one qty field can be used to amend")
        revive = not o.is_open and self._revivable(o, leaves_qty)
        if not o.is_open and not revive:
            raise ExchangeError(400, ERR_INVALID_STATUS)
        leaves = o.leaves
        if order_qty is not None:
            leaves = order_qty - o.cum
        elif leaves_qty is not None:
            leaves = leaves_qty
        if leaves < 0 or (o.cum + leaves) % self.contract.lot_size:
            raise ExchangeError(400, "Invalid leavesQty" if leaves_qty is not None else "Invalid orderQty")
        price, tick = o.price, o.tick
        if params.get("price") not in (None, ""):
            if o.ord_type != LIMIT:
                raise ExchangeError(400, "Invalid price")
            price, tick = self._price_param(params["price"])
        new_clid = params.get("clOrdID")
        if new_clid and new_clid != o.clid:
            self._clid_param(acct, new_clid)
        else:
            new_clid = None
        return Amend(o, leaves, price, tick, new_clid, str(params.get("text") or TEXT_AMENDED), revive)

    def _revivable(self, o: Order, leaves_qty: int | None) -> bool:
        """A Filled limit order may be made live again by a positive leavesQty soon after its
        fill, as BitMEX documents (a liquidation's order has no tick and may not)."""
        return (o.status == FILLED and o.ord_type == LIMIT and o.tick is not None
                and leaves_qty is not None and leaves_qty > 0
                and self.now() - o.updated <= REVIVE_WINDOW_S and o in o.acct.closed)

    def amend(self, a: Amend) -> dict | None:
        """Apply a checked amend. A price change or a size increase loses time priority;
        a decrease keeps it. Returns the order's row if the amend canceled it (leaves of 0,
        or a post-only order repriced through the book), else None."""
        o, acct = a.order, a.order.acct
        if a.revive:
            acct.closed.remove(o)
            acct.open[o.id] = o
            o.status = PARTIALLY_FILLED
        if a.clid is not None:
            if acct.by_clid.get(o.clid) is o:
                del acct.by_clid[o.clid]
            o.clid = str(a.clid)
            acct.by_clid[o.clid] = o
        if a.leaves == 0:
            return self.close(o, a.text)
        requeue = a.tick != o.tick or a.leaves > o.leaves
        if o.resting and requeue:
            self.book.unrest(o)
        elif o.resting:
            self.book.shrink(o, o.leaves - a.leaves)
        o.qty, o.leaves, o.price, o.tick, o.text = o.cum + a.leaves, a.leaves, a.price, a.tick, a.text
        o.updated = self.now()
        if o.post_only and self.book.crosses_book(o.side, o.tick):
            return self.close(o, TEXT_POST_ONLY)
        self.record(acct, self.execution_row(o, "Replaced"))
        self.emit("order", "update", self.order_row(o), acct.key)
        self.touched(acct)
        if not o.resting:
            self._execute(o)
        return None


def int_param(p: dict, name: str) -> int | None:
    """A whole-number parameter, None when absent; 400 for anything else."""
    v = p.get(name)
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ExchangeError(400, f"Invalid {name}") from None
    if not math.isfinite(f) or f != int(f):
        raise ExchangeError(400, f"Invalid {name}")
    return int(f)
