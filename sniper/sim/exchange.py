"""The simulated BitMEX exchange: one inverse perpetual, its order book, accounts,
margin, funding and liquidation. Pure model: no I/O, no threads, no wall clock.

Why a model of its own: the server (`server.py`), the backtester and the tests all
need the same matching and the same inverse-contract arithmetic, and they must be
able to drive it deterministically.

Interface notes for users of this module (additions to the contract in CONTRACTS.md;
nothing in the contract was changed):
- `Exchange(..., seed=0)`: seeds the ids (orderID, execID, trdMatchID) so runs repeat.
- `set_levels([(side, price, size), ...])` batches `set_level` into one book message;
  `clear_market_levels()` removes all market-maker liquidity (account orders stay).
- `event_time`: when not None it is used instead of `clock.now()`; the feed sets it
  while it applies events scheduled in the past, so rows carry their scheduled time.
  `now()` never goes backwards: a row is never stamped before one already emitted.
- `best_bid()`, `best_ask()`, `last_price`, `mark_price` are read-only views;
  `market_size(side, price)` is the replayed liquidity at a price (account orders excluded);
  `replay_taken` counts replayed contracts taken by account orders (the feed refills).
- `mark_follows_trades=True` (default): after trades print, the mark moves to the last
  price, so liquidation works when tests drive trades through the control endpoint;
  `set_mark_price` still sets it explicitly until the next trade.
- `trades(count=100, start=0, reverse=False, startTime=None, endTime=None)` and
  `funding_rows(...)` with the same keywords; times may be epoch seconds or ISO text.
- Cancel of an order id the account never had raises 404 "Not Found"; cancel of a
  closed order returns its row with an "error" field, as BitMEX does.
- feed.py also offers `instrument_for(bars)`, `default_start(bars)` and
  `Feed(..., start=None, loop=True, trades_per_minute=30)`; with start=None the replay
  begins at the minute holding the first `step_until` time. `l2_rate` is per simulated
  second (one orderBookL2 message each, plus the moves around trades).

Sign conventions follow BitMEX: a buy has a negative cost in XBt (`execCost`,
`currentCost`), a sell a positive one; `avgEntryPrice = |qty| * 1e8 / |cost|` is the
contract-weighted harmonic mean; PnL of closing = -(cost of the closed part + cost of
the closing trade).
"""

from __future__ import annotations

import bisect
import math
import random
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

SATOSHI = 100_000_000
FUNDING_HOURS = (4, 12, 20)
FUNDING_INTERVAL = 8 * 3600
INSTRUMENT_INDEX = 88  # legacy orderBookL2 ids: 1e8 * index - price * 100
RECENT_ORDERS = 10_000  # closed orders kept per account (clOrdID uniqueness, GET /order)
RECENT_EXECUTIONS = 10_000
REVIVE_WINDOW_S = 60.0  # a Filled order can be revived by a leavesQty amend this long after its fill
RECENT_TRADES = 50_000

# BitMEX texts, kept verbatim in one place.
TEXT_SUBMITTED = "Submitted via API."
TEXT_CANCELED = "Canceled via API."
TEXT_AMENDED = "Amended via API."
TEXT_POST_ONLY = "Canceled: Order had execInst of ParticipateDoNotInitiate"
TEXT_REDUCE_ONLY = "Canceled: Order had execInst of ReduceOnly"
TEXT_REDUCE_ONLY_AMENDED = "Amended orderQty: Order had execInst of ReduceOnly"
TEXT_CLOSE = "Canceled: Order had execInst of Close"
TEXT_IOC = "Canceled: Order had timeInForce of ImmediateOrCancel"
TEXT_FOK = "Canceled: Order had timeInForce of FillOrKill"
TEXT_NO_LIQUIDITY = "Canceled: Market order had no more liquidity to fill against"
TEXT_CANCEL_ALL_AFTER = "Canceled: Cancel-all-after timer expired"
TEXT_LIQUIDATION = "Liquidation"
TEXT_LIQUIDATION_CANCEL = "Canceled: Position liquidated"
ERR_DUPLICATE = "Duplicate clOrdID"
ERR_NOT_FOUND = "Not Found"
ERR_INVALID_STATUS = "Invalid ordStatus"
ERR_BALANCE = "Account has insufficient Available Balance, {need} XBt required"
ERR_CANCEL_STATE = "Unable to cancel order due to existing state: {status}"

BUY, SELL = "Buy", "Sell"
OPEN_STATUSES = frozenset({"New", "PartiallyFilled"})
EXEC_INSTS = frozenset(
    {"ParticipateDoNotInitiate", "ReduceOnly", "Close", "MarkPrice", "LastPrice", "IndexPrice", "Fixed"}
)


class ExchangeError(Exception):
    """A rejection the server turns into `{"error": {"message", "name"}}` with `status`."""

    def __init__(self, status: int, message: str, name: str = "HTTPError") -> None:
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message

    def body(self) -> dict:
        return {"error": {"message": self.message, "name": self.name}}


def iso(t: float) -> str:
    """Epoch seconds -> BitMEX timestamp text ('2018-11-19T00:00:00.000Z'), truncated
    to the millisecond so a time never lands in the next second or minute."""
    ms = math.floor(t * 1000 + 1e-6)
    d = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_time(value) -> float | None:
    """Epoch seconds from an epoch number or an ISO-8601 text (REST query values)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    d = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


def next_funding_time(t: float) -> float:
    """First settlement (04:00, 12:00, 20:00 UTC) strictly after `t`."""
    day = math.floor(t / 86400) * 86400
    for h in FUNDING_HOURS + (24 + FUNDING_HOURS[0],):
        s = day + h * 3600
        if s > t:
            return float(s)
    raise AssertionError("unreachable")


def query_rows(rows, times, count=100, start=0, reverse=False, startTime=None, endTime=None) -> list[dict]:
    """BitMEX history-query semantics over rows sorted by time (`times` parallel list)."""
    lo = 0 if parse_time(startTime) is None else bisect.bisect_left(times, parse_time(startTime))
    hi = len(times) if parse_time(endTime) is None else bisect.bisect_right(times, parse_time(endTime))
    count = max(0, int(count if count is not None else 100))
    start = max(0, int(start or 0))
    if reverse:
        end = hi - start
        sel = range(end - 1, max(lo, end - count) - 1, -1)
    else:
        begin = lo + start
        sel = range(begin, min(hi, begin + count))
    return [dict(rows[i]) for i in sel]


@dataclass(slots=True, eq=False)
class _Order:
    id: str
    clid: str
    acct: _Account
    side: str
    qty: int
    price: float | None
    tick: int | None
    ord_type: str
    tif: str
    exec_inst: str
    text: str
    created: float
    status: str = "New"
    leaves: int = 0
    cum: int = 0
    inv_sum: float = 0.0  # sum(qty / price) of fills: avgPx is the harmonic mean
    updated: float = 0.0
    ahead: int = 0  # market-maker contracts queued ahead of this order at its level
    resting: bool = False  # in the book

    @property
    def post_only(self) -> bool:
        return "ParticipateDoNotInitiate" in self.exec_inst

    @property
    def reduce_only(self) -> bool:
        return "ReduceOnly" in self.exec_inst or "Close" in self.exec_inst

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(slots=True, eq=False)
class _Level:
    mm: int = 0  # replayed market liquidity
    user: int = 0  # sum of resting account orders' leavesQty
    orders: list = field(default_factory=list)  # account orders in time priority

    @property
    def size(self) -> int:
        return self.mm + self.user


@dataclass(slots=True, eq=False)
class _Account:
    key: str
    secret: str
    number: int
    deposited: int
    wallet: int
    orders: dict = field(default_factory=dict)  # orderID -> _Order (open and recent)
    open: dict = field(default_factory=dict)  # orderID -> _Order, open only
    by_clid: dict = field(default_factory=dict)  # clOrdID -> _Order (same set)
    closed: deque = field(default_factory=deque)  # closed orders, oldest first
    executions: deque = field(default_factory=lambda: deque(maxlen=RECENT_EXECUTIONS))
    # position
    qty: int = 0
    cost: int = 0  # signed XBt cost of the open position (long < 0)
    cross: bool = True
    leverage: float = 100.0  # isolated leverage (shown as 1/initMargin while cross)
    touched: bool = False  # a position row exists (BitMEX lists positions ever opened)
    announced: bool = False  # the position row was inserted for ws subscribers
    realised_gross: int = 0
    comm: int = 0  # commissions paid since the position opened (maker rebates negative)
    funding_paid: int = 0
    exec_buy_qty: int = 0
    exec_sell_qty: int = 0
    exec_buy_cost: int = 0
    exec_sell_cost: int = 0
    exec_comm: int = 0
    opening_time: float = 0.0
    cancel_at: float | None = None  # cancelAllAfter deadline
    wallet_sent: int | None = None  # wallet amount in the last emitted wallet row
    created: float = 0.0


class Exchange:
    """BitMEX-like exchange for one inverse perpetual. Single-threaded by contract."""

    def __init__(
        self,
        instrument: dict,
        clock,
        *,
        maker_fee: float = -0.00025,
        taker_fee: float = 0.00075,
        funding: list[tuple[float, float]] | tuple = (),
        seed: int = 0,
        mark_follows_trades: bool = True,
    ) -> None:
        self.instrument = dict(instrument)
        self.symbol = self.instrument.get("symbol", "XBTUSD")
        self.tick_size = float(self.instrument.get("tickSize", 0.5))
        self.lot_size = int(self.instrument.get("lotSize", 1))
        self.max_price = float(self.instrument.get("maxPrice", 1_000_000))
        self.max_order_qty = int(self.instrument.get("maxOrderQty", 10_000_000))
        self.init_margin = float(self.instrument.get("initMargin", 0.01))
        self.maint_margin = float(self.instrument.get("maintMargin", 0.005))
        self.risk_limit = int(self.instrument.get("riskLimit", 20_000_000_000))
        self.maker_fee = float(maker_fee)
        self.taker_fee = float(taker_fee)
        self.instrument["makerFee"] = self.maker_fee
        self.instrument["takerFee"] = self.taker_fee
        self.clock = clock
        self.mark_follows_trades = mark_follows_trades
        self._traded = False  # a trade printed since the mark was last set
        self.replay_taken = 0  # replayed contracts taken by account orders (the feed refills)
        self.event_time: float | None = None
        self._last_now = float("-inf")
        self._rng = random.Random(seed)
        self._subs: list = []
        self._accounts: dict[str, _Account] = {}
        self._levels = {BUY: {}, SELL: {}}  # tick -> _Level
        self._ticks = {BUY: [], SELL: []}  # sorted ascending
        self._dirty: dict[tuple[str, int], int] = {}  # (side, tick) -> size before this call
        self._pending: dict[tuple[str, str, str | None], list] = {}
        self._dirty_accounts: dict[str, _Account] = {}
        self._last_quote: tuple | None = None
        self._open_interest_sent = 0
        self._ts_cache = (None, "")
        # market state
        self.last_price: float | None = None
        self.mark_price: float | None = None
        self._tick_direction = "ZeroPlusTick"
        self._volume = 0
        self._turnover = 0
        self._trades: list[dict] = []  # recent trades, trimmed in chunks (GET /trade)
        self._trade_times: list[float] = []
        self._printed: list | None = None  # trades printed by the current market_order
        # funding
        hist = sorted((float(t), float(r)) for t, r in funding)
        self._funding_times = [t for t, _ in hist]
        self._funding_rates = [r for _, r in hist]
        self._funding_row_list = [self._funding_row(t, r) for t, r in hist]
        self._next_funding = next_funding_time(self.now())

    # ------------------------------------------------------------------ time, ids, emission
    def now(self) -> float:
        """Event time if set, else the clock; never earlier than a time already used,
        so rows come out in time order even when the feed applies events a little late."""
        t = self.clock.now() if self.event_time is None else self.event_time
        if t < self._last_now:
            return self._last_now
        self._last_now = t
        return t

    def _ts(self) -> str:
        t = self.now()
        if self._ts_cache[0] != t:
            self._ts_cache = (t, iso(t))
        return self._ts_cache[1]

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def subscribe(self, callback) -> None:
        """callback(table, action, rows, account_key_or_None), called after each change."""
        self._subs.append(callback)

    def unsubscribe(self, callback) -> None:
        self._subs.remove(callback)

    def _emit(self, table: str, action: str, row: dict, account: str | None = None) -> None:
        self._pending.setdefault((table, action, account), []).append(row)

    def _flush(self) -> None:
        """Send the book delta, then the queued rows, then account summaries."""
        out: list[tuple[str, str, list, str | None]] = []
        if self._dirty:
            out.extend(self._book_messages())
        quote = self._quote_tuple()
        if quote != self._last_quote and (quote[0] is not None or quote[2] is not None):
            if self._last_quote is None or quote[0::2] != self._last_quote[0::2]:
                self._emit_touch()
            self._last_quote = quote
            out.append(("quote", "insert", [self.quote_row()], None))
        for (table, action, account), rows in self._pending.items():
            out.append((table, action, rows, account))
        self._pending = {}
        if self._dirty_accounts:
            open_interest = self._open_interest()
            if open_interest != self._open_interest_sent:
                self._open_interest_sent = open_interest
                out.append(("instrument", "update", [
                    {"symbol": self.symbol, "openInterest": open_interest,
                     "openValue": self._open_value(open_interest), "timestamp": self._ts()}], None))
            accounts, self._dirty_accounts = self._dirty_accounts, {}
            for acct in accounts.values():
                n = self._numbers(acct)
                if acct.touched:
                    action = "update" if acct.announced else "insert"
                    acct.announced = True
                    out.append(("position", action, [self._position_row(acct, n)], acct.key))
                out.append(("margin", "update", [self._margin_row(acct, n)], acct.key))
                if acct.wallet != acct.wallet_sent:
                    acct.wallet_sent = acct.wallet
                    out.append(("wallet", "update", [self._wallet_row(acct)], acct.key))
        for msg in out:
            for cb in self._subs:
                cb(*msg)

    def _touch_fields(self) -> dict:
        """The instrument's bidPrice/askPrice/midPrice (None for an empty side)."""
        bid, ask = self.best_bid(), self.best_ask()
        return {"bidPrice": bid, "askPrice": ask,
                "midPrice": (bid + ask) / 2 if bid is not None and ask is not None else None}

    def _emit_touch(self) -> None:
        """BitMEX streams the instrument's bid/ask/mid as the touch moves; clients read them."""
        self._emit("instrument", "update", {"symbol": self.symbol, **self._touch_fields(), "timestamp": self._ts()})

    def _open_interest(self) -> int:
        """Contracts held long by the accounts (the replayed liquidity holds no positions)."""
        return sum(max(0, a.qty) for a in self._accounts.values())

    def _book_messages(self) -> list:
        ts = self._ts()
        groups = {"delete": [], "update": [], "insert": []}
        for (side, tick), before in self._dirty.items():
            level = self._levels[side].get(tick)
            after = level.size if level is not None else 0
            if after == before:
                continue
            price = tick * self.tick_size
            row = {"symbol": self.symbol, "id": self._level_id(price), "side": side, "price": price}
            if after == 0:
                groups["delete"].append(row)
                continue
            row["size"] = after
            row["timestamp"] = ts
            groups["insert" if before == 0 else "update"].append(row)
        self._dirty = {}
        return [("orderBookL2", a, rows, None) for a, rows in groups.items() if rows]

    def _open_value(self, open_interest: int) -> int:
        """XBt value of the open interest at the mark (inverse: contracts / price)."""
        mark = self.mark_price or self.last_price
        return int(round(open_interest * SATOSHI / mark)) if mark else 0

    def _touch_account(self, acct: _Account) -> None:
        self._dirty_accounts[acct.key] = acct

    # ------------------------------------------------------------------ book primitives
    @staticmethod
    def _level_id(price: float) -> int:
        return SATOSHI * INSTRUMENT_INDEX - int(round(price * 100))

    def _to_tick(self, price: float) -> int:
        return int(round(float(price) / self.tick_size))

    def _is_tick(self, price: float) -> bool:
        return abs(float(price) / self.tick_size - round(float(price) / self.tick_size)) < 1e-9

    def _best_tick(self, side: str) -> int | None:
        ticks = self._ticks[side]
        if not ticks:
            return None
        return ticks[-1] if side == BUY else ticks[0]

    def best_bid(self) -> float | None:
        t = self._best_tick(BUY)
        return None if t is None else t * self.tick_size

    def best_ask(self) -> float | None:
        t = self._best_tick(SELL)
        return None if t is None else t * self.tick_size

    def _level(self, side: str, tick: int, create: bool = False) -> _Level | None:
        level = self._levels[side].get(tick)
        if level is None and create:
            level = self._levels[side][tick] = _Level()
            bisect.insort(self._ticks[side], tick)
        return level

    def _mark_dirty(self, side: str, tick: int, level: _Level | None) -> None:
        key = (side, tick)
        if key not in self._dirty:
            self._dirty[key] = level.size if level is not None else 0

    def _drop_if_empty(self, side: str, tick: int, level: _Level) -> None:
        if level.size == 0 and not level.orders and self._levels[side].get(tick) is level:
            del self._levels[side][tick]
            ticks = self._ticks[side]
            del ticks[bisect.bisect_left(ticks, tick)]

    @staticmethod
    def _crosses(side: str, tick: int, opp_tick: int | None) -> bool:
        if opp_tick is None:
            return False
        return tick >= opp_tick if side == BUY else tick <= opp_tick

    # ------------------------------------------------------------------ market driving
    def set_level(self, side: str, price: float, size: int) -> None:
        """Market-maker liquidity at `price` becomes `size` (0 removes it)."""
        self._set_mm(side, price, size)
        self._after_market_change()

    def set_levels(self, levels) -> None:
        """Apply many (side, price, size) changes as one book message."""
        for side, price, size in levels:
            self._set_mm(side, price, size)
        self._after_market_change()

    def clear_market_levels(self) -> None:
        """Remove all replayed liquidity; account orders stay in the book."""
        for side in (BUY, SELL):
            for tick in list(self._ticks[side]):
                self._set_mm_tick(side, tick, 0)
        self._after_market_change()

    def market_size(self, side: str, price: float) -> int:
        """Replayed (market-maker) liquidity at `price`, excluding account orders."""
        level = self._levels[side].get(self._to_tick(price))
        return 0 if level is None else level.mm

    def _set_mm(self, side: str, price: float, size: int) -> None:
        if side not in (BUY, SELL):
            raise ValueError(f"side must be Buy or Sell, got {side!r}")
        self._set_mm_tick(side, self._to_tick(price), int(size))

    def _set_mm_tick(self, side: str, tick: int, size: int) -> None:
        opp = SELL if side == BUY else BUY
        if size > 0 and self._crosses(side, tick, self._best_tick(opp)):
            # The market moved through: its stale opposite quotes vanish, and
            # account orders in the way are filled by the incoming liquidity.
            for t in self._crossed_ticks(side, tick):
                level = self._levels[opp][t]
                if level.mm:
                    self._mark_dirty(opp, t, level)
                    level.mm = 0
                    for o in level.orders:
                        o.ahead = 0
                    self._drop_if_empty(opp, t, level)
            size = self._match(side, size, tick, None)
        level = self._level(side, tick, create=size > 0)
        if level is None:
            return
        self._mark_dirty(side, tick, level)
        if size < level.mm:
            for o in level.orders:  # cancellations are taken from behind the queue
                o.ahead = min(o.ahead, size)
        level.mm = max(0, size)
        self._drop_if_empty(side, tick, level)

    def _crossed_ticks(self, side: str, tick: int) -> list[int]:
        opp_ticks = self._ticks[SELL if side == BUY else BUY]
        if side == BUY:
            return opp_ticks[: bisect.bisect_right(opp_ticks, tick)]
        return opp_ticks[bisect.bisect_left(opp_ticks, tick) :]

    def market_order(self, side: str, qty: int, limit_price: float | None = None) -> list[dict]:
        """An outside taker: trades against the book (account orders included) and
        returns the trade rows it printed."""
        if side not in (BUY, SELL):
            raise ValueError(f"side must be Buy or Sell, got {side!r}")
        limit = None if limit_price is None else self._to_tick(limit_price)
        self._printed = []
        try:
            self._match(side, int(qty), limit, None)
            printed = self._printed
        finally:
            self._printed = None
        self._after_market_change()
        return printed

    def set_mark_price(self, price: float) -> None:
        self._set_mark(float(price))
        self._check_liquidations()
        self._flush()

    def _set_mark(self, price: float) -> None:
        self._traded = False
        if price == self.mark_price:
            return
        self.mark_price = price
        self._emit(
            "instrument",
            "update",
            {"symbol": self.symbol, "markPrice": price, "fairPrice": price, "indexPrice": price,
             "indicativeSettlePrice": price, "openValue": self._open_value(self._open_interest()),
             "timestamp": self._ts()},
        )
        for acct in self._accounts.values():
            if acct.qty:
                self._touch_account(acct)

    def advance(self) -> None:
        """Run what is due at the current time: funding, cancelAllAfter, liquidation."""
        now = self.now()
        while self._next_funding <= now:
            self._settle_funding(self._next_funding)
        for acct in self._accounts.values():
            if acct.cancel_at is not None and acct.cancel_at <= now:
                acct.cancel_at = None
                self._cancel_many(acct, list(acct.open.values()), TEXT_CANCEL_ALL_AFTER)
        self._check_liquidations()
        self._flush()

    def _after_market_change(self) -> None:
        self._check_liquidations()
        self._flush()

    # ------------------------------------------------------------------ matching
    def _match(self, side: str, qty: int, limit: int | None, taker: _Order | None) -> int:
        """Take up to `qty` from the opposite side at prices no worse than `limit`;
        returns the quantity left untraded."""
        opp = SELL if side == BUY else BUY
        while qty > 0:
            tick = self._best_tick(opp)
            if tick is None or (limit is not None and not self._crosses(side, limit, tick)):
                break
            level = self._levels[opp][tick]
            self._mark_dirty(opp, tick, level)
            before = qty
            qty = self._take_level(side, level, tick, qty, taker)
            self._drop_if_empty(opp, tick, level)
            if taker is not None and taker.reduce_only and self._reducible(taker) == 0:
                break
            if qty == before and self._levels[opp].get(tick) is level:
                break
        return qty

    def _take_level(self, side: str, level: _Level, tick: int, qty: int, taker: _Order | None) -> int:
        """Price-time priority inside a level: market liquidity that was queued ahead
        of an account order trades before it; liquidity added later trades after."""
        price = tick * self.tick_size
        for o in list(level.orders):
            if qty <= 0:
                break
            if not o.is_open:
                continue
            if o.ahead:
                amount = self._clip(min(qty, o.ahead), taker)
                if amount <= 0:
                    break
                self._trade_mm(side, level, price, amount, taker)
                qty -= amount
                if qty <= 0:
                    break
            if o.reduce_only and self._reducible(o) == 0:
                self._close_order(o, TEXT_REDUCE_ONLY)
                continue
            fill = min(qty, o.leaves, self._reducible(o) if o.reduce_only else qty)
            fill = self._clip(fill, taker)
            if fill <= 0:
                break
            qty -= fill
            match_id = self._print_trade(side, fill, price)
            self._fill(o, fill, price, maker=True, match_id=match_id)
            if taker is not None:
                self._fill(taker, fill, price, maker=False, match_id=match_id)
        if qty > 0 and level.mm:
            amount = self._clip(min(qty, level.mm), taker)
            if amount > 0:
                self._trade_mm(side, level, price, amount, taker)
                qty -= amount
        return qty

    def _clip(self, amount: int, taker: _Order | None) -> int:
        if taker is not None and taker.reduce_only:
            return min(amount, self._reducible(taker))
        return amount

    def _trade_mm(self, side: str, level: _Level, price: float, amount: int, taker: _Order | None) -> None:
        level.mm -= amount
        for o in level.orders:
            o.ahead = max(0, o.ahead - amount)
        match_id = self._print_trade(side, amount, price)
        if taker is not None:
            self.replay_taken += amount
            self._fill(taker, amount, price, maker=False, match_id=match_id)

    def _print_trade(self, side: str, size: int, price: float) -> str:
        last = self.last_price
        if last is None or price == last:
            up = self._tick_direction in ("PlusTick", "ZeroPlusTick")
            direction = "ZeroPlusTick" if up else "ZeroMinusTick"
        else:
            direction = "PlusTick" if price > last else "MinusTick"
        self._tick_direction = direction
        self.last_price = price
        self._traded = True
        gross = int(round(size * SATOSHI / price))
        self._volume += size
        self._turnover += gross
        match_id = self._uuid()
        ts = self._ts()
        row = {
            "timestamp": ts,
            "symbol": self.symbol,
            "side": side,
            "size": size,
            "price": price,
            "tickDirection": direction,
            "trdMatchID": match_id,
            "grossValue": gross,
            "homeNotional": size / price,
            "foreignNotional": float(size),
            "trdType": "Regular",
        }
        self._trades.append(row)
        self._trade_times.append(self.now())
        if len(self._trades) > 2 * RECENT_TRADES:
            del self._trades[:RECENT_TRADES], self._trade_times[:RECENT_TRADES]
        if self._printed is not None:
            self._printed.append(row)
        self._emit("trade", "insert", row)
        self._emit(
            "instrument",
            "update",
            {
                "symbol": self.symbol,
                "lastPrice": price,
                "lastTickDirection": direction,
                "volume": self._volume,
                "turnover": self._turnover,
                "totalVolume": self._volume,
                "totalTurnover": self._turnover,
                "timestamp": ts,
            },
        )
        return match_id

    # ------------------------------------------------------------------ order lifecycle
    def _rest(self, o: _Order) -> None:
        level = self._level(o.side, o.tick, create=True)
        self._mark_dirty(o.side, o.tick, level)
        o.ahead = level.mm
        level.orders.append(o)
        level.user += o.leaves
        o.resting = True

    def _unrest(self, o: _Order) -> None:
        level = self._levels[o.side][o.tick]
        self._mark_dirty(o.side, o.tick, level)
        level.user -= o.leaves
        level.orders.remove(o)
        o.resting = False
        self._drop_if_empty(o.side, o.tick, level)

    def _fill(
        self,
        o: _Order,
        qty: int,
        price: float,
        *,
        maker: bool,
        match_id: str = "",
        rate: float | None = None,
    ) -> None:
        acct = o.acct
        value = int(round(qty * SATOSHI / price))
        exec_cost = -value if o.side == BUY else value
        if rate is None:
            rate = self.maker_fee if maker else self.taker_fee
        comm = int(round(value * rate))
        if o.resting:
            self._levels[o.side][o.tick].user -= qty
        o.leaves -= qty
        o.cum += qty
        o.inv_sum += qty / price
        o.status = "Filled" if o.leaves == 0 else "PartiallyFilled"
        o.updated = self.now()
        if o.leaves == 0:
            if o.resting:
                self._unrest(o)
            acct.open.pop(o.id, None)
        before = acct.qty
        self._apply_fill(acct, qty if o.side == BUY else -qty, exec_cost, comm)
        row = self._execution_row(o, "Trade")
        row.update(
            lastQty=qty,
            lastPx=price,
            lastMkt="XBME",
            lastLiquidityInd="AddedLiquidity" if maker else "RemovedLiquidity",
            commission=rate,
            tradePublishIndicator="PublishTrade",
            trdMatchID=match_id,
            execCost=exec_cost,
            execComm=comm,
            homeNotional=(qty if o.side == BUY else -qty) / price,
            foreignNotional=float(-qty if o.side == BUY else qty),
        )
        self._record_execution(acct, row)
        self._emit("order", "update", self._order_row(o), acct.key)
        if o.leaves == 0:
            self._retire(o)
        if abs(acct.qty) < abs(before) or acct.qty * before < 0:
            self._trim_reduce_only(acct)

    def _apply_fill(self, acct: _Account, dq: int, dc: int, comm: int) -> None:
        """Position and wallet after a fill of signed `dq` contracts costing `dc` XBt."""
        q, c = acct.qty, acct.cost
        if q == 0:
            acct.opening_time = self.now()
        if q == 0 or (q > 0) == (dq > 0):
            q, c = q + dq, c + dc
        else:
            closed = min(abs(dq), abs(q))
            cost_closed = int(round(c * closed / abs(q)))
            dc_closed = int(round(dc * closed / abs(dq)))
            pnl = -(cost_closed + dc_closed)
            acct.realised_gross += pnl
            acct.wallet += pnl
            c -= cost_closed
            q += closed if dq > 0 else -closed
            opened = abs(dq) - closed
            if opened:
                q += opened if dq > 0 else -opened
                c += dc - dc_closed
                acct.opening_time = self.now()
        acct.qty, acct.cost = q, (c if q else 0)
        acct.comm += comm
        acct.exec_comm += comm
        acct.wallet -= comm
        if dq > 0:
            acct.exec_buy_qty += dq
            acct.exec_buy_cost += dc
        else:
            acct.exec_sell_qty -= dq
            acct.exec_sell_cost += dc
        acct.touched = True
        self._touch_account(acct)

    def _reducible(self, o: _Order) -> int:
        """Contracts of `o` that would reduce its account's position."""
        q = o.acct.qty
        return max(0, q) if o.side == SELL else max(0, -q)

    def _trim_reduce_only(self, acct: _Account) -> None:
        """As BitMEX does when the position shrinks: resting ReduceOnly orders that together
        exceed what is left to reduce are amended down, least aggressive first (sells from
        the highest price, buys from the lowest; the later order first at one price), and
        canceled once nothing is left, so they can never open a position."""
        for side in (BUY, SELL):
            orders = [o for o in acct.open.values() if o.resting and o.reduce_only and o.side == side]
            if not orders:
                continue
            excess = sum(o.leaves for o in orders) - (max(0, acct.qty) if side == SELL else max(0, -acct.qty))
            if excess <= 0:
                continue
            orders.sort(key=lambda o: (o.tick if side == SELL else -o.tick, o.created))
            for o in reversed(orders):
                if excess <= 0:
                    break
                cut = min(excess, o.leaves)
                excess -= cut
                if cut == o.leaves:
                    self._close_order(o, TEXT_REDUCE_ONLY)
                else:
                    self._shrink(o, cut)

    def _shrink(self, o: _Order, cut: int) -> None:
        """The exchange amends a resting order down by `cut` contracts (it keeps its place)."""
        level = self._levels[o.side][o.tick]
        self._mark_dirty(o.side, o.tick, level)
        level.user -= cut
        o.leaves -= cut
        o.qty -= cut
        o.text = TEXT_REDUCE_ONLY_AMENDED
        o.updated = self.now()
        self._record_execution(o.acct, self._execution_row(o, "Replaced"))
        self._emit("order", "update", self._order_row(o), o.acct.key)
        self._touch_account(o.acct)

    def _close_order(self, o: _Order, text: str, status: str = "Canceled") -> dict:
        if o.resting:
            self._unrest(o)
        o.status = status
        o.leaves = 0
        o.text = text
        o.updated = self.now()
        o.acct.open.pop(o.id, None)
        self._record_execution(o.acct, self._execution_row(o, "Canceled"))
        row = self._order_row(o)
        self._emit("order", "update", row, o.acct.key)
        self._retire(o)
        self._touch_account(o.acct)
        return row

    def _retire(self, o: _Order) -> None:
        """Keep closed orders for a while (GET /order, clOrdID uniqueness), then forget."""
        acct = o.acct
        acct.closed.append(o)
        while len(acct.closed) > RECENT_ORDERS:
            old = acct.closed.popleft()
            acct.orders.pop(old.id, None)
            if acct.by_clid.get(old.clid) is old:
                del acct.by_clid[old.clid]

    def _record_execution(self, acct: _Account, row: dict) -> None:
        acct.executions.append(row)
        self._emit("execution", "insert", row, acct.key)

    def _cancel_many(self, acct: _Account, orders, text: str) -> list[dict]:
        return [self._close_order(o, text) for o in orders]

    # ------------------------------------------------------------------ accounts
    def add_account(self, api_key: str, secret: str, balance_xbt: float) -> None:
        if api_key in self._accounts:
            raise ValueError(f"account {api_key!r} already exists")
        sats = int(round(float(balance_xbt) * SATOSHI))
        self._accounts[api_key] = _Account(
            key=api_key,
            secret=secret,
            number=100_000 + len(self._accounts) + 1,
            deposited=sats,
            wallet=sats,
            leverage=1.0 / self.init_margin,
            created=self.now(),
        )

    def secret_for(self, api_key: str) -> str | None:
        acct = self._accounts.get(api_key)
        return None if acct is None else acct.secret

    def accounts(self) -> list[str]:
        return list(self._accounts)

    def _account(self, api_key: str) -> _Account:
        acct = self._accounts.get(api_key)
        if acct is None:
            raise ExchangeError(401, "Invalid API Key.")
        return acct

    def _check_symbol(self, symbol) -> None:
        if symbol not in (None, "", self.symbol):
            raise ExchangeError(400, f"Invalid symbol: {symbol}")

    # ------------------------------------------------------------------ order API
    def place_order(self, api_key: str, **params) -> dict:
        """POST /order. Rejections raise ExchangeError; cancellations the rules impose
        (post-only cross, IOC/FOK remainder, ReduceOnly) return the Canceled row."""
        acct = self._account(api_key)
        o = self._new_order(acct, params)
        reason = self._entry_cancel_reason(o)
        if reason is None:
            price = self._expected_price(o)
            need = self._order_margin(acct, extra=(o.side, o.leaves, price, o.reduce_only)) - self._order_margin(acct)
            if need > 0 and need > self._numbers(acct)["available"]:
                raise ExchangeError(400, ERR_BALANCE.format(need=need), "ValidationError")
        acct.orders[o.id] = o
        if o.clid:
            acct.by_clid[o.clid] = o
        if reason is not None:
            o.leaves = 0
            o.status = "Canceled"
            o.text = reason
            self._record_execution(acct, self._execution_row(o, "Canceled"))
            self._emit("order", "insert", self._order_row(o), acct.key)
            self._retire(o)
            self._flush()
            return self._order_row(o)
        acct.open[o.id] = o
        self._record_execution(acct, self._execution_row(o, "New"))
        self._emit("order", "insert", self._order_row(o), acct.key)
        self._touch_account(acct)
        self._execute(o)
        self._check_liquidations()
        self._flush()
        return self._order_row(o)

    def _execute(self, o: _Order) -> None:
        """Match a new or repriced order as taker, then rest or cancel the rest."""
        self._match(o.side, o.leaves, o.tick, o)
        if not o.is_open:
            return
        if o.ord_type == "Market":
            self._close_order(o, TEXT_NO_LIQUIDITY)
        elif o.tif == "ImmediateOrCancel":
            self._close_order(o, TEXT_IOC)
        elif o.reduce_only and self._reducible(o) == 0:
            self._close_order(o, TEXT_CLOSE if "Close" in o.exec_inst else TEXT_REDUCE_ONLY)
        else:
            self._rest(o)

    def _entry_cancel_reason(self, o: _Order) -> str | None:
        opp = SELL if o.side == BUY else BUY
        if o.reduce_only and self._reducible(o) == 0:
            return TEXT_CLOSE if "Close" in o.exec_inst else TEXT_REDUCE_ONLY
        if o.post_only and self._crosses(o.side, o.tick, self._best_tick(opp)):
            return TEXT_POST_ONLY
        if o.tif == "FillOrKill" and self._fillable(o) < o.leaves:
            return TEXT_FOK
        return None

    def _fillable(self, o: _Order) -> int:
        """Contracts the book could give `o` right now (FillOrKill pre-check)."""
        opp = SELL if o.side == BUY else BUY
        ticks = self._ticks[opp] if o.side == BUY else reversed(self._ticks[opp])
        total = 0
        for t in ticks:
            if o.tick is not None and not self._crosses(o.side, o.tick, t) or total >= o.leaves:
                break
            total += self._levels[opp][t].size
        return min(total, self._reducible(o)) if o.reduce_only else total

    def _new_order(self, acct: _Account, p: dict) -> _Order:
        self._check_symbol(p.get("symbol"))
        unsupported = [k for k in ("stopPx", "pegPriceType", "pegOffsetValue", "contingencyType") if p.get(k)]
        if unsupported:
            raise ExchangeError(400, f"Unsupported parameter in simulator: {unsupported[0]}")
        inst = [x.strip() for x in str(p.get("execInst") or "").split(",") if x.strip()]
        if any(x not in EXEC_INSTS for x in inst):
            raise ExchangeError(400, f"Invalid execInst: {p.get('execInst')}")
        close = "Close" in inst
        side = p.get("side") or None
        qty = self._int_param(p, "orderQty")
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
        if qty <= 0 and not close or qty > self.max_order_qty:
            raise ExchangeError(400, "Invalid orderQty")
        if qty % self.lot_size:
            raise ExchangeError(400, f"Order quantity must be a multiple of lot size: {self.lot_size}")
        price = p.get("price")
        ord_type = p.get("ordType") or ("Market" if price is None else "Limit")
        if ord_type not in ("Limit", "Market"):
            raise ExchangeError(400, f"Unsupported ordType in simulator: {ord_type}")
        if ord_type == "Limit":
            price, tick = self._price_param(price)
        else:
            price, tick = None, None
        tif = p.get("timeInForce") or ("ImmediateOrCancel" if ord_type == "Market" else "GoodTillCancel")
        if tif not in ("GoodTillCancel", "ImmediateOrCancel", "FillOrKill"):
            raise ExchangeError(400, f"Invalid timeInForce: {tif}")
        if "ParticipateDoNotInitiate" in inst and (ord_type != "Limit" or tif != "GoodTillCancel"):
            raise ExchangeError(400, "ParticipateDoNotInitiate requires a GoodTillCancel Limit order")
        clid = self._clid_param(acct, p.get("clOrdID"))
        now = self.now()
        return _Order(
            id=self._uuid(),
            clid=clid,
            acct=acct,
            side=side,
            qty=qty,
            price=price,
            tick=tick,
            ord_type=ord_type,
            tif=tif,
            exec_inst=",".join(inst),
            text=str(p.get("text") or TEXT_SUBMITTED),
            created=now,
            leaves=qty,
            updated=now,
        )

    @staticmethod
    def _int_param(p: dict, name: str) -> int | None:
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

    def _price_param(self, price) -> tuple[float, int]:
        try:
            price = float(price)
        except (TypeError, ValueError):
            raise ExchangeError(400, "Invalid price") from None
        if not math.isfinite(price) or price <= 0 or price > self.max_price:
            raise ExchangeError(400, "Invalid price")
        if not self._is_tick(price):
            raise ExchangeError(400, "Invalid price tickSize")
        tick = self._to_tick(price)
        return tick * self.tick_size, tick

    def _clid_param(self, acct: _Account, clid) -> str:
        clid = "" if clid is None else str(clid)
        if len(clid) > 36:
            raise ExchangeError(400, "Invalid clOrdID: longer than 36 characters")
        if clid and clid in acct.by_clid:
            raise ExchangeError(400, ERR_DUPLICATE)
        return clid

    def _find_order(self, acct: _Account, order_id=None, clid=None) -> _Order | None:
        if order_id:
            return acct.orders.get(str(order_id))
        if clid:
            return acct.by_clid.get(str(clid))
        return None

    def amend_order(self, api_key: str, **params) -> dict:
        """PUT /order: price, orderQty or leavesQty. A price change or a size increase
        loses time priority; a decrease keeps it. A leavesQty sent within 60 s of a limit
        order's last fill makes a Filled order live again, as BitMEX documents."""
        acct = self._account(api_key)
        if not params.get("orderID") and not params.get("origClOrdID"):
            raise ExchangeError(400, "Either an orderID or a origClOrdID must be provided")
        o = self._find_order(acct, params.get("orderID"), params.get("origClOrdID"))
        if o is None:
            raise ExchangeError(404, ERR_NOT_FOUND)
        order_qty = self._int_param(params, "orderQty")
        leaves_qty = self._int_param(params, "leavesQty")
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
        if leaves < 0 or (o.cum + leaves) % self.lot_size:
            raise ExchangeError(400, "Invalid leavesQty" if leaves_qty is not None else "Invalid orderQty")
        price, tick = o.price, o.tick
        if params.get("price") not in (None, ""):
            if o.ord_type != "Limit":
                raise ExchangeError(400, "Invalid price")
            price, tick = self._price_param(params["price"])
        new_clid = params.get("clOrdID")
        if new_clid and new_clid != o.clid:
            self._clid_param(acct, new_clid)
        need = self._order_margin(acct, extra=(o.side, leaves, price, o.reduce_only), skip=o)
        need -= self._order_margin(acct)
        if need > 0 and need > self._numbers(acct)["available"]:
            raise ExchangeError(400, ERR_BALANCE.format(need=need), "ValidationError")
        if revive:  # BitMEX: a leavesQty amend within REVIVE_WINDOW_S of the fill makes it live again
            acct.closed.remove(o)
            acct.open[o.id] = o
            o.status = "PartiallyFilled"
        if new_clid and new_clid != o.clid:
            if acct.by_clid.get(o.clid) is o:
                del acct.by_clid[o.clid]
            o.clid = str(new_clid)
            acct.by_clid[o.clid] = o
        text = str(params.get("text") or TEXT_AMENDED)
        if leaves == 0:
            row = self._close_order(o, text)
            self._flush()
            return row
        requeue = tick != o.tick or leaves > o.leaves
        if o.resting and requeue:
            self._unrest(o)
        elif o.resting:
            level = self._levels[o.side][o.tick]
            self._mark_dirty(o.side, o.tick, level)
            level.user -= o.leaves - leaves
        o.qty, o.leaves, o.price, o.tick, o.text = o.cum + leaves, leaves, price, tick, text
        o.updated = self.now()
        opp = SELL if o.side == BUY else BUY
        if o.post_only and self._crosses(o.side, o.tick, self._best_tick(opp)):
            row = self._close_order(o, TEXT_POST_ONLY)
            self._flush()
            return row
        self._record_execution(acct, self._execution_row(o, "Replaced"))
        self._emit("order", "update", self._order_row(o), acct.key)
        self._touch_account(acct)
        if not o.resting:
            self._execute(o)
        self._check_liquidations()
        self._flush()
        return self._order_row(o)

    def _revivable(self, o: _Order, leaves_qty: int | None) -> bool:
        """A Filled limit order may be made live again by a positive leavesQty soon after its fill."""
        return (o.status == "Filled" and o.ord_type == "Limit" and o.tick is not None  # not a liquidation
                and leaves_qty is not None and leaves_qty > 0
                and self.now() - o.updated <= REVIVE_WINDOW_S and o in o.acct.closed)

    def cancel_orders(self, api_key: str, orderID=None, clOrdID=None, text=None) -> list[dict]:
        """DELETE /order. Closed orders come back with an "error" field; if none of the
        ids is known at all the answer is 404 Not Found."""
        acct = self._account(api_key)
        if not orderID and not clOrdID:
            raise ExchangeError(400, "Either an orderID or a clOrdID must be provided")
        wanted = [("orderID", x) for x in self._id_list(orderID)]
        wanted += [("clOrdID", x) for x in self._id_list(clOrdID)]
        rows, known = [], 0
        for kind, ident in wanted:
            o = self._find_order(acct, ident if kind == "orderID" else None, ident if kind == "clOrdID" else None)
            if o is None:
                rows.append({kind: ident, "error": ERR_NOT_FOUND})
                continue
            known += 1
            if o.is_open:
                rows.append(self._close_order(o, str(text or TEXT_CANCELED)))
            else:
                row = self._order_row(o)
                row["error"] = ERR_CANCEL_STATE.format(status=o.status)
                rows.append(row)
        if not known:
            raise ExchangeError(404, ERR_NOT_FOUND)
        self._flush()
        return rows

    @staticmethod
    def _id_list(value) -> list[str]:
        if not value:
            return []
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        return [str(value)]

    def cancel_all(self, api_key: str, symbol=None, text=None, order_ids=None) -> list[dict]:
        """DELETE /order/all: every open order, or only those in `order_ids` (a filter's matches)."""
        acct = self._account(api_key)
        if symbol not in (None, "", self.symbol):
            return []
        wanted = None if order_ids is None else set(order_ids)
        orders = [o for o in acct.open.values() if wanted is None or o.id in wanted]
        rows = self._cancel_many(acct, orders, str(text or TEXT_CANCELED))
        self._flush()
        return rows

    def cancel_all_after(self, api_key: str, timeout_ms: int) -> dict:
        """Dead man's switch: cancel all the account's orders `timeout_ms` from now
        unless called again; 0 disarms it."""
        acct = self._account(api_key)
        now = self.now()
        timeout = float(timeout_ms or 0)
        if timeout <= 0:
            acct.cancel_at = None
            return {"now": iso(now), "cancelTime": 0}
        acct.cancel_at = now + timeout / 1000.0
        return {"now": iso(now), "cancelTime": iso(acct.cancel_at)}

    # ------------------------------------------------------------------ positions, margin
    def _imr(self, acct: _Account) -> float:
        return self.init_margin if acct.cross else max(1.0 / acct.leverage, self.init_margin)

    def _expected_price(self, o: _Order) -> float | None:
        if o.price is not None:
            return o.price
        far = self.best_ask() if o.side == BUY else self.best_bid()
        return far or self.last_price or self.mark_price

    def _order_margin(self, acct: _Account, extra=None, skip: _Order | None = None) -> int:
        """Initial margin of open orders (see `_open_exposure`)."""
        return int(round(self._open_exposure(acct, extra, skip) * self._imr(acct)))

    def _open_exposure(self, acct: _Account, extra=None, skip: _Order | None = None) -> float:
        """XBt value of open orders that would grow the position (grossOpenCost): only the
        larger of the two sides counts, since both cannot fill into new exposure."""
        qty = {BUY: 0, SELL: 0}
        value = {BUY: 0.0, SELL: 0.0}
        items = [(o.side, o.leaves, o.price or self._expected_price(o), o.reduce_only) for o in acct.open.values()
                 if o is not skip]
        if extra is not None:
            items.append(extra)
        for side, leaves, price, reduce_only in items:
            if reduce_only or not price or leaves <= 0:
                continue
            qty[side] += leaves
            value[side] += leaves * SATOSHI / price
        q = acct.qty
        grow = {BUY: max(0, qty[BUY] - max(0, -q)), SELL: max(0, qty[SELL] - max(0, q))}
        return max(value[s] * grow[s] / qty[s] if qty[s] else 0.0 for s in (BUY, SELL))

    def _numbers(self, acct: _Account) -> dict:
        """Margin arithmetic shared by the position and margin rows and liquidation."""
        q, c = acct.qty, acct.cost
        mark = self.mark_price or self.last_price
        if q and not mark:
            mark = abs(q) * SATOSHI / abs(c)
        mark_value = int(round(-q * SATOSHI / mark)) if q else 0
        upnl = mark_value - c if q else 0
        pos_init = int(round(abs(c) * self._imr(acct)))
        pos_comm = int(round(abs(c) * self.taker_fee))
        pos_margin = pos_init + pos_comm if q else 0
        pos_maint = int(round(abs(c) * self.maint_margin)) + pos_comm if q else 0
        open_value = self._open_exposure(acct)
        order_margin = int(round(open_value * self._imr(acct)))
        available = acct.wallet - order_margin - pos_margin + (upnl if acct.cross else 0)
        # margin the position may lose before it is bankrupt
        cover = pos_margin if not acct.cross else acct.wallet - order_margin
        liq = self._price_at_margin(q, c, cover - pos_maint) if q else 0.0
        bankrupt = self._price_at_margin(q, c, cover) if q else 0.0
        return {
            "mark": mark,
            "mark_value": mark_value,
            "upnl": upnl,
            "pos_init": pos_init,
            "pos_comm": pos_comm,
            "pos_margin": pos_margin,
            "pos_maint": pos_maint,
            "order_margin": order_margin,
            "open_value": int(round(open_value)),
            "available": available,
            "liq": self._round_liq(q, liq),
            "bankrupt": bankrupt,
        }

    def _price_at_margin(self, q: int, c: int, margin: float) -> float:
        """Price at which the position's loss equals `margin` XBt (inverse contract):
        long: 1/P = 1/E + m/(q*1e8); short: 1/P = 1/E - m/(|q|*1e8)."""
        n = abs(q) * SATOSHI
        inv = abs(c) / n + (margin / n if q > 0 else -margin / n)
        if inv <= 1.0 / self.max_price:
            return self.max_price
        return 1.0 / inv

    def _round_liq(self, q: int, price: float) -> float:
        """Liquidation prices round towards the entry (long up, short down) to a tick."""
        if not q:
            return 0.0
        steps = price / self.tick_size
        steps = math.ceil(steps - 1e-9) if q > 0 else math.floor(steps + 1e-9)
        return min(self.max_price, steps * self.tick_size)

    def _check_liquidations(self) -> None:
        """Move the mark to the last trade (unless disabled), then liquidate whoever
        is past their liquidation price."""
        if self._traded and self.mark_follows_trades:
            self._set_mark(self.last_price)
        for acct in self._accounts.values():
            if not acct.qty or (self.mark_price is None and self.last_price is None):
                continue
            n = self._numbers(acct)
            if (acct.qty > 0 and n["mark"] <= n["liq"]) or (acct.qty < 0 and n["mark"] >= n["liq"]):
                self._liquidate(acct)

    def _liquidate(self, acct: _Account) -> None:
        """Cancel the account's orders and close its position at the bankruptcy price:
        the position's whole margin is lost, as on BitMEX."""
        self._cancel_many(acct, list(acct.open.values()), TEXT_LIQUIDATION_CANCEL)
        price = self._numbers(acct)["bankrupt"]
        qty = abs(acct.qty)
        side = SELL if acct.qty > 0 else BUY
        now = self.now()
        o = _Order(
            id=self._uuid(), clid="", acct=acct, side=side, qty=qty, price=price, tick=None,
            ord_type="Limit", tif="ImmediateOrCancel", exec_inst="Close", text=TEXT_LIQUIDATION,
            created=now, leaves=qty, updated=now,
        )
        acct.orders[o.id] = o
        self._emit("liquidation", "insert", {"orderID": o.id, "symbol": self.symbol, "side": side,
                                             "price": price, "leavesQty": qty})
        self._emit("order", "insert", self._order_row(o), acct.key)
        self._fill(o, qty, price, maker=False, rate=0.0)
        self._emit("liquidation", "delete", {"orderID": o.id, "symbol": self.symbol})

    def set_leverage(self, api_key: str, symbol, leverage: float) -> dict:
        """POST /position/leverage: 0 = cross margin, else isolated at `leverage`x."""
        acct = self._account(api_key)
        self._check_symbol(symbol)
        try:
            leverage = float(leverage)
        except (TypeError, ValueError):
            raise ExchangeError(400, "Invalid leverage") from None
        if not math.isfinite(leverage) or leverage < 0 or leverage > 1.0 / self.init_margin + 1e-9:
            raise ExchangeError(400, f"Invalid leverage: must be 0 (cross) to {1.0 / self.init_margin:g}")
        old = (acct.cross, acct.leverage)
        if leverage == 0:
            acct.cross = True
        else:
            acct.cross, acct.leverage = False, max(leverage, 0.01)
        self._require_non_negative(acct, old)
        return self._position_changed(acct)

    def isolate(self, api_key: str, symbol, enabled: bool) -> dict:
        """POST /position/isolate: isolated keeps the last isolated leverage."""
        acct = self._account(api_key)
        self._check_symbol(symbol)
        old = (acct.cross, acct.leverage)
        acct.cross = not enabled
        self._require_non_negative(acct, old)
        return self._position_changed(acct)

    def _require_non_negative(self, acct: _Account, old: tuple[bool, float]) -> None:
        n = self._numbers(acct)
        if acct.qty and n["available"] < 0:
            acct.cross, acct.leverage = old
            raise ExchangeError(400, ERR_BALANCE.format(need=-n["available"]), "ValidationError")

    def _position_changed(self, acct: _Account) -> dict:
        acct.touched = True
        self._touch_account(acct)
        self._check_liquidations()
        self._flush()
        return self._position_row(acct)

    # ------------------------------------------------------------------ funding
    def _funding_row(self, t: float, rate: float) -> dict:
        return {
            "timestamp": iso(t),
            "symbol": self.symbol,
            "fundingInterval": "2000-01-01T08:00:00.000Z",
            "fundingRate": rate,
            "fundingRateDaily": rate * 3,
        }

    def funding_rate_at(self, t: float) -> float:
        """Rate of the settlement at `t`: from history, else the latest earlier one,
        else the instrument's, else BitMEX's base 0.01 %."""
        i = bisect.bisect_left(self._funding_times, t - 1)
        if i < len(self._funding_times) and abs(self._funding_times[i] - t) < 1:
            return self._funding_rates[i]
        if i > 0:
            return self._funding_rates[i - 1]
        return float(self.instrument.get("fundingRate") or 0.0001)

    def _settle_funding(self, t: float) -> None:
        """Exchange funding at settlement `t`: value = |qty|/mark*1e8, payment =
        value*rate; longs pay shorts when the rate is positive."""
        rate = self.funding_rate_at(t)
        saved, self.event_time = self.event_time, t
        try:
            row = self._funding_row(t, rate)
            i = bisect.bisect_left(self._funding_times, t - 1)
            if not (i < len(self._funding_times) and abs(self._funding_times[i] - t) < 1):
                self._funding_times.insert(i, t)
                self._funding_rates.insert(i, rate)
                self._funding_row_list.insert(i, row)
            self._emit("funding", "insert", row)
            mark = self.mark_price or self.last_price
            for acct in self._accounts.values():
                if acct.qty and mark:
                    self._pay_funding(acct, mark, rate)
            self._next_funding = t + FUNDING_INTERVAL
            nxt = self._next_funding
            self._emit("instrument", "update", {
                "symbol": self.symbol,
                "fundingTimestamp": iso(nxt),
                "fundingRate": self.funding_rate_at(nxt),
                "indicativeFundingRate": self.funding_rate_at(nxt + FUNDING_INTERVAL),
                "timestamp": self._ts(),
            })
        finally:
            self.event_time = saved

    def _pay_funding(self, acct: _Account, mark: float, rate: float) -> None:
        value = int(round(abs(acct.qty) * SATOSHI / mark))
        paid = int(round(value * rate)) * (1 if acct.qty > 0 else -1)  # > 0: the account pays
        acct.wallet -= paid
        acct.funding_paid += paid
        now = self.now()
        row = {
            "execID": self._uuid(), "orderID": "00000000-0000-0000-0000-000000000000", "clOrdID": "",
            "clOrdLinkID": "", "account": acct.number, "symbol": self.symbol, "side": "",
            "lastQty": acct.qty, "lastPx": mark, "underlyingLastPx": None, "lastMkt": "XBME",
            "lastLiquidityInd": "", "orderQty": acct.qty, "price": mark, "displayQty": None, "stopPx": None,
            "currency": "USD", "settlCurrency": "XBt", "execType": "Funding", "ordType": "Funding",
            "timeInForce": "", "execInst": "", "ordStatus": "Filled", "workingIndicator": False,
            "ordRejReason": "", "leavesQty": 0, "cumQty": acct.qty, "avgPx": mark, "commission": rate,
            "tradePublishIndicator": "", "text": "Funding", "trdMatchID": "", "execCost": 0,
            "execComm": paid, "homeNotional": -value / SATOSHI if acct.qty > 0 else value / SATOSHI,
            "foreignNotional": float(acct.qty), "transactTime": iso(now), "timestamp": iso(now),
        }
        self._record_execution(acct, row)
        self._touch_account(acct)

    # ------------------------------------------------------------------ rows
    def _order_row(self, o: _Order) -> dict:
        ts = iso(o.updated)
        return {
            "orderID": o.id, "clOrdID": o.clid, "clOrdLinkID": "", "account": o.acct.number,
            "symbol": self.symbol, "side": o.side, "simpleOrderQty": None, "orderQty": o.qty,
            "price": o.price, "displayQty": None, "stopPx": None, "pegOffsetValue": None,
            "pegPriceType": "", "currency": "USD", "settlCurrency": "XBt", "ordType": o.ord_type,
            "timeInForce": o.tif, "execInst": o.exec_inst, "contingencyType": "", "exDestination": "XBME",
            "ordStatus": o.status, "triggered": "", "workingIndicator": o.is_open, "ordRejReason": "",
            "simpleLeavesQty": None, "leavesQty": o.leaves, "simpleCumQty": None, "cumQty": o.cum,
            "avgPx": round(o.cum / o.inv_sum, 4) if o.cum else None,
            "multiLegReportingType": "SingleSecurity", "text": o.text, "transactTime": ts, "timestamp": ts,
        }

    def _execution_row(self, o: _Order, exec_type: str) -> dict:
        row = self._order_row(o)
        row.update(
            execID=self._uuid(), execType=exec_type, lastQty=0, lastPx=None, underlyingLastPx=None,
            lastMkt="", lastLiquidityInd="", commission=None, tradePublishIndicator="",
            trdMatchID="", execCost=0, execComm=0, homeNotional=None, foreignNotional=None,
        )
        return row

    def _position_row(self, acct: _Account, n: dict | None = None) -> dict:
        n = n or self._numbers(acct)
        q, c = acct.qty, acct.cost
        ts = self._ts()
        entry = abs(q) * SATOSHI / abs(c) if q else None
        buy_open = sum(o.leaves for o in acct.open.values() if o.side == BUY)
        sell_open = sum(o.leaves for o in acct.open.values() if o.side == SELL)
        buy_cost = sum(o.leaves * SATOSHI / o.price for o in acct.open.values() if o.side == BUY and o.price)
        sell_cost = sum(o.leaves * SATOSHI / o.price for o in acct.open.values() if o.side == SELL and o.price)
        realised = acct.realised_gross - acct.comm - acct.funding_paid
        return {
            "account": acct.number, "symbol": self.symbol, "currency": "XBt", "underlying": "XBT",
            "quoteCurrency": "USD", "commission": self.taker_fee, "initMarginReq": self._imr(acct),
            "maintMarginReq": self.maint_margin, "riskLimit": self.risk_limit,
            "leverage": 1.0 / self.init_margin if acct.cross else acct.leverage,
            "crossMargin": acct.cross, "deleveragePercentile": None, "rebalancedPnl": 0,
            "prevRealisedPnl": 0, "prevUnrealisedPnl": 0, "prevClosePrice": self.last_price,
            "openingTimestamp": iso(acct.opening_time), "openingQty": 0, "openingCost": 0, "openingComm": 0,
            "openOrderBuyQty": buy_open, "openOrderBuyCost": -int(round(buy_cost)), "openOrderBuyPremium": 0,
            "openOrderSellQty": sell_open, "openOrderSellCost": int(round(sell_cost)), "openOrderSellPremium": 0,
            "grossOpenCost": n["open_value"], "grossOpenPremium": 0, "grossExecCost": abs(c),
            "execBuyQty": acct.exec_buy_qty, "execBuyCost": acct.exec_buy_cost,
            "execSellQty": acct.exec_sell_qty, "execSellCost": acct.exec_sell_cost,
            "execQty": acct.exec_buy_qty - acct.exec_sell_qty,
            "execCost": acct.exec_buy_cost + acct.exec_sell_cost, "execComm": acct.exec_comm,
            "currentTimestamp": ts, "currentQty": q, "currentCost": c, "currentComm": acct.comm,
            "realisedCost": 0, "unrealisedCost": c, "isOpen": q != 0,
            "markPrice": n["mark"] if q else self.mark_price, "markValue": n["mark_value"],
            "riskValue": abs(n["mark_value"]), "homeNotional": q / n["mark"] if q else 0.0,
            "foreignNotional": float(-q), "posState": "", "posCost": c, "posCost2": c, "posCross": 0, "posLoss": 0,
            "posInit": n["pos_init"], "posComm": n["pos_comm"], "posMargin": n["pos_margin"],
            "posMaint": n["pos_maint"], "initMargin": n["order_margin"], "maintMargin": n["pos_margin"] + (n["upnl"] if not acct.cross else 0),
            "realisedGrossPnl": acct.realised_gross, "realisedPnl": realised,
            "unrealisedGrossPnl": n["upnl"], "unrealisedPnl": n["upnl"],
            "unrealisedPnlPcnt": round(n["upnl"] / abs(c), 4) if c else 0.0,
            "unrealisedRoePcnt": round(n["upnl"] / n["pos_init"], 4) if n["pos_init"] else 0.0,
            "avgCostPrice": entry, "avgEntryPrice": entry,
            "breakEvenPrice": self._price_at_margin(q, c, -acct.comm) if q else None,
            "marginCallPrice": n["liq"] if q else None, "liquidationPrice": n["liq"] if q else None,
            "bankruptPrice": n["bankrupt"] if q else None, "timestamp": ts,
            "lastPrice": self.last_price, "lastValue": n["mark_value"],
        }

    def _margin_row(self, acct: _Account, n: dict | None = None) -> dict:
        n = n or self._numbers(acct)
        balance = acct.wallet + n["upnl"]
        used = n["order_margin"] + n["pos_margin"]
        return {
            "account": acct.number, "currency": "XBt", "riskLimit": self.risk_limit, "amount": acct.wallet,
            "prevRealisedPnl": 0, "grossComm": acct.exec_comm, "grossOpenCost": n["open_value"], "grossOpenPremium": 0,
            "grossExecCost": abs(acct.cost), "grossMarkValue": abs(n["mark_value"]),
            "riskValue": abs(n["mark_value"]), "initMargin": n["order_margin"], "maintMargin": n["pos_margin"],
            "targetExcessMargin": 0,
            "realisedPnl": acct.realised_gross - acct.comm - acct.funding_paid, "unrealisedPnl": n["upnl"],
            "walletBalance": acct.wallet, "marginBalance": balance,
            "marginLeverage": round(abs(n["mark_value"]) / balance, 4) if balance > 0 else 0.0,
            "marginUsedPcnt": round(used / balance, 4) if balance > 0 else 1.0,
            "excessMargin": n["available"], "availableMargin": n["available"],
            "withdrawableMargin": max(0, min(n["available"], acct.wallet)),
            "makerFeeDiscount": 0, "takerFeeDiscount": 0, "timestamp": self._ts(),
            "foreignMarginBalance": balance, "foreignRequirement": n["pos_maint"],
        }

    def _wallet_row(self, acct: _Account) -> dict:
        return {
            "account": acct.number, "currency": "XBt", "prevDeposited": 0, "prevWithdrawn": 0,
            "prevTransferIn": 0, "prevTransferOut": 0, "prevAmount": acct.deposited, "deltaDeposited": 0,
            "deltaWithdrawn": 0, "deltaTransferIn": 0, "deltaTransferOut": 0,
            "deltaAmount": acct.wallet - acct.deposited, "deposited": acct.deposited, "withdrawn": 0,
            "transferIn": 0, "transferOut": 0, "amount": acct.wallet, "pendingCredit": 0, "pendingDebit": 0,
            "confirmedDebit": 0, "prevTimestamp": iso(acct.created), "timestamp": self._ts(), "addr": "", "script": "", "withdrawalLock": [],
        }

    # ------------------------------------------------------------------ public views
    def instrument_row(self) -> dict:
        touch = self._touch_fields()
        nxt = self._next_funding
        open_interest = self._open_interest()
        row = dict(self.instrument)
        row.update(touch)
        row.update(
            symbol=self.symbol, state="Open", fundingTimestamp=iso(nxt),
            fundingInterval="2000-01-01T08:00:00.000Z", fundingRate=self.funding_rate_at(nxt),
            indicativeFundingRate=self.funding_rate_at(nxt + FUNDING_INTERVAL),
            lastPrice=self.last_price, lastTickDirection=self._tick_direction,
            markPrice=self.mark_price, fairPrice=self.mark_price, markMethod="FairPrice",
            indexPrice=self.mark_price, indicativeSettlePrice=self.mark_price, fairBasis=0.0, fairBasisRate=0.0,
            volume=self._volume, turnover=self._turnover, totalVolume=self._volume, totalTurnover=self._turnover,
            openInterest=open_interest, openValue=self._open_value(open_interest),
            hasLiquidity=touch["bidPrice"] is not None or touch["askPrice"] is not None, timestamp=self._ts(),
        )
        return row

    def l2_rows(self, depth: int | None = None) -> list[dict]:
        """Book image as BitMEX sends it: asks then bids, each from high to low price."""
        ts = self._ts()
        asks = self._ticks[SELL] if depth is None else self._ticks[SELL][: max(0, depth)]
        bids = self._ticks[BUY] if depth is None else self._ticks[BUY][len(self._ticks[BUY]) - max(0, depth):]
        rows = []
        for side, ticks in ((SELL, asks), (BUY, bids)):
            for tick in reversed(ticks):
                price = tick * self.tick_size
                rows.append({"symbol": self.symbol, "id": self._level_id(price), "side": side,
                             "size": self._levels[side][tick].size, "price": price, "timestamp": ts})
        return rows

    def _quote_tuple(self) -> tuple:
        b, a = self._best_tick(BUY), self._best_tick(SELL)
        return (
            b, self._levels[BUY][b].size if b is not None else None,
            a, self._levels[SELL][a].size if a is not None else None,
        )

    def quote_row(self) -> dict:
        b, bs, a, asz = self._quote_tuple()
        return {
            "timestamp": self._ts(), "symbol": self.symbol, "bidSize": bs,
            "bidPrice": None if b is None else b * self.tick_size,
            "askPrice": None if a is None else a * self.tick_size, "askSize": asz,
        }

    def trades(self, count=100, start=0, reverse=False, startTime=None, endTime=None) -> list[dict]:
        return query_rows(self._trades, self._trade_times, count, start, reverse, startTime, endTime)

    def funding_rows(self, count=100, start=0, reverse=False, startTime=None, endTime=None) -> list[dict]:
        """Settled funding history up to now (recorded history plus simulated settlements)."""
        n = bisect.bisect_right(self._funding_times, self.now())
        return query_rows(self._funding_row_list[:n], self._funding_times[:n], count, start, reverse,
                          startTime, endTime)

    # ------------------------------------------------------------------ account views
    def orders(self, api_key: str, open_only: bool = False) -> list[dict]:
        acct = self._account(api_key)
        source = acct.open if open_only else acct.orders
        return [self._order_row(o) for o in source.values()]

    def positions(self, api_key: str) -> list[dict]:
        acct = self._account(api_key)
        return [self._position_row(acct)] if acct.touched else []

    def margin(self, api_key: str) -> dict:
        return self._margin_row(self._account(api_key))

    def wallet(self, api_key: str) -> dict:
        return self._wallet_row(self._account(api_key))

    def executions(self, api_key: str) -> list[dict]:
        return list(self._account(api_key).executions)
