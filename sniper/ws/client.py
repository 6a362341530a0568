"""The websocket thread: one BitMEX `/realtime` connection feeding `State`.

It is a thin loop around `State.apply_message`: the state parses every
frame and applies the table data; the frames that are about the connection
(acks, errors, info) it hands to this client's `Session` (session.py), which
keeps the protocol state: authenticated, fatal, retry-after, back-off.
The client's own job is the connection's life:

- connect, authenticate (`authKeyExpires`, signed with api-expires), then
  `begin_session` and subscribe to the public tables for the symbol and,
  when authenticated, the private ones; the state is ready once every
  partial has arrived (`State.ready`, the snapshots' verdict);
- liveness: websocket pings are answered by websocket-client; we send the
  text `ping` after `ping_interval` of silence and declare the connection
  dead after `dead_after` without any frame (a stalled server), when the
  state is not ready `ready_timeout` after connecting, or when no table data
  came for `stale_after` although pongs still do (a feed that stopped on a
  live socket). The default, 30 s, is far beyond any quiet spell of a BitMEX
  subscription (the instrument table alone updates every few seconds) and
  still bounds how long the executor could chase a frozen book; pass None to
  switch it off (a deliberately paused simulator);
- on any end (disconnect, error, stale data, a book that needs a resync):
  mark the state not ready first, before the close handshake (the executor
  places nothing), then reconnect after a jittered exponential back-off and
  rebuild every table from the new partials;
- a 401/403 (at the upgrade or in reply to the auth op) stops the thread
  with the session's `fatal` set instead of reconnecting in a loop; a 429
  stretches the back-off to the server's retry-after (at most
  `retry_after_max`, five minutes unless a test shortens it).
Durations here are real time (time.monotonic), staleness included: a
socket's liveness does not speed up or freeze with a simulated clock.
"""

from __future__ import annotations

import logging
import random
import threading
import time

import orjson
import websocket

from sniper import auth
from sniper.clock import RealClock
from sniper.rest import RETRY_AFTER_MAX_S
from sniper.ws.session import Session
from sniper.ws.state import PRIVATE_TABLES, PUBLIC_TABLES, State

logger = logging.getLogger(__name__)

_SYMBOL_PRIVATE = {"order", "execution", "position"}  # private tables BitMEX filters by symbol
_HEALTHY_AFTER_S = 10.0  # a session ready this long resets the back-off
STALE_AFTER_S = 30.0  # default stale-data deadline, see the module docstring


class _SessionEnd(Exception):
    """Why one connection ended (the reason is logged and shown as not-ready)."""


class WsClient:
    """The websocket thread for one symbol; see the module docstring."""

    def __init__(self, url: str, state: State, symbol: str = "XBTUSD", credentials: auth.Credentials | None = None,
                 clock=None, *, ping_interval: float = 5.0, dead_after: float = 15.0, ready_timeout: float = 30.0,
                 stale_after: float | None = STALE_AFTER_S,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0, retry_after_max: float = RETRY_AFTER_MAX_S,
                 connect_timeout: float = 10.0, rng: random.Random | None = None) -> None:
        if not 0 < ping_interval < dead_after:
            raise ValueError("need 0 < ping_interval < dead_after")
        if stale_after is not None and not stale_after > 0:
            raise ValueError("stale_after must be positive (or None to switch it off)")
        self.url = url
        self.state = state
        self.symbol = symbol
        self.credentials = credentials
        self.clock = clock or RealClock()
        self.ping_interval = ping_interval
        self.dead_after = dead_after
        self.ready_timeout = ready_timeout
        self.stale_after = stale_after
        self.connect_timeout = connect_timeout
        self.tables = PUBLIC_TABLES + (PRIVATE_TABLES if credentials else ())
        self.sessions = 0
        self.last_end: str | None = None
        self.session = Session(state, backoff_initial=backoff_initial, backoff_max=backoff_max,
                               retry_after_max=retry_after_max, rng=rng)
        self._tick = min(0.25, ping_interval / 2)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready_since: float | None = None  # when this session's state became ready
        self._phase_started = 0.0  # connect or subscribe time: ready_timeout counts from it

    # ---- control ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread; again once it has ended (the supervisor restarts a dead one), never
        two at once. The new thread connects afresh: a reconnect, as far as the state knows."""
        if self.is_alive():
            raise RuntimeError("WsClient already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ws", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Close the connection and end the thread (within one tick)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def reconnects(self) -> int:
        return self.state.reconnects

    @property
    def fatal(self) -> str | None:
        """Why the server refused us for good (the session's verdict), else None."""
        return self.session.fatal

    def wait_ready(self, timeout: float) -> bool:
        """Poll until the state is ready (tests and start-up); False on timeout or fatal."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.session.fatal is None:
            if self.state.ready:
                return True
            time.sleep(0.01)
        return False

    def subscriptions(self) -> list[str]:
        return [f"{t}:{self.symbol}" if t in PUBLIC_TABLES or t in _SYMBOL_PRIVATE else t for t in self.tables]

    # ---- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        session = self.session
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._session()
                reason = "stopped"
            except _SessionEnd as end:
                reason = str(end)
            except Exception as exc:  # the thread must survive anything a session throws
                logger.exception("websocket session failed")
                reason = f"unexpected error: {exc!r}"
            self.last_end = reason
            if session.fatal:
                self.state.mark_not_ready(session.fatal)
                logger.error("websocket stopped for good: %s", session.fatal)
                return
            self.state.mark_not_ready(f"websocket {reason}")
            if self._stop.is_set():
                return
            healthy = self._ready_since is not None and time.monotonic() - self._ready_since >= _HEALTHY_AFTER_S
            delay = session.next_delay(healthy)
            logger.warning("websocket %s after %.1fs; reconnecting in %.2fs (attempt %d)", reason,
                           time.monotonic() - started, delay, session.attempt)
            self._stop.wait(delay)

    def _connect(self) -> websocket.WebSocket:
        try:
            return websocket.create_connection(self.url, timeout=self.connect_timeout, skip_utf8_validation=True)
        except websocket.WebSocketBadStatusException as exc:
            body = exc.resp_body.decode("utf-8", "replace") if isinstance(exc.resp_body, bytes) else exc.resp_body
            self.session.refused(exc.status_code, str(body), exc.resp_headers)
            raise _SessionEnd(f"refused at connect ({exc.status_code})") from None
        except (OSError, websocket.WebSocketException) as exc:
            raise _SessionEnd(f"connect failed ({exc.__class__.__name__}: {exc})") from None

    def _session(self) -> None:
        state = self.state
        self._ready_since = None
        ws = self._connect()
        try:
            ws.settimeout(self._tick)
            self._phase_started = time.monotonic()
            self.sessions += 1
            if self.sessions > 1:
                state.note_reconnect()
            logger.info("websocket connected to %s", self.url)
            self.session.start_connection()
            if self.credentials:
                self._send(ws, orjson.dumps(auth.ws_auth_message(self.credentials, self.clock.now())).decode())
            else:
                self._subscribe(ws)
            self._pump(ws)
        except _SessionEnd as end:
            state.mark_not_ready(f"websocket {end}")  # now, not after the close handshake
            raise
        except Exception as exc:
            state.mark_not_ready(f"websocket unexpected error: {exc!r}")
            raise
        finally:
            lock = state.lock.stats()
            logger.info("session %d ended; state lock: %d of %d acquisitions waited, max %.0f us, p99.9 <= %.0f us",
                        self.sessions, lock["contended"], lock["acquisitions"], lock["wait_ns_max"] / 1e3,
                        lock["wait_ns_p999"] / 1e3)
            try:
                ws.close(timeout=0.2)
            except (OSError, websocket.WebSocketException):
                pass

    @staticmethod
    def _send(ws: websocket.WebSocket, text: str) -> None:
        try:
            ws.send(text)
        except (OSError, websocket.WebSocketException) as exc:
            raise _SessionEnd(f"send failed ({exc.__class__.__name__}: {exc})") from None

    def _end_if_broken(self) -> None:
        """End the session when it cannot go on: refused for good, or a book only a new
        partial can repair."""
        reason = self.session.fatal or self.state.resync_reason
        if reason:
            raise _SessionEnd(reason)

    def _subscribe(self, ws: websocket.WebSocket) -> None:
        self.state.begin_session(self.tables)
        self._send(ws, orjson.dumps({"op": "subscribe", "args": self.subscriptions()}).decode())
        self._phase_started = time.monotonic()

    def _pump(self, ws: websocket.WebSocket) -> None:
        """Receive until the session ends; raises _SessionEnd with the reason.
        Liveness and readiness are checked once a tick, busy or quiet."""
        state, session = self.state, self.session
        apply = state.apply_message
        subscribed = not self.credentials
        last_rx = last_ping = last_data = time.monotonic()
        seen_seq = state.seq  # table messages applied; a change means fresh data
        next_check = last_rx + self._tick
        while not self._stop.is_set():
            try:
                opcode, data = ws.recv_data()
                last_rx = time.monotonic()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    raise _SessionEnd("closed by the server")
                if data != b"pong":
                    apply(data)
                    self._end_if_broken()
                    if not subscribed and session.authenticated:
                        self._subscribe(ws)
                        subscribed = True
                if last_rx < next_check:
                    continue
            except websocket.WebSocketTimeoutException:
                pass
            except (OSError, websocket.WebSocketException) as exc:
                raise _SessionEnd(f"connection lost ({exc.__class__.__name__}: {exc})") from None
            self._end_if_broken()  # a book broken by a frame applied from elsewhere, too
            now = time.monotonic()
            next_check = now + self._tick
            silent = now - last_rx
            if silent > self.dead_after:
                raise _SessionEnd(f"silent for {silent:.1f}s (dead after {self.dead_after}s)")
            if silent > self.ping_interval and now - last_ping > self.ping_interval:
                self._send(ws, "ping")
                last_ping = now
            if state.seq != seen_seq:
                seen_seq, last_data = state.seq, now
            if self.stale_after is not None and self._ready_since is not None and now - last_data > self.stale_after:
                raise _SessionEnd(f"stale data: no table update for {now - last_data:.1f}s "
                                  f"(limit {self.stale_after}s)")
            if self._ready_since is None:
                if state.ready:
                    self._ready_since = last_data = now
                    logger.info("websocket state ready (%d tables)", len(self.tables))
                elif now - self._phase_started > self.ready_timeout:
                    raise _SessionEnd(f"not ready {self.ready_timeout}s after connecting: "
                                      f"{state.snapshot(0).reason}")
