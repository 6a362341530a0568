"""The simulator's REST side: BitMEX's `/api/v1` over the exchange model.

Each endpoint is a plain function of (api key, parameters) returning rows, listed in
`RestApi.routes` with the parameters BitMEX's schema gives it (kinds of params.py). The
request pipeline around it (`RestApi.serve`) does what BitMEX does before and after: fault
injection, signature checks, the rate-limit budget and its headers, parameter parsing (query
string, form-encoded or JSON body) and validation, and the `{"error": {"message", "name"}}`
bodies. A handler only ever sees the parameters its route declares, of their declared types.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from sniper.model import OPEN_ORD_STATUSES, parse_time
from sniper.sim.access import AuthError, check_signature
from sniper.sim.buckets import BIN_SECONDS, MAX_COUNT
from sniper.sim.params import (
    BOOLEAN,
    DATE_TIME,
    FILTER,
    INTEGER,
    NAMES,
    NUMBER,
    TEXT,
    TIMEOUT_MS,
    Invalid,
    validate,
)
from sniper.sim.rows import ExchangeError

API_PREFIX = "/api/v1"
MSG_OVERLOADED = "The system is currently overloaded. Please try again later."
MSG_RATE_LIMITED = "Rate limit exceeded, retry in {seconds} seconds."
MSG_REJECTED = "Order rejected: the exchange declined it (simulated rejection)."
MSG_NOT_FOUND = "Not Found"
MSG_NOT_UTF8 = "Request body must be UTF-8 text"

# The parameters of each route as BitMEX's schema (swagger.json) names and types them; the
# ranges are BitMEX's rules. Parameters of the schema that the simulator has no use for
# (targetAccountId(s)) are left out and so ignored.
COUNT = INTEGER.within(0, MAX_COUNT)
LIST_QUERY = {"symbol": TEXT, "filter": FILTER, "columns": NAMES, "count": COUNT, "start": INTEGER.within(0),
              "reverse": BOOLEAN, "startTime": DATE_TIME, "endTime": DATE_TIME}
NEW_ORDER = {"symbol": TEXT, "side": TEXT, "simpleOrderQty": NUMBER, "orderQty": INTEGER, "price": NUMBER,
             "displayQty": INTEGER, "stopPx": NUMBER, "clOrdID": TEXT, "clOrdLinkID": TEXT, "pegOffsetValue": NUMBER,
             "pegPriceType": TEXT, "ordType": TEXT, "timeInForce": TEXT, "execInst": TEXT, "contingencyType": TEXT,
             "text": TEXT}
AMEND = {"orderID": TEXT, "origClOrdID": TEXT, "clOrdID": TEXT, "simpleOrderQty": NUMBER, "orderQty": INTEGER,
         "simpleLeavesQty": NUMBER, "leavesQty": INTEGER, "price": NUMBER, "stopPx": NUMBER, "pegOffsetValue": NUMBER,
         "text": TEXT}
HISTORY_SCAN = 10_000_000  # rows a filtered history query may look through before paging
TRADE_EXEC_TYPES = frozenset({"Trade", "Funding", "Settlement"})
ASSETS = [{"asset": "XBT", "currency": "XBt", "majorCurrency": "XBT", "name": "Bitcoin", "currencyType": "Crypto",
           "scale": 8, "enabled": True, "isMarginCurrency": True, "memoRequired": False, "networks": []}]


class HttpError(Exception):
    def __init__(self, status: int, message: str, name: str = "HTTPError", headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.name, self.headers = status, message, name, headers or {}


def json_response(obj, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, headers=headers, content_type="application/json")


def error_response(status: int, message: str, name: str = "HTTPError", headers: dict | None = None) -> web.Response:
    return json_response({"error": {"message": message, "name": name}}, status, headers)


def body_text(body: bytes) -> str:
    """The request body as the text a client signed; 400 when it is not UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ExchangeError(400, MSG_NOT_UTF8, "ValidationError") from None


def parse_body(text: str, content_type: str) -> dict:
    """The raw parameters of a JSON or form-encoded body (anything but JSON is read as a form)."""
    if not text:
        return {}
    if content_type == "application/json":
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ExchangeError(400, "Request body could not be parsed as JSON", "ValidationError") from None
        if not isinstance(obj, dict):
            raise ExchangeError(400, "Request body must be a JSON object", "ValidationError")
        return obj
    return dict(parse_qsl(text, keep_blank_values=True))


def _matches(row: dict, filter_: dict) -> bool:
    for key, want in filter_.items():
        if key == "open":
            if (row.get("ordStatus") in OPEN_ORD_STATUSES) != bool(want):
                return False
        elif key == "ordStatus.isTerminated":
            if (row.get("ordStatus") not in OPEN_ORD_STATUSES) != bool(want):
                return False
        elif isinstance(want, list):
            if row.get(key) not in want:
                return False
        elif row.get(key) != want:
            return False
    return True


def select(rows: list[dict], p: dict, time_field: str = "timestamp") -> list[dict]:
    """BitMEX list-query semantics: symbol, filter, startTime/endTime, reverse, start, count, columns."""
    symbol = p.get("symbol")
    if symbol:
        rows = [r for r in rows if r.get("symbol") == symbol]
    filter_ = p.get("filter")
    if filter_:
        rows = [r for r in rows if _matches(r, filter_)]
    lo, hi = p.get("startTime"), p.get("endTime")
    if lo is not None or hi is not None:
        rows = [r for r in rows if _within(r.get(time_field), lo, hi)]
    if p.get("reverse"):
        rows = rows[::-1]
    start = p.get("start", 0)
    rows = rows[start:start + p.get("count", 100)]
    return _columns(rows, p.get("columns"))


def _columns(rows: list[dict], columns: list[str] | None) -> list[dict]:
    """Only the asked columns, plus the item keys BitMEX always returns."""
    if not columns:
        return rows
    keep = set(columns) | {"symbol", "timestamp", "orderID", "execID", "account"}
    return [{k: v for k, v in r.items() if k in keep} for r in rows]


def _within(stamp, lo, hi) -> bool:
    t = parse_time(stamp)
    return t is not None and (lo is None or t >= lo) and (hi is None or t <= hi)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: object  # (api key or None, validated parameters) -> rows
    private: bool  # needs a signed request
    schema: dict  # parameter name -> params.Kind


class RestApi:
    """The `/api/v1` endpoints of one simulator (all calls on its event loop).

    It serves `exchange` and the recorded bars of `buckets` up to `clock` (simulated
    time), checks signatures against `real_clock` (clients sign with wall time), obeys
    the `faults` in force and the `limiter`'s budget (None: unlimited), and counts
    requests, placed and rejected orders in `counters`."""

    def __init__(self, exchange, buckets, *, clock, real_clock, faults, limiter, counters) -> None:
        self.exchange = exchange
        self.buckets = buckets
        self.clock = clock
        self.real_clock = real_clock
        self.faults = faults
        self.limiter = limiter
        self.counters = counters
        self.routes = (
            Route("GET", "/instrument", self.get_instrument, False, LIST_QUERY),
            Route("GET", "/instrument/active", self.get_instrument, False, {}),
            Route("GET", "/instrument/activeAndIndices", self.get_instrument_and_indices, False, {}),
            Route("GET", "/orderBook/L2", self.get_order_book, False, {"symbol": TEXT, "depth": INTEGER.within(0)}),
            Route("GET", "/trade", self.get_trades, False, LIST_QUERY),
            Route("GET", "/trade/bucketed", self.get_bucketed, False,
                  {"binSize": TEXT, "partial": BOOLEAN, **LIST_QUERY}),
            Route("GET", "/funding", self.get_funding, False, LIST_QUERY),
            Route("GET", "/wallet/assets", self.get_assets, False, {}),
            Route("GET", "/order", self.get_orders, True, LIST_QUERY),
            Route("POST", "/order", self.post_order, True, NEW_ORDER),
            Route("PUT", "/order", self.put_order, True, AMEND),
            Route("DELETE", "/order", self.delete_order, True, {"orderID": NAMES, "clOrdID": NAMES, "text": TEXT}),
            Route("DELETE", "/order/all", self.delete_all, True, {"symbol": TEXT, "filter": FILTER, "text": TEXT}),
            Route("POST", "/order/cancelAllAfter", self.cancel_all_after, True, {"timeout": TIMEOUT_MS}),
            Route("GET", "/position", self.get_positions, True, {"filter": FILTER, "columns": NAMES, "count": COUNT}),
            Route("POST", "/position/leverage", self.post_leverage, True, {"symbol": TEXT, "leverage": NUMBER}),
            Route("POST", "/position/isolate", self.post_isolate, True, {"symbol": TEXT, "enabled": BOOLEAN}),
            Route("GET", "/user/margin", self.get_margin, True, {"currency": TEXT}),
            Route("GET", "/user/wallet", self.get_wallet, True, {"currency": TEXT}),
            Route("GET", "/execution/tradeHistory", self.get_trade_history, True, LIST_QUERY),
        )

    def install(self, app: web.Application) -> None:
        for route in self.routes:
            app.router.add_route(route.method, API_PREFIX + route.path, self._endpoint(route))
        app.router.add_route("*", API_PREFIX + "/{tail:(?s:.*)}", self._not_found)  # any path, newlines too

    def _endpoint(self, route: Route):
        async def endpoint(request: web.Request) -> web.Response:
            return await self.serve(request, route)

        return endpoint

    async def _not_found(self, request: web.Request) -> web.Response:
        return error_response(404, MSG_NOT_FOUND)

    async def serve(self, request: web.Request, route: Route) -> web.Response:
        """The request pipeline: early faults, admission (text, signature, budget), the
        parameters validated against the route's schema, the handler, late faults."""
        faults = self.faults
        self.counters["rest_requests"] += 1
        body = await request.read()
        headers: dict = {}
        try:
            overload = faults.get("overload")
            if overload is not None and not overload.after_commit:
                raise HttpError(503, MSG_OVERLOADED)
            limited = faults.get("ratelimit")
            if limited is not None:
                retry = max(1, math.ceil(limited.remaining())) if math.isfinite(limited.until) else 60
                raise HttpError(429, MSG_RATE_LIMITED.format(seconds=retry), "RateLimitError",
                                {"Retry-After": str(retry)})
            api_key, raw = self._admit(request, body, route.private, headers)
            params = validate(route.schema, raw)
            hold = faults.get("timeout")
            if hold is not None and not hold.after_commit:
                await asyncio.sleep(hold.delay_ms / 1000.0)
            result = route.handler(api_key, params)
        except Invalid as exc:
            return error_response(400, f"Invalid {exc.name}", "ValidationError", headers)
        except AuthError as exc:
            return error_response(exc.status, str(exc), headers=headers)
        except HttpError as exc:
            return error_response(exc.status, exc.message, exc.name, {**headers, **exc.headers})
        except ExchangeError as exc:
            return error_response(exc.status, exc.message, exc.name, headers)
        if hold is not None and hold.after_commit:
            await asyncio.sleep(hold.delay_ms / 1000.0)
        overload = faults.get("overload")
        if overload is not None and overload.after_commit:
            return error_response(503, MSG_OVERLOADED, headers=headers)
        return json_response(result, headers=headers)

    def _admit(self, request: web.Request, body: bytes, private: bool, headers: dict) -> tuple[str | None, dict]:
        """(the api key the request proved, or None; its raw query and body parameters).

        The rate-limit budget charged is the verified key's, else the peer address's: a request
        carrying someone's key without a valid signature costs that account nothing, and budgets
        exist per account or address, never per header value. Every request is charged, refused
        or not (the `finally`), and an exhausted budget answers 429 ahead of any other refusal."""
        api_key = None
        try:
            text = body_text(body)
            if private or "api-key" in request.headers:
                h = request.headers
                api_key = check_signature(self.exchange, self.real_clock.now(), h.get("api-key"),
                                          h.get("api-expires"), h.get("api-signature"), request.method,
                                          request.raw_path, text)
            return api_key, {**request.query, **parse_body(text, request.content_type)}
        finally:
            self._charge(api_key or request.remote or "", headers)

    def _charge(self, who: str, headers: dict) -> None:
        """Take one request from `who`'s budget; 429 once it is spent."""
        if self.limiter is None:
            return
        allowance = self.limiter.take(who)
        headers.update(allowance.headers())
        if not allowance.allowed:
            raise HttpError(429, MSG_RATE_LIMITED.format(seconds=allowance.retry_after), "RateLimitError",
                            {"Retry-After": str(allowance.retry_after)})

    # ---- public market data ----------------------------------------------------------------------
    def get_instrument(self, key, p):
        return select([self.exchange.instrument_row()], p)

    def get_instrument_and_indices(self, key, p):
        inst = self.exchange.instrument_row()
        index = {"symbol": inst.get("referenceSymbol", ".BXBT"), "rootSymbol": inst.get("rootSymbol", "XBT"),
                 "state": "Unlisted", "typ": "MRCXXX", "lastPrice": inst.get("markPrice"),
                 "markPrice": inst.get("markPrice"), "timestamp": inst.get("timestamp")}
        return select([inst, index], p)

    def get_order_book(self, key, p):
        symbol = p.get("symbol")
        if not symbol:
            raise ExchangeError(400, "'symbol' is a required arg.", "ValidationError")
        if symbol != self.exchange.symbol:
            return []
        return self.exchange.l2_rows(p.get("depth", 25) or None)  # depth 0: the whole book

    def _history(self, fetch, p) -> list[dict]:
        """BitMEX history-query semantics over `fetch(count, start, reverse, start_time, end_time)`
        (rows in time order within the window): symbol, filter, paging and columns."""
        symbol = p.get("symbol")
        if symbol and symbol.upper() not in (self.exchange.symbol, self.exchange.instrument.get("rootSymbol")):
            return []
        count, start, reverse = p.get("count", 100), p.get("start", 0), p.get("reverse", False)
        lo, hi = p.get("startTime"), p.get("endTime")
        filter_ = p.get("filter")
        if filter_:  # filter first, then page, as BitMEX does
            rows = [r for r in fetch(HISTORY_SCAN, 0, reverse, lo, hi) if _matches(r, filter_)]
            rows = rows[start:start + count]
        else:
            rows = fetch(count, start, reverse, lo, hi)
        return _columns(rows, p.get("columns"))

    def get_trades(self, key, p):
        return self._history(lambda count, start, reverse, lo, hi: self.exchange.trades(
            count=count, start=start, reverse=reverse, startTime=lo, endTime=hi), p)

    def get_funding(self, key, p):
        return self._history(lambda count, start, reverse, lo, hi: self.exchange.funding_rows(
            count=count, start=start, reverse=reverse, startTime=lo, endTime=hi), p)

    def get_bucketed(self, key, p):
        bin_size = p.get("binSize", "1m")
        if bin_size not in BIN_SECONDS:
            raise ExchangeError(400, f"binSize must be one of {', '.join(BIN_SECONDS)}", "ValidationError")
        now = self.clock.now()
        return self._history(lambda count, start, reverse, lo, hi: self.buckets.query(
            bin_size, now, count=count, start=start, reverse=reverse, start_time=lo, end_time=hi), p)

    def get_assets(self, key, p):
        return ASSETS

    # ---- orders ----------------------------------------------------------------------------------
    def get_orders(self, key, p):
        return select(self.exchange.orders(key), p)

    def post_order(self, key, p):
        if self.faults.reject_order():
            self.counters["orders_rejected"] += 1
            raise ExchangeError(400, MSG_REJECTED)
        order = self.exchange.place_order(key, **p)
        self.counters["orders_placed"] += 1
        return order

    def put_order(self, key, p):
        return self.exchange.amend_order(key, **p)

    def delete_order(self, key, p):
        return self.exchange.cancel_orders(key, orderID=p.get("orderID"), clOrdID=p.get("clOrdID"),
                                           text=p.get("text"))

    def delete_all(self, key, p):
        filter_ = p.get("filter")
        ids = None
        if filter_:  # e.g. {"side": "Buy"}: cancel only the open orders it matches
            ids = [r["orderID"] for r in self.exchange.orders(key, open_only=True) if _matches(r, filter_)]
        return self.exchange.cancel_all(key, symbol=p.get("symbol"), text=p.get("text"), order_ids=ids)

    def cancel_all_after(self, key, p):
        timeout = p.get("timeout")
        if timeout is None:
            raise ExchangeError(400, "'timeout' is a required arg.", "ValidationError")
        return self.exchange.cancel_all_after(key, int(timeout))

    # ---- account ---------------------------------------------------------------------------------
    def get_positions(self, key, p):
        return select(self.exchange.positions(key), p)

    def post_leverage(self, key, p):
        if p.get("leverage") is None:
            raise ExchangeError(400, "'leverage' is a required arg.", "ValidationError")
        return self.exchange.set_leverage(key, p.get("symbol") or self.exchange.symbol, p["leverage"])

    def post_isolate(self, key, p):
        return self.exchange.isolate(key, p.get("symbol") or self.exchange.symbol, p.get("enabled", True))

    def get_margin(self, key, p):
        margin = self.exchange.margin(key)
        return [margin] if p.get("currency") == "all" else margin

    def get_wallet(self, key, p):
        return self.exchange.wallet(key)

    def get_trade_history(self, key, p):
        rows = [r for r in self.exchange.executions(key) if r.get("execType") in TRADE_EXEC_TYPES]
        return select(rows, p, "transactTime")
