"""SQLite journal of intents, order requests, acknowledgements and fills.

Why a journal: after a crash the process must know every clOrdID that *may*
have reached the exchange, so that reconciliation can look each one up before
anything new is sent. Hence the one hard rule, enforced by the executor: an
order's row is committed (WAL, synchronous=FULL, so it survives kill -9 and
power loss) before its request is written to the socket. Everything else
(intents, amend/cancel requests, acknowledgements, fills) is committed with
synchronous=NORMAL: it survives kill -9, costs no fsync on the tick-to-order
path, and is only ever a record of what the exchange itself also knows.

clOrdIDs are `<token>-<intent>-<n>`: `token` is random per journal file (so two
journals never collide on one account), `intent` the intent's row id and `n`
the order's number within that intent. Retrying a request reuses its clOrdID;
a new order always gets the next `n`, so the exchange's clOrdID uniqueness
makes a duplicate order impossible even when a reply is lost.

Intents are decisions, one row each: the strategy's Targets (`source` 'strategy') and the
risk gate's flatten on a kill (`source` 'risk'). Only a strategy intent is ever a standing
target: after a restart the executor resumes the last intent only when it is the strategy's.

Order status in the journal (`status` column):
  pending  journaled; the exchange may or may not have it (request sent or about to be)
  live     the exchange has acknowledged it and it is working
  done     terminal at the exchange (Filled, Canceled, Rejected); `ord_status` says which
  void     certainly never created (the exchange refused the request itself)

Exchange rows are read with the checked readers of model.py. A row with a garbled field (text
for a figure, a fraction of a contract, NaN) is refused whole: nothing of it is written, one
warning names the row and the field (once, though the live view shows it every cycle until the
exchange sends another), and the next good row of the same order or execution applies as usual.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from sniper.model import (
    NEW,
    REDUCE_ONLY,
    SIDES,
    TERMINAL_ORD_STATUSES,
    Unreadable,
    has_inst,
    number,
    side_sign,
    text,
    whole,
)

logger = logging.getLogger(__name__)

OPEN_STATUSES = ("pending", "live")
# SQLite's words for a journal it cannot write: disk full, read-only file or file system, I/O failure
_STORAGE_ERRORS = ("disk is full", "readonly", "read-only", "disk i/o error", "unable to open")
STRATEGY, RISK = "strategy", "risk"  # who made an intent's decision
REFUSALS_KEPT = 256  # refused rows remembered, so that one shown again every cycle is logged once

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS intents (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, qty INTEGER NOT NULL, style TEXT NOT NULL, reason TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'strategy');
CREATE TABLE IF NOT EXISTS orders (
    clordid TEXT PRIMARY KEY, intent_id INTEGER NOT NULL, n INTEGER NOT NULL,
    side TEXT NOT NULL, qty INTEGER NOT NULL, price REAL, ord_type TEXT NOT NULL,
    exec_inst TEXT NOT NULL DEFAULT '', time_in_force TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL, ord_status TEXT NOT NULL DEFAULT '', order_id TEXT,
    cum_qty INTEGER NOT NULL DEFAULT 0, leaves_qty INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL, updated REAL NOT NULL, UNIQUE (intent_id, n));
CREATE INDEX IF NOT EXISTS orders_status ON orders (status);
CREATE TABLE IF NOT EXISTS fills (
    exec_id TEXT PRIMARY KEY, clordid TEXT, side TEXT NOT NULL, qty INTEGER NOT NULL, price REAL NOT NULL,
    ts TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, clordid TEXT, data TEXT NOT NULL);
"""


class JournalUnwritable(Exception):
    """The journal cannot be written (disk full, read-only, I/O error). The transaction was rolled
    back whole, so nothing is half-written; and since an order is sent only after its row is
    committed, nothing may be sent until a write succeeds again."""


def _unwritable(path: str, exc: sqlite3.Error) -> JournalUnwritable | None:
    """`exc` as a JournalUnwritable when it says the storage refuses writes, else None. The file
    system is asked why, since SQLite's words ("unable to open database file") often do not say."""
    text = str(exc).lower()
    if not (isinstance(exc, sqlite3.OperationalError) and any(s in text for s in _STORAGE_ERRORS)):
        return None
    try:
        fs = os.statvfs(Path(path).parent)
        why = ("the file system is read-only" if fs.f_flag & os.ST_RDONLY
               else "the disk is full" if fs.f_bavail == 0 else "")
    except OSError as err:
        why = f"its directory cannot be examined: {err.strerror}"
    return JournalUnwritable(f"journal {path} cannot be written: {exc}" + (f" ({why})" if why else ""))


def _order_row(row: dict) -> dict:
    """An exchange order row's fields as the orders table's columns, None where the row has
    none; Unreadable, naming the field, when one is garbled."""
    return {"ord_status": text(row.get("ordStatus"), "ordStatus") or None,
            "order_id": text(row.get("orderID"), "orderID") or None,
            "cum_qty": whole(row.get("cumQty"), "cumQty", 0),
            "leaves_qty": whole(row.get("leavesQty"), "leavesQty", 0),
            "qty": whole(row.get("orderQty"), "orderQty", 0),
            "price": number(row.get("price"), "price")}


def _side(row: dict) -> str:
    side = row.get("side")
    if side not in SIDES:
        raise Unreadable(f"unreadable side {side!r:.40}")
    return side


def _fill_row(row: dict) -> tuple:
    """An execution row as the fills table's columns; Unreadable, naming the field, when one is
    garbled or missing (a fill without its quantity or price is no record)."""
    qty, price = whole(row.get("lastQty"), "lastQty", 1), number(row.get("lastPx"), "lastPx")
    if qty is None or price is None:
        raise Unreadable(f"missing {'lastQty' if qty is None else 'lastPx'}")
    when = text(row.get("transactTime"), "transactTime") or text(row.get("timestamp"), "timestamp") or ""
    return (text(row.get("execID"), "execID"), text(row.get("clOrdID"), "clOrdID"), _side(row), qty, price,
            when)


@dataclass(frozen=True)
class Intent:
    id: int
    ts: float
    qty: int
    style: str
    reason: str
    source: str = STRATEGY


@dataclass(frozen=True)
class OrderRecord:
    clordid: str
    intent_id: int
    n: int
    side: str
    qty: int
    price: float | None
    ord_type: str
    exec_inst: str
    time_in_force: str
    status: str
    ord_status: str
    order_id: str | None
    cum_qty: int
    leaves_qty: int
    created: float
    updated: float

    @property
    def sign(self) -> int:
        return side_sign(self.side)

    @property
    def reduce_only(self) -> bool:
        return has_inst(self.exec_inst, REDUCE_ONLY)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def request(self, symbol: str) -> dict:
        """The exact POST /order parameters this row stands for (re-sent verbatim on retry)."""
        params = {"symbol": symbol, "side": self.side, "orderQty": self.qty, "ordType": self.ord_type,
                  "clOrdID": self.clordid}
        if self.price is not None:
            params["price"] = self.price
        if self.exec_inst:
            params["execInst"] = self.exec_inst
        if self.time_in_force:
            params["timeInForce"] = self.time_in_force
        return params


class Journal:
    """One SQLite file; safe to call from several threads (one connection, one lock)."""

    def __init__(self, path: str | Path, clock, *, synchronous: str = "FULL") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise (_unwritable(self.path, exc) or exc) from exc
        self._synchronous = self._sync_now = synchronous
        self._open: dict[str, OrderRecord] = {}  # write-through cache of pending/live orders
        self._refused: dict[str, str] = {}  # refused row -> why, the latest REFUSALS_KEPT
        with self._tx():
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            if "source" not in {r["name"] for r in self._db.execute("PRAGMA table_info(intents)")}:
                # a journal written before intents had a source: all of them were the strategy's
                self._db.execute("ALTER TABLE intents ADD COLUMN source TEXT NOT NULL DEFAULT 'strategy'")
            row = self._db.execute("SELECT value FROM meta WHERE key='token'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('token', ?)", (secrets.token_hex(4),))
        self.token = self.get_meta("token")
        for row in self._query("SELECT * FROM orders WHERE status IN ('pending','live')"):
            self._open[row["clordid"]] = OrderRecord(**dict(row))

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _tx(self, durable: bool = False):
        """One committed transaction under the lock; rolled back on error. `durable` commits
        fsync (synchronous=FULL: survives power loss); the others survive a process crash
        (WAL, synchronous=NORMAL) and reach the disk with the next durable commit, since the
        WAL is written in order."""
        with self._lock:
            try:
                sync = self._synchronous if durable else "NORMAL"
                if sync != self._sync_now:
                    self._db.execute(f"PRAGMA synchronous={sync}")
                    self._sync_now = sync
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # SQLite rolls back by itself on some errors (disk full)
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                unwritable = _unwritable(self.path, exc)
                if unwritable is None:
                    raise
                raise unwritable from exc

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def check_writable(self) -> None:
        """Commit one durable write (raises JournalUnwritable while the storage refuses): how the
        executor learns that trading may resume after a full or read-only disk."""
        with self._tx(durable=True):
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('checked', ?)", (str(self._clock.now()),))

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _event(self, kind: str, clordid: str | None, data: dict) -> None:
        self._db.execute("INSERT INTO events (ts, kind, clordid, data) VALUES (?, ?, ?, ?)",
                         (self._clock.now(), kind, clordid, json.dumps(data, default=str, sort_keys=True)))

    # ------------------------------------------------------------------ intents
    def record_intent(self, qty: int, style: str, reason: str, source: str = STRATEGY) -> Intent:
        if source not in (STRATEGY, RISK):
            raise ValueError(f"intent source must be {STRATEGY!r} or {RISK!r}, got {source!r}")
        now = self._clock.now()
        with self._tx():
            cur = self._db.execute("INSERT INTO intents (ts, qty, style, reason, source) VALUES (?, ?, ?, ?, ?)",
                                   (now, int(qty), style, reason, source))
        return Intent(cur.lastrowid, now, int(qty), style, reason, source)

    def last_intent(self) -> Intent | None:
        rows = self._query("SELECT * FROM intents ORDER BY id DESC LIMIT 1")
        return Intent(**dict(rows[0])) if rows else None

    # ------------------------------------------------------------------ orders
    def new_order(self, intent_id: int, side: str, qty: int, price: float | None, ord_type: str,
                  exec_inst: str = "", time_in_force: str = "") -> OrderRecord:
        """Allocate the next clOrdID of `intent_id` and commit the request as `pending`.
        Only after this returns may the request be sent."""
        if side not in SIDES or qty <= 0:
            raise ValueError(f"bad order: {side} {qty}")
        now = self._clock.now()
        with self._tx(durable=True):
            n = self._db.execute("SELECT COALESCE(MAX(n), -1) + 1 FROM orders WHERE intent_id=?",
                                 (intent_id,)).fetchone()[0]
            clordid = f"{self.token}-{intent_id}-{n}"
            self._db.execute(
                "INSERT INTO orders (clordid, intent_id, n, side, qty, price, ord_type, exec_inst, time_in_force,"
                " status, leaves_qty, created, updated) VALUES (?,?,?,?,?,?,?,?,?,'pending',?,?,?)",
                (clordid, intent_id, n, side, int(qty), price, ord_type, exec_inst, time_in_force, int(qty), now, now))
            self._event("request", clordid, {"side": side, "qty": qty, "price": price, "ordType": ord_type,
                                             "execInst": exec_inst, "timeInForce": time_in_force})
        return self._reload(clordid)

    def adopt_order(self, row: dict) -> OrderRecord:
        """Journal a working exchange order we did not place (a stray kept by `stray_orders: adopt`),
        under intent 0, which is never a target. A garbled row raises Unreadable, naming the
        field, and nothing is written."""
        seen, side = _order_row(row), _side(row)
        if seen["order_id"] is None:
            raise Unreadable("missing orderID")
        clordid, ord_type, exec_inst, tif = (text(row.get(k), k) or "" for k in
                                             ("clOrdID", "ordType", "execInst", "timeInForce"))
        clordid = clordid or f"adopted-{seen['order_id']}"
        now = self._clock.now()
        with self._tx():
            n = self._db.execute("SELECT COALESCE(MAX(n), -1) + 1 FROM orders WHERE intent_id=0").fetchone()[0]
            self._db.execute(
                "INSERT OR IGNORE INTO orders (clordid, intent_id, n, side, qty, price, ord_type, exec_inst,"
                " time_in_force, status, ord_status, order_id, cum_qty, leaves_qty, created, updated)"
                " VALUES (?,0,?,?,?,?,?,?,?,'live',?,?,?,?,?,?)",
                (clordid, n, side, seen["qty"] or 0, seen["price"], ord_type or "Limit", exec_inst, tif,
                 seen["ord_status"] or NEW, seen["order_id"], seen["cum_qty"] or 0, seen["leaves_qty"] or 0,
                 now, now))
            self._event("adopt", clordid, {"orderID": seen["order_id"]})
        return self._reload(clordid)

    def _reload(self, clordid: str) -> OrderRecord | None:
        """Read a row back after a write and keep the open-order cache in step."""
        rows = self._query("SELECT * FROM orders WHERE clordid=?", (clordid,))
        rec = OrderRecord(**dict(rows[0])) if rows else None
        with self._lock:
            if rec is not None and rec.is_open:
                self._open[clordid] = rec
            else:
                self._open.pop(clordid, None)
        return rec

    def order(self, clordid: str) -> OrderRecord | None:
        """Our order of that clOrdID; None for one we never journaled (and for a clOrdID that is
        no text: a garbled row's, which would fail as a key)."""
        if not isinstance(clordid, str):
            return None
        rec = self._open.get(clordid)
        if rec is not None:
            return rec
        rows = self._query("SELECT * FROM orders WHERE clordid=?", (clordid,))
        return OrderRecord(**dict(rows[0])) if rows else None

    def open_orders(self) -> list[OrderRecord]:
        """Orders that are, or may be, at the exchange and working (pending or live), oldest first.
        Served from memory: this journal is their only writer."""
        with self._lock:
            return sorted(self._open.values(), key=lambda o: (o.created, o.clordid))

    def orders(self) -> list[OrderRecord]:
        rows = self._query("SELECT * FROM orders ORDER BY created, clordid")
        return [OrderRecord(**dict(r)) for r in rows]

    def update_from_exchange(self, row: dict) -> OrderRecord | None:
        """Fold an exchange order row (REST reply, websocket or lookup) into the journal.
        Returns the updated record, or None when the clOrdID is not ours; a garbled row is
        refused (see the module) and the record returned as it was."""
        clordid = row.get("clOrdID")
        current = self.order(clordid) if clordid else None
        if current is None:
            return None
        try:
            seen = _order_row(row)
        except Unreadable as exc:
            self.refuse(f"order row {clordid}", exc)
            return current
        self._accepted(f"order row {clordid}")
        if current.status == "done" or (seen["cum_qty"] is not None and seen["cum_qty"] < current.cum_qty):
            return current  # a stale row (e.g. a REST reply overtaken by the websocket): never go back
        ord_status = seen["ord_status"] or current.ord_status
        status = "done" if ord_status in TERMINAL_ORD_STATUSES else "live"
        fields = {"status": status, "ord_status": ord_status, "order_id": seen["order_id"] or current.order_id}
        fields |= {k: getattr(current, k) if seen[k] is None else seen[k]
                   for k in ("cum_qty", "leaves_qty", "qty", "price")}
        if status == "done":
            fields["leaves_qty"] = 0
        if all(getattr(current, k) == v for k, v in fields.items()):
            return current
        with self._tx():
            self._db.execute(
                "UPDATE orders SET status=?, ord_status=?, order_id=?, cum_qty=?, leaves_qty=?, qty=?, price=?,"
                " updated=? WHERE clordid=?",
                (*fields.values(), self._clock.now(), clordid))
            self._event("ack" if current.status == "pending" else "update", clordid,
                        {k: v for k, v in fields.items() if getattr(current, k) != v})
        return self._reload(clordid)

    def void_order(self, clordid: str, reason: str) -> None:
        """The exchange refused the request itself: the order certainly does not exist."""
        with self._tx():
            self._db.execute("UPDATE orders SET status='void', leaves_qty=0, updated=? WHERE clordid=?",
                             (self._clock.now(), clordid))
            self._event("void", clordid, {"reason": reason})
        self._reload(clordid)

    def record_request(self, kind: str, clordid: str, params: dict) -> None:
        """Journal an amend or cancel request before it is sent."""
        with self._tx():
            self._event(kind, clordid, params)

    def record_event(self, kind: str, data: dict, clordid: str | None = None) -> None:
        with self._tx():
            self._event(kind, clordid, data)

    def events(self, kind: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM events ORDER BY id", ()
        if kind:
            sql, args = "SELECT * FROM events WHERE kind=? ORDER BY id", (kind,)
        return [dict(r) | {"data": json.loads(r["data"])} for r in self._query(sql, args)]

    # ------------------------------------------------------------------ fills
    def record_fill(self, row: dict) -> bool:
        """Journal one execution of type Trade; idempotent by execID. True when new; False too
        for a garbled row, which is refused (see the module)."""
        if row.get("execType") != "Trade" or not row.get("execID"):
            return False
        what = f"execution {row['execID']!s:.40}"
        if row.get("clOrdID"):
            what += f" of order {row['clOrdID']!s:.40}"
        try:
            fill = _fill_row(row)
        except Unreadable as exc:
            self.refuse(what, exc)
            return False
        self._accepted(what)
        with self._tx():
            cur = self._db.execute(
                "INSERT OR IGNORE INTO fills (exec_id, clordid, side, qty, price, ts) VALUES (?,?,?,?,?,?)", fill)
            return cur.rowcount == 1

    def refuse(self, what: str, exc: Unreadable) -> None:
        """Say once why a row is refused, though it comes again (the live view shows an order's
        row every cycle, reconciliation lists the same executions), and again after a good one."""
        why = str(exc)
        with self._lock:
            if self._refused.get(what) == why:
                return
            self._refused.pop(what, None)
            self._refused[what] = why
            if len(self._refused) > REFUSALS_KEPT:
                del self._refused[next(iter(self._refused))]
        logger.warning("refused %s: %s; nothing of it is journaled", what, why)

    def _accepted(self, what: str) -> None:
        """A good row of `what`: a garbled one after it is news again."""
        if self._refused:
            with self._lock:
                self._refused.pop(what, None)

    def fills(self) -> list[dict]:
        return [dict(r) for r in self._query("SELECT * FROM fills ORDER BY ts, exec_id")]
