"""The simulated BitMEX exchange for one inverse perpetual: the façade that the server,
the backtester and the tests drive. A pure model with no I/O, no threads and no wall
clock, because all three need the same matching and inverse-contract arithmetic and must
be able to drive it deterministically.

It wires the parts and owns what spans them: the accounts and their margin checks, the
mark price and liquidation, funding settlement, and the flow of rows to subscribers.
The parts are matching.py (book, matching, order lifecycle), margin.py (the arithmetic),
funding.py (the settlement schedule), accounts.py (account state) and rows.py (BitMEX's
shapes and texts).

For users of this class:
- `Exchange(instrument, clock, *, maker_fee, taker_fee, funding=[(t, rate)], funding_cycle=None,
  seed=0, mark_follows_trades=True)`. `seed` seeds the ids (orderID, execID, trdMatchID) so
  runs repeat. `funding_cycle=(origin, period)` repeats the recorded rates as a looping replay
  repeats its bars (see funding.Funding).
- `subscribe(callback)`: `callback(table, action, rows, account_key_or_None)` after each
  change. The book delta comes first, then the queued rows, then the account summaries.
- `set_levels([(side, price, size), ...])` batches `set_level` into one book message;
  `clear_market_levels()` removes all replayed liquidity (account orders stay);
  `market_order(side, qty, limit_price=None)` is an outside taker. `market_size(side, price)`
  is the replayed liquidity at a price (account orders excluded), and `replay_taken` counts
  the replayed contracts that account orders took (the feed refills them).
- `event_time`: when not None it is used instead of `clock.now()`. The feed sets it while it
  applies events scheduled in the past, so rows carry their scheduled time. `now()` never
  goes backwards: a row is never stamped before one already emitted.
- `best_bid()`, `best_ask()`, `last_price` and `mark_price` are read-only views.
- `mark_follows_trades=True`: after trades print, the mark moves to the last price, so
  liquidation works when tests drive trades. `set_mark_price` sets it until the next trade.
- `trades(count=100, start=0, reverse=False, startTime=None, endTime=None)` and
  `funding_rows(...)` take the same keywords; times may be epoch seconds or ISO text.
- Cancelling an order id the account never had raises 404 "Not Found". Cancelling a
  closed order returns its row with an "error" field, as BitMEX does.
- Rejections raise `ExchangeError`. Cancels that the rules impose (a post-only order that
  would cross, the remainder of an IOC or FOK order, ReduceOnly) return the Canceled row.
"""

from __future__ import annotations

import math
import random
import uuid

from sniper.model import BUY, CLOSE, IOC, SATOSHI, SELL, iso
from sniper.sim import rows
from sniper.sim.accounts import Account
from sniper.sim.funding import BASE_RATE, Funding
from sniper.sim.margin import (
    Contract,
    Margins,
    contract_value,
    funding_payment,
    initial_margin_req,
    margins,
    open_exposure,
    price_at_loss,
)
from sniper.sim.matching import LIMIT, Matching, Order
from sniper.sim.rows import (
    ERR_BALANCE,
    ERR_CANCEL_STATE,
    ERR_NOT_FOUND,
    ERR_TIMEOUT,
    LAST_TIMESTAMP,
    TEXT_CANCEL_ALL_AFTER,
    TEXT_CANCELED,
    TEXT_LIQUIDATION,
    TEXT_LIQUIDATION_CANCEL,
    ExchangeError,
    query_rows,
)


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
        funding_cycle: tuple[float, float] | None = None,
        seed: int = 0,
        mark_follows_trades: bool = True,
    ) -> None:
        self.instrument = dict(instrument)
        self.instrument["makerFee"] = float(maker_fee)
        self.instrument["takerFee"] = float(taker_fee)
        self.contract = Contract.of(self.instrument)
        self.symbol = self.contract.symbol
        self.tick_size = self.contract.tick_size
        self.lot_size = self.contract.lot_size
        self.clock = clock
        self.mark_follows_trades = mark_follows_trades
        self.event_time: float | None = None
        self._last_now = float("-inf")
        self._rng = random.Random(seed)
        self._subs: list = []
        self._accounts: dict[str, Account] = {}
        self._pending: dict[tuple[str, str, str | None], list] = {}
        self._dirty_accounts: dict[str, Account] = {}
        self._last_quote: tuple | None = None
        self._open_interest_sent = 0
        self._ts_cache = (None, "")
        self.mark_price: float | None = None
        self.matching = Matching(self.contract, now=self.now, new_id=self._uuid, emit=self._emit,
                                 touched=self._touch_account)
        self.book = self.matching.book
        self.funding = Funding(self.symbol, funding, self.now(), self.instrument.get("fundingRate") or BASE_RATE,
                               funding_cycle)

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

    def _touch_account(self, acct: Account) -> None:
        self._dirty_accounts[acct.key] = acct

    def _flush(self) -> None:
        """Send the book delta, then the queued rows, then account summaries."""
        out: list[tuple[str, str, list, str | None]] = []
        if self.book.dirty:
            out.extend(self._book_messages())
        quote = self.book.touch()
        if quote != self._last_quote and (quote[0] is not None or quote[2] is not None):
            if self._last_quote is None or quote[0::2] != self._last_quote[0::2]:
                self._emit_touch()
            self._last_quote = quote
            out.append(("quote", "insert", [self.quote_row()], None))
        for (table, action, account), queued in self._pending.items():
            out.append((table, action, queued, account))
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
                m = self._margins(acct)
                if acct.touched:
                    action = "update" if acct.announced else "insert"
                    acct.announced = True
                    out.append(("position", action, [self._position_row(acct, m)], acct.key))
                out.append(("margin", "update", [rows.margin_row(acct, m, self.contract.risk_limit, self._ts())],
                            acct.key))
                if acct.wallet != acct.wallet_sent:
                    acct.wallet_sent = acct.wallet
                    out.append(("wallet", "update", [rows.wallet_row(acct, self._ts())], acct.key))
        for msg in out:
            for cb in self._subs:
                cb(*msg)

    def _book_messages(self) -> list:
        """The orderBookL2 delete/update/insert messages for the levels changed since the last flush."""
        delta = self.book.delta(self.symbol, self._ts())
        return [("orderBookL2", action, queued, None) for action, queued in delta.items() if queued]

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

    def _open_value(self, open_interest: int) -> int:
        """XBt value of the open interest at the mark."""
        mark = self.mark_price or self.last_price
        return contract_value(open_interest, mark) if mark else 0

    # ------------------------------------------------------------------ market views
    @property
    def last_price(self) -> float | None:
        return self.matching.last_price

    @property
    def replay_taken(self) -> int:
        return self.matching.replay_taken

    def best_bid(self) -> float | None:
        return self.book.best_price(BUY)

    def best_ask(self) -> float | None:
        return self.book.best_price(SELL)

    def market_size(self, side: str, price: float) -> int:
        """Replayed (market-maker) liquidity at `price`, excluding account orders."""
        return self.matching.market_size(side, price)

    # ------------------------------------------------------------------ market driving
    def set_level(self, side: str, price: float, size: int) -> None:
        """Market-maker liquidity at `price` becomes `size` (0 removes it)."""
        self.matching.set_market(side, price, size)
        self._after_market_change()

    def set_levels(self, levels) -> None:
        """Apply many (side, price, size) changes as one book message."""
        for side, price, size in levels:
            self.matching.set_market(side, price, size)
        self._after_market_change()

    def clear_market_levels(self) -> None:
        """Remove all replayed liquidity; account orders stay in the book."""
        self.matching.clear_market()
        self._after_market_change()

    def market_order(self, side: str, qty: int, limit_price: float | None = None) -> list[dict]:
        """An outside taker: trades against the book (account orders included) and
        returns the trade rows it printed."""
        printed = self.matching.outside_taker(side, qty, limit_price)
        self._after_market_change()
        return printed

    def set_mark_price(self, price: float) -> None:
        self._set_mark(float(price))
        self._after_market_change()

    def _set_mark(self, price: float) -> None:
        self.matching.traded = False
        if price == self.mark_price:
            return
        self.mark_price = price
        self._emit("instrument", "update", {
            "symbol": self.symbol, "markPrice": price, "fairPrice": price, "indexPrice": price,
            "indicativeSettlePrice": price, "openValue": self._open_value(self._open_interest()),
            "timestamp": self._ts(),
        })
        for acct in self._accounts.values():
            if acct.qty:
                self._touch_account(acct)

    def advance(self) -> None:
        """Run what is due at the current time: funding, cancelAllAfter, liquidation."""
        now = self.now()
        while self.funding.next <= now:
            self._settle_funding(self.funding.next)
        for acct in self._accounts.values():
            if acct.cancel_at is not None and acct.cancel_at <= now:
                acct.cancel_at = None
                self.matching.close_all(list(acct.open.values()), TEXT_CANCEL_ALL_AFTER)
        self._after_market_change()

    def _after_market_change(self) -> None:
        self._check_liquidations()
        self._flush()

    # ------------------------------------------------------------------ accounts
    def add_account(self, api_key: str, secret: str, balance_xbt: float) -> None:
        if api_key in self._accounts:
            raise ValueError(f"account {api_key!r} already exists")
        sats = int(round(float(balance_xbt) * SATOSHI))
        self._accounts[api_key] = Account(
            key=api_key, secret=secret, number=100_000 + len(self._accounts) + 1, deposited=sats, wallet=sats,
            leverage=1.0 / self.contract.init_margin, created=self.now(),
        )

    def secret_for(self, api_key: str) -> str | None:
        acct = self._accounts.get(api_key)
        return None if acct is None else acct.secret

    def accounts(self) -> list[str]:
        return list(self._accounts)

    def _account(self, api_key: str) -> Account:
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
        o = self.matching.new_order(acct, params)
        reason = self.matching.entry_cancel_reason(o)
        if reason is None:
            self._require_margin(acct, (o.side, o.leaves, self._expected_price(o), o.reduce_only))
        self.matching.enter(o, reason)
        if reason is None:
            self._check_liquidations()
        self._flush()
        return self.matching.order_row(o)

    def amend_order(self, api_key: str, **params) -> dict:
        """PUT /order: price, orderQty or leavesQty. A price change or a size increase
        loses time priority; a decrease keeps it. A leavesQty sent within 60 s of a limit
        order's last fill makes a Filled order live again, as BitMEX documents."""
        acct = self._account(api_key)
        a = self.matching.amend_request(acct, params)
        o = a.order
        self._require_margin(acct, (o.side, a.leaves, a.price, o.reduce_only), skip=o)
        closed = self.matching.amend(a)
        if closed is not None:
            self._flush()
            return closed
        self._check_liquidations()
        self._flush()
        return self.matching.order_row(o)

    def cancel_orders(self, api_key: str, orderID=None, clOrdID=None, text=None) -> list[dict]:
        """DELETE /order. Closed orders come back with an "error" field; if none of the
        ids is known at all the answer is 404 Not Found."""
        acct = self._account(api_key)
        if not orderID and not clOrdID:
            raise ExchangeError(400, "Either an orderID or a clOrdID must be provided")
        wanted = [("orderID", x) for x in _id_list(orderID)] + [("clOrdID", x) for x in _id_list(clOrdID)]
        out, known = [], 0
        for kind, ident in wanted:
            o = self.matching.find(acct, ident if kind == "orderID" else None, ident if kind == "clOrdID" else None)
            if o is None:
                out.append({kind: ident, "error": ERR_NOT_FOUND})
                continue
            known += 1
            if o.is_open:
                out.append(self.matching.close(o, str(text or TEXT_CANCELED)))
            else:
                row = self.matching.order_row(o)
                row["error"] = ERR_CANCEL_STATE.format(status=o.status)
                out.append(row)
        if not known:
            raise ExchangeError(404, ERR_NOT_FOUND)
        self._flush()
        return out

    def cancel_all(self, api_key: str, symbol=None, text=None, order_ids=None) -> list[dict]:
        """DELETE /order/all: every open order, or only those in `order_ids` (a filter's matches)."""
        acct = self._account(api_key)
        if symbol not in (None, "", self.symbol):
            return []
        wanted = None if order_ids is None else set(order_ids)
        orders = [o for o in acct.open.values() if wanted is None or o.id in wanted]
        out = self.matching.close_all(orders, str(text or TEXT_CANCELED))
        self._flush()
        return out

    def cancel_all_after(self, api_key: str, timeout_ms: int) -> dict:
        """Dead man's switch: cancel all the account's orders `timeout_ms` from now
        unless called again; 0 disarms it. A deadline past the last time a timestamp can
        write is refused (400) and leaves the switch as it was."""
        acct = self._account(api_key)
        now = self.now()
        timeout = float(timeout_ms or 0)
        if timeout <= 0:
            acct.cancel_at = None
            return {"now": iso(now), "cancelTime": 0}
        deadline = now + timeout / 1000.0
        if not deadline <= LAST_TIMESTAMP:
            raise ExchangeError(400, ERR_TIMEOUT, "ValidationError")
        acct.cancel_at = deadline
        return {"now": iso(now), "cancelTime": iso(deadline)}

    # ------------------------------------------------------------------ margin
    def _imr(self, acct: Account) -> float:
        return initial_margin_req(acct.cross, acct.leverage, self.contract.init_margin)

    def _expected_price(self, o: Order) -> float | None:
        """Where an order is expected to fill: its limit, else the far touch, else the last or mark price."""
        if o.price is not None:
            return o.price
        far = self.best_ask() if o.side == BUY else self.best_bid()
        return far or self.last_price or self.mark_price

    def _exposure(self, acct: Account, extra=None, skip: Order | None = None) -> float:
        """grossOpenCost of the open orders, with `extra` (side, leavesQty, price, reduce_only),
        an order to be, and without `skip`."""
        items = [(o.side, o.leaves, o.price or self._expected_price(o), o.reduce_only)
                 for o in acct.open.values() if o is not skip]
        if extra is not None:
            items.append(extra)
        return open_exposure(items, acct.qty)

    def _order_margin(self, acct: Account, extra=None, skip: Order | None = None) -> int:
        return int(round(self._exposure(acct, extra, skip) * self._imr(acct)))

    def _require_margin(self, acct: Account, extra: tuple, skip: Order | None = None) -> None:
        """Refuse an order (side, leavesQty, price, reduce_only) whose extra margin the account lacks."""
        need = self._order_margin(acct, extra, skip) - self._order_margin(acct)
        if need > 0 and need > self._margins(acct).available:
            raise ExchangeError(400, ERR_BALANCE.format(need=need), "ValidationError")

    def _margins(self, acct: Account) -> Margins:
        return margins(acct.qty, acct.cost, acct.wallet, self.mark_price or self.last_price, self._exposure(acct),
                       cross=acct.cross, imr=self._imr(acct), contract=self.contract)

    def _check_liquidations(self) -> None:
        """Move the mark to the last trade (unless disabled), then liquidate whoever
        is past their liquidation price."""
        if self.matching.traded and self.mark_follows_trades:
            self._set_mark(self.last_price)
        for acct in self._accounts.values():
            if not acct.qty or (self.mark_price is None and self.last_price is None):
                continue
            m = self._margins(acct)
            if (acct.qty > 0 and m.mark <= m.liq) or (acct.qty < 0 and m.mark >= m.liq):
                self._liquidate(acct)

    def _liquidate(self, acct: Account) -> None:
        """Cancel the account's orders and close its position at the bankruptcy price:
        the position's whole margin is lost, as on BitMEX."""
        self.matching.close_all(list(acct.open.values()), TEXT_LIQUIDATION_CANCEL)
        price = self._margins(acct).bankrupt
        qty = abs(acct.qty)
        side = SELL if acct.qty > 0 else BUY
        now = self.now()
        o = Order(
            id=self._uuid(), clid="", acct=acct, side=side, qty=qty, price=price, tick=None, ord_type=LIMIT,
            tif=IOC, exec_inst=CLOSE, text=TEXT_LIQUIDATION, created=now, leaves=qty, updated=now,
        )
        acct.orders[o.id] = o
        self._emit("liquidation", "insert", {"orderID": o.id, "symbol": self.symbol, "side": side,
                                             "price": price, "leavesQty": qty})
        self._emit("order", "insert", self.matching.order_row(o), acct.key)
        self.matching.fill(o, qty, price, maker=False, rate=0.0)
        self._emit("liquidation", "delete", {"orderID": o.id, "symbol": self.symbol})

    def set_leverage(self, api_key: str, symbol, leverage: float) -> dict:
        """POST /position/leverage: 0 = cross margin, else isolated at `leverage`x."""
        acct = self._account(api_key)
        self._check_symbol(symbol)
        try:
            leverage = float(leverage)
        except (TypeError, ValueError):
            raise ExchangeError(400, "Invalid leverage") from None
        top = 1.0 / self.contract.init_margin
        if not math.isfinite(leverage) or leverage < 0 or leverage > top + 1e-9:
            raise ExchangeError(400, f"Invalid leverage: must be 0 (cross) to {top:g}")
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

    def _require_non_negative(self, acct: Account, old: tuple[bool, float]) -> None:
        available = self._margins(acct).available
        if acct.qty and available < 0:
            acct.cross, acct.leverage = old
            raise ExchangeError(400, ERR_BALANCE.format(need=-available), "ValidationError")

    def _position_changed(self, acct: Account) -> dict:
        acct.touched = True
        self._touch_account(acct)
        self._after_market_change()
        return self._position_row(acct)

    # ------------------------------------------------------------------ funding
    def _settle_funding(self, t: float) -> None:
        """Settle funding at `t`: each position pays (or receives) `margin.funding_payment`
        at the mark; the instrument then announces the next settlement."""
        saved, self.event_time = self.event_time, t
        try:
            rate, row = self.funding.settle(t)
            self._emit("funding", "insert", row)
            mark = self.mark_price or self.last_price
            for acct in self._accounts.values():
                if acct.qty and mark:
                    self._pay_funding(acct, mark, rate)
            self._emit("instrument", "update",
                       {"symbol": self.symbol, **self.funding.instrument_fields(), "timestamp": self._ts()})
        finally:
            self.event_time = saved

    def _pay_funding(self, acct: Account, mark: float, rate: float) -> None:
        paid = funding_payment(acct.qty, mark, rate)
        acct.pay_funding(paid)
        row = rows.funding_execution_row(acct, self.symbol, self._uuid(), iso(self.now()), mark, rate,
                                         contract_value(acct.qty, mark), paid)
        self.matching.record(acct, row)
        self._touch_account(acct)

    # ------------------------------------------------------------------ public views
    def instrument_row(self) -> dict:
        touch = self._touch_fields()
        open_interest = self._open_interest()
        row = dict(self.instrument)
        row.update(touch)
        row.update(
            symbol=self.symbol, state="Open", fundingInterval=rows.FUNDING_INTERVAL,
            **self.funding.instrument_fields(),
            lastPrice=self.last_price, lastTickDirection=self.matching.tick_direction,
            markPrice=self.mark_price, fairPrice=self.mark_price, markMethod="FairPrice",
            indexPrice=self.mark_price, indicativeSettlePrice=self.mark_price, fairBasis=0.0, fairBasisRate=0.0,
            volume=self.matching.volume, turnover=self.matching.turnover, totalVolume=self.matching.volume,
            totalTurnover=self.matching.turnover, openInterest=open_interest,
            openValue=self._open_value(open_interest),
            hasLiquidity=touch["bidPrice"] is not None or touch["askPrice"] is not None, timestamp=self._ts(),
        )
        return row

    def l2_rows(self, depth: int | None = None) -> list[dict]:
        """Book image as BitMEX sends it: asks then bids, each from high to low price."""
        ts = self._ts()
        return [rows.level_row(self.symbol, side, price, size, ts) for side, price, size in self.book.image(depth)]

    def quote_row(self) -> dict:
        b, bid_size, a, ask_size = self.book.touch()
        tick = self.tick_size
        return rows.quote_row(self.symbol, self._ts(), None if b is None else b * tick, bid_size,
                              None if a is None else a * tick, ask_size)

    def trades(self, count=100, start=0, reverse=False, startTime=None, endTime=None) -> list[dict]:
        return query_rows(self.matching.trades, self.matching.trade_times, count, start, reverse, startTime,
                          endTime)

    def funding_rows(self, count=100, start=0, reverse=False, startTime=None, endTime=None) -> list[dict]:
        """Settled funding history up to now (recorded history plus simulated settlements)."""
        return self.funding.rows(self.now(), count, start, reverse, startTime, endTime)

    # ------------------------------------------------------------------ account views
    def _position_row(self, acct: Account, m: Margins | None = None) -> dict:
        q = acct.qty
        return rows.position_row(
            acct, m or self._margins(acct), self.contract, self._ts(), imr=self._imr(acct),
            last_price=self.last_price, mark_price=self.mark_price,
            break_even=price_at_loss(q, acct.cost, -acct.comm, self.contract.max_price) if q else None,
        )

    def orders(self, api_key: str, open_only: bool = False) -> list[dict]:
        acct = self._account(api_key)
        source = acct.open if open_only else acct.orders
        return [self.matching.order_row(o) for o in source.values()]

    def positions(self, api_key: str) -> list[dict]:
        acct = self._account(api_key)
        return [self._position_row(acct)] if acct.touched else []

    def margin(self, api_key: str) -> dict:
        acct = self._account(api_key)
        return rows.margin_row(acct, self._margins(acct), self.contract.risk_limit, self._ts())

    def wallet(self, api_key: str) -> dict:
        return rows.wallet_row(self._account(api_key), self._ts())

    def executions(self, api_key: str) -> list[dict]:
        return list(self._account(api_key).executions)

    def account_state(self, api_key: str) -> dict:
        """Everything a request can change of an account, as one comparable dict: its orders
        (open ones in full), executions, position, margin mode, wallet and dead man's switch.
        Lets a test or a rehearsal see that a refused request changed nothing."""
        acct = self._account(api_key)
        return {
            "open": [[o.id, o.clid, o.side, o.price, o.qty, o.leaves, o.text] for o in acct.open.values()],
            "orders": len(acct.orders), "executions": len(acct.executions), "qty": acct.qty, "cost": acct.cost,
            "cross": acct.cross, "leverage": acct.leverage, "wallet": acct.wallet,
            "cancelAt": None if acct.cancel_at is None else iso(acct.cancel_at),
        }


def _id_list(value) -> list[str]:
    if not value:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]
