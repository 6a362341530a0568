"""Generated hostile traffic against a running simulator (`python -m sniper sim`, paused, on
127.0.0.1): REST requests with generated bodies, query strings and headers, some signed by a
real account so that they reach the private handlers; websocket frames on an authenticated
and a public connection; control-endpoint bodies and headers. Whatever comes in:

- no answer is a 5xx, and every REST refusal is BitMEX's `{"error": {"message", "name"}}`;
- no connection is dropped (BitMEX drops none for these) and the server answers /instrument;
- a refused request or frame leaves the account state (orders, position, wallet, margin mode,
  dead man's switch) exactly as it was, and a refused control request the market too.

Each test also runs, every time, the inputs of the issue that made these tests (`@example`).

SNIPER_FUZZ_EXAMPLES sets the examples per test (default 60, about ten seconds for the file;
`make soak` asks for 10,000 a test)."""

from __future__ import annotations

import json
import os
import time
from urllib.parse import quote, urlencode

import pytest
import requests
import websocket
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sniper import auth
from sniper.sim.rest_api import RestApi

EXAMPLES = int(os.environ.get("SNIPER_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                               HealthCheck.too_slow])
API = "/api/v1"
ROUTES = RestApi(None, None, clock=None, real_clock=None, faults=None, limiter=None, counters=None).routes
NAMES = sorted({name for r in ROUTES for name in r.schema})  # every parameter a route declares

# text a client can put anywhere (no lone surrogates: no client library can encode those)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
HOSTILE = st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", "1e20", "-1", "0", "2147483648", "1.5", "[[1]]",
                           "[1]", "{", "{}", '{"open": true}', "[]", "null", "true", "2018-13-45", "garbage",
                           "99999-01-01", "Buy", "XBTUSD", "", " ", "\x00", "ß", "%ff"])
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | TEXT | HOSTILE)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(TEXT | st.sampled_from(NAMES), inner, max_size=4), max_leaves=8)
PARAMS = st.dictionaries(st.sampled_from(NAMES) | TEXT, JSON_VALUES, max_size=6)
QUERY = st.dictionaries(st.sampled_from(NAMES) | TEXT, TEXT | HOSTILE, max_size=3)
# header values http.client will send (printable latin-1)
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
                      max_size=40).filter(lambda t: t == t.strip())
CONTENT_TYPES = st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain",
                                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", None])


# values a route takes, by (swagger type, format): plausible ones reach the handlers' own checks
PLAUSIBLE = {
    ("string", None): st.sampled_from(["XBTUSD", "xbt", "Buy", "Sell", "Limit", "Market", "GoodTillCancel",
                                       "ImmediateOrCancel", "ParticipateDoNotInitiate", "ReduceOnly", "1m", "1h",
                                       "all", "fuzz-1"]),
    ("integer", "int32"): st.integers(-3, 3000),
    ("number", "double"): st.integers(-2, 40_000).map(lambda ticks: ticks / 2) | st.floats(-1e6, 1e21),
    ("boolean", None): st.booleans(),
    ("string", "date-time"): st.integers(1_500_000_000, 1_600_000_000).map(
        lambda t: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))),
    ("string", "JSON"): st.dictionaries(st.sampled_from(["side", "open", "ordStatus", "symbol"]), SCALARS, max_size=2)
    | st.lists(st.sampled_from(["price", "side", "orderID", "size"]), max_size=3),
}


def as_query(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


@st.composite
def rest_requests(draw):
    """(verb, path with query, body, headers, how signed, a forged key, a forged signature)."""
    if draw(st.integers(0, 9)):
        route = draw(st.sampled_from(ROUTES))
        verb, path = route.method, API + route.path
        params = draw(st.dictionaries(st.sampled_from(sorted(route.schema) or ["symbol"]) | TEXT,
                                      st.one_of(*[PLAUSIBLE[k.swagger] for k in route.schema.values()], JSON_VALUES),
                                      max_size=5))
    else:  # a path the simulator does not serve
        verb = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
        path, params = API + "/" + quote(draw(TEXT)), draw(PARAMS)
    in_query = {k: v for k, v in params.items() if draw(st.booleans())}
    query = urlencode({k: as_query(v) for k, v in in_query.items()} | draw(QUERY))
    path_query = path + ("?" + query if query else "")
    rest = {k: v for k, v in params.items() if k not in in_query}
    encoding = draw(st.sampled_from(["none", "json", "form", "text", "bytes"]))
    body = {"none": b"", "json": json.dumps(rest).encode(),
            "form": urlencode({str(k): as_query(v) for k, v in rest.items()}).encode(),
            "text": draw(TEXT).encode(), "bytes": draw(st.binary(max_size=60))}[encoding]
    headers = {}
    content_type = draw(CONTENT_TYPES)
    if content_type:
        headers["Content-Type"] = content_type
    how = draw(st.sampled_from(["signed", "forged", "anonymous"]))
    return verb, path_query, body, headers, how, draw(HEADER_TEXT), draw(HEADER_TEXT | st.just("9999999999"))


def account_state(sim) -> dict:
    return sim.state()["accounts"]


def assert_answered(sim, resp: requests.Response, what) -> None:
    assert resp.status_code < 500, (what, resp.status_code, resp.text)
    if resp.status_code >= 400 and resp.request.path_url.startswith(API):
        error = resp.json()["error"]
        assert set(error) == {"message", "name"} and all(isinstance(v, str) for v in error.values()), what
    instrument = sim.session.get(sim.url + API + "/instrument", timeout=10)
    assert instrument.status_code == 200, instrument.text


@pytest.fixture
def sim(sim_factory):
    return sim_factory(rate_limit=0)


def test_generated_rest_requests(sim):
    creds = auth.Credentials(sim.key, sim.secret)

    @FUZZ
    @given(rest_requests())
    @example(("POST", API + "/order", b'\xff{"symbol": "XBTUSD"}', {"Content-Type": "application/json"}, "forged",
              "", "0" * 64))
    @example(("GET", API + "/instrument?columns=%5B%5B1%5D%5D", b"", {}, "anonymous", "", ""))
    @example(("GET", API + "/trade", b'{"symbol": ["XBTUSD"]}', {"Content-Type": "application/json"}, "signed",
              "", ""))
    @example(("POST", API + "/order/cancelAllAfter", b'{"timeout": 1e20}', {"Content-Type": "application/json"},
              "signed", "", ""))
    def check(request):
        verb, path, body, headers, how, key, signature = request
        if how == "signed":
            try:
                headers.update(auth.headers(creds, verb, path, body.decode(), time.time(), ttl=60))
            except UnicodeDecodeError:  # bytes no client can sign: sent with a forged signature
                how = "forged"
        if how == "forged":
            headers.update({"api-key": key or sim.key, "api-expires": str(int(time.time()) + 60),
                            "api-signature": signature})
        before = account_state(sim)
        resp = sim.session.request(verb, sim.url + path, data=body or None, headers=headers, timeout=10)
        assert_answered(sim, resp, request)
        if resp.status_code >= 400:
            assert account_state(sim) == before, request

    check()


WS_OPS = st.sampled_from(["subscribe", "unsubscribe", "authKeyExpires", "cancelAllAfter", "help", ""]) | TEXT
WS_ARGS = (JSON_VALUES | st.integers(-(2**64), 2**64) | st.floats(allow_nan=False, allow_infinity=False)
           | st.tuples(JSON_VALUES | st.just("sim-demo-key"), JSON_VALUES | st.integers(0, 2**64),
                       JSON_VALUES).map(list))  # authKeyExpires-shaped
WS_FRAMES = (st.builds(lambda op, args: json.dumps({"op": op, "args": args}), WS_OPS, WS_ARGS)
             | st.builds(lambda op, args: json.dumps({"op": op, "args": args}), WS_OPS,
                         st.lists(st.sampled_from(["trade", "order", "orderBookL2_25:XBTUSD", "margin", "quote:ETH",
                                                   "instrument:XBTUSD"]) | TEXT, max_size=3))
             | JSON_VALUES.map(json.dumps) | TEXT)


def test_generated_websocket_frames(sim):
    private, public = sim.ws(auth=True), sim.ws()

    @FUZZ
    @given(st.lists(WS_FRAMES, min_size=1, max_size=4), st.booleans())
    @example(['{"op": "authKeyExpires", "args": [["sim-demo-key"], 1, "s"]}'], False)
    @example(['{"op": "authKeyExpires", "args": ["sim-demo-key", 9999999999, 12345]}'], False)
    @example(['{"op": "cancelAllAfter", "args": 1e20}', '{"op": "cancelAllAfter", "args": 9223372036854775808}'], True)
    def check(frames, on_private):
        ws = private if on_private else public
        for frame in frames:
            before = account_state(sim)
            ws.send(frame)
            replies = ws.barrier()  # everything the frame caused; a dropped connection fails here
            errors = [m for m in replies if isinstance(m, dict) and "error" in m]
            for m in errors:
                assert isinstance(m["status"], int) and 400 <= m["status"] < 500 and isinstance(m["error"], str), m
            if len(errors) == len(replies):  # refused (or no answer at all, as to an empty subscribe)
                assert account_state(sim) == before, frame

    check()
    assert sim.session.get(sim.url + API + "/instrument", timeout=10).status_code == 200
    with pytest.raises(websocket.WebSocketTimeoutException):
        private.recv(0.2)  # still open: nothing more to read, and no close


CONTROL_FIELDS = {  # the fields each control route reads (/clock's `feed` left out: replaying days costs minutes)
    "clock": ["advance"], "mark": ["price"], "book": ["clear", "levels"], "trade": ["side", "qty", "price"],
    "account": ["key", "secret", "balance_xbt"],
}
CONTROL_VALUES = (JSON_VALUES | HOSTILE | st.floats(0.5, 1e6) | st.sampled_from(["Buy", "Sell"])
                  | st.lists(st.fixed_dictionaries({}, optional={"side": st.sampled_from(["Buy", "Sell"]) | JSON_VALUES,
                                                                 "price": st.floats(0, 2e6) | JSON_VALUES,
                                                                 "size": st.integers(-5, 10**12) | JSON_VALUES}),
                             max_size=3))


@st.composite
def control_requests(draw):
    route = draw(st.sampled_from(sorted(CONTROL_FIELDS)))
    body = draw(st.dictionaries(st.sampled_from(CONTROL_FIELDS[route]), CONTROL_VALUES, max_size=3))
    headers = {"Content-Type": draw(st.sampled_from(["application/json"] * 4 + ["text/plain", None]))}
    if draw(st.integers(0, 5)) == 0:
        headers["Origin"] = draw(HEADER_TEXT)
    if draw(st.integers(0, 5)) == 0:
        headers["Host"] = draw(HEADER_TEXT)
    return route, json.dumps(body), {k: v for k, v in headers.items() if v is not None}


def market(sim) -> dict:
    state = sim.state()
    (inst,) = sim.session.get(sim.url + API + "/instrument", timeout=10).json()
    return {k: state[k] for k in ("time", "speed", "paused", "best_bid", "best_ask", "faults", "accounts")} | {
        "mark": inst["markPrice"]}


def test_generated_control_requests(sim):
    @FUZZ
    @given(control_requests())
    @example(("clock", '{"advance": "nan"}', {"Content-Type": "application/json"}))
    @example(("mark", '{"price": "nan"}', {"Content-Type": "application/json"}))
    def check(request):
        route, body, headers = request
        before = market(sim)
        resp = requests.post(f"{sim.url}/_control/{route}", data=body, headers=headers, timeout=30)
        assert resp.status_code in (200, 400, 403, 415), (request, resp.status_code, resp.text)
        assert isinstance(resp.json(), dict), request
        if resp.status_code != 200:
            assert market(sim) == before, (request, resp.text)
        assert sim.session.get(sim.url + API + "/instrument", timeout=10).status_code == 200

    check()
