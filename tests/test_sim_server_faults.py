"""Every fault mode of the simulator, switched at run time through the control
endpoint while real clients are connected, and the rest of the control endpoint
(state counters, feed, clock, book, trade, mark, accounts)."""

from __future__ import annotations

import json
import time

import pytest
import requests
import websocket

OVERLOADED = "The system is currently overloaded. Please try again later."


def place(sim, clid: str, price: float = 4000, timeout: float = 5.0):
    body = json.dumps({"symbol": "XBTUSD", "side": "Buy", "orderQty": 1, "price": price, "clOrdID": clid})
    headers = {**sim.headers("POST", "/api/v1/order", body), "content-type": "application/json"}
    return requests.post(sim.url + "/api/v1/order", data=body, headers=headers, timeout=timeout)


def open_clids(sim) -> set[str]:
    resp = requests.get(sim.url + "/api/v1/order", headers=sim.headers("GET", "/api/v1/order"), timeout=5)
    assert resp.status_code == 200, resp.text
    return {o["clOrdID"] for o in resp.json()}


def test_drop_closes_websockets_and_refuses_new_ones_for_a_while(sim_server):
    ws1, ws2 = sim_server.ws(), sim_server.ws()
    assert sim_server.state()["ws_clients"] == 2
    assert sim_server.control("fault", {"mode": "drop", "seconds": 0.8})["dropped"] == 2
    for ws in (ws1, ws2):
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            ws.recv(timeout=3)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(sim_server.ws_url, timeout=3)
    assert refused.value.status_code == 503
    time.sleep(1.0)
    fresh = sim_server.ws()  # accepted again once the period is over
    fresh.send("ping")
    assert fresh.recv() == "pong"
    assert sim_server.state()["ws_clients"] == 1


def test_stall_keeps_the_socket_open_but_silent(sim_server):
    ws = sim_server.ws()
    sim_server.control("fault", {"mode": "stall", "seconds": 1.0})
    started = time.monotonic()
    ws.send("ping")
    ws.conn.ping(b"beat")
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.conn.settimeout(0.6)
        ws.conn.recv_data(control_frame=True)
    assert ws.recv(timeout=3) == "pong"  # held, then delivered once the stall is over
    assert time.monotonic() - started >= 0.9
    ws.conn.ping(b"again")
    ws.conn.settimeout(3)
    assert ws.conn.recv_data(control_frame=True) == (websocket.ABNF.OPCODE_PONG, b"again")


def test_delay_holds_each_message(sim_server):
    ws = sim_server.ws(query="subscribe=quote:XBTUSD")
    ws.until(lambda m: isinstance(m, dict) and m.get("table") == "quote")
    sim_server.control("fault", {"mode": "delay", "delay_ms": 400})
    started = time.monotonic()
    sim_server.control("book", {"levels": [{"side": "Buy", "price": 5556.5, "size": 9}]})
    quote = ws.until(lambda m: isinstance(m, dict) and m.get("table") == "quote")
    assert quote["data"][0]["bidPrice"] == 5556.5
    assert time.monotonic() - started >= 0.38
    sim_server.control("fault", method="DELETE")
    started = time.monotonic()
    ws.barrier()
    assert time.monotonic() - started < 0.3


def test_overload_answers_503_and_applies_nothing(sim_server):
    sim_server.control("fault", {"mode": "overload", "seconds": 0.7})
    resp = place(sim_server, "during-overload")
    assert resp.status_code == 503
    assert resp.json() == {"error": {"message": OVERLOADED, "name": "HTTPError"}}
    assert requests.get(sim_server.url + "/api/v1/instrument", timeout=5).status_code == 503
    time.sleep(0.8)
    assert "during-overload" not in open_clids(sim_server)
    assert place(sim_server, "after-overload").status_code == 200


def test_overload_after_commit_applies_the_order_but_fails_the_reply(sim_server):
    sim_server.control("fault", {"mode": "overload", "after_commit": True})
    resp = place(sim_server, "lost-reply")
    assert resp.status_code == 503 and resp.json()["error"]["message"] == OVERLOADED
    sim_server.control("fault", method="DELETE")
    assert "lost-reply" in open_clids(sim_server)
    assert place(sim_server, "lost-reply").status_code == 400  # the retry is a duplicate clOrdID


def test_timeout_loses_the_reply_of_an_applied_order(sim_server):
    sim_server.control("fault", {"mode": "timeout", "delay_ms": 1500, "after_commit": True})
    with pytest.raises(requests.exceptions.ReadTimeout):
        place(sim_server, "slow-reply", timeout=0.4)
    sim_server.control("fault", method="DELETE")
    assert "slow-reply" in open_clids(sim_server)


def test_ratelimit_fault_answers_429_with_retry_after(sim_server):
    sim_server.control("fault", {"mode": "ratelimit", "seconds": 3})
    resp = requests.get(sim_server.url + "/api/v1/instrument", timeout=5)
    assert resp.status_code == 429
    assert 1 <= int(resp.headers["Retry-After"]) <= 3
    assert resp.json()["error"]["name"] == "RateLimitError"
    sim_server.control("fault", method="DELETE")
    assert requests.get(sim_server.url + "/api/v1/instrument", timeout=5).status_code == 200


def test_reject_refuses_a_share_of_new_orders(sim_server):
    sim_server.control("fault", {"mode": "reject", "share": 1.0})
    resp = place(sim_server, "rejected")
    assert resp.status_code == 400 and resp.json()["error"]["name"] == "HTTPError"
    sim_server.control("fault", {"mode": "reject", "share": 0.5, "seconds": 30})
    codes = [place(sim_server, f"half-{i}", price=4000 + i).status_code for i in range(30)]
    assert set(codes) == {200, 400}
    state = sim_server.state()
    assert state["counters"]["orders_rejected"] == 1 + codes.count(400)
    assert state["orders_placed"] == codes.count(200)
    assert "rejected" not in open_clids(sim_server)


def test_fault_validation_and_listing(sim_server):
    for bad in ({"mode": "explode"}, {"mode": "delay"}, {"mode": "reject", "share": 2},
                {"mode": "overload", "seconds": -1}):
        resp = requests.post(sim_server.url + "/_control/fault", json=bad, timeout=5)
        assert resp.status_code == 400, bad
    sim_server.control("fault", {"mode": "stall", "seconds": 30})
    sim_server.control("fault", {"mode": "reject", "share": 0.25})
    faults = sim_server.state()["faults"]
    assert set(faults) == {"stall", "reject"}
    assert 29 < faults["stall"]["remaining"] <= 30 and faults["reject"]["remaining"] is None
    assert sim_server.control("fault", method="DELETE") == {"faults": {}}
    assert sim_server.state()["faults"] == {}


def test_control_state_counts_clients_orders_and_messages(sim_server):
    before = sim_server.state()
    assert (before["ws_clients"], before["orders_placed"], before["paused"]) == (0, 0, True)
    ws = sim_server.ws(query="subscribe=trade:XBTUSD")
    place(sim_server, "counted")
    ws.barrier()
    after = sim_server.state()
    assert after["ws_clients"] == 1 and after["orders_placed"] == 1
    assert after["messages_sent"] >= 4  # welcome, subscribe reply, partial, pong
    assert after["subscriptions"] == {"trade": 1}


def test_control_feed_and_clock(sim_server):
    t0 = sim_server.state()["time"]
    time.sleep(0.3)
    assert sim_server.state()["time"] == t0  # paused: simulated time stands still
    moved = sim_server.control("clock", {"advance": 120})
    assert moved["time"] == pytest.approx(t0 + 120)
    running = sim_server.control("feed", {"paused": False, "speed": 100})
    assert running["paused"] is False and running["speed"] == 100
    time.sleep(0.5)
    later = sim_server.state()["time"]
    assert later - (t0 + 120) > 20
    sim_server.control("feed", {"paused": True})
    trades = requests.get(sim_server.url + "/api/v1/trade?reverse=true&count=1", timeout=5).json()
    assert trades and trades[0]["timestamp"] > "2018-11-19T00:02"  # the feed printed trades while running
    assert requests.post(sim_server.url + "/_control/clock", json={"advance": -5}, timeout=5).status_code == 400


def test_control_book_trade_mark_and_account(sim_server):
    book = sim_server.control("book", {"clear": True, "levels": [{"side": "Buy", "price": 5000, "size": 10},
                                                                  {"side": "Sell", "price": 5001, "size": 20}]})
    assert (book["best_bid"], book["best_ask"]) == (5000, 5001)
    rows = requests.get(sim_server.url + "/api/v1/orderBook/L2?symbol=XBTUSD&depth=0", timeout=5).json()
    assert {(r["side"], r["price"], r["size"]) for r in rows} == {("Buy", 5000, 10), ("Sell", 5001, 20)}
    printed = sim_server.control("trade", {"side": "Buy", "qty": 5, "price": None})["trades"]
    assert [(t["side"], t["size"], t["price"]) for t in printed] == [("Buy", 5, 5001)]
    sim_server.control("mark", {"price": 4990.5})
    (inst,) = requests.get(sim_server.url + "/api/v1/instrument", timeout=5).json()
    assert inst["markPrice"] == 4990.5 and inst["lastPrice"] == 5001
    sim_server.control("account", {"key": "late-key", "secret": "late-secret-000", "balance_xbt": 0.5})
    from sniper import auth

    headers = auth.headers(auth.Credentials("late-key", "late-secret-000"), "GET", "/api/v1/user/wallet", "",
                           time.time())
    wallet = requests.get(sim_server.url + "/api/v1/user/wallet", headers=headers, timeout=5).json()
    assert wallet["amount"] == 50_000_000
    assert requests.post(sim_server.url + "/_control/trade", json={"side": "Up", "qty": 1},
                         timeout=5).status_code == 400


def test_a_client_too_far_behind_is_cut_off_and_the_rest_carry_on(sim_factory):
    sim = sim_factory(max_backlog=20)
    slow = sim.ws(query="subscribe=orderBookL2:XBTUSD")
    slow.until(lambda m: isinstance(m, dict) and m.get("action") == "partial")
    sim.control("fault", {"mode": "stall", "seconds": 30})  # nothing is written: the backlog grows
    for i in range(25):
        sim.control("book", {"levels": [{"side": "Buy", "price": 5000.0 + i, "size": 1 + i}]})
    state = sim.control("state", method="GET")
    assert state["counters"].get("slow_disconnects") == 1
    assert state["ws_backlog"] == 0  # the queue was released, not kept
    sim.control("fault", method="DELETE")
    with pytest.raises((websocket.WebSocketException, OSError)):
        while True:  # whatever reached the socket before the cut, then the end of the stream
            slow.conn.settimeout(3)
            if slow.conn.recv() == "":
                raise websocket.WebSocketConnectionClosedException("closed")
    fresh = sim.ws(query="subscribe=orderBookL2:XBTUSD")
    partial = fresh.until(lambda m: isinstance(m, dict) and m.get("action") == "partial")
    assert {"side": "Buy", "price": 5024.0, "size": 25} in [
        {k: row[k] for k in ("side", "price", "size")} for row in partial["data"]]

