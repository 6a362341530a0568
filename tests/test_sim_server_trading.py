"""Trading through the simulator's wire protocol, end to end: real HTTP (and websocket)
clients against a server on 127.0.0.1, with every expected number worked out by hand.

The model tests (test_sim_exchange.py) check the arithmetic in-process; these check that
the same results reach a client through REST and the websocket: post-only rejection, a
marketable limit order sweeping several levels (fills, fees, position, inverse PnL),
partial fill then cancel, amends, funding to longs and shorts, liquidation.

Conventions: 1 contract = 1 USD; value in XBt = qty / price * 1e8, rounded per fill;
a buy's execCost is negative; fees maker -0.025 %, taker 0.075 %; accounts start with
1 XBT = 100,000,000 XBt.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from sniper import auth

ALICE = ("alice-key", "alice-secret-0123", 1.0)
BOB = ("bob-key", "bob-secret-4567", 1.0)
ONE_XBT = 100_000_000


@pytest.fixture
def sim(sim_factory):
    """A paused simulator at 2018-11-19T00:00Z with two accounts and an empty book."""
    handle = sim_factory(accounts=[ALICE, BOB])
    handle.control("book", {"clear": True})
    return handle


def rest(sim, verb: str, path: str, body: dict | None = None, who=ALICE, expect: int = 200):
    data = json.dumps(body) if body is not None else ""
    headers = auth.headers(auth.Credentials(who[0], who[1]), verb, path, data, time.time())
    if data:
        headers["content-type"] = "application/json"
    resp = requests.request(verb, sim.url + path, data=data or None, headers=headers, timeout=10)
    assert resp.status_code == expect, resp.text
    return resp.json()


def order(sim, who=ALICE, **fields):
    return rest(sim, "POST", "/api/v1/order", {"symbol": "XBTUSD", **fields}, who)


def book(sim, *levels):
    sim.control("book", {"levels": [{"side": s, "price": p, "size": n} for s, p, n in levels]})


def l2(sim) -> dict:
    return {(r["side"], r["price"]): r["size"] for r in rest(sim, "GET", "/api/v1/orderBook/L2?symbol=XBTUSD&depth=0")}


def position(sim, who=ALICE) -> dict:
    rows = rest(sim, "GET", "/api/v1/position", who=who)
    return rows[0] if rows else {}


def wallet(sim, who=ALICE) -> int:
    return rest(sim, "GET", "/api/v1/user/wallet", who=who)["amount"]


def fills(sim, who=ALICE, exec_type: str = "Trade") -> list[dict]:
    return [e for e in rest(sim, "GET", "/api/v1/execution/tradeHistory?count=100", who=who)
            if e["execType"] == exec_type]


def test_post_only_that_would_cross_is_canceled_with_bitmex_text(sim):
    book(sim, ("Sell", 5000.5, 100), ("Buy", 5000, 100))
    ws = sim.ws(query="subscribe=order", auth=False)
    ws.authenticate(ALICE[0], ALICE[1])
    ws.send({"op": "subscribe", "args": ["order"]})
    ws.until(lambda m: m.get("table") == "order" and m["action"] == "partial")
    before = l2(sim)
    row = order(sim, side="Buy", orderQty=10, price=5000.5, execInst="ParticipateDoNotInitiate")
    assert (row["ordStatus"], row["cumQty"], row["leavesQty"]) == ("Canceled", 0, 0)
    assert row["text"] == "Canceled: Order had execInst of ParticipateDoNotInitiate"
    assert l2(sim) == before and position(sim).get("currentQty", 0) == 0 and wallet(sim) == ONE_XBT
    pushed = ws.until(lambda m: m.get("table") == "order" and m["action"] != "partial")
    assert pushed["data"][0]["ordStatus"] == "Canceled" and pushed["data"][0]["text"] == row["text"]
    # one tick lower it rests as a maker
    row = order(sim, side="Buy", orderQty=10, price=5000, execInst="ParticipateDoNotInitiate")
    assert row["ordStatus"] == "New" and l2(sim)[("Buy", 5000.0)] == 110
    # the resting order's value 10/5000*1e8 = 200,000 XBt is open cost; 1 % of it is initial margin
    margin = rest(sim, "GET", "/api/v1/user/margin")
    assert (margin["grossOpenCost"], margin["initMargin"]) == (200_000, 2_000)
    assert margin["availableMargin"] == ONE_XBT - 2_000


def test_marketable_limit_sweeps_levels_with_fees_position_and_inverse_pnl(sim):
    book(sim, ("Sell", 5000, 100), ("Sell", 5000.5, 200), ("Sell", 5001, 300), ("Buy", 4900, 1000))
    row = order(sim, side="Buy", orderQty=400, price=5001, clOrdID="sweep")
    assert (row["ordStatus"], row["cumQty"]) == ("Filled", 400)
    got = [(f["lastQty"], f["lastPx"], f["execCost"], f["execComm"]) for f in fills(sim)]
    # entry, best price first:
    #   100 @ 5000   value 100/5000*1e8   = 2,000,000          fee 0.075 % = 1,500
    #   200 @ 5000.5 value 200/5000.5*1e8 = 3,999,600.04 -> 3,999,600  fee 2,999.70 -> 3,000
    #   100 @ 5001   value 100/5001*1e8   = 1,999,600.08 -> 1,999,600  fee 1,499.70 -> 1,500
    assert got == [(100, 5000.0, -2_000_000, 1_500), (200, 5000.5, -3_999_600, 3_000),
                   (100, 5001.0, -1_999_600, 1_500)]
    assert l2(sim) == {("Sell", 5001.0): 200, ("Buy", 4900.0): 1000}
    pos = position(sim)
    # cost -7,999,200; avgEntryPrice = 400 * 1e8 / 7,999,200 = 5000.50005
    assert (pos["currentQty"], pos["currentCost"]) == (400, -7_999_200)
    assert pos["avgEntryPrice"] == pytest.approx(5000.50005, abs=1e-5)
    assert wallet(sim) == ONE_XBT - 6_000  # 99,994,000
    # break-even covers the 6,000 paid: 1/B = (7,999,200 - 6,000) / (400 * 1e8) -> 5004.2536
    assert pos["breakEvenPrice"] == pytest.approx(400e8 / 7_993_200, abs=1e-6)
    # unrealised at mark 5100: markValue -400/5100*1e8 = -7,843,137.25 -> -7,843,137;
    # upnl = -7,843,137 + 7,999,200 = 156,063  (~ 400 * (1/5000.5 - 1/5100) * 1e8 = 156,062.8)
    sim.control("mark", {"price": 5100})
    assert position(sim)["unrealisedPnl"] == 156_063
    # open interest 400 contracts worth 400/5100*1e8 = 7,843,137.25 -> 7,843,137 XBt at the mark
    inst = rest(sim, "GET", "/api/v1/instrument?symbol=XBTUSD")[0]
    assert (inst["openInterest"], inst["openValue"], inst["indexPrice"]) == (400, 7_843_137, 5100)
    # exit at market into the 4900 bid: value 400/4900*1e8 = 8,163,265.31 -> 8,163,265 (a sell: +)
    # realised = -(-7,999,200 + 8,163,265) = -164,065  (~ 400 * (1/5000.5 - 1/4900) * 1e8 = -164,065.2)
    # exit fee 8,163,265 * 0.075 % = 6,122.45 -> 6,122
    order(sim, side="Sell", orderQty=400, ordType="Market")
    pos = position(sim)
    assert (pos["currentQty"], pos["realisedGrossPnl"]) == (0, -164_065)
    assert pos["realisedPnl"] == -164_065 - 6_000 - 6_122  # -176,187
    assert wallet(sim) == ONE_XBT - 6_000 - 164_065 - 6_122  # 99,823,813


def test_partial_fill_then_cancel_with_maker_rebate(sim):
    ws = sim.ws(auth=True)
    ws.send({"op": "subscribe", "args": ["order"]})
    ws.until(lambda m: m.get("table") == "order" and m["action"] == "partial")
    placed = order(sim, side="Buy", orderQty=200, price=4990, clOrdID="part")
    sim.control("trade", {"side": "Sell", "qty": 80})  # an outside seller takes 80 of ours
    (open_row,) = [o for o in rest(sim, "GET", "/api/v1/order") if o["clOrdID"] == "part"]
    assert (open_row["ordStatus"], open_row["cumQty"], open_row["leavesQty"]) == ("PartiallyFilled", 80, 120)
    (fill,) = fills(sim)
    # maker: value 80/4990*1e8 = 1,603,206.41 -> 1,603,206; rebate -0.025 % = -400.80 -> -401
    assert (fill["lastLiquidityInd"], fill["execCost"], fill["execComm"]) == ("AddedLiquidity", -1_603_206, -401)
    assert wallet(sim) == ONE_XBT + 401
    assert l2(sim) == {("Buy", 4990.0): 120}
    (canceled,) = rest(sim, "DELETE", "/api/v1/order", {"orderID": placed["orderID"]})
    assert (canceled["ordStatus"], canceled["cumQty"], canceled["leavesQty"]) == ("Canceled", 80, 0)
    assert l2(sim) == {} and position(sim)["currentQty"] == 80
    stream = [(m["data"][0]["ordStatus"], m["data"][0].get("leavesQty"))
              for m in ws.barrier() if m.get("table") == "order" and m["action"] != "partial"]
    assert stream == [("New", 200), ("PartiallyFilled", 120), ("Canceled", 0)]


def test_amend_price_quantity_and_leaves_over_rest(sim):
    book(sim, ("Sell", 5010, 50))
    o = order(sim, side="Buy", orderQty=100, price=4980, clOrdID="am")
    rest(sim, "PUT", "/api/v1/order", {"origClOrdID": "am", "price": 4985})
    assert l2(sim) == {("Sell", 5010.0): 50, ("Buy", 4985.0): 100}
    rest(sim, "PUT", "/api/v1/order", {"orderID": o["orderID"], "orderQty": 70})
    assert l2(sim)[("Buy", 4985.0)] == 70
    sim.control("trade", {"side": "Sell", "qty": 30})
    row = rest(sim, "PUT", "/api/v1/order", {"orderID": o["orderID"], "leavesQty": 5})
    assert (row["orderQty"], row["cumQty"], row["leavesQty"]) == (35, 30, 5)
    row = rest(sim, "PUT", "/api/v1/order", {"orderID": o["orderID"], "price": 5010})  # through the ask
    assert (row["ordStatus"], row["cumQty"]) == ("Filled", 35)
    assert rest(sim, "PUT", "/api/v1/order", {"orderID": o["orderID"], "price": 4000}, expect=400) == {
        "error": {"message": "Invalid ordStatus", "name": "HTTPError"}}
    book(sim, ("Sell", 5010, 0))
    row = rest(sim, "PUT", "/api/v1/order", {"orderID": o["orderID"], "leavesQty": 10})  # revived, rests
    assert (row["ordStatus"], row["leavesQty"], l2(sim)[("Buy", 5010.0)]) == ("PartiallyFilled", 10, 10)
    assert rest(sim, "PUT", "/api/v1/order", {"orderID": "nope", "price": 4000}, expect=404)["error"][
        "message"] == "Not Found"


def test_funding_is_paid_between_longs_and_shorts_with_the_right_sign(sim):
    # bob rests a sell of 1000 @ 5000 and alice takes it: alice long 1000, bob short 1000
    order(sim, BOB, side="Sell", orderQty=1000, price=5000)
    order(sim, ALICE, side="Buy", orderQty=1000, price=5000)
    sim.control("mark", {"price": 5000})
    inst = rest(sim, "GET", "/api/v1/instrument?symbol=XBTUSD")[0]
    assert (inst["fundingTimestamp"], inst["fundingRate"]) == ("2018-11-19T04:00:00.000Z", -0.000223)
    alice, bob = wallet(sim, ALICE), wallet(sim, BOB)
    # position value 1000 / 5000 * 1e8 = 20,000,000 XBt at every settlement (the mark stays 5000)
    # 04:00 rate -0.0223 %: 20,000,000 * 0.000223 = 4,460 -- negative rate: the short pays the long
    sim.control("clock", {"advance": 4 * 3600})
    assert (wallet(sim, ALICE), wallet(sim, BOB)) == (alice + 4_460, bob - 4_460)
    (paid,) = fills(sim, BOB, "Funding")
    assert (paid["execComm"], paid["commission"], paid["lastQty"]) == (4_460, -0.000223, -1000)
    assert paid["timestamp"] == "2018-11-19T04:00:00.000Z"
    # 12:00 rate -0.0046 %: 920 to the long; 20:00 rate +0.01 %: 2,000 -- the long pays the short
    sim.control("clock", {"advance": 16 * 3600})
    assert wallet(sim, ALICE) == alice + 4_460 + 920 - 2_000
    assert wallet(sim, BOB) == bob - 4_460 - 920 + 2_000
    assert [f["execComm"] for f in fills(sim, ALICE, "Funding")] == [-4_460, -920, 2_000]
    funding = rest(sim, "GET", "/api/v1/funding?symbol=XBTUSD&reverse=true&count=3")
    assert [(f["timestamp"][11:16], f["fundingRate"]) for f in funding] == [
        ("20:00", 0.0001), ("12:00", -0.000046), ("04:00", -0.000223)]


def test_isolated_long_is_liquidated_at_its_liquidation_price(sim):
    rest(sim, "POST", "/api/v1/position/leverage", {"symbol": "XBTUSD", "leverage": 10})
    book(sim, ("Sell", 5000, 1000))
    order(sim, side="Buy", orderQty=1000, ordType="Market")
    order(sim, side="Buy", orderQty=10, price=4000)  # canceled by the liquidation
    pos = position(sim)
    # cost 1000/5000*1e8 = 20,000,000; posInit 10 % = 2,000,000; posComm 0.075 % = 15,000;
    # posMargin 2,015,000; posMaint 0.5 % + comm = 115,000
    assert (pos["posInit"], pos["posComm"], pos["posMargin"], pos["posMaint"]) == (
        2_000_000, 15_000, 2_015_000, 115_000)
    # 1/L = 1/5000 + (2,015,000 - 115,000) / (1000 * 1e8) = 2.19e-4 -> 4566.21, up to a tick: 4566.5
    # 1/B = 1/5000 + 2,015,000 / 1e11 = 2.2015e-4 -> 4542.36
    assert pos["liquidationPrice"] == 4566.5
    assert pos["bankruptPrice"] == pytest.approx(1 / 2.2015e-4, abs=1e-6)
    sim.control("mark", {"price": 4567})
    assert position(sim)["currentQty"] == 1000
    sim.control("mark", {"price": 4566.5})
    assert position(sim)["currentQty"] == 0
    # the whole position margin is lost: 1 XBT - entry fee 15,000 - 2,015,000 = 97,970,000
    assert wallet(sim) == 97_970_000
    assert [o for o in rest(sim, "GET", "/api/v1/order") if o["ordStatus"] in ("New", "PartiallyFilled")] == []
    last = fills(sim)[-1]
    assert (last["text"], last["side"], last["lastQty"]) == ("Liquidation", "Sell", 1000)
    assert last["lastPx"] == pytest.approx(1 / 2.2015e-4, abs=1e-6)
