"""BitMEX REST client: one keep-alive `requests.Session`, signed requests,
typed errors, rate-limit pacing and retries only where a retry cannot create
a second order.

Results are BitMEX's JSON rows, typed as TypedDicts (OrderRow, PositionRow,
MarginRow, FillRow): the same dicts the websocket carries, so REST and
websocket views of an order fold into the journal the same way.

What is retried: reads; and writes the caller marks idempotent — a POST
/order carrying a clOrdID (the exchange refuses a second order with the same
clOrdID, and a "Duplicate clOrdID" answer after a lost reply means the first
attempt landed, so the order is looked up and returned), an amend that sets
absolute values, cancels, and the dead man's switch. Everything else fails on
the first error. A 503 or 429 storm therefore costs time, never an extra order.

After a 429 nothing is sent until its Retry-After has passed: a request made
meanwhile fails at once with RateLimited (not sent), and no retry sleeps past
`max_elapsed`, so a long Retry-After never freezes the caller's thread.

Pacing: BitMEX reports `x-ratelimit-limit`, `-remaining` and `-reset` on each
reply; once the remaining budget falls below a share of the limit the client
sends no faster than the budget refills ((reset - now) / (limit - remaining)
apart), so it slows down *before* the exchange answers 429. All waits go
through the clock, so tests can run fast.
"""

from __future__ import annotations

import json
import logging
import math
import random
from typing import TypedDict
from urllib.parse import quote, urlencode

import requests

from sniper import auth
from sniper.model import iso

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
DUPLICATE_CLORDID = "duplicate clordid"
RETRY_AFTER_MAX_S = 300.0  # the longest server-asked wait obeyed: a longer one is a garbled figure, not a ban
RETRY_AFTER_DEFAULT_S = 1.0  # the wait after a 429 that names none we can use
PACE_MAX_S = 60.0  # BitMEX's budget refills within a minute: a longer pacing wait is a garbled header


def retry_after_s(value, field: str, ceiling: float = RETRY_AFTER_MAX_S) -> float:
    """Seconds to wait after a 429, from the server's figure `value` (header text or a JSON
    number): a finite non-negative number, cut to `ceiling`. Anything else is garbled and
    waits RETRY_AFTER_DEFAULT_S. The one rule for REST and the websocket, because a figure
    taken as is (1e308, inf) overflows the wait that obeys it. A garbled or cut figure is
    logged once, naming `field`."""
    if value is None:
        return RETRY_AFTER_DEFAULT_S
    seconds = None
    if isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value
    if seconds is None or not 0 <= seconds < math.inf:  # NaN fails both
        logger.warning("%s %.40r is not a finite non-negative number of seconds; waiting %.0f s",
                       field, value, RETRY_AFTER_DEFAULT_S)
        return RETRY_AFTER_DEFAULT_S
    if seconds > ceiling:
        logger.warning("%s %.40r is over the %.0f s ceiling; waiting %.0f s", field, value, ceiling, ceiling)
        return float(ceiling)
    return float(seconds)


class ExchangeError(Exception):
    """Any failed request. `status` is the HTTP status (0 when there was no answer)."""

    def __init__(self, message: str, status: int = 0, name: str = "") -> None:
        super().__init__(message)
        self.message, self.status, self.name = message, status, name

    def __str__(self) -> str:
        return f"{type(self).__name__}({self.status or '-'}): {self.message}"


class Overloaded(ExchangeError):
    """503: the exchange shed the request (normal during volatility)."""


class RateLimited(ExchangeError):
    """429: too many requests; `retry_after` seconds to wait."""

    def __init__(self, message: str, status: int = 429, name: str = "", retry_after: float = 1.0) -> None:
        super().__init__(message, status, name)
        self.retry_after = retry_after


class Rejected(ExchangeError):
    """400: the exchange refused the request itself (its message says why)."""


class AuthError(ExchangeError):
    """401/403: bad key, bad signature, expired stamp or missing permission."""


class ClockSkew(AuthError):
    """401 "request has expired": this host's clock is `skew` seconds behind the exchange's, beyond
    the api-expires window, so every signature is refused; the message says so and by how much."""

    def __init__(self, message: str, status: int = 401, name: str = "", skew: float = 0.0) -> None:
        super().__init__(message, status, name)
        self.skew = skew


class Malformed(ExchangeError):
    """A 2xx answer whose body is not what the endpoint returns (a proxy page, a truncated or
    garbled body): what happened is unknown, as after a timeout."""


class NotFound(ExchangeError):
    """404: no such path or object."""


class Timeout(ExchangeError):
    """No answer (timeout or broken connection): the request may or may not have been applied."""


class OrderRow(TypedDict, total=False):
    """An order as BitMEX returns it (the fields the executor relies on)."""

    orderID: str
    clOrdID: str
    symbol: str
    side: str
    orderQty: int
    price: float | None
    ordType: str
    timeInForce: str
    execInst: str
    ordStatus: str
    leavesQty: int
    cumQty: int
    avgPx: float | None
    text: str
    error: str  # only on a DELETE /order row that could not be canceled
    timestamp: str


class PositionRow(TypedDict, total=False):
    symbol: str
    currentQty: int
    avgEntryPrice: float | None
    markPrice: float | None
    liquidationPrice: float | None
    timestamp: str


class MarginRow(TypedDict, total=False):
    currency: str
    walletBalance: int  # XBt
    marginBalance: int  # XBt
    availableMargin: int


class FillRow(TypedDict, total=False):
    execID: str
    orderID: str
    clOrdID: str
    side: str
    lastQty: int
    lastPx: float
    execType: str
    transactTime: str


_BY_STATUS = {400: Rejected, 401: AuthError, 403: AuthError, 404: NotFound, 503: Overloaded}


def _retryable(exc: ExchangeError) -> bool:
    """Errors after which the same request may succeed: shed load, rate limits, no answer, gateway errors."""
    return isinstance(exc, (Overloaded, RateLimited, Timeout)) or exc.status in (500, 502, 504)


class RestClient:
    """Signed BitMEX REST over one session. Not thread-safe by design: the executor
    thread owns it (DESIGN.md); other threads get their own client."""

    def __init__(self, base_url: str, credentials: auth.Credentials | None, clock, *, symbol: str = "XBTUSD",
                 connect_timeout: float = 2.0, read_timeout: float = 5.0, max_attempts: int = 8,
                 max_elapsed: float = 30.0, backoff_base: float = 0.05, backoff_cap: float = 2.0,
                 slow_below: float = 0.2, expires_ttl: int = auth.DEFAULT_TTL, rng: random.Random | None = None,
                 session: requests.Session | None = None, trust_env: bool = False) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.clock = clock
        self.symbol = symbol
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max_attempts
        self.max_elapsed = max_elapsed
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.slow_below = slow_below
        self.expires_ttl = expires_ttl
        self._rng = rng or random.Random()
        self.session = session or requests.Session()
        # requests reads proxy variables and ~/.netrc on every request when trust_env is on
        # (~0.15 ms each); an exchange connection opts in only when it needs a proxy
        self.session.trust_env = trust_env
        self.session.headers.update({"content-type": "application/json", "accept": "application/json",
                                     "connection": "keep-alive"})
        self._not_before = 0.0  # clock time before which the next request must not be sent (pacing)
        self._blocked_until = 0.0  # monotonic time until which the exchange told us (429) to send nothing
        self.ratelimit: dict[str, float] = {}  # last seen limit / remaining / reset
        self.stats = {"requests": 0, "retries": 0, "paced_s": 0.0}
        self.last_error: dict | None = None  # the latest failed attempt, retried or not: {"at", "error"}

    # ------------------------------------------------------------------ core
    def request(self, verb: str, path: str, *, params: dict | None = None, body: dict | None = None,
                idempotent: bool | None = None):
        """Send one logical request; returns the decoded JSON. `idempotent` defaults to True
        for GET and False otherwise; only idempotent requests are retried."""
        verb = verb.upper()
        if idempotent is None:
            idempotent = verb == "GET"
        full_path = API_PREFIX + path
        if params:
            full_path += "?" + urlencode({k: _q(v) for k, v in params.items() if v is not None}, quote_via=quote)
        data = json.dumps(body, separators=(",", ":")) if body else ""
        started = self.clock.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._send_once(verb, full_path, data)
            except ExchangeError as exc:
                self.last_error = {"at": iso(self.clock.now()), "error": str(exc)}
                elapsed = self.clock.monotonic() - started
                if not (idempotent and _retryable(exc)) or attempt >= self.max_attempts:
                    raise
                delay = self._backoff(attempt, exc)
                if elapsed + delay > self.max_elapsed:
                    raise  # a long Retry-After is the caller's to wait out, not a blocking sleep here
                self.stats["retries"] += 1
                logger.info("%s %s attempt %d failed (%s); retrying in %.3f s", verb, full_path, attempt, exc, delay)
                self.clock.sleep(delay)

    def _backoff(self, attempt: int, exc: ExchangeError) -> float:
        """Jittered exponential back-off, capped; never shorter than the server's Retry-After."""
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)) * (0.5 + self._rng.random() / 2)
        if isinstance(exc, RateLimited):
            delay = max(delay, exc.retry_after)
        return delay

    def _send_once(self, verb: str, full_path: str, data: str):
        blocked = self._blocked_until - self.clock.monotonic()
        if blocked > 0:  # sending now would only earn another 429 (and, at BitMEX, a ban)
            raise RateLimited(f"{verb} {full_path}: not sent, rate limited for another {blocked:.2f} s",
                              429, "RateLimitError", retry_after=blocked)
        self._pace()
        headers = auth.headers(self.credentials, verb, full_path, data, self.clock.now(), self.expires_ttl) \
            if self.credentials else None
        self.stats["requests"] += 1
        try:
            resp = self.session.request(verb, self.base_url + full_path, data=data or None, headers=headers,
                                        timeout=self.timeout)
        except requests.Timeout as exc:
            raise Timeout(f"{verb} {full_path}: no answer in time ({exc.__class__.__name__})") from exc
        except requests.ConnectionError as exc:
            raise Timeout(f"{verb} {full_path}: connection failed ({exc.__class__.__name__})") from exc
        self._read_ratelimit(resp.headers)
        if resp.status_code == 429:
            error = _error_from(resp)
            self._blocked_until = self.clock.monotonic() + error.retry_after
            raise error
        if resp.status_code < 300:
            try:
                return resp.json() if resp.content else None
            except ValueError as exc:  # e.g. an HTML page from a proxy: whether it applied is unknown
                raise Malformed(f"{verb} {full_path}: undecodable {resp.status_code} reply",
                                resp.status_code) from exc
        error = _error_from(resp)
        if isinstance(error, AuthError):
            skew = auth.expired_skew(error.message, self.clock.now())
            if skew is not None:
                raise ClockSkew(auth.skew_message(skew, self.expires_ttl), error.status, error.name, skew=skew)
        raise error

    # ------------------------------------------------------------------ pacing
    def _read_ratelimit(self, headers) -> None:
        try:
            limit = float(headers["x-ratelimit-limit"])
            remaining = float(headers["x-ratelimit-remaining"])
            reset = float(headers["x-ratelimit-reset"])
        except (KeyError, ValueError):
            return
        if not all(map(math.isfinite, (limit, remaining, reset))):
            return  # "inf"/"nan" parse as floats, but no budget is described by them
        self.ratelimit = {"limit": limit, "remaining": remaining, "reset": reset}
        if limit > 0 and remaining < limit * self.slow_below:
            # the budget refills (limit - remaining) requests by `reset`: go no faster than that
            now = self.clock.now()
            wait = max(0.0, reset - now) / max(limit - remaining, 1.0)
            self._not_before = now + min(wait, PACE_MAX_S)
        else:
            self._not_before = 0.0

    def _pace(self) -> None:
        wait = self._not_before - self.clock.now()
        if wait > 0:
            self.stats["paced_s"] += wait
            logger.debug("rate limit nearly used (%s); pacing %.3f s", self.ratelimit, wait)
            self.clock.sleep(wait)

    # ------------------------------------------------------------------ orders
    def place_order(self, **params) -> OrderRow:
        """POST /order. With a clOrdID it is retried safely, and a duplicate-clOrdID answer
        returns the existing order (the earlier attempt, or an earlier process, placed it);
        if the lookup does not show that order yet, a plain ExchangeError (outcome unknown,
        never Rejected) tells the caller to ask again with the same clOrdID."""
        params.setdefault("symbol", self.symbol)
        clordid = params.get("clOrdID")
        try:
            return _row(self.request("POST", "/order", body=params, idempotent=bool(clordid)), "POST /order")
        except Rejected as exc:
            if not clordid or DUPLICATE_CLORDID not in exc.message.lower():
                raise
            existing = self.order_by_clordid(clordid)
            if existing is None:
                # the exchange says the order exists but its reads do not show it yet: the
                # outcome is unknown, not refused (a Rejected here would let the caller treat
                # the order as never created and place another)
                raise ExchangeError(f"clOrdID {clordid} is a duplicate but the lookup found no order:"
                                    " outcome unknown", exc.status, "DuplicateNotFound") from exc
            logger.info("clOrdID %s already at the exchange (%s): an earlier attempt landed", clordid,
                        existing.get("ordStatus"))
            return existing

    def amend_order(self, *, orderID: str | None = None, origClOrdID: str | None = None, **changes) -> OrderRow:
        """PUT /order with absolute values (price, orderQty): repeating it changes nothing."""
        body = {k: v for k, v in {"orderID": orderID, "origClOrdID": origClOrdID, **changes}.items()
                if v is not None}
        return _row(self.request("PUT", "/order", body=body, idempotent=True), "PUT /order")

    def cancel_order(self, *, orderID: str | None = None, clOrdID: str | None = None, text: str | None = None
                     ) -> list[OrderRow]:
        body = {k: v for k, v in {"orderID": orderID, "clOrdID": clOrdID, "text": text}.items() if v is not None}
        return _rows(self.request("DELETE", "/order", body=body, idempotent=True), "DELETE /order")

    def cancel_all(self, text: str | None = None) -> list[OrderRow]:
        body = {"symbol": self.symbol} | ({"text": text} if text else {})
        return _rows(self.request("DELETE", "/order/all", body=body, idempotent=True), "DELETE /order/all")

    def cancel_all_after(self, timeout_ms: int) -> dict:
        """The exchange's dead man's switch: cancel everything unless refreshed within timeout_ms."""
        return _row(self.request("POST", "/order/cancelAllAfter", body={"timeout": int(timeout_ms)},
                                 idempotent=True), "POST /order/cancelAllAfter")

    # ------------------------------------------------------------------ reads
    def orders(self, *, open_only: bool = False, count: int = 500, filter: dict | None = None) -> list[OrderRow]:
        flt = dict(filter or {})
        if open_only:
            flt["open"] = True
        return _rows(self.request("GET", "/order", params={"symbol": self.symbol, "filter": flt or None,
                                                            "count": count, "reverse": True}), "GET /order")

    def order_by_clordid(self, clordid: str) -> OrderRow | None:
        rows = self.orders(filter={"clOrdID": clordid}, count=5)
        return next((r for r in rows if r.get("clOrdID") == clordid), None)

    def position(self) -> PositionRow | None:
        rows = _rows(self.request("GET", "/position", params={"filter": {"symbol": self.symbol}}), "GET /position")
        return next((r for r in rows if r.get("symbol") == self.symbol), None)

    def fills(self, *, count: int = 500, start_time: str | None = None) -> list[FillRow]:
        """Our recent trade executions (GET /execution/tradeHistory), newest first."""
        return _rows(self.request("GET", "/execution/tradeHistory", params={
            "symbol": self.symbol, "count": count, "reverse": True, "startTime": start_time}),
            "GET /execution/tradeHistory")

    def margin(self) -> MarginRow:
        return _row(self.request("GET", "/user/margin"), "GET /user/margin")

    def instrument(self) -> dict | None:
        rows = _rows(self.request("GET", "/instrument", params={"symbol": self.symbol}), "GET /instrument")
        return rows[0] if rows else None

    def trade_bucketed(self, *, bin_size: str = "1m", start_time: float | None = None,
                       end_time: float | None = None, count: int = 1000, reverse: bool = False) -> list[dict]:
        """GET /trade/bucketed: completed OHLCV buckets, each stamped with its END time, with
        start_time <= timestamp <= end_time (epoch seconds); at most 1,000 a request."""
        return _rows(self.request("GET", "/trade/bucketed", params={
            "binSize": bin_size, "symbol": self.symbol, "count": count, "reverse": reverse,
            "startTime": _iso_or_none(start_time), "endTime": _iso_or_none(end_time)}), "GET /trade/bucketed")

    def funding(self, *, start_time: float | None = None, end_time: float | None = None, count: int = 500,
                reverse: bool = False) -> list[dict]:
        """GET /funding: settled funding rows (timestamp = settlement) within [start_time, end_time]."""
        return _rows(self.request("GET", "/funding", params={
            "symbol": self.symbol, "count": count, "reverse": reverse,
            "startTime": _iso_or_none(start_time), "endTime": _iso_or_none(end_time)}), "GET /funding")


def _row(reply, what: str) -> dict:
    """A reply that must be one JSON object (an order, the margin); anything else is Malformed."""
    if isinstance(reply, dict):
        return reply
    raise Malformed(f"{what}: expected an object, got {type(reply).__name__}", 200, "MalformedReply")


def _rows(reply, what: str) -> list[dict]:
    """A reply that must be a list of JSON objects (BitMEX's row lists); anything else is Malformed,
    so no caller meets a string where it reads a row."""
    if isinstance(reply, list) and all(isinstance(r, dict) for r in reply):
        return reply
    raise Malformed(f"{what}: expected a list of objects, got {type(reply).__name__}", 200, "MalformedReply")


def _iso_or_none(t: float | None) -> str | None:
    return None if t is None else iso(t)


def _q(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error_from(resp: requests.Response) -> ExchangeError:
    """Map an HTTP error answer to its typed error, keeping BitMEX's message."""
    try:
        err = resp.json().get("error") or {}
        message, name = str(err.get("message") or resp.reason), str(err.get("name") or "")
    except (ValueError, AttributeError):
        message, name = (resp.text or resp.reason or "")[:200], ""
    status = resp.status_code
    if status == 429:
        retry_after = retry_after_s(resp.headers.get("retry-after"), "Retry-After header")
        return RateLimited(message, status, name, retry_after=retry_after)
    return _BY_STATUS.get(status, ExchangeError)(message, status, name)
