"""The shared state: every table's BitMEX semantics, readiness, the
executor's helpers, bad input, and snapshots read while a writer runs."""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections.abc import Mapping
from types import MappingProxyType

import pytest
from conftest import SHARED_DATA
from hypothesis import given, settings
from hypothesis import strategies as st

from sniper import auth
from sniper.clock import SimClock
from sniper.journal import Journal
from sniper.model import OPEN_ORD_STATUSES, TERMINAL_ORD_STATUSES
from sniper.ws.book import ReferenceBook
from sniper.ws.session import Session
from sniper.ws.state import EXECUTION_FIELDS, PRIVATE_TABLES, PUBLIC_TABLES, State, configure_switch_interval
from sniper.ws.tables import DEFAULT_KEYS, OrderTable, Table

DATA = SHARED_DATA
PAYLOADS = DATA / "bitmex-payloads"


def msg(table, action, data, keys=None):
    m = {"table": table, "action": action, "data": data}
    if action == "partial":
        m["keys"] = list(DEFAULT_KEYS.get(table, ("symbol", "id", "side")) if keys is None else keys)
    return json.dumps(m)


def book_partial():
    return msg("orderBookL2", "partial", [
        {"symbol": "XBTUSD", "id": 1, "side": "Sell", "size": 10, "price": 101.0},
        {"symbol": "XBTUSD", "id": 2, "side": "Buy", "size": 20, "price": 100.0}])


def order(oid, clid, status="New", leaves=100, **extra):
    return {"orderID": oid, "clOrdID": clid, "symbol": "XBTUSD", "side": "Buy", "orderQty": 100, "price": 99.0,
            "ordStatus": status, "leavesQty": leaves, "cumQty": 100 - leaves, **extra}


def ready_state(private=True):
    state = State()
    tables = PUBLIC_TABLES + (PRIVATE_TABLES if private else ())
    state.begin_session(tables)
    for table in tables:
        state.apply_message(book_partial() if table == "orderBookL2" else msg(table, "partial", []))
    return state


# ---- example payloads -----------------------------------------------------------

WS_TABLE = {
    "ws_execution.json": "execution", "ws_execution_cancel_reject.json": "execution",
    "ws_funding_rate.json": "funding", "ws_instrument.json": "instrument",
    "ws_instrument_index_update.json": "instrument", "ws_instrument_mark_update.json": "instrument",
    "ws_liquidation.json": "liquidation", "ws_margin.json": "margin", "ws_order.json": "order",
    "ws_orderbook_10.json": "orderBook10", "ws_orderbook_l2.json": "orderBookL2", "ws_position.json": "position",
    "ws_quote.json": "quote", "ws_trade.json": "trade", "ws_trade_bin_1m.json": "tradeBin1m",
    "ws_wallet.json": "wallet",
    "http_get_executions.json": "execution", "http_get_instrument_xbtusd.json": "instrument",
    "http_get_instrument_xbtm26_xbtu26_spread.json": "instrument", "http_get_orders.json": "order",
    "http_get_positions.json": "position", "http_get_trade_bins.json": "tradeBin1m",
    "http_get_trades.json": "trade", "http_get_wallet.json": "wallet",
}
NOT_ROWS = {"http_error_response.json", "credential_post_order.json"}


def test_every_example_payload_has_a_table():
    if not PAYLOADS.exists():
        pytest.skip(f"{PAYLOADS} is missing")
    assert {p.name for p in PAYLOADS.glob("*.json")} == set(WS_TABLE) | NOT_ROWS


@pytest.mark.parametrize("name", sorted(WS_TABLE))
def test_example_payload_parses_into_its_table(name):
    path = PAYLOADS / name
    if not path.exists():
        pytest.skip(f"{path} is missing")
    rows = json.loads(path.read_text())
    rows = rows if isinstance(rows, list) else [rows]
    table = WS_TABLE[name]
    state = State(symbol=rows[0].get("symbol") or "XBTUSD")
    state.apply_message(msg(table, "partial", rows))
    if table == "orderBookL2":
        assert state.book.level_of(rows[0]["id"], rows[0]["side"]) == (rows[0]["price"], rows[0]["size"])
    elif table == "order":
        open_rows = [r for r in rows if r["ordStatus"] in OPEN_ORD_STATUSES]
        assert state.table_rows("order") == open_rows
        for r in rows:
            assert state.order_by_clordid(r["clOrdID"]) == r
    else:
        assert state.table_rows(table) == rows
    assert not state.errors, state.errors
    snap = state.snapshot()
    expect_field = {"instrument": "instrument", "position": "position", "margin": "margin", "wallet": "wallet",
                    "trade": "last_trade"}
    if table in expect_field and rows[0].get("symbol", state.symbol) == state.symbol:
        newest = rows[-1] if table == "trade" else rows[0]
        assert dict(getattr(snap, expect_field[table])) == newest


def test_example_instrument_updates_merge_into_the_partial():
    """The shipped update payloads carry a few fields: applied as BitMEX sends
    them (an update after the partial) they change those fields only; one for
    another symbol (DOTUSDT) leaves our instrument alone."""
    if not PAYLOADS.exists():
        pytest.skip(f"{PAYLOADS} is missing")
    full = json.loads((PAYLOADS / "ws_instrument.json").read_text())
    index = json.loads((PAYLOADS / "ws_instrument_index_update.json").read_text())
    mark = json.loads((PAYLOADS / "ws_instrument_mark_update.json").read_text())
    state = State()
    state.apply_message(msg("instrument", "partial", [full]))
    state.apply_message(msg("instrument", "insert", [{**mark, "symbol": "DOTUSDT"}]))
    state.apply_message(msg("instrument", "update", [index, mark]))
    assert not state.errors, state.errors
    snap = state.snapshot()
    assert dict(snap.instrument) == {**full, **index}
    assert snap.mark_price == full["markPrice"] and snap.funding_rate == full.get("fundingRate")


@pytest.mark.parametrize("session", [False, True])
def test_non_row_payloads_are_logged_not_applied(caplog, session):
    state = State()
    if session:
        Session(state)
    for name in sorted(NOT_ROWS):
        state.apply_message((PAYLOADS / name).read_bytes() if PAYLOADS.exists() else b"{}")
    assert sum(state.errors.values()) == 2 and state.seq == 0


def test_instrument_updates_merge_and_publish_funding():
    state = State()
    state.apply_message(msg("instrument", "partial", [{"symbol": "XBTUSD", "markPrice": 100.5, "fundingRate": 0.0001,
                                                       "fundingTimestamp": "2024-11-25T12:00:00.000Z",
                                                       "lastPrice": 100.0}]))
    state.apply_message(msg("instrument", "update", [{"symbol": "XBTUSD", "lastPrice": 101.0}]))
    snap = state.snapshot()
    assert snap.instrument["lastPrice"] == 101.0 and snap.instrument["markPrice"] == 100.5  # omitted field kept
    assert (snap.mark_price, snap.funding_rate, snap.funding_timestamp) == (100.5, 0.0001, "2024-11-25T12:00:00.000Z")
    state.apply_message(msg("instrument", "update", [{"symbol": "XBTUSD", "markPrice": 99.0, "fundingRate": -0.0002}]))
    later = state.snapshot()
    assert (later.mark_price, later.funding_rate) == (99.0, -0.0002)
    assert snap.mark_price == 100.5 and snap.instrument["markPrice"] == 100.5  # the old snapshot never changes
    with pytest.raises(TypeError):
        snap.instrument["markPrice"] = 1.0
    with pytest.raises(AttributeError):
        snap.best_bid = 1.0


def test_trade_table_is_keyless_and_bounded():
    state = State()
    state.apply_message(msg("trade", "partial", []))
    for i in range(1200):
        state.apply_message(msg("trade", "insert", [{"symbol": "XBTUSD", "price": 100.0 + i, "size": 1}]))
    assert len(state.table_rows("trade")) == 1000
    assert state.snapshot().last_trade["price"] == 1299.0
    state.apply_message(msg("trade", "update", [{"symbol": "XBTUSD", "price": 1.0}]))
    assert state.errors["bad trade rows"] == 1


def test_generic_table_semantics():
    t = Table("position")
    assert t.keys == ("account", "symbol")
    _, problems = t.apply("partial", [{"account": 1, "symbol": "XBTUSD", "currentQty": 0, "avgEntryPrice": None}])
    assert not problems
    t.apply("update", [{"account": 1, "symbol": "XBTUSD", "currentQty": 5}])
    assert t.get(1, "XBTUSD") == {"account": 1, "symbol": "XBTUSD", "currentQty": 5, "avgEntryPrice": None}
    _, problems = t.apply("update", [{"account": 2, "symbol": "XBTUSD", "currentQty": 1}, {"symbol": "XBTUSD"},
                                     {"account": [1], "symbol": "XBTUSD"}, "junk"])
    assert len(problems) == 4 and len(t) == 1
    t.apply("delete", [{"account": 1, "symbol": "XBTUSD"}])
    assert len(t) == 0
    t.apply("partial", [{"a": 1, "b": 2}], keys=["a"])  # a partial may redefine the keys
    assert t.keys == ("a",) and t.get(1) == {"a": 1, "b": 2}


def test_rows_before_the_partial_are_dropped():
    state = State()
    state.apply_message(msg("position", "insert", [{"account": 1, "symbol": "XBTUSD", "currentQty": 3}]))
    state.apply_message(msg("orderBookL2", "update", [{"symbol": "XBTUSD", "id": 1, "side": "Buy", "size": 1}]))
    assert state.dropped_before_partial == 2 and state.table_rows("position") == []
    snap = state.snapshot()
    assert snap.position is None and snap.bids == [] and not state.errors


# ---- orders and executions ---------------------------------------------------------

def test_order_lifecycle_and_executions():
    state = ready_state()
    seq0 = state.private_seq
    state.apply_message(msg("order", "insert", [order("o1", "c1"), order("o2", "c2")]))
    assert [o["orderID"] for o in state.snapshot().orders] == ["o1", "o2"]
    state.apply_message(msg("execution", "insert", [{"execID": "e1", "orderID": "o1", "clOrdID": "c1",
                                                     "execType": "Trade", "lastQty": 100, "lastPx": 99.0}]))
    state.apply_message(msg("order", "update", [{"orderID": "o1", "ordStatus": "Filled", "leavesQty": 0,
                                                 "cumQty": 100}]))
    state.apply_message(msg("order", "update", [{"orderID": "o2", "leavesQty": 0}]))  # cancelled, status omitted
    snap = state.snapshot()
    assert snap.orders == () and snap.private_seq == seq0 + 4
    closed = state.order_by_clordid("c1")
    assert closed["ordStatus"] == "Filled" and closed["price"] == 99.0  # merged with the insert's fields
    assert state.order_by_id("o2")["leavesQty"] == 0 and state.order_by_clordid("nope") is None
    execs = state.executions_since(seq0)
    assert [e["execID"] for e in execs] == ["e1"]
    assert state.executions_since(seq0 + 2) == ()
    # a new session's partial repeats the execution: recorded once, still findable
    state.begin_session(PUBLIC_TABLES + PRIVATE_TABLES)
    state.apply_message(msg("execution", "partial", [{"execID": "e1", "orderID": "o1"},
                                                     {"execID": "e2", "orderID": "o3"}]))
    assert [e["execID"] for e in state.executions_since(seq0)] == ["e1", "e2"]
    assert state.order_by_clordid("c1")["ordStatus"] == "Filled"  # closed orders survive reconnects


def test_the_execution_history_keeps_what_its_readers_take(tmp_path):
    """A BitMEX execution row carries ~47 fields; the history (10,000 rows by default) keeps the
    ones read of it, and the journal records a fill from that alone. The table stays whole."""
    state = ready_state()
    seq0 = state.private_seq
    row = {"execID": "e1", "orderID": "o1", "clOrdID": "c1", "account": 1, "symbol": "XBTUSD", "side": "Buy",
           "lastQty": 100, "lastPx": 99.0, "execType": "Trade", "execComm": -2, "trdMatchID": "m1",
           "homeNotional": 0.01, "text": "x" * 200, "transactTime": "2018-11-19T00:00:00.000Z",
           "timestamp": "2018-11-19T00:00:00.000Z"}
    state.apply_message(msg("execution", "insert", [row]))
    (kept,) = state.executions_since(seq0)
    assert dict(kept) == {k: row[k] for k in EXECUTION_FIELDS} and state.table_rows("execution") == [row]
    journal = Journal(tmp_path / "j.sqlite", SimClock(0.0, speed=0))
    assert journal.record_fill(dict(kept))
    assert journal.fills() == [{"exec_id": "e1", "clordid": "c1", "side": "Buy", "qty": 100, "price": 99.0,
                                "ts": "2018-11-19T00:00:00.000Z"}]
    journal.close()


def test_rows_for_a_just_closed_order_are_merged_not_reported():
    """BitMEX can send another row for an order it has just closed: it updates
    the closed record (still closed, still findable), no error is logged; a
    row for an order never seen is still reported."""
    state = ready_state()
    state.apply_message(msg("order", "insert", [order("o1", "c1")]))
    state.apply_message(msg("order", "update", [{"orderID": "o1", "ordStatus": "Canceled", "leavesQty": 0}]))
    state.apply_message(msg("order", "update", [{"orderID": "o1", "workingIndicator": False, "text": "done"}]))
    state.apply_message(msg("order", "delete", [{"orderID": "o1"}]))
    assert not state.errors, state.errors
    closed = state.order_by_clordid("c1")
    assert (closed["ordStatus"], closed["text"], closed["price"]) == ("Canceled", "done", 99.0)
    assert state.order_by_id("o1") == closed and state.snapshot().orders == ()
    state.apply_message(msg("order", "update", [{"orderID": "never-seen", "leavesQty": 0}]))
    assert state.errors["bad order rows"] == 1


FINAL_STATUSES = tuple(sorted(TERMINAL_ORD_STATUSES))  # DoneForDay and Stopped included


@st.composite
def order_streams(draw):
    """A valid stream of order and execution messages, one row each: new
    orders, updates carrying a random subset of fields (an order closes on a
    final status or leavesQty 0), fills announced by an execution first,
    deletes, and late rows for closed orders. Returns the frames and the
    expected (open orders, closed orders, execIDs) after each."""
    open_, closed, execs, frames = {}, {}, [], []
    for n in range(draw(st.integers(1, 30))):
        action = draw(st.sampled_from(["insert", "update", "fill", "delete", "late"]))
        if action in ("update", "fill", "delete") and not open_ or action == "late" and not closed:
            action = "insert"
        if action == "insert":
            row = order(f"o{n}", f"c{n}", leaves=draw(st.integers(1, 100)))
            open_[row["orderID"]] = row
            frames.append(msg("order", "insert", [row]))
        elif action == "late":
            oid = draw(st.sampled_from(sorted(closed)))
            fields = {"orderID": oid, "text": draw(st.text(max_size=4)), "workingIndicator": False}
            closed[oid] = {**closed[oid], **fields}
            frames.append(msg("order", "update", [fields]))
        else:
            oid = draw(st.sampled_from(sorted(open_)))
            if action == "delete":
                closed[oid] = open_.pop(oid)
                frames.append(msg("order", "delete", [{"orderID": oid}]))
            else:
                fields = draw(st.fixed_dictionaries({}, optional={
                    "price": st.sampled_from([98.0, 99.5]), "leavesQty": st.integers(0, 100),
                    "ordStatus": st.sampled_from(tuple(sorted(OPEN_ORD_STATUSES)) + FINAL_STATUSES),
                    "text": st.text(max_size=4)}))
                if action == "fill":
                    execs.append(f"e{n}")
                    frames.append(msg("execution", "insert", [{"execID": f"e{n}", "orderID": oid,
                                                               "execType": "Trade", "lastQty": 1}]))
                row = {**open_[oid], **fields, "orderID": oid}
                if row["ordStatus"] in FINAL_STATUSES or row["leavesQty"] <= 0:
                    del open_[oid]
                    closed[oid] = row
                else:
                    open_[oid] = row
                frames.append(msg("order", "update", [{"orderID": oid, **fields}]))
        frames[-1] = (frames[-1], list(open_.values()), dict(closed), list(execs))
    return frames


@settings(max_examples=150, deadline=None)
@given(order_streams())
def test_random_valid_order_streams_match_the_model(frames):
    state = ready_state()
    for frame in frames:
        if isinstance(frame, str):  # an execution ahead of its order update
            state.apply_message(frame)
            continue
        raw, open_orders, closed, execs = frame
        state.apply_message(raw)
        assert [dict(o) for o in state.snapshot().orders] == open_orders
        for oid, row in closed.items():
            assert state.order_by_id(oid) == row and state.order_by_clordid(row["clOrdID"]) == row
        for row in open_orders:
            assert state.order_by_id(row["orderID"]) == row
        assert [e["execID"] for e in state.executions_since(0)] == execs
    assert not state.errors, state.errors


@pytest.mark.parametrize("status", sorted(OPEN_ORD_STATUSES | TERMINAL_ORD_STATUSES))
def test_the_model_says_which_statuses_close_an_order(status):
    """With quantity still to fill, the status alone decides, as sniper.model defines it."""
    state = ready_state()
    state.apply_message(msg("order", "insert", [order("o1", "c1")]))
    state.apply_message(msg("order", "update", [{"orderID": "o1", "ordStatus": status}]))
    assert [o["orderID"] for o in state.snapshot().orders] == ([] if status in TERMINAL_ORD_STATUSES else ["o1"])
    assert state.order_by_clordid("c1")["ordStatus"] == status and not state.errors


def test_order_partial_keeps_only_open_orders():
    table = OrderTable(closed_history=2)
    table.apply("partial", [order("a", "ca"), order("b", "cb", "Canceled", 0), order("c", "cc", "Rejected", 0),
                            order("d", "cd", "Filled", 0)])
    assert [r["orderID"] for r in table.rows()] == ["a"]
    assert list(table.closed) == ["c", "d"]  # bounded history
    assert table.find("clOrdID", "cd")["ordStatus"] == "Filled" and table.find("clOrdID", "cb") is None
    table.apply("insert", [{"orderID": "e", "ordStatus": ["Filled"], "leavesQty": "?"}])  # junk types: still open
    assert table.find("orderID", "e") is not None


def test_wait_private_wakes_on_private_messages():
    state = ready_state()
    seq = state.private_seq
    assert state.wait_private(seq, 0.01) == seq  # times out
    timer = threading.Timer(0.05, state.apply_message,
                            [msg("position", "insert", [{"account": 1, "symbol": "XBTUSD", "currentQty": 7}])])
    timer.start()
    assert state.wait_private(seq, 5.0) == seq + 1
    timer.join()
    assert state.snapshot().position["currentQty"] == 7
    state.apply_message(msg("trade", "insert", [{"symbol": "XBTUSD", "price": 1.0, "size": 1}]))
    assert state.private_seq == seq + 1  # public tables do not bump it


# ---- readiness -------------------------------------------------------------------------

def test_wait_change_wakes_on_a_touch_move_only():
    state = ready_state()
    seq, touch = state.private_seq, state.touch()
    assert touch == (100.0, 101.0)
    deeper = msg("orderBookL2", "insert", [{"symbol": "XBTUSD", "id": 3, "side": "Buy", "size": 5, "price": 99.0}])
    timer = threading.Timer(0.02, state.apply_message, [deeper])
    timer.start()
    started = time.monotonic()
    assert state.wait_change(seq, touch, 0.3) is False  # a level behind the touch is no reason to wake
    assert time.monotonic() - started >= 0.29
    timer.join()
    better = msg("orderBookL2", "insert", [{"symbol": "XBTUSD", "id": 4, "side": "Buy", "size": 5, "price": 100.5}])
    timer = threading.Timer(0.05, state.apply_message, [better])
    timer.start()
    started = time.monotonic()
    assert state.wait_change(seq, touch, 5.0) is True
    assert time.monotonic() - started < 2.0 and state.touch() == (100.5, 101.0)
    timer.join()
    assert state.touch_waiters == 0
    assert state.wait_change(seq, None, 0.01) is False  # without a touch only private messages count


def test_ready_only_after_every_partial():
    state = State()
    assert not state.snapshot().ready
    state.begin_session(PUBLIC_TABLES)
    for table in PUBLIC_TABLES:
        snap = state.snapshot()
        assert not snap.ready and "waiting for partials" in snap.reason and table in snap.reason
        state.apply_message(book_partial() if table == "orderBookL2" else msg(table, "partial", []))
    snap = state.snapshot()
    assert snap.ready and snap.reason is None and snap.best_bid == 100.0
    state.mark_not_ready("connection lost")
    snap = state.snapshot()
    assert not snap.ready and snap.reason == "connection lost" and snap.best_bid == 100.0
    state.begin_session(PUBLIC_TABLES)  # a new connection starts from new partials
    snap = state.snapshot()
    assert not snap.ready and snap.bids == [] and snap.instrument == {}


def test_book_inconsistency_asks_for_a_resync(caplog):
    state = ready_state(private=False)
    bad = msg("orderBookL2", "update", [{"symbol": "XBTUSD", "id": 77, "side": "Buy", "size": 5}])
    with caplog.at_level(logging.WARNING, logger="sniper.ws.state"):
        state.apply_message(bad)
    snap = state.snapshot()
    assert not snap.ready and "update of unknown id" in snap.reason and snap.bids == []
    assert "update of unknown id" in state.resync_reason
    assert len(caplog.records) == 1 and '"id": 77' in caplog.records[0].getMessage()
    state.apply_message(msg("orderBookL2", "insert", [{"symbol": "XBTUSD", "id": 3, "side": "Buy", "size": 1,
                                                       "price": 99.0}]))
    assert state.dropped_before_partial == 1  # nothing applies until the partial
    state.apply_message(book_partial())
    assert state.book.valid and state.snapshot().best_ask == 101.0


def test_crossing_message_is_not_silently_fixed():
    state = ready_state(private=False)
    state.apply_message(msg("orderBookL2", "insert", [{"symbol": "XBTUSD", "id": 3, "side": "Buy", "size": 1,
                                                       "price": 102.0}]))
    assert not state.snapshot().ready and "crossed" in state.resync_reason


def test_data_age_uses_the_clock():
    clock = SimClock(start=1_000_000.0, speed=0)
    state = State(clock=clock)
    assert state.snapshot().data_age == float("inf")
    state.apply_message(book_partial())
    clock.advance(2.5)
    assert state.snapshot().data_age == pytest.approx(2.5)


# ---- bad input and server errors ---------------------------------------------------------

BAD = [
    (b"{not json", "malformed JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"hello": 1}', "unknown message"),
    ('{"table": "chat", "action": "insert", "data": []}', "unknown table"),
    ('{"table": "trade", "action": "upsert", "data": []}', "unknown action"),
    ('{"table": "trade", "action": "insert", "data": {}}', "no data list"),
    ('{"table": "trade", "action": "partial", "keys": [1], "data": []}', "malformed keys"),
    ('{"table": "position", "action": "update", "data": [{"symbol": "XBTUSD"}]}', "bad position rows"),
    ('{"success": false, "request": {"op": "subscribe"}}', "unsuccessful request"),
    ('{"status": 400, "error": "Unknown table: foo", "request": {"op": "subscribe", "args": ["foo"]}}',
     "server error 400"),
]


@pytest.mark.parametrize("raw,kind", BAD)
def test_bad_input_is_logged_once_with_the_message(raw, kind, caplog):
    """Frames the state cannot use and control frames the session cannot use (an unknown
    message, an unsuccessful request, a server error) land in the state's one ledger, once
    each, and leave the data alone."""
    state = ready_state()
    Session(state)
    before = state.snapshot(None)
    with caplog.at_level(logging.WARNING, logger="sniper.ws.state"):
        state.apply_message(raw)
    assert len(caplog.records) == 1
    text = caplog.records[0].getMessage()
    assert kind in text and (raw.decode() if isinstance(raw, bytes) else raw)[:12] in text
    after = state.snapshot(None)
    assert after.ready and (after.bids, after.asks, after.orders) == (before.bids, before.asks, before.orders)


@pytest.mark.parametrize("session", [False, True])
def test_logged_messages_are_redacted(caplog, session):
    creds = auth.Credentials("key-abc", "very-secret-value-123")
    sig_msg = auth.ws_auth_message(creds, 1_700_000_000)
    raw = json.dumps({"status": 400, "error": f"bad secret {creds.secret}", "request": sig_msg})
    state = State()
    if session:
        Session(state)
    with caplog.at_level(logging.WARNING, logger="sniper.ws.state"):
        state.apply_message(raw)
    text = caplog.records[0].getMessage()
    assert creds.secret not in text and sig_msg["args"][2] not in text and "***" in text


def test_a_flood_of_bad_messages_is_thinned(caplog):
    state = State()
    with caplog.at_level(logging.WARNING, logger="sniper.ws.state"):
        for _ in range(2500):
            state.apply_message("garbage")
    assert state.errors["malformed JSON"] == 2500 and len(caplog.records) == 20 + 2


def test_401_is_fatal_and_429_asks_to_wait():
    """The state passes the server's errors to the session, which keeps the verdicts;
    a fatal one also marks the data not ready at once."""
    state = ready_state()
    session = Session(state)
    state.apply_message('{"status": 429, "error": "Rate limit exceeded", "meta": {"retryAfter": 7}}')
    assert session.retry_after == 7.0 and session.fatal is None and state.snapshot().ready
    state.apply_message('{"status": 401, "error": "Signature not valid.", "request": {"op": "authKeyExpires"}}')
    snap = state.snapshot()
    assert not snap.ready and "authentication failed (401)" in session.fatal and snap.reason == session.fatal
    assert not hasattr(state, "fatal") and not hasattr(state, "retry_after")  # protocol state is not data


def test_acks_track_authentication_and_subscriptions():
    state = State()
    session = Session(state)
    state.apply_message('{"info": "Welcome to the BitMEX Realtime API.", "version": "x"}')
    state.apply_message('{"success": true, "request": {"op": "authKeyExpires", "args": ["k", 1, "s"]}}')
    state.apply_message('{"success": true, "subscribe": "order", "request": {"op": "subscribe"}}')
    assert session.authenticated and session.subscribed == {"order"} and not state.errors
    assert state.seq == 0 and state.tables == {}  # acks are no table data


# ---- concurrency -------------------------------------------------------------------------------

def test_snapshots_stay_consistent_while_the_writer_runs():
    """A reader snapshots while the writer replays the legacy stream; every
    snapshot equals the reference book after exactly `snap.seq` messages.
    The writer also pauses briefly every 1000 frames, so the reader is sure
    to land mid-stream even when a loaded machine delays GIL hand-offs."""
    path = DATA / "streams" / "l2_legacy.ndjson.gz"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    with gzip.open(path, "rb") as f:
        frames = f.read().splitlines()[:20_000]
    ref, expected = ReferenceBook(), {}
    for seq, raw in enumerate(frames, 1):
        m = json.loads(raw)
        ref.apply(m["action"], m["data"])
        expected[seq] = hash((tuple(ref.bids(10)), tuple(ref.asks(10))))
    state = State()
    seen, failures = [], []
    done = threading.Event()

    def reader():
        while not done.is_set():
            snap = state.snapshot(10)
            if snap.seq and hash((tuple(snap.bids), tuple(snap.asks))) != expected[snap.seq]:
                failures.append(snap.seq)
            seen.append(snap.seq)

    previous = configure_switch_interval(0.0001)
    thread = threading.Thread(target=reader)
    try:
        thread.start()
        for i, raw in enumerate(frames):
            state.apply_message(raw)
            if i % 1000 == 999:
                time.sleep(0.001)
    finally:
        done.set()
        thread.join()
        configure_switch_interval(previous)
    assert not failures, failures[:5]
    assert len(set(seen) - {0, len(frames)}) >= 10  # the reader really read mid-stream
    assert state.lock.acquisitions >= len(frames) + len(seen)
    assert isinstance(state.snapshot().instrument, MappingProxyType)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                           max_leaves=6)
FIELDS = ["symbol", "orderID", "clOrdID", "execID", "account", "currency", "ordStatus", "leavesQty", "timestamp",
          "price", "size", "markPrice", "fundingRate"]
JUNK_ROWS = st.lists(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6) | JSON_VALUES, max_size=4)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(DEFAULT_KEYS)), st.sampled_from(["partial", "insert", "update",
                                                                                 "delete"]), JUNK_ROWS),
                max_size=12))
def test_fuzzed_table_messages_never_escape(messages):
    state = ready_state()
    for table, action, rows in messages:
        state.apply_message(json.dumps({"table": table, "action": action, "data": rows}))
        snap = state.snapshot()
        assert isinstance(snap.orders, tuple) and isinstance(snap.instrument, Mapping)
        assert all(isinstance(o, Mapping) for o in snap.orders)
    assert state.errors["internal error"] == 0
    assert state.snapshot().best_bid == 100.0  # other tables never touch the book


def test_order_lookups_forget_orders_a_new_partial_does_not_list():
    """An order open before a reconnect that closed meanwhile is absent from
    the new partial: it must not still be found as open."""
    state = ready_state()
    state.apply_message(msg("order", "insert", [order("o1", "c1"), order("o2", "c2")]))
    state.apply_message(msg("order", "update", [{"orderID": "o2", "ordStatus": "Canceled", "leavesQty": 0}]))
    state.begin_session(PUBLIC_TABLES + PRIVATE_TABLES)
    state.apply_message(msg("order", "partial", []))
    assert state.order_by_clordid("c1") is None and state.order_by_id("o1") is None
    assert state.order_by_clordid("c2")["ordStatus"] == "Canceled"  # closed orders are remembered
    state.apply_message(msg("order", "insert", [order("o3", "c3")]))
    state.apply_message(msg("order", "delete", [{"orderID": "o3"}]))
    assert state.snapshot().orders == () and state.order_by_id("o3")["orderID"] == "o3"
