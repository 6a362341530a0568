"""Keyed tables with BitMEX's websocket semantics, for every table but
orderBookL2 (which is `book.L2Book`).

- `partial` replaces the whole table and may redefine its keys;
- `insert` adds rows (keyless tables such as trade just append);
- `update` merges the given fields into the row with the same keys: fields
  an update omits keep their earlier values;
- `delete` removes the row with the same keys.

Stored rows are never mutated: an update stores a new dict. That is what
lets the state hand the very same objects to readers as immutable snapshots
without copying them under the lock.

Problems (a row missing a key, an update for an unknown row...) are returned
to the caller, which logs them; they never raise and never half-apply a row.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping

from sniper.model import TERMINAL_ORD_STATUSES

ACTIONS = ("partial", "insert", "update", "delete")

# Keys BitMEX declares in each table's partial; used until a partial says
# otherwise. Tables not listed here are rejected as unknown.
DEFAULT_KEYS: dict[str, tuple[str, ...]] = {
    "instrument": ("symbol",),
    "trade": (),
    "funding": ("timestamp", "symbol"),
    "quote": (),
    "orderBook10": ("symbol",),
    "tradeBin1m": (),
    "tradeBin5m": (),
    "tradeBin1h": (),
    "tradeBin1d": (),
    "liquidation": ("orderID",),
    "settlement": (),
    "insurance": (),
    "order": ("orderID",),
    "execution": ("execID",),
    "position": ("account", "symbol"),
    "margin": ("account", "currency"),
    "wallet": ("account", "currency"),
    "transact": ("transactID",),
}

# Tables that only grow (history): keep the newest rows, like BitMEX's own
# clients do. Orders need no cap: closed orders leave the table.
HISTORY_ROWS = 1000
_GROWING = {"trade", "funding", "quote", "tradeBin1m", "tradeBin5m", "tradeBin1h", "tradeBin1d",
            "liquidation", "settlement", "insurance", "execution", "transact"}


class Table:
    """One BitMEX table. `rows()` is in arrival order; keyed lookups are O(1)."""

    def __init__(self, name: str, keys: Iterable[str] | None = None, maxlen: int | None = None) -> None:
        self.name = name
        self.keys: tuple[str, ...] = tuple(DEFAULT_KEYS.get(name, ()) if keys is None else keys)
        self.maxlen = maxlen if maxlen is not None else (HISTORY_ROWS if name in _GROWING else None)
        self.has_partial = False
        self._rows: OrderedDict[tuple, dict] | deque[dict] = self._empty()

    def _empty(self):
        return OrderedDict() if self.keys else deque(maxlen=self.maxlen)

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[dict]:
        return list(self._rows.values()) if self.keys else list(self._rows)

    def get(self, *key) -> dict | None:
        return self._rows.get(tuple(key)) if self.keys else None

    def clear(self) -> None:
        """Forget everything, including the partial (a new session starts)."""
        self._rows = self._empty()
        self.has_partial = False

    def key_of(self, row: Mapping) -> tuple:
        """The row's key tuple; KeyError names the missing key."""
        try:
            key = tuple(row[k] for k in self.keys)
            hash(key)
        except KeyError as exc:
            raise KeyError(f"row has no key field {exc.args[0]!r}") from None
        except TypeError:
            raise KeyError("row has an unhashable key field") from None
        return key

    def apply(self, action: str, data: list, keys: Iterable[str] | None = None) -> tuple[list[dict], list[str]]:
        """Apply one message; returns (rows stored or removed, problems)."""
        if action == "partial":
            if keys is not None:
                self.keys = tuple(keys)
            self._rows = self._empty()
            self.has_partial = True
            action = "insert"
        touched: list[dict] = []
        problems: list[str] = []
        for row in data:
            if not isinstance(row, dict):
                problems.append(f"row is not an object: {row!r}")
                continue
            problem = self._apply_row(action, row, touched)
            if problem:
                problems.append(problem)
        return touched, problems

    def _apply_row(self, action: str, row: dict, touched: list[dict]) -> str | None:
        if not self.keys:
            if action != "insert":
                return f"{action} on keyless table {self.name}"
            self._rows.append(row)
            touched.append(row)
            return None
        try:
            key = self.key_of(row)
        except KeyError as exc:
            return str(exc.args[0])
        old = self._rows.get(key)
        if action == "insert":
            self._store(key, row, touched)
        elif old is None:
            return self._missing(action, key, row, touched)
        elif action == "update":
            self._store(key, {**old, **row}, touched)
        else:
            self._remove(key, old, touched)
        return None

    def _missing(self, action: str, key: tuple, row: dict, touched: list[dict]) -> str | None:
        """An update or delete of a row the table does not hold: a problem."""
        return f"{action} of unknown {self.name} row {dict(zip(self.keys, key, strict=True))}"

    def _remove(self, key: tuple, row: dict, touched: list[dict]) -> None:
        del self._rows[key]
        touched.append(row)

    def _store(self, key: tuple, row: dict, touched: list[dict]) -> None:
        self._rows[key] = row
        touched.append(row)
        if self.maxlen is not None and len(self._rows) > self.maxlen:
            self._rows.popitem(last=False)


def order_is_open(row: Mapping) -> bool:
    """BitMEX keeps closed orders in the table with leavesQty 0; we do not. Closed: a
    terminal status (model.TERMINAL_ORD_STATUSES) or nothing left to fill. A status we do
    not know keeps the order open rather than hide an order that may still be working."""
    status = row.get("ordStatus")
    if isinstance(status, str) and status in TERMINAL_ORD_STATUSES:
        return False
    leaves = row.get("leavesQty")
    return not (isinstance(leaves, (int, float)) and leaves <= 0)


class OrderTable(Table):
    """The order table holds open orders only. An order that closes (filled,
    cancelled, rejected) leaves it for a bounded list of recently closed
    orders, so a caller can still learn how its order ended. Lookups by
    orderID or clOrdID are O(1): the executor makes them under the lock."""

    INDEXED = ("orderID", "clOrdID")

    def __init__(self, closed_history: int = 1000) -> None:
        super().__init__("order")
        self.closed: OrderedDict[str, dict] = OrderedDict()  # orderID -> last row, oldest first
        self._closed_history = closed_history
        self._reindex()

    def _reindex(self) -> None:
        """Index the closed orders only: orders open before a new partial may
        have closed unseen, so they must not be found until it lists them."""
        self._index: dict[str, dict] = {field: {} for field in self.INDEXED}
        for row in self.closed.values():
            self._note(row)

    def _note(self, row: dict) -> None:
        for field in self.INDEXED:
            value = row.get(field)
            if isinstance(value, str) and value:
                self._index[field][value] = row

    def clear(self) -> None:
        super().clear()
        self._reindex()

    def apply(self, action: str, data: list, keys: Iterable[str] | None = None) -> tuple[list[dict], list[str]]:
        if action == "partial":
            self._reindex()
        return super().apply(action, data, keys)

    def _store(self, key: tuple, row: dict, touched: list[dict]) -> None:
        self._note(row)
        if order_is_open(row):
            super()._store(key, row, touched)
        else:
            self._close(key, row, touched)

    def _remove(self, key: tuple, row: dict, touched: list[dict]) -> None:
        self._close(key, row, touched)

    def _missing(self, action: str, key: tuple, row: dict, touched: list[dict]) -> str | None:
        """BitMEX may still send a row for an order it has just closed (BitMEX's
        own client skips them): merge it into the closed record, which stays
        closed, instead of reporting an unknown order."""
        order_id = row.get("orderID")
        closed = self.closed.get(order_id) if isinstance(order_id, str) else None
        if closed is None:
            return super()._missing(action, key, row, touched)
        if action == "update":
            closed = self.closed[order_id] = {**closed, **row}
            self._note(closed)
        touched.append(closed)
        return None

    def _close(self, key: tuple, row: dict, touched: list[dict]) -> None:
        self._rows.pop(key, None)
        touched.append(row)
        order_id = row.get("orderID")
        if not isinstance(order_id, str):
            return
        self.closed.pop(order_id, None)
        self.closed[order_id] = row
        while len(self.closed) > self._closed_history:
            _, old = self.closed.popitem(last=False)
            for field in self.INDEXED:
                index = self._index[field]
                value = old.get(field)
                if isinstance(value, str) and index.get(value) is old:
                    del index[value]

    def find(self, field: str, value) -> dict | None:
        """The open order, else the most recently closed one, with row[field] == value
        (field: orderID or clOrdID)."""
        return self._index[field].get(value) if isinstance(value, str) else None


def make_table(name: str) -> Table:
    return OrderTable() if name == "order" else Table(name)
