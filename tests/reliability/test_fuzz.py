"""Generated input against the daemon's two parsers: the websocket message handler (State.apply_message
with the connection's Session attached, as the websocket thread runs it) and the REST client's
response parsing (RestClient and the BitMEX venue's reads over it).

Websocket: streams that mix valid orderBookL2 changes (mirrored in ReferenceBook) with garbage:
bytes, text, arbitrary JSON, other tables with arbitrary rows, account rows (position, margin,
instrument) with any values in the figures read of them, control frames (acks, errors, 401,
429 with any retryAfter), and orderBookL2 frames each carrying at least one impossible row. Nothing may raise; after
every frame the book is either exactly the reference (and structurally sound) or flagged for a
resync and not ready (never silently wrong); a flagged book is rebuilt by a new session, as the
client does on reconnect. The session's retry-after is always a wait the thread can obey, and
the risk gate answers every snapshot with a verdict. Our order's rows and executions with any values
in the fields the BitMEX venue and the journal read, through the State, the venue (websocket rows
and REST replies) and the journal: nothing raises, and the journal holds only whole non-negative
counts, finite prices and text statuses.

REST: every answer a server could give (any status, garbled Retry-After and x-ratelimit headers,
any body) ends in a value of the right shape or a typed ExchangeError (VenueError at the venue),
never another exception, and no retry or pacing wait is unbounded.

SNIPER_FUZZ_EXAMPLES sets the example count of each test (100 in CI; `make soak` runs 10,000: an
example is a stream of up to 25 frames or up to 12 REST calls, so that is over 100,000 generated
inputs for each parser; the module reports the counts)."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from types import SimpleNamespace

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict
from rigging import report

from sniper.auth import Credentials
from sniper.clock import SimClock
from sniper.config import RiskConfig
from sniper.journal import Journal
from sniper.orders.bitmex import BitmexVenue
from sniper.orders.manager import Market
from sniper.orders.venue import VenueError, position_of
from sniper.rest import PACE_MAX_S, RETRY_AFTER_MAX_S, ExchangeError, RateLimited, RestClient
from sniper.risk import ProposedOrder, RiskGate
from sniper.ws.book import ReferenceBook
from sniper.ws.session import Session
from sniper.ws.state import State

EXAMPLES = int(os.environ.get("SNIPER_FUZZ_EXAMPLES", "100"))
INPUTS: Counter[str] = Counter()  # generated inputs fed to the parsers, reported at the module's end


@pytest.fixture(scope="module", autouse=True)
def report_inputs(request):
    yield
    report(request, f"fuzz inputs ({EXAMPLES} examples a test): " +
           ", ".join(f"{k} {v:,}" for k, v in sorted(INPUTS.items())))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ------------------------------------------------------------------------------------ websocket
LEVELS = 24  # level ids 0..23: the lower half bids, the upper half asks, so no valid book is crossed
KEYS = ["table", "action", "data", "keys", "symbol", "id", "side", "size", "price", "success", "error",
        "status", "request", "info", "subscribe", "meta", "retryAfter", "op", "args", "orderID", "clOrdID",
        "ordStatus", "currentQty", "execID", "timestamp"]
WORDS = ["XBTUSD", "Buy", "Sell", "t-1-0", "New", "Filled", "Canceled", "Trade", "orderBookL2", "partial"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(WORDS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner,
                                                                max_size=5),
    max_leaves=12)


def level(i: int, size: int) -> dict:
    return {"symbol": "XBTUSD", "id": i, "side": "Buy" if i < LEVELS // 2 else "Sell", "size": size,
            "price": 1000.0 + 0.5 * i}


def l2(action: str, rows: list) -> str:
    msg = {"table": "orderBookL2", "action": action, "data": rows}
    if action == "partial":
        msg["keys"] = ["symbol", "id", "side"]
    return json.dumps(msg)


@st.composite
def valid_change(draw, book: dict[int, int]):
    """(frame, new book) for one BitMEX-consistent orderBookL2 message on `book` (id -> size)."""
    absent = [i for i in range(LEVELS) if i not in book]
    choices = ["partial"] + (["insert"] if absent else []) + (["update", "delete"] if book else [])
    action = draw(st.sampled_from(choices))
    size = st.integers(1, 10**9)
    if action == "partial":
        new = draw(st.dictionaries(st.integers(0, LEVELS - 1), size, max_size=LEVELS))
        return l2("partial", [level(i, s) for i, s in new.items()]), new
    pool = absent if action == "insert" else sorted(book)
    ids = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique=True))
    new = dict(book)
    if action == "delete":
        for i in ids:
            del new[i]
        return l2("delete", [{k: level(i, 0)[k] for k in ("symbol", "id", "side")} for i in ids]), new
    rows = []
    for i in ids:
        new[i] = draw(size)
        row = level(i, new[i])
        if action == "update" and draw(st.booleans()):
            del row["price"]  # BitMEX's updates may omit the price
        rows.append(row)
    return l2(action, rows), new


@st.composite
def broken_l2(draw, book: dict[int, int]):
    """An orderBookL2 insert/update/delete with at least one row no consistent stream can hold."""
    action = draw(st.sampled_from(["insert", "update", "delete"]))
    present, absent = sorted(book), [i for i in range(LEVELS) if i not in book]
    faults = ["bad type", "missing field", "bad side", "bad size"]
    if action != "insert":
        faults.append("unknown id")  # (an insert's id is new by definition)
    elif present:
        faults.append("duplicate")
    fault = draw(st.sampled_from(faults))
    i = draw(st.sampled_from(present if present and fault != "unknown id" else absent or [LEVELS + 5]))
    row = level(i, draw(st.integers(1, 100)))
    if fault == "unknown id":
        row["id"] = LEVELS + draw(st.integers(1, 10**6))
    elif fault == "bad type":
        field = draw(st.sampled_from(["id", "size", "price"] if action == "insert" else ["id", "size"]))
        row[field] = draw(st.text(max_size=4) | st.lists(st.integers(), max_size=2) | st.none())
        if action == "delete" and field == "size":
            row["id"] = str(i)  # a delete reads no size: break its id instead
    elif fault == "missing field":
        del row[draw(st.sampled_from(["id", "side"] + (["size", "price"] if action == "insert" else [])))]
    elif fault == "bad side":
        row["side"] = draw(st.sampled_from(["", "buy", "SELL", "Middle"]))
    elif fault == "bad size":
        if action == "delete":
            row["id"] = -1 - i
        else:
            row["size"] = draw(st.sampled_from([0, -1, -(10**6)]))
    good = [level(j, 1) for j in absent[:1] if j != i] if action == "insert" else []
    return l2(action, good + [row])


STATUSES = (400, 401, 403, 429, 500, "x", None)
ACCOUNT_KEYS = {"position": {"account": 1, "symbol": "XBTUSD", "currency": "XBt"},
                "margin": {"account": 1, "currency": "XBt"}, "instrument": {"symbol": "XBTUSD"}}
FIGURES = ["currentQty", "unrealisedPnl", "avgEntryPrice", "liquidationPrice", "markPrice", "marginBalance",
           "fundingRate", "tickSize", "lotSize"]  # what the gate, the loop, /health and the planner read
ABSURD_WAITS = [1e308, 1.7976931348623157e308, 10**18, -1, -1e308, "1e308", "inf", "nan", True, 4e-324]


def garbage(book: dict[int, int], statuses=STATUSES):
    """Frames that must change no book: junk, arbitrary JSON, other tables, control frames (errors
    with one of `statuses`), orderBookL2 frames with an impossible row."""
    other = st.sampled_from(["trade", "instrument", "funding", "order", "execution", "position", "margin",
                             "wallet", "quote", "nope", 7, None])
    return st.one_of(
        st.binary(max_size=40),
        st.text(max_size=40),
        json_values.map(json.dumps),
        st.builds(lambda t, a, d, k: json.dumps({"table": t, "action": a, "data": d, "keys": k}), other,
                  st.sampled_from(["partial", "insert", "update", "delete", "replace", None]),
                  st.lists(json_values, max_size=3) | json_values, json_values),
        st.builds(lambda s, e, m: json.dumps({"status": s, "error": e, "meta": m}),
                  st.sampled_from(statuses), json_values,
                  st.dictionaries(st.just("retryAfter"), json_values | st.sampled_from(ABSURD_WAITS))),
        st.builds(lambda ok, req, sub: json.dumps({"success": ok, "request": req, "subscribe": sub}),
                  json_values, json_values, json_values),
        broken_l2(book),
        st.builds(lambda t, a, f: json.dumps({"table": t, "action": a, "keys": list(ACCOUNT_KEYS[t]),
                                              "data": [ACCOUNT_KEYS[t] | f]}),
                  st.sampled_from(sorted(ACCOUNT_KEYS)), st.sampled_from(["partial", "update"]),
                  st.dictionaries(st.sampled_from(FIGURES), json_values)),
    )


GATE = RiskGate(RiskConfig(kill_switch_file="", max_orders_per_minute=10**9), SimClock(1_700_000_000.0, speed=0))


def new_session(state: State, book: dict[int, int]) -> None:
    """What the client does after a resync: a new session and the orderBookL2 partial."""
    state.begin_session(("orderBookL2",))
    state.apply_message(l2("partial", [level(i, s) for i, s in book.items()]))


@FUZZ
@given(st.data())
def test_websocket_handler_never_raises_and_never_holds_a_wrong_book(data):
    state = State()
    session = Session(state)  # control frames go where the websocket thread sends them
    book = data.draw(st.dictionaries(st.integers(0, LEVELS - 1), st.integers(1, 10**6), max_size=LEVELS))
    new_session(state, book)
    for _ in range(data.draw(st.integers(1, 25))):
        if data.draw(st.booleans()):
            frame, book = data.draw(valid_change(book))
        else:
            frame = data.draw(garbage(book))
        state.apply_message(frame)  # must not raise
        INPUTS["websocket frames"] += 1
        assert 0 <= session.retry_after <= RETRY_AFTER_MAX_S, (session.retry_after, frame)
        if state.resync_reason is not None or not state.book.valid:
            assert not state.snapshot(0).ready, "a book flagged for resync is still ready"
            new_session(state, book)
            assert state.book.valid
        state.book.check()
        reference = ReferenceBook()
        reference.apply("partial", [level(i, s) for i, s in book.items()])
        snap = state.snapshot(depth=None)
        assert (snap.bids, snap.asks) == (reference.bids(None), reference.asks(None)), frame
        assert isinstance(state.snapshot(0).reason, (str, type(None)))
        try:  # what the executor and /health read of the account: an int, or "unreadable", never a crash
            assert isinstance(position_of(snap), int)
        except VenueError:
            pass
        try:  # the planner's grid: a Market, or unusable, never another error
            Market.of(snap)
        except VenueError:
            pass
        verdict = GATE.check(ProposedOrder("Buy", 1, None), snap)  # the gate says yes or no, naming why
        assert verdict.ok or verdict.rule, verdict


ORDER_FIGURES = ["ordStatus", "cumQty", "leavesQty", "orderQty", "price"]  # what the venue and the journal read
EXECUTION_FIGURES = ["execType", "side", "lastQty", "lastPx", "transactTime", "execComm"]
plausible = (st.integers(0, 300) | st.floats(0, 1e5) | st.sampled_from(["Buy", "Sell", "Trade", "New", "Filled", 2**63])
             | json_values)


@FUZZ
@given(st.data())
def test_order_and_execution_rows_reach_the_journal_whole_or_not_at_all(data):
    clock = SimClock(1_700_000_000.0, speed=0)
    state, journal = State(), Journal(":memory:", clock)
    clordid = journal.new_order(journal.record_intent(100, "passive", "").id, "Buy", 100, 10.0, "Limit").clordid
    mine = {"orderID": "O", "clOrdID": clordid, "symbol": "XBTUSD"}
    state.apply_message(json.dumps({"table": "order", "action": "partial", "keys": ["orderID"], "data": [
        mine | {"ordStatus": "New", "cumQty": 0, "leavesQty": 100, "orderQty": 100, "price": 10.0}]}))
    state.apply_message(json.dumps({"table": "execution", "action": "partial", "keys": ["execID"], "data": []}))
    replies: list[dict] = []
    venue = BitmexVenue(SimpleNamespace(symbol="XBTUSD", amend_order=lambda **kw: replies.pop()), state, clock)
    for _ in range(data.draw(st.integers(1, 12))):
        kind = data.draw(st.sampled_from(["order", "execution", "reply"]))
        fields = data.draw(st.dictionaries(st.sampled_from(EXECUTION_FIGURES if kind == "execution" else ORDER_FIGURES),
                                           plausible, max_size=4))
        INPUTS["order and execution rows"] += 1
        if kind == "reply":
            replies.append(mine | fields)
            journal.update_from_exchange(dict(venue.amend(clordid, price=11.0)))
        else:
            row = mine | fields | ({"execID": data.draw(st.sampled_from(["e1", "e2", "e3"]))} if kind == "execution"
                                   else {})
            state.apply_message(json.dumps({"table": kind, "action": "insert" if kind == "execution" else "update",
                                            "data": [row]}))
        shown = venue.order(clordid)
        if shown is not None:
            journal.update_from_exchange(dict(shown))
        for execution in venue.new_executions():
            journal.record_fill(dict(execution))
        rec = journal.order(clordid)
        assert all(type(q) is int and q >= 0 for q in (rec.cum_qty, rec.leaves_qty, rec.qty)), rec
        assert type(rec.price) is float and math.isfinite(rec.price) and isinstance(rec.ord_status, str), rec
        for f in journal.fills():
            assert type(f["qty"]) is int and f["qty"] > 0 and math.isfinite(f["price"]) and f["side"] in ("Buy", "Sell")
    journal.close()


# ------------------------------------------------------------------------------------ REST
# rows that look like BitMEX's (our symbol, our clOrdID) with any values: they reach the field reads
ROWS = st.fixed_dictionaries({"symbol": st.sampled_from(["XBTUSD", "XBTUSD", "ETHUSD"])},
                             optional={k: json_values for k in KEYS if k != "symbol"} | {"clOrdID": st.just("t-1-0")})


class Canned:
    """A requests.Session whose answers are drawn by hypothesis, one per request."""

    def __init__(self, data) -> None:
        self.data = data
        self.headers: dict = {}
        self.trust_env = False

    def request(self, verb, url, data=None, headers=None, timeout=None):
        INPUTS["REST answers"] += 1
        draw = self.data.draw
        if draw(st.integers(0, 9)) == 0:
            raise draw(st.sampled_from([requests.Timeout, requests.ConnectionError]))("canned")
        resp = requests.Response()
        resp.status_code = draw(st.sampled_from([200, 200, 200, 201, 204, 400, 401, 403, 404, 429, 500, 502, 503, 504])
                                | st.integers(100, 599))
        resp.reason = draw(st.text(max_size=8))
        text_number = st.sampled_from(["1", "0", "-3", "inf", "nan", "1e308", "2.5", "", "x"]) | st.text(max_size=5)
        resp.headers = CaseInsensitiveDict(draw(st.dictionaries(
            st.sampled_from(["retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"]),
            text_number)))
        resp._content = draw(st.one_of(
            st.binary(max_size=30),
            json_values.map(lambda v: json.dumps(v).encode()),
            st.lists(ROWS, max_size=3).map(lambda v: json.dumps(v).encode()),
            st.builds(lambda e: json.dumps({"error": e}).encode(), json_values),
            st.just(b'{"error": {"message": "Duplicate clOrdID", "name": "HTTPError"}}'),
        ))
        return resp


CALLS = {
    "place": lambda rest: rest.place_order(side="Buy", orderQty=1, price=100.0, clOrdID="t-1-0"),
    "amend": lambda rest: rest.amend_order(origClOrdID="t-1-0", price=101.0),
    "cancel": lambda rest: rest.cancel_order(clOrdID="t-1-0"),
    "cancel_all": lambda rest: rest.cancel_all(),
    "dead_mans_switch": lambda rest: rest.cancel_all_after(60000),
    "orders": lambda rest: rest.orders(open_only=True),
    "lookup": lambda rest: rest.order_by_clordid("t-1-0"),
    "position": lambda rest: rest.position(),
    "fills": lambda rest: rest.fills(),
    "margin": lambda rest: rest.margin(),
    "instrument": lambda rest: rest.instrument(),
    "buckets": lambda rest: rest.trade_bucketed(start_time=0.0),
}
SHAPES = {"orders": list, "fills": list, "cancel": list, "cancel_all": list, "buckets": list,
          "place": dict, "amend": dict, "dead_mans_switch": dict, "margin": dict}
VENUE = {
    "open_orders": lambda venue: venue.open_orders(),
    "lookup": lambda venue: venue.lookup("t-1-0"),
    "fills": lambda venue: venue.fills(),
    "position": lambda venue: venue.position(),
    "place": lambda venue: venue.place({"symbol": "XBTUSD", "side": "Buy", "orderQty": 1, "clOrdID": "t-1-0"}),
}


def fuzzed_client(data) -> tuple[RestClient, SimClock]:
    clock = SimClock(1_700_000_000.0, speed=0)  # frozen: a sleep advances it, so waits are measured, not slept
    rest = RestClient("http://127.0.0.1:9", Credentials("k", "fuzz-secret-0123456789"), clock,
                      session=Canned(data), max_elapsed=30.0)
    return rest, clock


@FUZZ
@given(st.data())
def test_rest_parsing_returns_the_right_shape_or_a_typed_error(data):
    rest, clock = fuzzed_client(data)
    started = clock.now()
    for _ in range(data.draw(st.integers(1, 12))):
        name = data.draw(st.sampled_from(sorted(CALLS)))
        try:
            result = CALLS[name](rest)
        except ExchangeError as exc:
            if isinstance(exc, RateLimited):
                assert 0 <= exc.retry_after <= RETRY_AFTER_MAX_S, exc.retry_after
            continue
        if name in SHAPES:
            assert isinstance(result, SHAPES[name]), (name, result)
            if SHAPES[name] is list:
                assert all(isinstance(r, dict) for r in result), (name, result)
        else:
            assert result is None or isinstance(result, dict), (name, result)
    waited = clock.now() - started
    assert math.isfinite(waited) and waited <= 4 * (rest.max_elapsed + PACE_MAX_S + RETRY_AFTER_MAX_S), waited


@FUZZ
@given(st.data())
def test_venue_reads_over_fuzzed_rest_return_rows_or_a_venue_error(data):
    rest, _ = fuzzed_client(data)
    venue = BitmexVenue(rest, State(), rest.clock)
    name = data.draw(st.sampled_from(sorted(VENUE)))
    try:
        result = VENUE[name](venue)
    except VenueError:
        return
    if name == "position":
        assert isinstance(result, int) and not isinstance(result, bool), result
    elif name in ("open_orders", "fills"):
        assert isinstance(result, list) and all(isinstance(r, dict) for r in result)
    else:
        assert result is None or isinstance(result, dict)


# ------------------------------------------------------------------------------------ the websocket thread
class FrameServer:
    """A websocket endpoint on 127.0.0.1 that answers subscriptions with partials and then sends
    the frames of the current example (on the example's first connection only), then a trade."""

    BOOK = [level(i, 10 + i) for i in range(LEVELS)]

    def __init__(self) -> None:
        import asyncio
        import threading

        from aiohttp import web

        self.frames: list = []
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/realtime", self._serve)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"ws://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/realtime"
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    async def _serve(self, request):
        from aiohttp import web

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        first = self.connections == 1
        await ws.send_str(json.dumps({"info": "Welcome to the BitMEX Realtime API."}))
        async for msg in ws:
            if msg.data == "ping":
                await ws.send_str("pong")
                continue
            args = json.loads(msg.data).get("args", [])
            for arg in args:
                await ws.send_str(json.dumps({"success": True, "subscribe": arg, "request": {"op": "subscribe"}}))
            for arg in args:
                table = arg.split(":")[0]
                rows = self.BOOK if table == "orderBookL2" else []
                await ws.send_str(json.dumps({"table": table, "action": "partial", "keys": [], "data": rows}))
            if first:
                for frame in self.frames:
                    await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
            await ws.send_str(json.dumps({"table": "trade", "action": "insert", "data": [
                {"symbol": "XBTUSD", "side": "Buy", "size": 1, "price": 1000.0, "timestamp": "2018-11-19T00:00:00Z",
                 "trdMatchID": "x"}]}))
        return ws


@pytest.fixture(scope="module")
def frame_server():
    return FrameServer()


def ws_client(url: str, state: State):
    """The websocket thread with a fast back-off and a 0.2 s ceiling on a server's retry-after
    (five minutes in production), so a stream's 429 frames are obeyed within the test's time."""
    from sniper.ws.client import WsClient

    return WsClient(url, state, ping_interval=0.5, dead_after=2.0, backoff_initial=0.01, backoff_max=0.05,
                    retry_after_max=0.2, stale_after=None)


def wait_for_trade(client, state: State, timeout: float) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not client.fatal and not (state.ready and state.snapshot(0).last_trade):
        time.sleep(0.01)


@settings(FUZZ, max_examples=max(3, EXAMPLES // 100))
@given(frames=st.lists(garbage({i: 10 + i for i in range(LEVELS)}), min_size=20, max_size=300))
def test_the_websocket_thread_survives_any_stream_and_recovers(frame_server, frames):
    frame_server.frames, frame_server.connections = frames, 0
    INPUTS["websocket frames over the wire"] += len(frames)
    state = State()
    client = ws_client(frame_server.url, state)
    client.start()
    try:
        wait_for_trade(client, state, 10)
        assert client.is_alive() or client.fatal, "the websocket thread died"
        if client.fatal is None:  # a 401 frame stops the client for good, by design; else it recovers
            snap = state.snapshot(None)
            assert snap.ready, snap.reason
            reference = ReferenceBook()
            reference.apply("partial", FrameServer.BOOK)
            assert (snap.bids, snap.asks) == (reference.bids(None), reference.asks(None))
    finally:
        client.stop()


@pytest.mark.parametrize("figure", [1e308, -1, "x", True])
def test_a_429_frame_with_an_absurd_retry_after_does_not_kill_the_websocket_thread(frame_server, figure):
    frame_server.connections = 0
    frame_server.frames = [json.dumps({"status": 429, "error": "slow down", "meta": {"retryAfter": figure}}),
                           l2("delete", [{"symbol": "XBTUSD", "id": 10**6, "side": "Buy"}])]  # forces a reconnect
    state = State()
    client = ws_client(frame_server.url, state)
    client.start()
    try:
        wait_for_trade(client, state, 10)
        assert client.is_alive() and state.ready and frame_server.connections == 2, client.last_end
    finally:
        client.stop()
