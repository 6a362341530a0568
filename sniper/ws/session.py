"""The protocol state of the websocket connection, kept by the client across reconnects.

`State` stores market and account data and says whether it is complete; whether the
*connection* may go on, and when to try again, is a different question with different
readers (the client's loop, the supervisor), so it lives here:

- what the server acknowledged on this connection: the auth op (`authenticated`) and the
  subscriptions (`subscribed`);
- `fatal`: the server refused our credentials (401/403, at the upgrade or in reply to the
  auth op). Retrying cannot help, so the client stops for good and the state is marked not
  ready at once, before anyone trades on it;
- `retry_after`: a 429 (at the upgrade or as an error frame) stretches the next back-off to
  the server's figure, read by REST's rule (`rest.retry_after_s`: a finite non-negative
  number, at most `retry_after_max`), so no figure a server sends can overflow the wait;
- the back-off itself: exponential with equal jitter, reset after a healthy connection.

The state hands the session every frame that is not table data (acks, errors, info;
`State.hand_control_to`); the session never touches a table. Frames it cannot use are
counted and logged in the state's one ledger of bad frames (`State.note_bad`), so
`state.errors` still covers everything the socket delivered.
"""

from __future__ import annotations

import logging
import random

from sniper import log
from sniper.rest import RETRY_AFTER_MAX_S, retry_after_s
from sniper.ws.state import State, frame_text

logger = logging.getLogger(__name__)

FATAL_STATUS = (401, 403)  # the server refused our credentials: retrying cannot help
RATE_LIMITED = 429
_AUTH_OPS = ("authKeyExpires", "authKey")


class Session:
    """The protocol state of one client's connection to `state`; see the module docstring."""

    def __init__(self, state: State, *, backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 retry_after_max: float = RETRY_AFTER_MAX_S, rng: random.Random | None = None) -> None:
        self.state = state
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.authenticated = False
        self.subscribed: set[str] = set()
        self.fatal: str | None = None
        self.retry_after = 0.0  # seconds the server asked us to wait before the next attempt
        self.attempt = 0  # failed connections in a row (the back-off exponent)
        self._rng = rng or random.Random()
        state.hand_control_to(self.on_control)

    # ---- the connection's life -----------------------------------------------------------
    def start_connection(self) -> None:
        """A new socket is up: nothing is acknowledged on it yet."""
        self.authenticated = False
        self.subscribed.clear()

    def refused(self, status: int, body: str, headers: dict | None) -> None:
        """The server refused the websocket upgrade with HTTP `status`."""
        if status in FATAL_STATUS:
            self._stop_for_good(f"authentication failed ({status}): {log.redact(body)}")
        elif status == RATE_LIMITED:
            self.retry_after = retry_after_s((headers or {}).get("retry-after"),
                                             "Retry-After header of the refused upgrade", self.retry_after_max)

    def backoff(self, attempt: int) -> float:
        """Exponential back-off with equal jitter: half fixed, half random."""
        ceiling = min(self.backoff_max, self.backoff_initial * 2 ** min(attempt, 30))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def next_delay(self, healthy: bool) -> float:
        """Seconds to wait before reconnecting after a connection ended; `healthy` (it was
        ready long enough) starts the back-off over. A server's retry-after is used once."""
        self.attempt = 0 if healthy else self.attempt + 1
        delay = max(self.backoff(self.attempt), self.retry_after)
        self.retry_after = 0.0
        return delay

    def _stop_for_good(self, reason: str) -> None:
        self.fatal = reason
        self.state.mark_not_ready(reason)

    # ---- frames that are not table data ----------------------------------------------------
    def on_control(self, msg: dict, raw) -> None:
        """An ack, an error or an info frame (the state passes every non-table object here)."""
        if "error" in msg or "status" in msg:
            self._server_error(msg, raw)
        elif "success" in msg:
            self._ack(msg, raw)
        elif "info" in msg:
            logger.info("server: %s", frame_text(raw))
        else:
            self.state.note_bad("unknown message", raw)

    def _ack(self, msg: dict, raw) -> None:
        request = msg.get("request") if isinstance(msg.get("request"), dict) else {}
        if not msg.get("success"):
            self.state.note_bad("unsuccessful request", raw)
        elif request.get("op") in _AUTH_OPS:
            self.authenticated = True
            logger.info("websocket authenticated")
        elif isinstance(msg.get("subscribe"), str):
            self.subscribed.add(msg["subscribe"])
        elif isinstance(msg.get("unsubscribe"), str):
            self.subscribed.discard(msg["unsubscribe"])

    def _server_error(self, msg: dict, raw) -> None:
        status = msg.get("status")
        error = msg.get("error")
        text = error if isinstance(error, str) else (error or {}).get("message") if isinstance(error, dict) else None
        if status in FATAL_STATUS:
            self.state.note_bad(f"server {status}", raw, text)
            self._stop_for_good(f"authentication failed ({status}): {text}")
            return
        if status == RATE_LIMITED:
            meta = msg.get("meta") if isinstance(msg.get("meta"), dict) else {}
            self.retry_after = retry_after_s(meta.get("retryAfter"), "meta.retryAfter of a 429 frame",
                                             self.retry_after_max)
        self.state.note_bad(f"server error {status}", raw, text)
