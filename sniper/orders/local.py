"""The in-process venue: a `sniper.sim.exchange.Exchange` in this process, one account of it.

For backtests and parity tests: the same executor, order manager and reconciliation as the
daemon, against the same exchange model the simulator server serves, with no sockets and no
threads. Everything is synchronous: a write is applied before it returns and the live view
(kept from the rows the exchange emits, through `Exchange.subscribe`) already shows it, so a
write's confirmation is immediate and `wait` never blocks: nothing changes here until the
caller steps the market (`Feed.step_until`, `Exchange.advance`, `set_levels`, `market_order`).
Drive it with `Executor.settle()` after each such step, never with the executor's thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from sniper.model import TERMINAL_ORD_STATUSES
from sniper.orders.venue import Refused, contracts
from sniper.sim.exchange import Exchange, ExchangeError


@contextlib.contextmanager
def _refusals():
    """The model raises only for requests it refused before changing anything."""
    try:
        yield
    except ExchangeError as exc:
        raise Refused(f"{exc.status} {exc.name}: {exc.message}") from exc


@dataclass(frozen=True)
class LocalSnapshot:
    """The live view of a LocalVenue: always complete, one session for ever."""

    best_bid: float | None
    best_ask: float | None
    mark_price: float | None
    instrument: Mapping
    position: Mapping | None
    margin: Mapping | None
    orders: tuple = field(default_factory=tuple)
    ready: bool = True
    reconnects: int = 0


class LocalVenue:
    """`exchange`'s account `api_key` (created beforehand with `Exchange.add_account`)."""

    def __init__(self, exchange: Exchange, api_key: str) -> None:
        self.exchange, self.key = exchange, api_key
        inst = exchange.instrument_row()
        self.symbol = inst["symbol"]
        self._instrument = MappingProxyType({k: inst[k] for k in ("symbol", "tickSize", "lotSize")})
        self._by_clordid: dict[str, Mapping] = {}  # every order of ours the exchange showed, latest row
        self._open: dict[str, Mapping] = {}  # orderID -> row of the account's working orders
        for row in exchange.orders(api_key):
            self._order_row("insert", row)
        positions = exchange.positions(api_key)
        self._position: Mapping | None = positions[0] if positions else None
        self._margin: Mapping | None = exchange.margin(api_key)
        self._executions: list[Mapping] = []
        exchange.subscribe(self._on_rows)

    def _on_rows(self, table: str, action: str, rows: list, account: str | None) -> None:
        """The exchange's emitted rows for this account, as the websocket would stream them."""
        if account != self.key:
            return
        if table == "order":
            for row in rows:
                self._order_row(action, row)
        elif table == "execution":
            self._executions.extend(rows)
        elif table == "position":
            self._position = rows[-1]
        elif table == "margin":
            self._margin = rows[-1]

    def _order_row(self, action: str, row: Mapping) -> None:
        clordid, order_id = row.get("clOrdID"), row["orderID"]
        if clordid and not (action == "insert" and clordid in self._by_clordid):  # an insert never overtakes
            self._by_clordid[clordid] = row
        if row.get("ordStatus") in TERMINAL_ORD_STATUSES:
            self._open.pop(order_id, None)
        else:
            self._open[order_id] = row

    # ------------------------------------------------------------------ writes
    def place(self, request: dict) -> Mapping:
        with _refusals():
            return self.exchange.place_order(self.key, **request)

    def amend(self, clordid: str, **changes) -> Mapping:
        with _refusals():
            return self.exchange.amend_order(self.key, origClOrdID=clordid, **changes)

    def cancel(self, *, clordid: str | None = None, order_id: str | None = None, text: str = "") -> list[Mapping]:
        with _refusals():
            return self.exchange.cancel_orders(self.key, orderID=order_id, clOrdID=clordid, text=text or None)

    def cancel_all(self, text: str) -> list[Mapping]:
        with _refusals():
            return self.exchange.cancel_all(self.key, symbol=self.symbol, text=text)

    def dead_mans_switch(self, timeout_ms: int) -> None:
        with _refusals():
            self.exchange.cancel_all_after(self.key, timeout_ms)

    # ------------------------------------------------------------------ the exchange's records
    def open_orders(self) -> list[Mapping]:
        return self.exchange.orders(self.key, open_only=True)

    def lookup(self, clordid: str) -> Mapping | None:
        return self._by_clordid.get(clordid)

    def fills(self) -> list[Mapping]:
        return [r for r in self.exchange.executions(self.key) if r.get("execType") == "Trade"]

    def position(self) -> int:
        positions = self.exchange.positions(self.key)
        return contracts(positions[0] if positions else None)  # the one position reader of every venue

    # ------------------------------------------------------------------ the live view
    def snapshot(self) -> LocalSnapshot:
        ex = self.exchange
        return LocalSnapshot(ex.best_bid(), ex.best_ask(), ex.mark_price, self._instrument, self._position,
                             self._margin, tuple(self._open.values()))

    def order(self, clordid: str) -> Mapping | None:
        return self._by_clordid.get(clordid)

    def new_executions(self) -> Sequence[Mapping]:
        rows, self._executions = self._executions, []
        return rows

    def watermark(self, touch: bool = False) -> None:
        return None

    def wait(self, mark, timeout: float) -> bool:
        return False  # nothing changes until the caller steps the market: waiting could only hang
