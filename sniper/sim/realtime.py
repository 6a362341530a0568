"""The simulator's websocket side: BitMEX's `/realtime` protocol over the exchange model.

Fan-out is the hot path (up to thousands of orderBookL2 messages a second), so
each exchange event is serialised once with orjson and the same bytes are queued
to every subscriber of that table; private rows go only to connections
authenticated as the owning account. Every connection drains its own queue in a
writer task, which is also where stall and delay faults act, so a slow or
stalled client never blocks the exchange or the other clients.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque

import orjson
from aiohttp import WSMsgType, web

from sniper.model import iso
from sniper.sim import tables
from sniper.sim.access import AuthError, check_signature
from sniper.sim.params import TIMEOUT_MS, Invalid
from sniper.sim.rows import ExchangeError

log = logging.getLogger(__name__)

WS_PATH = "/realtime"
WELCOME_INFO = "Welcome to the BitMEX Realtime API."
WS_DOCS = "https://www.bitmex.com/app/wsAPI"
API_VERSION = "2020-11-05T00:00:00.000Z"  # what the welcome reports as the server build
MSG_NOT_AUTHENTICATED = "User requested an account-locked subscription but no authorization was provided."
MSG_NEEDS_AUTH = "You must be authenticated to use this op."
MSG_BAD_REQUEST = "Unrecognized request. See the docs or send 'help' for more details."
MSG_AUTH_ARGS = "authKeyExpires takes [apiKey, expires, signature]."
MSG_ALREADY_AUTHENTICATED = "Already authenticated as a different API key."
MSG_CANCEL_ARGS = "cancelAllAfter takes a timeout in milliseconds."
STALL_POLL_S = 0.05
DEFAULT_MAX_BACKLOG = 50_000  # frames queued to one client before it is cut off as too slow


class Connection:
    """One websocket client: its subscriptions, identity and outgoing queue."""

    def __init__(self, ws: web.WebSocketResponse, transport, hub: Hub) -> None:
        self.ws = ws
        self.transport = transport
        self.hub = hub
        self.api_key: str | None = None
        self.topics: set[tuple[str, str | None]] = set()  # (table, symbol)
        self._out: deque[tuple[float, bytes]] = deque()
        self._wake = asyncio.Event()
        self.cut_off = False

    def send(self, frame: bytes) -> None:
        """Queue one text frame (never blocks; called from exchange callbacks). A client
        that lets `hub.max_backlog` frames pile up is disconnected, as BitMEX drops slow
        consumers, so one stuck reader cannot grow the server's memory without bound."""
        if self.cut_off:
            return
        if len(self._out) >= self.hub.max_backlog:
            self.cut_off = True
            self._out.clear()
            self.hub.counters["slow_disconnects"] += 1
            log.warning("websocket client %s fell %d frames behind; disconnecting it", self.api_key or "(public)",
                        self.hub.max_backlog)
            self.abort()
            return
        delay = self.hub.faults.get("delay")
        self._out.append((time.monotonic() + delay.delay_ms / 1000.0 if delay else 0.0, frame))
        self._wake.set()

    @property
    def backlog(self) -> int:
        """Frames queued but not yet written (grows while stalled or when the client is slow)."""
        return len(self._out)

    def send_obj(self, obj) -> None:
        self.send(orjson.dumps(obj))

    def abort(self) -> None:
        """Cut the TCP connection without a close frame, as a network failure would."""
        if self.transport is not None:
            self.transport.abort()

    async def pump(self) -> None:
        """Writer task: drain the queue in batches, honouring stall and delay faults."""
        out, ws, faults, counters = self._out, self.ws, self.hub.faults, self.hub.counters
        while not ws.closed:
            if not out:
                self._wake.clear()
                await self._wake.wait()
                continue
            if faults.get("stall"):
                await asyncio.sleep(STALL_POLL_S)
                continue
            now = time.monotonic()
            sent = 0
            while out and out[0][0] <= now:
                await ws.send_frame(out.popleft()[1], WSMsgType.TEXT)
                sent += 1
            counters["messages_sent"] += sent
            if out and out[0][0] > now:  # the next frame is held by a delay fault
                await asyncio.sleep(out[0][0] - now)


class Hub:
    """All websocket connections of one simulator and the exchange-event fan-out."""

    def __init__(self, exchange, faults, counters, sim_clock, real_clock,
                 max_backlog: int = DEFAULT_MAX_BACKLOG) -> None:
        self.exchange = exchange
        self.max_backlog = max_backlog
        self.faults = faults
        self.counters = counters
        self.sim_clock = sim_clock
        self.real_clock = real_clock
        self.connections: set[Connection] = set()
        self._subs: dict[tuple[str, str | None], set[Connection]] = defaultdict(set)
        self._book25: dict | None = None  # (side, id) -> row, the top-25 image last sent
        self._book25_pending = False
        self._account_ids: dict[str, object] = {}

    # ---- exchange events -------------------------------------------------------------------------
    def publish(self, table: str, action: str, rows: list[dict], account: str | None) -> None:
        """Exchange.subscribe callback: fan one change out to the subscribers of its table."""
        if table == "orderBookL2":
            self.counters["l2_messages"] += 1
            if self._book25 is not None and not self._book25_pending:
                self._book25_pending = True
                asyncio.get_running_loop().call_soon(self._flush_book25)
        conns = self._subs.get((table, account))
        if not conns or not rows:
            return
        frame = orjson.dumps({"table": table, "action": action, "data": rows})
        for conn in conns:
            conn.send(frame)

    def _flush_book25(self) -> None:
        """Send the top-25 book's changes since the last flush as delete/insert/update messages.
        Coalesced per loop iteration: a burst of L2 changes costs one diff, not one per change."""
        self._book25_pending = False
        if self._book25 is None:
            return
        conns = self._subs.get(("orderBookL2_25", None))
        if not conns:
            self._book25 = None
            return
        old, new = self._book25, {(r["side"], r["id"]): r for r in self.exchange.l2_rows(25)}
        self._book25 = new
        deletes = [{k: v for k, v in row.items() if k != "size"} for key, row in old.items() if key not in new]
        inserts = [row for key, row in new.items() if key not in old]
        updates = [row for key, row in new.items() if key in old and old[key] != row]
        for action, rows in (("delete", deletes), ("insert", inserts), ("update", updates)):
            if rows:
                frame = orjson.dumps({"table": "orderBookL2_25", "action": action, "data": rows})
                for conn in conns:
                    conn.send(frame)

    # ---- connections -----------------------------------------------------------------------------
    def add(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.counters["ws_connections"] += 1

    def remove(self, conn: Connection) -> None:
        self.connections.discard(conn)
        for table, _symbol in conn.topics:
            self._subs[(table, self._owner(table, conn))].discard(conn)

    def drop_all(self) -> int:
        conns = list(self.connections)
        for conn in conns:
            conn.abort()
        return len(conns)

    async def close_all(self) -> None:
        for conn in list(self.connections):
            await conn.ws.close(code=1001, message=b"server shutting down")

    def subscription_counts(self) -> dict:
        return {f"{table}{'' if owner is None else ':private'}": len(conns)
                for (table, owner), conns in self._subs.items() if conns}

    @staticmethod
    def _owner(table: str, conn: Connection) -> str | None:
        return conn.api_key if tables.TABLES[table].private else None

    # ---- protocol --------------------------------------------------------------------------------
    def welcome(self) -> dict:
        return {"info": WELCOME_INFO, "version": API_VERSION, "timestamp": iso(self.sim_clock.now()),
                "docs": WS_DOCS, "limit": {"remaining": 39}}

    def handle_text(self, conn: Connection, text: str) -> None:
        """One client message: the text 'ping' or a JSON op."""
        if text == "ping":
            conn.send(b"pong")
            return
        try:
            request = orjson.loads(text)
            op = request["op"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            conn.send_obj(_error(400, MSG_BAD_REQUEST, text))
            return
        args = request.get("args")
        if op == "subscribe":
            for topic in _as_list(args):
                self.subscribe(conn, topic, request)
        elif op == "unsubscribe":
            for topic in _as_list(args):
                self.unsubscribe(conn, topic, request)
        elif op == "authKeyExpires":
            self.authenticate(conn, args, request)
        elif op == "cancelAllAfter":
            self.cancel_all_after(conn, args, request)
        else:
            conn.send_obj(_error(400, f"Unknown or unsupported op: {op}", request))

    def authenticate(self, conn: Connection, args, request: dict) -> None:
        if not isinstance(args, list) or len(args) != 3:
            conn.send_obj(_error(400, MSG_AUTH_ARGS, request))
            return
        key, expires, signature = args
        try:
            check_signature(self.exchange, self.real_clock.now(), key, expires, signature, "GET", WS_PATH)
        except AuthError as exc:
            conn.send_obj(_error(exc.status, str(exc), request))
            return
        if conn.api_key not in (None, key):
            conn.send_obj(_error(400, MSG_ALREADY_AUTHENTICATED, request))
            return
        conn.api_key = key
        conn.send_obj({"success": True, "request": request})

    def subscribe(self, conn: Connection, topic, request: dict) -> None:
        table, symbol, error = self._parse_topic(topic)
        if error:
            conn.send_obj(_error(400, error, request))
            return
        meta = tables.TABLES[table]
        if meta.private and conn.api_key is None:
            conn.send_obj(_error(401, MSG_NOT_AUTHENTICATED, request, meta={"note": tables.ACCOUNT_LOCKED_NOTE}))
            return
        if (table, symbol) in conn.topics:
            conn.send_obj(_error(400, f"You are already subscribed to this topic: {topic}", request))
            return
        conn.send_obj({"success": True, "subscribe": topic, "request": request})
        rows, filter_ = self._image(conn, table, symbol)
        conn.send_obj(tables.partial(table, rows, filter_))
        conn.topics.add((table, symbol))
        self._subs[(table, self._owner(table, conn))].add(conn)

    def unsubscribe(self, conn: Connection, topic, request: dict) -> None:
        table, symbol, error = self._parse_topic(topic)
        if error or (table, symbol) not in conn.topics:
            conn.send_obj(_error(400, error or f"You are not subscribed to this topic: {topic}", request))
            return
        conn.topics.discard((table, symbol))
        if not any(t == table for t, _s in conn.topics):
            self._subs[(table, self._owner(table, conn))].discard(conn)
        conn.send_obj({"success": True, "unsubscribe": topic, "request": request})

    def cancel_all_after(self, conn: Connection, args, request: dict) -> None:
        if conn.api_key is None:
            conn.send_obj(_error(401, MSG_NEEDS_AUTH, request))
            return
        timeout = args[0] if isinstance(args, list) and len(args) == 1 else args
        try:
            reply = self.exchange.cancel_all_after(conn.api_key, int(TIMEOUT_MS("timeout", timeout)))
        except Invalid:
            conn.send_obj(_error(400, MSG_CANCEL_ARGS, request))
            return
        except ExchangeError as exc:
            conn.send_obj(_error(exc.status, exc.message, request))
            return
        conn.send_obj({**reply, "request": request})

    def _parse_topic(self, topic) -> tuple[str, str | None, str | None]:
        if not isinstance(topic, str) or not topic:
            return "", None, f"Unknown table: {topic}"
        table, _, symbol = topic.partition(":")
        if table not in tables.TABLES:
            return table, None, f"Unknown table: {table}"
        if symbol and (table not in tables.SYMBOL_TABLES or symbol != self.exchange.symbol):
            return table, None, f"Unknown or expired symbol: {symbol}"
        return table, symbol or None, None

    def _account_id(self, api_key: str):
        if api_key not in self._account_ids:
            self._account_ids[api_key] = self.exchange.margin(api_key).get("account")
        return self._account_ids[api_key]

    def _image(self, conn: Connection, table: str, symbol: str | None) -> tuple[list[dict], dict]:
        """The rows and filter of a fresh partial, taken between two exchange events."""
        ex = self.exchange
        filter_ = {"symbol": symbol} if symbol else {}
        key = conn.api_key
        if key is not None and tables.TABLES[table].private:
            filter_ = {"account": self._account_id(key), **filter_}
        if table == "orderBookL2":
            rows = ex.l2_rows()
        elif table == "orderBookL2_25":
            if self._book25 is not None:
                self._flush_book25()  # up to date before it is copied (dropped when nobody listens any more)
            if self._book25 is None:
                self._book25 = {(r["side"], r["id"]): r for r in ex.l2_rows(25)}
            rows = list(self._book25.values())
        elif table == "quote":
            rows = [ex.quote_row()]
        elif table == "trade":
            rows = ex.trades(count=1, reverse=True)
        elif table == "instrument":
            rows = [ex.instrument_row()]
        elif table == "funding":
            rows = ex.funding_rows(count=1, reverse=True)
        elif table == "order":
            rows = ex.orders(key, open_only=True)
        elif table in ("execution", "liquidation"):
            rows = []  # BitMEX starts these streams empty (history is REST's job)
        elif table == "position":
            rows = ex.positions(key)
        elif table == "margin":
            rows = [ex.margin(key)]
        else:  # wallet
            rows = [ex.wallet(key)]
        return [r for r in rows if r], filter_


def _as_list(args) -> list:
    return args if isinstance(args, list) else [args]


def _error(status: int, message: str, request, meta: dict | None = None) -> dict:
    return {"status": status, "error": message, "meta": meta or {}, "request": request}


async def serve_websocket(request: web.Request, hub: Hub) -> web.StreamResponse:
    """GET /realtime: upgrade, optional header/query auth and subscriptions, then the op loop."""
    drop = hub.faults.get("drop")
    if drop is not None:
        raise web.HTTPServiceUnavailable(text="websocket connections are being dropped")
    api_key = None
    creds = request.headers if "api-key" in request.headers else request.query
    if "api-key" in creds:
        try:
            api_key = check_signature(hub.exchange, hub.real_clock.now(), creds.get("api-key"),
                                      creds.get("api-expires"), creds.get("api-signature"), "GET", WS_PATH)
        except AuthError as exc:
            return web.json_response({"error": {"message": str(exc), "name": "HTTPError"}}, status=exc.status)
    ws = web.WebSocketResponse(autoping=False, compress=False)
    await ws.prepare(request)
    conn = Connection(ws, request.transport, hub)
    conn.api_key = api_key
    hub.add(conn)
    writer = asyncio.create_task(conn.pump())
    try:
        conn.send_obj(hub.welcome())
        topics = [t for t in request.query.get("subscribe", "").split(",") if t]
        if topics:
            hub.handle_text(conn, orjson.dumps({"op": "subscribe", "args": topics}).decode())
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                hub.handle_text(conn, msg.data)
            elif msg.type == WSMsgType.PING:
                if not hub.faults.get("stall"):
                    await ws.pong(msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
    except ConnectionResetError:
        pass
    finally:
        hub.remove(conn)
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    return ws
