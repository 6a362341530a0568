"""The simulator's websocket against its own REST: every table's partial followed by
its insert/update/delete stream must rebuild exactly what REST reports, through a
scenario that exercises book changes, fills, amends, cancels, mark moves and a
funding settlement. Also the protocol around it (welcome, ping, subscribe forms,
errors, cancelAllAfter).
"""

from __future__ import annotations

import json
import time

import pytest
import requests
import websocket

PUBLIC = ["orderBookL2:XBTUSD", "orderBookL2_25:XBTUSD", "quote:XBTUSD", "trade:XBTUSD", "instrument:XBTUSD",
          "funding:XBTUSD"]
PRIVATE = ["order", "execution", "position", "margin", "wallet"]


class Mirror:
    """A table rebuilt from the wire with BitMEX semantics; it fails loudly on an
    insert of a row it already has or an update/delete of a row it never had."""

    def __init__(self, partial: dict) -> None:
        self.keys = partial["keys"]
        self.partial = partial
        self.rows: list[dict] = [dict(r) for r in partial["data"]]
        self.actions: list[str] = []

    def _find(self, row: dict) -> int | None:
        key = [row[k] for k in self.keys]
        for i, r in enumerate(self.rows):
            if [r.get(k) for k in self.keys] == key:
                return i
        return None

    def apply(self, msg: dict) -> None:
        self.actions.append(msg["action"])
        for row in msg["data"]:
            if not self.keys:
                assert msg["action"] == "insert", msg
                self.rows.append(dict(row))
                continue
            i = self._find(row)
            if msg["action"] == "insert":
                assert i is None, f"insert of an existing row: {row}"
                self.rows.append(dict(row))
            elif msg["action"] == "update":
                assert i is not None, f"update of an unknown row: {row}"
                self.rows[i].update(row)
            else:
                assert msg["action"] == "delete" and i is not None, f"bad delete: {row}"
                del self.rows[i]


def mirrors_from(messages: list, mirrors: dict) -> dict:
    for msg in messages:
        if not isinstance(msg, dict) or "table" not in msg:
            continue
        if msg["action"] == "partial":
            mirrors[msg["table"]] = Mirror(msg)
        else:
            mirrors[msg["table"]].apply(msg)
    return mirrors


def rest(sim, path: str, verb: str = "GET", body: dict | None = None):
    data = json.dumps(body) if body is not None else ""
    headers = sim.headers(verb, path, data)
    if body is not None:
        headers["content-type"] = "application/json"
    resp = requests.request(verb, sim.url + path, data=data or None, headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def book_of(rows) -> dict:
    return {(r["id"], r["side"]): (r["price"], r["size"]) for r in rows}


@pytest.fixture(scope="module")
def scenario():
    """One paused simulator, one client subscribed to every table, a scripted session;
    yields the tables rebuilt from the wire and the simulator (for REST comparisons)."""
    from conftest import start_sim

    sim = start_sim()
    try:
        ws = sim.ws(auth=True)
        ws.send({"op": "subscribe", "args": PUBLIC + PRIVATE})
        mirrors = mirrors_from(ws.barrier(), {})
        assert set(mirrors) == {t.split(":")[0] for t in PUBLIC + PRIVATE}
        sim.control("book", {"clear": True, "levels": [
            {"side": "Buy", "price": 5550, "size": 100}, {"side": "Buy", "price": 5540, "size": 50},
            {"side": "Sell", "price": 5560, "size": 100}, {"side": "Sell", "price": 5561, "size": 70}]})
        rest(sim, "/api/v1/order", "POST", {"symbol": "XBTUSD", "side": "Buy", "orderQty": 10, "price": 5550,
                                            "clOrdID": "ws-buy"})
        sell = rest(sim, "/api/v1/order", "POST", {"symbol": "XBTUSD", "side": "Sell", "orderQty": 20,
                                                   "price": 5570, "clOrdID": "ws-sell"})
        sim.control("trade", {"side": "Sell", "qty": 150, "price": 5550})  # fills the mm level, then ours
        rest(sim, "/api/v1/order", "PUT", {"orderID": sell["orderID"], "price": 5565})
        rest(sim, "/api/v1/order", "POST", {"symbol": "XBTUSD", "side": "Sell", "orderQty": 4, "ordType": "Market"})
        rest(sim, "/api/v1/order", "DELETE", {"clOrdID": "ws-sell"})
        sim.control("mark", {"price": 5545})
        sim.control("clock", {"advance": 4 * 3600 + 1})  # through the 04:00 funding settlement
        mirrors_from(ws.barrier(), mirrors)
        yield sim, mirrors
    finally:
        sim.stop()


def test_book_tables_match_rest(scenario):
    sim, mirrors = scenario
    full = rest(sim, "/api/v1/orderBook/L2?symbol=XBTUSD&depth=0")
    top = rest(sim, "/api/v1/orderBook/L2?symbol=XBTUSD&depth=25")
    assert book_of(mirrors["orderBookL2"].rows) == book_of(full)
    assert book_of(mirrors["orderBookL2_25"].rows) == book_of(top)
    for table in ("orderBookL2", "orderBookL2_25"):
        assert {"insert", "update", "delete"} <= set(mirrors[table].actions), (table, mirrors[table].actions)
    quote = mirrors["quote"].rows[-1]
    bids = [r for r in full if r["side"] == "Buy"]
    asks = [r for r in full if r["side"] == "Sell"]
    assert (quote["bidPrice"], quote["bidSize"]) == (bids[0]["price"], bids[0]["size"])
    assert (quote["askPrice"], quote["askSize"]) == (asks[-1]["price"], asks[-1]["size"])


def test_trade_and_instrument_match_rest(scenario):
    sim, mirrors = scenario
    wire = mirrors["trade"].rows
    recent = rest(sim, f"/api/v1/trade?symbol=XBTUSD&reverse=true&count={len(wire)}")[::-1]
    assert [t["trdMatchID"] for t in wire] == [t["trdMatchID"] for t in recent]
    assert wire[-1] == recent[-1]
    (inst,) = mirrors["instrument"].rows
    (inst_rest,) = rest(sim, "/api/v1/instrument?symbol=XBTUSD")
    drift = {k: (inst.get(k), v) for k, v in inst_rest.items() if k != "timestamp" and inst.get(k) != v}
    assert not drift, drift  # every field REST reports, the stream kept up to date
    assert inst["markPrice"] == 5545


def test_funding_table_gets_the_settlement(scenario):
    sim, mirrors = scenario
    assert "insert" in mirrors["funding"].actions
    latest = rest(sim, "/api/v1/funding?symbol=XBTUSD&reverse=true&count=1")[0]
    assert mirrors["funding"].rows[-1] == latest
    assert latest["timestamp"].endswith("T04:00:00.000Z")


def test_private_tables_match_rest(scenario):
    sim, mirrors = scenario
    account = rest(sim, "/api/v1/user/margin")["account"]
    for table in PRIVATE:
        assert mirrors[table].partial["filter"] == {"account": account}, table
    orders = {o["orderID"]: o for o in rest(sim, "/api/v1/order?count=100")}
    wire_orders = mirrors["order"].rows
    assert {o["clOrdID"] for o in wire_orders} >= {"ws-buy", "ws-sell"}
    for row in wire_orders:
        assert {k: orders[row["orderID"]][k] for k in row} == row
    (position,) = rest(sim, "/api/v1/position")
    (wire_position,) = mirrors["position"].rows
    assert wire_position == {k: position[k] for k in wire_position}
    assert position["currentQty"] == 6  # bought 10 passively, sold 4 at market
    for table, path in (("margin", "/api/v1/user/margin"), ("wallet", "/api/v1/user/wallet")):
        (wire_row,) = mirrors[table].rows
        rest_row = rest(sim, path)
        assert wire_row == {k: rest_row[k] for k in wire_row}, table
    history = rest(sim, "/api/v1/execution/tradeHistory?count=100")
    wire_execs = {e["execID"]: e for e in mirrors["execution"].rows}
    assert {e["execType"] for e in history} >= {"Trade", "Funding"}
    for row in history:
        assert wire_execs[row["execID"]] == row


def test_feed_stream_stays_consistent_with_rest(sim_factory):
    """With the market running fast, the orderBookL2 and L2_25 streams still rebuild REST's book."""
    sim = sim_factory(paused=False, speed=30, l2_rate=400)
    ws = sim.ws(query="subscribe=orderBookL2:XBTUSD,orderBookL2_25:XBTUSD,trade:XBTUSD")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        ws.recv()
    sim.control("feed", {"paused": True})
    ws.barrier()
    mirrors = mirrors_from(ws.seen, {})  # everything received, partials first
    assert len(mirrors["orderBookL2"].actions) > 50
    assert book_of(mirrors["orderBookL2"].rows) == book_of(rest(sim, "/api/v1/orderBook/L2?symbol=XBTUSD&depth=0"))
    assert book_of(mirrors["orderBookL2_25"].rows) == book_of(
        rest(sim, "/api/v1/orderBook/L2?symbol=XBTUSD&depth=25"))
    assert len(mirrors["trade"].rows) > 1


def test_welcome_ping_and_subscription_replies(sim_server):
    probe = websocket.create_connection(sim_server.ws_url + "?subscribe=instrument,trade:XBTUSD", timeout=5)
    try:
        welcome = json.loads(probe.recv())
        assert welcome["info"] == "Welcome to the BitMEX Realtime API."
        assert welcome["docs"] == "https://www.bitmex.com/app/wsAPI" and "remaining" in welcome["limit"]
        first = [json.loads(probe.recv()) for _ in range(4)]
        assert first[0] == {"success": True, "subscribe": "instrument",
                            "request": {"op": "subscribe", "args": ["instrument", "trade:XBTUSD"]}}
        assert first[1]["table"] == "instrument" and first[1]["action"] == "partial" and first[1]["filter"] == {}
        assert first[2]["subscribe"] == "trade:XBTUSD"
        assert first[3]["keys"] == [] and first[3]["filter"] == {"symbol": "XBTUSD"}
        probe.send("ping")
        assert probe.recv() == "pong"
        probe.ping(b"hb")
        opcode, data = probe.recv_data(control_frame=True)
        assert (opcode, data) == (websocket.ABNF.OPCODE_PONG, b"hb")
    finally:
        probe.close()


def test_subscribe_errors_and_unsubscribe(sim_server):
    ws = sim_server.ws()
    ws.send({"op": "subscribe", "args": ["order"]})
    err = ws.until(lambda m: "error" in m)
    assert err["status"] == 401
    assert err["error"] == "User requested an account-locked subscription but no authorization was provided."
    assert err["request"] == {"op": "subscribe", "args": ["order"]}
    ws.send({"op": "subscribe", "args": "nosuchtable"})
    assert ws.until(lambda m: "error" in m) == {"status": 400, "error": "Unknown table: nosuchtable", "meta": {},
                                                 "request": {"op": "subscribe", "args": "nosuchtable"}}
    ws.send({"op": "subscribe", "args": ["trade:ETHUSD"]})
    assert ws.until(lambda m: "error" in m)["status"] == 400
    ws.send({"op": "subscribe", "args": ["quote:XBTUSD"]})
    ws.until(lambda m: m.get("table") == "quote")
    ws.send({"op": "subscribe", "args": ["quote:XBTUSD"]})
    assert "already subscribed" in ws.until(lambda m: "error" in m)["error"]
    ws.send({"op": "unsubscribe", "args": ["quote:XBTUSD"]})
    assert ws.until(lambda m: "unsubscribe" in m)["success"] is True
    sim_server.control("book", {"levels": [{"side": "Buy", "price": 5556.5, "size": 5}]})  # a new best bid
    assert not [m for m in ws.barrier() if isinstance(m, dict) and m.get("table") == "quote"]
    ws.send("{not json")
    assert ws.until(lambda m: "error" in m)["status"] == 400
    ws.send({"op": "frobnicate"})
    assert "frobnicate" in ws.until(lambda m: "error" in m)["error"]


def test_the_top_25_book_can_be_subscribed_again_after_its_last_subscriber_left(sim_server):
    """The shared top-25 image outlives its subscribers until the next book change; a new
    subscriber then gets a fresh partial (it used to find the image dropped and lose the socket)."""
    for _ in range(2):
        ws = sim_server.ws()
        ws.send({"op": "subscribe", "args": ["orderBookL2_25:XBTUSD"]})
        partial = ws.until(lambda m: m.get("table") == "orderBookL2_25")
        assert partial["action"] == "partial" and len(partial["data"]) == 50
        ws.send({"op": "unsubscribe", "args": ["orderBookL2_25:XBTUSD"]})
        assert ws.until(lambda m: "unsubscribe" in m)["success"] is True
        ws.send({"op": "subscribe", "args": ["orderBookL2_25:XBTUSD"]})
        again = ws.until(lambda m: m.get("table") == "orderBookL2_25")
        assert again["action"] == "partial" and book_of(again["data"]) == book_of(partial["data"])
        ws.barrier()
        ws.close()  # the second round starts with the image kept by a closed connection


def test_cancel_all_after_over_websocket(sim_server):
    ws = sim_server.ws()
    ws.send({"op": "cancelAllAfter", "args": 1000})
    assert ws.until(lambda m: "error" in m)["status"] == 401
    ws.authenticate(sim_server.key, sim_server.secret)
    ws.send({"op": "subscribe", "args": ["order"]})
    ws.until(lambda m: m.get("table") == "order")
    rest(sim_server, "/api/v1/order", "POST", {"symbol": "XBTUSD", "side": "Buy", "orderQty": 3, "price": 5000})
    ws.send({"op": "cancelAllAfter", "args": 60000})
    reply = ws.until(lambda m: "cancelTime" in m)
    assert reply["request"] == {"op": "cancelAllAfter", "args": 60000}
    assert reply["now"].startswith("2018-11-19T00:00:00")
    assert reply["cancelTime"].startswith("2018-11-19T00:01:00")
    sim_server.control("clock", {"advance": 61})
    update = ws.until(lambda m: m.get("table") == "order" and m["action"] == "update")
    assert update["data"][0]["ordStatus"] == "Canceled"
