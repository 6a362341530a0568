"""The shared market and account state: written by the websocket thread,
read by everyone else through immutable snapshots.

One lock (`State.lock`) guards everything; every critical section is short:
the orderBookL2 hot path runs in C (`_core.pyx`) and holds the lock for
the rows of one message, a snapshot holds it to copy the top levels and a
dozen references. Everything a snapshot hands out is immutable (rows are
replaced on update, never mutated), so nothing is deep-copied under the lock.

What it holds is market and account data, and whether that data is
complete: `begin_session(tables)` (called by the client once the socket is
up and authenticated) clears every table and names the partials to wait
for; the state is `ready` when all have arrived and the book is consistent
(one verdict, computed by the C snapshot, that every snapshot carries).
`mark_not_ready(reason)` ends it (disconnect, stale data, fatal error).
When the book contradicts the stream, `resync_reason` says so: the data
cannot become complete again without a new partial, so the client answers
with a reconnect.

The connection's protocol (acks, auth, server errors, back-off) is not the
state's: every frame that is not table data goes to the handler the
connection's owner registered (`hand_control_to`, see session.py).

Threads and the GIL: a reader waiting for the GIL while another thread runs
Python waits up to `sys.getswitchinterval()` (5 ms by default) whatever this
lock does. The daemon should call `configure_switch_interval()` once.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

from sniper import log
from sniper.clock import RealClock
from sniper.ws._core import Snapshot, StateCore
from sniper.ws.book import BookError, L2Book
from sniper.ws.tables import ACTIONS, DEFAULT_KEYS, OrderTable, Table, make_table

logger = logging.getLogger(__name__)

__all__ = ["State", "Snapshot", "PUBLIC_TABLES", "PRIVATE_TABLES", "configure_switch_interval"]

PUBLIC_TABLES = ("orderBookL2", "trade", "instrument", "funding")
PRIVATE_TABLES = ("order", "execution", "position", "margin", "wallet")
_PRIVATE = frozenset(PRIVATE_TABLES)
SWITCH_INTERVAL_S = 0.0005  # GIL slice; the measured trade-off is in benchmarks/bench_ws_state.py
EMPTY = MappingProxyType({})
_LOG_FIRST = 20  # bad messages of one kind logged in full; then one in _LOG_EVERY
_LOG_EVERY = 1000
_LOG_CHARS = 600
# The fields the execution history keeps: what its readers take of an execution (the venue port's
# execution fields, the journal's fill record, a funding payment's commission). A BitMEX execution
# row has ~47 fields, ~3.9 KB parsed; these ~1.2 KB, so a full default history is ~12 MB, not ~41.
EXECUTION_FIELDS = ("execID", "execType", "orderID", "clOrdID", "side", "lastQty", "lastPx", "execComm",
                    "transactTime", "timestamp")


def configure_switch_interval(seconds: float = SWITCH_INTERVAL_S) -> float:
    """Shorten the GIL switch interval so snapshot readers (and the websocket
    thread itself) do not wait a 5 ms slice behind a busy thread; returns the
    previous value."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    return previous


def frame_text(raw) -> str:
    """A frame as log text: decoded, truncated, secrets and signatures redacted."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw).decode("utf-8", "replace")
    text = raw if isinstance(raw, str) else repr(raw)
    if len(text) > _LOG_CHARS:
        text = f"{text[:_LOG_CHARS]}... ({len(text)} chars)"
    return log.redact(text)


def _frozen(row: Mapping | None) -> Mapping | None:
    return None if row is None else MappingProxyType(row)


class State(StateCore):
    """Market and account state for one symbol; see the module docstring.

    `apply_message(raw)` and `snapshot(depth=25)` come from the C core;
    `clock.monotonic()` stamps every message, so `data_age` follows the clock.
    """

    def __init__(self, symbol: str = "XBTUSD", clock=None, *, execution_history: int = 10_000) -> None:
        self._monotonic = (clock or RealClock()).monotonic
        self._table_rx: dict[str, float] = {}  # table -> when its last message was applied (not the book's)
        self.tables: dict[str, Table] = {}
        self.expected: frozenset[str] = frozenset(PUBLIC_TABLES)
        self.partials: set[str] = set()
        self.errors: Counter[str] = Counter()  # bad input by kind, for metrics and tests
        self.dropped_before_partial = 0
        self._resync_reason: str | None = None
        self._control: Callable[[dict, object], None] | None = None
        self._executions: deque[tuple[int, Mapping]] = deque(maxlen=execution_history)
        self._exec_ids: OrderedDict[str, None] = OrderedDict()
        self._change_cv = threading.Condition(threading.Lock())  # private messages, touch moves
        self._publish_all()

    # ---- sessions and completeness ---------------------------------------------
    def begin_session(self, tables: Iterable[str]) -> None:
        """A new connection: clear every table, wait for these partials."""
        with self.lock:
            for table in self.tables.values():
                table.clear()
            self.book.invalidate("waiting for the orderBookL2 partial")
            self.partials.clear()
            self.expected = frozenset(tables)
            self.tables_ready = False
            self._resync_reason = None
            self.connected = True
            self._publish_all()
            self.reason = self._waiting_reason()

    def mark_not_ready(self, reason: str) -> None:
        """Stop new orders until a new session is ready (disconnect, stale...)."""
        with self.lock:
            repeated = not self.connected and self.reason == reason
            self.connected = False
            self.reason = reason
        if not repeated:
            logger.info("state not ready: %s", reason)

    def note_reconnect(self) -> int:
        with self.lock:
            self.reconnects += 1
            return self.reconnects

    @property
    def ready(self) -> bool:
        """Complete and current: the verdict a snapshot taken now carries."""
        return self.snapshot(0).ready

    @property
    def resync_reason(self) -> str | None:
        """Why the book cannot be trusted until a new partial (it contradicted the stream), else None."""
        return self._resync_reason

    def hand_control_to(self, handler: Callable[[dict, object], None]) -> None:
        """Send every JSON object that is not table data (acks, errors, info) to `handler`
        as (message, raw frame): they belong to whoever owns the connection. The latest
        handler wins; without one such frames count as bad input."""
        self._control = handler

    def _waiting_reason(self) -> str | None:
        missing = sorted(self.expected - self.partials)
        return f"waiting for partials: {', '.join(missing)}" if missing else None

    # ---- private-data helpers for the executor -------------------------------
    def wait_private(self, after_seq: int, timeout: float) -> int:
        """Block until private_seq > after_seq (an order/execution/position/
        margin/wallet message arrived) or `timeout` seconds; returns private_seq."""
        self.wait_change(after_seq, None, timeout)
        return self.private_seq

    def wait_change(self, private_after: int, touch: tuple | None, timeout: float) -> bool:
        """Block until a private message arrives after `private_after`, or (when
        `touch` is a (best_bid, best_ask) pair) the touch differs from it, or
        `timeout` seconds pass; True when something changed. A passive order
        chases the touch with this instead of polling the book."""
        def changed() -> bool:
            return self.private_seq > private_after or (touch is not None and self.touch() != touch)

        watching = touch is not None  # only a touch watcher asks the book's fast path to wake it
        with self._change_cv:
            self.touch_waiters += watching
            try:
                return self._change_cv.wait_for(changed, timeout)
            finally:
                self.touch_waiters -= watching

    def touch(self) -> tuple:
        """(best_bid, best_ask) now, either None while that side is empty or unknown."""
        with self.lock:
            return self.book.best_bid, self.book.best_ask

    def _wake_waiters(self) -> None:
        with self._change_cv:
            self._change_cv.notify_all()

    def executions_since(self, seq: int) -> tuple[Mapping, ...]:
        """Executions applied after private_seq was `seq`, oldest first (every
        execution ever received, up to `execution_history`, across reconnects),
        each with its EXECUTION_FIELDS only.
        Walks back from the newest only as far as needed, under the lock."""
        found = []
        with self.lock:
            for tag, row in reversed(self._executions):
                if tag <= seq:
                    break
                found.append(row)
        found.reverse()
        return tuple(found)

    def order_by_clordid(self, cl_ord_id: str) -> Mapping | None:
        """The open order with this clOrdID, else the most recently closed one."""
        return self._find_order("clOrdID", cl_ord_id)

    def order_by_id(self, order_id: str) -> Mapping | None:
        return self._find_order("orderID", order_id)

    def _find_order(self, field: str, value) -> Mapping | None:
        with self.lock:
            table = self.tables.get("order")
            row = table.find(field, value) if isinstance(table, OrderTable) else None
        return _frozen(row)

    def table_ages(self) -> dict[str, float]:
        """Seconds since each table other than orderBookL2 last changed (the book's frames take
        the C fast path, which keeps only the age of the newest message: Snapshot.data_age)."""
        now = self._monotonic()
        with self.lock:
            return {name: round(now - t, 3) for name, t in self._table_rx.items()}

    def table_rows(self, name: str) -> list[Mapping]:
        """Read-only copies of a table's rows ([] before its partial)."""
        with self.lock:
            table = self.tables.get(name)
            rows = table.rows() if table is not None and table.has_partial else []
        return [MappingProxyType(row) for row in rows]

    # ---- the slow path of apply_message --------------------------------------
    def _apply_slow(self, msg, raw, t: float) -> None:
        try:
            self._dispatch(msg, raw, t)
        except Exception as exc:  # a bug here must not kill the websocket thread
            logger.exception("failed to apply a message")
            self.note_bad("internal error", raw, repr(exc))

    def _dispatch(self, msg, raw, t: float) -> None:
        if msg is None:
            self.note_bad("malformed JSON", raw)
        elif not isinstance(msg, dict):
            self.note_bad("not a JSON object", raw)
        elif "table" in msg:
            self._apply_table(msg, raw, t)
        elif self._control is not None:
            self._control(msg, raw)
        else:
            self.note_bad("control frame without a session", raw)

    def _apply_table(self, msg: dict, raw, t: float) -> None:
        name, action, data = msg.get("table"), msg.get("action"), msg.get("data")
        if not isinstance(name, str) or (name != "orderBookL2" and name not in DEFAULT_KEYS):
            self.note_bad("unknown table", raw)
            return
        if action not in ACTIONS or not isinstance(data, list):
            self.note_bad("unknown action or no data list", raw)
            return
        keys = msg.get("keys")
        if action == "partial" and keys is not None and not (
                isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            self.note_bad("partial with malformed keys", raw)
            return
        if name == "orderBookL2":
            self._apply_book(action, data, raw, t)
            return
        problems: list[str] = []
        private = False
        with self.lock:
            table = self.tables.get(name)
            if table is None:
                table = self.tables[name] = make_table(name)
            if action != "partial" and not table.has_partial:
                self.dropped_before_partial += 1
                return
            touched, problems = table.apply(action, data, keys)
            if action == "partial":
                self._partial_arrived(name)
            if name == "execution":
                self._record_executions(touched)
            self._publish(name, None if action == "partial" else touched)
            self.seq += 1
            self.last_rx = self._table_rx[name] = t
            private = name in _PRIVATE
            if private:
                self.private_seq += 1
        if private:
            self._wake_waiters()
        if problems:
            self.note_bad(f"bad {name} rows", raw, "; ".join(problems[:3]))

    def _apply_book(self, action: str, data: list, raw, t: float) -> None:
        """orderBookL2 messages the C hot path leaves here: partials (built into
        a new book outside the lock, then swapped in) and frames that arrive
        while the book waits for its partial (dropped, as BitMEX prescribes)."""
        if action != "partial":
            with self.lock:
                self.dropped_before_partial += 1
            return
        book = L2Book(self.symbol)
        try:
            book.apply(action, data)
        except BookError:
            pass
        with self.lock:
            self._install_book(book)
            if book.valid:
                self._partial_arrived("orderBookL2")
            self.seq += 1
            self.last_rx = t
        if not book.valid:
            self._book_failed(raw)
        elif self.touch_waiters:
            self._wake_waiters()

    def _book_failed(self, raw) -> None:
        """The stream contradicts the book: never patch it, ask for a resync."""
        reason = f"orderBookL2 inconsistent ({self.book.error}); resync needed"
        with self.lock:
            self._resync_reason = reason
            if self.connected:  # else the connection's own reason stays first
                self.reason = reason
        self.note_bad("orderBookL2 inconsistent", raw, str(self.book.error))

    def _partial_arrived(self, name: str) -> None:
        self.partials.add(name)
        waiting = self._waiting_reason()
        self.tables_ready = waiting is None
        if self.connected:
            self.reason = waiting

    def _record_executions(self, rows: list[dict]) -> None:
        for row in rows:
            exec_id = row.get("execID")
            if exec_id in self._exec_ids:
                continue  # a new session's partial repeats recent executions
            self._exec_ids[exec_id] = None
            if len(self._exec_ids) > self._executions.maxlen:
                self._exec_ids.popitem(last=False)
            kept = {k: row[k] for k in EXECUTION_FIELDS if k in row}
            self._executions.append((self.private_seq + 1, MappingProxyType(kept)))

    # ---- publishing immutable views (under the lock) --------------------------
    def _publish_all(self) -> None:
        for name in ("instrument", "trade", "position", "margin", "wallet", "order"):
            self._publish(name)

    def _row_for_symbol(self, name: str, newest: bool = False) -> dict | None:
        table = self.tables.get(name)
        if table is None or not table.has_partial:
            return None
        rows = table.rows()
        for row in reversed(rows) if newest else rows:
            if row.get("symbol") == self.symbol:
                return row
        return None

    def _account_row(self, name: str) -> dict | None:
        table = self.tables.get(name)
        if table is None or not table.has_partial:
            return None
        rows = table.rows()
        return next((r for r in rows if r.get("currency") == "XBt"), rows[0] if rows else None)

    def _publish(self, name: str, touched: list[dict] | None = None) -> None:
        """Refresh the immutable views of table `name`; `touched` (the rows of
        an insert/update) lets the trade view skip rescanning its history."""
        if name == "instrument":
            row = self._row_for_symbol("instrument")
            self.instrument = EMPTY if row is None else MappingProxyType(row)
            row = row or {}
            self.funding_rate = row.get("fundingRate")
            self.funding_timestamp = row.get("fundingTimestamp")
            self.mark_price = row.get("markPrice")
        elif name == "trade":
            if touched is None:
                self.last_trade = _frozen(self._row_for_symbol("trade", newest=True))
            else:
                row = next((r for r in reversed(touched) if r.get("symbol") == self.symbol), None)
                if row is not None:
                    self.last_trade = MappingProxyType(row)
        elif name == "position":
            self.position = _frozen(self._row_for_symbol("position"))
        elif name in ("margin", "wallet"):
            setattr(self, name, _frozen(self._account_row(name)))
        elif name == "order":
            table = self.tables.get("order")
            rows = table.rows() if table is not None and table.has_partial else []
            self.orders = tuple(MappingProxyType(r) for r in rows if r.get("symbol") == self.symbol)

    # ---- the ledger of bad frames ---------------------------------------------------
    def note_bad(self, kind: str, raw, detail: str | None = None) -> None:
        """Count a frame that could not be used (here or by the session) under `kind` and log
        it with the (redacted, truncated) frame itself; a flood of one kind is thinned to one
        line in _LOG_EVERY, so bad input can neither go unseen nor drown the log."""
        self.errors[kind] += 1
        n = self.errors[kind]
        if n <= _LOG_FIRST or n % _LOG_EVERY == 0:
            suffix = f" (occurrence {n})" if n > _LOG_FIRST else ""
            detail = f": {log.redact(str(detail)[:_LOG_CHARS])}" if detail else ""
            logger.warning("%s%s%s; message: %s", kind, detail, suffix, frame_text(raw))
