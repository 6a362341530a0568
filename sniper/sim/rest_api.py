"""The simulator's REST side: BitMEX's `/api/v1` over the exchange model.

Each endpoint is a plain function of (api key, parameters) returning rows; the
request pipeline around it (`RestApi.serve`) does what BitMEX does before and
after: fault injection, the rate-limit budget and its headers, signature
checks, parameter parsing (query string, form-encoded or JSON body) and the
`{"error": {"message", "name"}}` bodies.
"""

from __future__ import annotations

import asyncio
import math
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from sniper.model import OPEN_ORD_STATUSES, parse_time
from sniper.sim.access import AuthError, check_signature
from sniper.sim.buckets import BIN_SECONDS, MAX_COUNT
from sniper.sim.rows import ExchangeError

API_PREFIX = "/api/v1"
MSG_OVERLOADED = "The system is currently overloaded. Please try again later."
MSG_RATE_LIMITED = "Rate limit exceeded, retry in {seconds} seconds."
MSG_REJECTED = "Order rejected: the exchange declined it (simulated rejection)."
MSG_NOT_FOUND = "Not Found"

# Parameter types as the official schema declares them (everything else stays text).
_INTS = frozenset({"orderQty", "displayQty", "leavesQty", "count", "start", "depth"})
_FLOATS = frozenset({"price", "stopPx", "pegOffsetValue", "simpleOrderQty", "simpleLeavesQty", "leverage",
                     "timeout"})
_BOOLS = frozenset({"reverse", "partial", "enabled"})
_TIMES = frozenset({"startTime", "endTime"})
_JSON = frozenset({"filter", "columns"})
ORDER_FIELDS = ("symbol", "side", "orderQty", "price", "displayQty", "stopPx", "clOrdID", "clOrdLinkID",
                "pegOffsetValue", "pegPriceType", "ordType", "timeInForce", "execInst", "contingencyType", "text")
AMEND_FIELDS = ("orderID", "origClOrdID", "clOrdID", "orderQty", "leavesQty", "price", "stopPx",
                "pegOffsetValue", "text")
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


def _invalid(name: str) -> ExchangeError:
    return ExchangeError(400, f"Invalid {name}", "ValidationError")


def _to_float(name: str, value) -> float:
    if isinstance(value, bool):
        raise _invalid(name)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _invalid(name) from None
    if not math.isfinite(number):
        raise _invalid(name)
    return number


def _to_int(name: str, value) -> int:
    number = _to_float(name, value)
    if number != int(number):
        raise _invalid(name)
    return int(number)


def _to_bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0", ""):
        return False
    raise _invalid(name)


def _to_time(name: str, value) -> float | None:
    try:
        return parse_time(value)
    except ValueError:
        raise _invalid(name) from None


def _to_json(name: str, value):
    if not isinstance(value, str):
        return value
    try:
        return orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        raise ExchangeError(400, f"{name} could not be parsed as JSON", "ValidationError") from None


def coerce(params: dict) -> dict:
    """Typed parameters from query/form text or a JSON body."""
    out = {}
    for name, value in params.items():
        if value is None:
            out[name] = None
        elif name in _INTS:
            out[name] = _to_int(name, value)
        elif name in _FLOATS:
            out[name] = _to_float(name, value)
        elif name in _BOOLS:
            out[name] = _to_bool(name, value)
        elif name in _TIMES:
            out[name] = _to_time(name, value)
        elif name == "columns" and isinstance(value, str) and not value.lstrip().startswith("["):
            out[name] = [c.strip() for c in value.split(",") if c.strip()]  # lenient: "a,b" as well as '["a","b"]'
        elif name in _JSON:
            out[name] = _to_json(name, value)
        else:
            out[name] = value
    return out


def parse_body(body: bytes, content_type: str) -> dict:
    if not body:
        return {}
    if content_type == "application/json":
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ExchangeError(400, "Request body could not be parsed as JSON", "ValidationError") from None
        if not isinstance(obj, dict):
            raise ExchangeError(400, "Request body must be a JSON object", "ValidationError")
        return obj
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _id_list(value):
    """orderID / clOrdID may be one id, a JSON array or a comma-separated list."""
    if isinstance(value, str) and value.startswith("["):
        value = _to_json("orderID", value)
    if isinstance(value, str) and "," in value:
        value = [v for v in value.split(",") if v]
    return value


def _count(p: dict, default: int = 100) -> int:
    count = p.get("count")
    if count is None:
        return default
    if count < 0 or count > MAX_COUNT:
        raise ExchangeError(400, f"count must be between 0 and {MAX_COUNT}", "ValidationError")
    return count


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
    filter_ = _filter(p)
    if filter_:
        rows = [r for r in rows if _matches(r, filter_)]
    lo, hi = parse_time(p.get("startTime")), parse_time(p.get("endTime"))
    if lo is not None or hi is not None:
        rows = [r for r in rows if _within(r.get(time_field), lo, hi)]
    if p.get("reverse"):
        rows = rows[::-1]
    start = max(0, p.get("start") or 0)
    rows = rows[start:start + _count(p)]
    return _columns(rows, p.get("columns"))


def _filter(p: dict) -> dict | None:
    filter_ = p.get("filter")
    if filter_ and not isinstance(filter_, dict):
        raise ExchangeError(400, "filter must be a JSON object", "ValidationError")
    return filter_ or None


def _columns(rows: list[dict], columns) -> list[dict]:
    """Only the asked columns, plus the item keys BitMEX always returns."""
    if not columns:
        return rows
    if isinstance(columns, str):
        columns = [columns]
    keep = set(columns) | {"symbol", "timestamp", "orderID", "execID", "account"}
    return [{k: v for k, v in r.items() if k in keep} for r in rows]


def _within(stamp, lo, hi) -> bool:
    t = parse_time(stamp)
    return t is not None and (lo is None or t >= lo) and (hi is None or t <= hi)


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
        # (method, path, handler, private)
        self.routes = (
            ("GET", "/instrument", self.get_instrument, False),
            ("GET", "/instrument/active", self.get_instrument, False),
            ("GET", "/instrument/activeAndIndices", self.get_instrument_and_indices, False),
            ("GET", "/orderBook/L2", self.get_order_book, False),
            ("GET", "/trade", self.get_trades, False),
            ("GET", "/trade/bucketed", self.get_bucketed, False),
            ("GET", "/funding", self.get_funding, False),
            ("GET", "/wallet/assets", self.get_assets, False),
            ("GET", "/order", self.get_orders, True),
            ("POST", "/order", self.post_order, True),
            ("PUT", "/order", self.put_order, True),
            ("DELETE", "/order", self.delete_order, True),
            ("DELETE", "/order/all", self.delete_all, True),
            ("POST", "/order/cancelAllAfter", self.cancel_all_after, True),
            ("GET", "/position", self.get_positions, True),
            ("POST", "/position/leverage", self.post_leverage, True),
            ("POST", "/position/isolate", self.post_isolate, True),
            ("GET", "/user/margin", self.get_margin, True),
            ("GET", "/user/wallet", self.get_wallet, True),
            ("GET", "/execution/tradeHistory", self.get_trade_history, True),
        )

    def install(self, app: web.Application) -> None:
        for method, path, handler, private in self.routes:
            app.router.add_route(method, API_PREFIX + path, self._endpoint(handler, private))
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._not_found)

    def _endpoint(self, handler, private: bool):
        async def endpoint(request: web.Request) -> web.Response:
            return await self.serve(request, handler, private)

        return endpoint

    async def _not_found(self, request: web.Request) -> web.Response:
        return error_response(404, MSG_NOT_FOUND)

    async def serve(self, request: web.Request, handler, private: bool) -> web.Response:
        """The request pipeline: faults, rate limit, auth, parameters, handler, late faults."""
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
            if self.limiter is not None:
                allowance = self.limiter.take(request.headers.get("api-key") or request.remote or "")
                headers.update(allowance.headers())
                if not allowance.allowed:
                    raise HttpError(429, MSG_RATE_LIMITED.format(seconds=allowance.retry_after), "RateLimitError",
                                    {"Retry-After": str(allowance.retry_after)})
            api_key = None
            if private or "api-key" in request.headers:
                h = request.headers
                api_key = check_signature(self.exchange, self.real_clock.now(), h.get("api-key"),
                                          h.get("api-expires"), h.get("api-signature"), request.method,
                                          request.raw_path, body)
            params = coerce({**request.query, **parse_body(body, request.content_type)})
            hold = faults.get("timeout")
            if hold is not None and not hold.after_commit:
                await asyncio.sleep(hold.delay_ms / 1000.0)
            result = handler(api_key, params)
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
        depth = p.get("depth", 25)
        if depth is None or depth < 0:
            raise _invalid("depth")
        return self.exchange.l2_rows(depth or None)

    def _history(self, fetch, p) -> list[dict]:
        """BitMEX history-query semantics over `fetch(count, start, reverse, start_time, end_time)`
        (rows in time order within the window): symbol, filter, paging and columns."""
        symbol = p.get("symbol")
        if symbol and symbol.upper() not in (self.exchange.symbol, self.exchange.instrument.get("rootSymbol")):
            return []
        count, start, reverse = _count(p), max(0, p.get("start") or 0), bool(p.get("reverse"))
        lo, hi = parse_time(p.get("startTime")), parse_time(p.get("endTime"))
        filter_ = _filter(p)
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
        order = self.exchange.place_order(key, **{k: p[k] for k in ORDER_FIELDS if p.get(k) is not None})
        self.counters["orders_placed"] += 1
        return order

    def put_order(self, key, p):
        return self.exchange.amend_order(key, **{k: p[k] for k in AMEND_FIELDS if p.get(k) is not None})

    def delete_order(self, key, p):
        return self.exchange.cancel_orders(key, orderID=_id_list(p.get("orderID")),
                                           clOrdID=_id_list(p.get("clOrdID")), text=p.get("text"))

    def delete_all(self, key, p):
        filter_ = _filter(p)
        ids = None
        if filter_:  # e.g. {"side": "Buy"}: cancel only the open orders it matches
            ids = [r["orderID"] for r in self.exchange.orders(key, open_only=True) if _matches(r, filter_)]
        return self.exchange.cancel_all(key, symbol=p.get("symbol"), text=p.get("text"), order_ids=ids)

    def cancel_all_after(self, key, p):
        timeout = p.get("timeout")
        if timeout is None or timeout < 0:
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
