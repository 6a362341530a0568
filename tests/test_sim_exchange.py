"""Exchange model: matching, orders, inverse PnL, fees, funding, liquidation.

Hand-computed numbers are written out next to each assertion. Conventions: 1 contract =
1 USD; value in XBt (satoshi) = qty / price * 1e8, rounded per fill; PnL of a long =
qty * (1/entry - 1/exit) * 1e8; default fees maker -0.025 %, taker 0.075 %.
"""

from __future__ import annotations

import pytest

from sniper.clock import SimClock
from sniper.model import iso, next_funding_time
from sniper.sim.exchange import Exchange
from sniper.sim.feed import load_instrument
from sniper.sim.rows import (
    ERR_DUPLICATE,
    TEXT_CANCEL_ALL_AFTER,
    TEXT_FOK,
    TEXT_POST_ONLY,
    TEXT_REDUCE_ONLY,
    TEXT_REDUCE_ONLY_AMENDED,
    ExchangeError,
    level_id,
)

T0 = 1542585600.0  # 2018-11-19T00:00:00Z
KEY, KEY2 = "key-a", "key-b"


class Recorder:
    """Collects every message and replays orderBookL2 like a client would."""

    def __init__(self) -> None:
        self.messages: list[tuple] = []
        self.book: dict[int, tuple[str, float, int]] = {}

    def __call__(self, table, action, rows, account) -> None:
        self.messages.append((table, action, rows, account))
        if table != "orderBookL2":
            return
        for r in rows:
            if action == "delete":
                assert r["id"] in self.book, "delete of unknown level"
                del self.book[r["id"]]
            elif action == "insert":
                assert r["id"] not in self.book, "insert of existing level"
                self.book[r["id"]] = (r["side"], r["price"], r["size"])
            else:
                assert r["id"] in self.book, "update of unknown level"
                self.book[r["id"]] = (r["side"], r["price"], r["size"])

    def rows(self, table, account=None):
        return [r for t, _, rows, a in self.messages if t == table and a == account for r in rows]


@pytest.fixture
def clock():
    return SimClock(T0, speed=0)


@pytest.fixture
def ex(clock):
    e = Exchange(load_instrument(), clock)
    e.add_account(KEY, "secret-a", 1.0)
    e.add_account(KEY2, "secret-b", 1.0)
    e.rec = Recorder()
    e.subscribe(e.rec)
    return e


def book_of(ex):
    return {r["id"]: (r["side"], r["price"], r["size"]) for r in ex.l2_rows()}


def position(ex, key=KEY):
    rows = ex.positions(key)
    return rows[0] if rows else None


def test_marketable_limit_crosses_levels_with_fees_and_inverse_pnl(ex):
    ex.set_levels([("Sell", 10000, 100), ("Sell", 10000.5, 200), ("Sell", 10001, 300), ("Buy", 9999.5, 500)])
    row = ex.place_order(KEY, symbol="XBTUSD", side="Buy", orderQty=400, price=10001, clOrdID="entry")
    # fills: 100 @ 10000, 200 @ 10000.5, 100 @ 10001 (best price first)
    fills = [r for r in ex.executions(KEY) if r["execType"] == "Trade"]
    assert [(f["lastQty"], f["lastPx"]) for f in fills] == [(100, 10000.0), (200, 10000.5), (100, 10001.0)]
    # execCost (buy < 0): 100/10000*1e8 = 1,000,000; 200/10000.5*1e8 = 1,999,900.005 -> 1,999,900;
    # 100/10001*1e8 = 999,900.01 -> 999,900.  Total 3,999,800 XBt.
    assert [f["execCost"] for f in fills] == [-1_000_000, -1_999_900, -999_900]
    # taker 0.075 %: 750; 1,499.925 -> 1,500; 749.925 -> 750.  Total 3,000 XBt.
    assert [f["execComm"] for f in fills] == [750, 1500, 750]
    assert all(f["lastLiquidityInd"] == "RemovedLiquidity" for f in fills)
    assert row["ordStatus"] == "Filled" and row["cumQty"] == 400 and row["leavesQty"] == 0
    # avgPx = harmonic mean = 400 / (100/10000 + 200/10000.5 + 100/10001) = 10000.49998...
    assert row["avgPx"] == pytest.approx(400 / (100 / 10000 + 200 / 10000.5 + 100 / 10001), abs=1e-3)
    pos = position(ex)
    assert pos["currentQty"] == 400 and pos["currentCost"] == -3_999_800
    # avgEntryPrice = 400 * 1e8 / 3,999,800 = 10000.500025...
    assert pos["avgEntryPrice"] == pytest.approx(10000.500025, abs=1e-5)
    assert ex.wallet(KEY)["amount"] == 100_000_000 - 3_000
    # the book lost the 10000 and 10000.5 asks and 100 of 10001
    assert [(r["side"], r["price"], r["size"]) for r in ex.l2_rows() if r["side"] == "Sell"] == [
        ("Sell", 10001.0, 200)
    ]

    # exit: sell 400 into a bid at 10100.  value 400/10100*1e8 = 3,960,396.04 -> 3,960,396
    # realised = -(cost -3,999,800 + 3,960,396) = 39,404 XBt
    #          ~ 400 * (1/10000.5 - 1/10100) * 1e8 = 39,404.0;  fee 3,960,396 * 0.00075 = 2,970.3 -> 2,970
    ex.set_level("Buy", 10100, 1000)
    ex.place_order(KEY, side="Sell", orderQty=400, ordType="Market")
    pos = position(ex)
    assert pos["currentQty"] == 0 and pos["currentCost"] == 0
    assert pos["realisedGrossPnl"] == 39_404
    assert pos["realisedPnl"] == 39_404 - 3_000 - 2_970
    assert ex.wallet(KEY)["amount"] == 100_000_000 - 3_000 + 39_404 - 2_970  # 100,033,434


def test_short_pnl_and_harmonic_average_entry(ex):
    ex.set_level("Buy", 10000, 100)
    ex.place_order(KEY, side="Sell", orderQty=100, ordType="Market")
    # short 100 @ 10000: cost +1,000,000; buy back 100 @ 11000: cost -909,090.9 -> -909,091
    # realised = -(1,000,000 - 909,091) = -90,909 = -100 * (1/10000 - 1/11000) * 1e8
    ex.set_level("Sell", 11000, 100)
    ex.place_order(KEY, side="Buy", orderQty=100, price=11000)
    assert position(ex)["realisedGrossPnl"] == -90_909

    # long 100 @ 10000 and 100 @ 12000: avgEntry = 200 * 1e8 / (1,000,000 + 833,333) = 10909.09
    ex.set_levels([("Sell", 10000, 100), ("Sell", 12000, 100)])
    ex.place_order(KEY2, side="Buy", orderQty=200, ordType="Market")
    pos = position(ex, KEY2)
    assert pos["currentCost"] == -1_833_333
    assert pos["avgEntryPrice"] == pytest.approx(200e8 / 1_833_333, abs=1e-6)
    assert pos["avgEntryPrice"] == pytest.approx(10909.09, abs=0.01)
    # unrealised at mark 11000: markValue -200/11000*1e8 = -1,818,182; upnl = -1,818,182 + 1,833,333
    ex.set_mark_price(11000)
    assert position(ex, KEY2)["unrealisedPnl"] == 15_151


def test_maker_fill_earns_rebate(ex):
    ex.place_order(KEY, side="Buy", orderQty=100, price=10000)
    ex.market_order("Sell", 100)
    fill = [r for r in ex.executions(KEY) if r["execType"] == "Trade"][0]
    # value 100/10000*1e8 = 1,000,000; maker -0.025 % -> execComm -250 (a rebate)
    assert fill["lastLiquidityInd"] == "AddedLiquidity"
    assert fill["execComm"] == -250
    assert ex.wallet(KEY)["amount"] == 100_000_250


def test_post_only_cross_is_canceled_with_bitmex_text(ex):
    ex.set_levels([("Sell", 10000.5, 100), ("Buy", 10000, 100)])
    before = book_of(ex)
    row = ex.place_order(KEY, side="Buy", orderQty=10, price=10000.5, execInst="ParticipateDoNotInitiate")
    assert row["ordStatus"] == "Canceled"
    assert row["text"] == TEXT_POST_ONLY == "Canceled: Order had execInst of ParticipateDoNotInitiate"
    assert row["cumQty"] == 0 and position(ex) is None
    assert book_of(ex) == before and not ex.rec.rows("trade")
    # the same order one tick lower rests as a maker
    row = ex.place_order(KEY, side="Buy", orderQty=10, price=10000, execInst="ParticipateDoNotInitiate")
    assert row["ordStatus"] == "New" and row["workingIndicator"] is True
    assert book_of(ex)[level_id(10000)] == ("Buy", 10000.0, 110)


def test_partial_fill_then_cancel_and_time_priority(ex):
    ex.set_level("Buy", 9999.5, 50)  # market liquidity queued first
    order = ex.place_order(KEY, side="Buy", orderQty=300, price=9999.5, clOrdID="p1")
    ex.set_level("Buy", 9999.5, 80)  # 30 more market contracts queue behind the order
    assert book_of(ex)[level_id(9999.5)][2] == 380
    ex.market_order("Sell", 100)
    # 50 market contracts ahead trade first, then 50 of ours
    sizes = [r["size"] for r in ex.rec.rows("trade")]
    assert sizes == [50, 50]
    row = ex.orders(KEY, open_only=True)[0]
    assert row["ordStatus"] == "PartiallyFilled" and row["cumQty"] == 50 and row["leavesQty"] == 250
    assert book_of(ex)[level_id(9999.5)][2] == 280  # 250 ours + 30 market
    rows = ex.cancel_orders(KEY, orderID=order["orderID"])
    assert rows[0]["ordStatus"] == "Canceled" and rows[0]["cumQty"] == 50 and rows[0]["leavesQty"] == 0
    assert book_of(ex)[level_id(9999.5)][2] == 30
    assert ex.rec.book == book_of(ex)
    assert position(ex)["currentQty"] == 50
    assert ex.orders(KEY, open_only=True) == []
    # a second cancel reports the state; an id never seen is 404 Not Found
    again = ex.cancel_orders(KEY, clOrdID="p1")
    assert again[0]["error"] == "Unable to cancel order due to existing state: Canceled"
    with pytest.raises(ExchangeError) as err:
        ex.cancel_orders(KEY, orderID="00000000-0000-4000-8000-000000000000")
    assert err.value.status == 404 and err.value.message == "Not Found"


def test_replayed_liquidity_cancelled_ahead_moves_an_order_up_the_queue(ex):
    ex.set_level("Buy", 9999.5, 100)
    ex.place_order(KEY, side="Buy", orderQty=50, price=9999.5)  # 100 market contracts ahead
    ex.set_level("Buy", 9999.5, 30)  # 70 cancelled: at most 30 can still be ahead
    ex.market_order("Sell", 40)
    assert [r["size"] for r in ex.rec.rows("trade")] == [30, 10]
    assert position(ex)["currentQty"] == 10
    assert ex.market_size("Buy", 9999.5) == 0 and book_of(ex)[level_id(9999.5)][2] == 40


def test_amend_price_qty_and_leaves(ex):
    ex.set_levels([("Sell", 10005, 100), ("Buy", 9990, 100)])
    o = ex.place_order(KEY, side="Buy", orderQty=100, price=9995, clOrdID="a1")
    row = ex.amend_order(KEY, orderID=o["orderID"], price=9996)
    assert row["price"] == 9996 and row["ordStatus"] == "New"
    book = book_of(ex)
    assert level_id(9995) not in book and book[level_id(9996)] == ("Buy", 9996.0, 100)
    row = ex.amend_order(KEY, origClOrdID="a1", orderQty=60)
    assert row["orderQty"] == 60 and row["leavesQty"] == 60
    ex.market_order("Sell", 20, limit_price=9996)
    row = ex.amend_order(KEY, origClOrdID="a1", leavesQty=10)  # keep 10 working after 20 filled
    assert (row["orderQty"], row["cumQty"], row["leavesQty"]) == (30, 20, 10)
    assert book_of(ex)[level_id(9996)][2] == 10
    assert [r["execType"] for r in ex.executions(KEY)].count("Replaced") == 3
    # amended through the far touch: it trades as a taker
    row = ex.amend_order(KEY, origClOrdID="a1", price=10005)
    assert row["ordStatus"] == "Filled" and row["avgPx"] == pytest.approx(30 / (20 / 9996 + 10 / 10005))
    with pytest.raises(ExchangeError) as err:
        ex.amend_order(KEY, origClOrdID="a1", price=9990)
    assert (err.value.status, err.value.message) == (400, "Invalid ordStatus")
    with pytest.raises(ExchangeError) as err:
        ex.amend_order(KEY, orderID="nope", price=9990)
    assert err.value.status == 404
    # a post-only order amended across the spread is canceled, not filled
    p = ex.place_order(KEY, side="Buy", orderQty=5, price=9991, execInst="ParticipateDoNotInitiate")
    row = ex.amend_order(KEY, orderID=p["orderID"], price=10005)
    assert row["ordStatus"] == "Canceled" and row["text"] == TEXT_POST_ONLY
    assert ex.rec.book == book_of(ex)


def test_leaves_qty_revives_a_filled_order_within_60_seconds(ex, clock):
    o = ex.place_order(KEY, side="Buy", orderQty=20, price=9990, clOrdID="rv")
    ex.market_order("Sell", 20)
    assert ex.orders(KEY)[0]["ordStatus"] == "Filled"
    clock.advance(30)
    row = ex.amend_order(KEY, origClOrdID="rv", leavesQty=15)  # live again for 15 more
    assert (row["ordStatus"], row["orderQty"], row["cumQty"], row["leavesQty"]) == ("PartiallyFilled", 35, 20, 15)
    assert book_of(ex)[level_id(9990)] == ("Buy", 9990.0, 15) and ex.rec.book == book_of(ex)
    ex.market_order("Sell", 15)
    assert position(ex)["currentQty"] == 35 and ex.orders(KEY, open_only=True) == []
    # orderQty cannot revive, and neither can leavesQty once 60 s have passed since the fill
    with pytest.raises(ExchangeError) as err:
        ex.amend_order(KEY, orderID=o["orderID"], orderQty=50)
    assert err.value.message == "Invalid ordStatus"
    clock.advance(60.5)
    with pytest.raises(ExchangeError) as err:
        ex.amend_order(KEY, orderID=o["orderID"], leavesQty=5)
    assert err.value.message == "Invalid ordStatus"
    # a canceled order stays dead
    c = ex.place_order(KEY, side="Buy", orderQty=5, price=9000)
    ex.cancel_orders(KEY, orderID=c["orderID"])
    with pytest.raises(ExchangeError):
        ex.amend_order(KEY, orderID=c["orderID"], leavesQty=5)


def test_resting_reduce_only_orders_shrink_with_the_position(ex):
    ex.set_level("Sell", 10000, 100)
    ex.place_order(KEY, side="Buy", orderQty=100, ordType="Market")  # long 100
    near = ex.place_order(KEY, side="Sell", orderQty=60, price=10100, execInst="ReduceOnly")
    far = ex.place_order(KEY, side="Sell", orderQty=40, price=10200, execInst="ReduceOnly")
    ex.place_order(KEY, side="Buy", orderQty=10, price=9000)  # not reduce-only: never touched
    # other orders sell 30: long 70 < 100 resting reduce-only, the least aggressive (10200) loses 30
    ex.set_level("Buy", 9990, 30)
    ex.place_order(KEY, side="Sell", orderQty=30, ordType="Market")
    rows = {r["orderID"]: r for r in ex.orders(KEY)}
    assert (rows[far["orderID"]]["orderQty"], rows[far["orderID"]]["leavesQty"]) == (10, 10)
    assert rows[far["orderID"]]["text"] == TEXT_REDUCE_ONLY_AMENDED
    assert rows[near["orderID"]]["leavesQty"] == 60
    assert book_of(ex)[level_id(10200)] == ("Sell", 10200.0, 10) and ex.rec.book == book_of(ex)
    # 20 more: long 50; the far order is canceled (10 gone) and the near one cut by 10 to 50
    ex.set_level("Buy", 9990, 20)
    ex.place_order(KEY, side="Sell", orderQty=20, ordType="Market")
    rows = {r["orderID"]: r for r in ex.orders(KEY)}
    assert (rows[far["orderID"]]["ordStatus"], rows[far["orderID"]]["text"]) == ("Canceled", TEXT_REDUCE_ONLY)
    assert (rows[near["orderID"]]["ordStatus"], rows[near["orderID"]]["leavesQty"]) == ("New", 50)
    assert position(ex)["openOrderSellQty"] == 50 and position(ex)["openOrderBuyQty"] == 10
    # the near order fills the whole position and leaves nothing behind
    ex.market_order("Buy", 50, limit_price=10100)
    assert position(ex)["currentQty"] == 0 and rows[near["orderID"]]["orderID"] not in {
        r["orderID"] for r in ex.orders(KEY, open_only=True)}
    assert ex.rec.book == book_of(ex)


def test_amend_decrease_keeps_priority_increase_loses_it(ex):
    first = ex.place_order(KEY, side="Sell", orderQty=100, price=10010)
    ex.place_order(KEY2, side="Sell", orderQty=100, price=10010)
    ex.amend_order(KEY, orderID=first["orderID"], orderQty=50)
    ex.market_order("Buy", 50)
    assert position(ex)["currentQty"] == -50 and position(ex, KEY2) is None
    second = ex.orders(KEY2, open_only=True)[0]
    ex.place_order(KEY, side="Sell", orderQty=10, price=10010, clOrdID="late")
    ex.amend_order(KEY2, orderID=second["orderID"], orderQty=150)  # increase: to the back
    ex.market_order("Buy", 10)
    assert position(ex)["currentQty"] == -60 and position(ex, KEY2) is None


def test_duplicate_clordid_is_rejected_for_open_and_recent_orders(ex):
    ex.place_order(KEY, side="Buy", orderQty=10, price=9000, clOrdID="dup-1")
    with pytest.raises(ExchangeError) as err:
        ex.place_order(KEY, side="Buy", orderQty=10, price=9000, clOrdID="dup-1")
    assert (err.value.status, err.value.message) == (400, ERR_DUPLICATE)
    assert err.value.body() == {"error": {"message": "Duplicate clOrdID", "name": "HTTPError"}}
    assert len(ex.orders(KEY)) == 1  # the retry created nothing
    ex.cancel_orders(KEY, clOrdID="dup-1")
    with pytest.raises(ExchangeError):  # still recent after it closed
        ex.place_order(KEY, side="Buy", orderQty=10, price=9000, clOrdID="dup-1")
    # another account may use the same id
    assert ex.place_order(KEY2, side="Buy", orderQty=10, price=9000, clOrdID="dup-1")["ordStatus"] == "New"
    # amending to an id in use is rejected too
    o = ex.place_order(KEY, side="Buy", orderQty=10, price=9000, clOrdID="dup-2")
    with pytest.raises(ExchangeError):
        ex.amend_order(KEY, orderID=o["orderID"], clOrdID="dup-1")


def test_cancel_all_after_fires_and_can_be_refreshed_or_disarmed(ex, clock):
    ex.place_order(KEY, side="Buy", orderQty=10, price=9000)
    ex.place_order(KEY, side="Sell", orderQty=10, price=11000)
    ex.place_order(KEY2, side="Buy", orderQty=10, price=9000)
    reply = ex.cancel_all_after(KEY, 60_000)
    assert reply == {"now": iso(T0), "cancelTime": iso(T0 + 60)}
    clock.advance(45)
    ex.advance()
    assert len(ex.orders(KEY, open_only=True)) == 2
    ex.cancel_all_after(KEY, 60_000)  # refreshed at T0+45: fires at T0+105
    clock.advance(59)
    ex.advance()
    assert len(ex.orders(KEY, open_only=True)) == 2
    clock.advance(1.5)
    ex.advance()
    assert ex.orders(KEY, open_only=True) == []
    assert {r["text"] for r in ex.orders(KEY)} == {TEXT_CANCEL_ALL_AFTER}
    assert len(ex.orders(KEY2, open_only=True)) == 1  # other accounts untouched
    assert ex.l2_rows() == [r for r in ex.l2_rows() if r["price"] == 9000]
    ex.place_order(KEY2, side="Buy", orderQty=10, price=9001)
    ex.cancel_all_after(KEY2, 1000)
    assert ex.cancel_all_after(KEY2, 0)["cancelTime"] == 0  # disarmed
    clock.advance(10)
    ex.advance()
    assert len(ex.orders(KEY2, open_only=True)) == 2


@pytest.mark.parametrize("rate", [0.0001, -0.000223])
def test_funding_payment_to_longs_and_shorts(clock, rate):
    settlement = next_funding_time(T0)  # 04:00 UTC
    ex = Exchange(load_instrument(), clock, funding=[(settlement, rate), (settlement + 28800, 0.0002)])
    ex.add_account(KEY, "a", 1.0)
    ex.add_account(KEY2, "b", 1.0)
    rec = Recorder()
    ex.subscribe(rec)
    assert ex.instrument_row()["fundingTimestamp"] == "2018-11-19T04:00:00.000Z"
    assert ex.instrument_row()["fundingRate"] == rate
    assert ex.instrument_row()["indicativeFundingRate"] == 0.0002
    # KEY2 rests a sell of 1000 @ 5000, KEY takes it: KEY long 1000 (taker fee 0.075 % of
    # 20,000,000 = 15,000), KEY2 short 1000; then the mark is set to 5000.
    ex.place_order(KEY2, side="Sell", orderQty=1000, price=5000)
    ex.place_order(KEY, side="Buy", orderQty=1000, price=5000)
    wallets = {k: ex.wallet(k)["amount"] for k in (KEY, KEY2)}
    ex.set_mark_price(5000)
    clock.advance(settlement - T0 - 1)
    ex.advance()
    assert not rec.rows("funding")
    clock.advance(1)
    ex.advance()
    # position value = 1000 / 5000 * 1e8 = 20,000,000 XBt; payment = value * rate
    # rate 0.0001: 2,000 XBt, long pays, short receives.
    # rate -0.000223: 4,460 XBt, short pays, long receives.
    payment = round(20_000_000 * rate)
    assert ex.wallet(KEY)["amount"] == wallets[KEY] - payment
    assert ex.wallet(KEY2)["amount"] == wallets[KEY2] + payment
    long_exec = [r for r in ex.executions(KEY) if r["execType"] == "Funding"][0]
    assert long_exec["execComm"] == payment and long_exec["commission"] == rate
    assert long_exec["lastPx"] == 5000 and long_exec["timestamp"] == "2018-11-19T04:00:00.000Z"
    assert [r["fundingRate"] for r in rec.rows("funding")] == [rate]
    assert ex.funding_rows()[-1]["timestamp"] == "2018-11-19T04:00:00.000Z"
    assert position(ex)["realisedPnl"] - position(ex)["realisedGrossPnl"] == -payment - 15_000
    row = ex.instrument_row()
    assert row["fundingTimestamp"] == "2018-11-19T12:00:00.000Z" and row["fundingRate"] == 0.0002
    clock.advance(1)
    ex.advance()  # nothing settles twice
    assert ex.wallet(KEY)["amount"] == wallets[KEY] - payment


def test_isolated_long_liquidation_loses_its_margin(ex):
    ex.set_leverage(KEY, "XBTUSD", 10)
    ex.set_level("Sell", 10000, 1000)
    ex.place_order(KEY, side="Buy", orderQty=1000, ordType="Market")
    ex.place_order(KEY, side="Buy", orderQty=10, price=9000)  # canceled by the liquidation
    pos = position(ex)
    # cost 1000/10000*1e8 = 10,000,000; posInit 10 % = 1,000,000; posComm 0.075 % = 7,500;
    # posMargin 1,007,500; posMaint 0.5 % + comm = 57,500.
    assert (pos["posInit"], pos["posComm"], pos["posMargin"], pos["posMaint"]) == (1_000_000, 7_500, 1_007_500, 57_500)
    # liquidation: 1/L = 1/10000 + (1,007,500 - 57,500)/(1000*1e8) = 1.095e-4 -> 9132.42, rounded up to 9132.5
    # bankruptcy: 1/B = 1/10000 + 1,007,500/(1000*1e8) -> 9084.71
    assert pos["liquidationPrice"] == 9132.5
    assert pos["bankruptPrice"] == pytest.approx(1 / (1e-4 + 1_007_500 / 1e11))
    ex.set_mark_price(9133)
    assert position(ex)["currentQty"] == 1000
    ex.set_mark_price(9132.5)
    pos = position(ex)
    assert pos["currentQty"] == 0
    # wallet: 1 XBT - entry fee 7,500 - whole position margin 1,007,500 = 98,985,000
    assert ex.wallet(KEY)["amount"] == 98_985_000
    assert ex.orders(KEY, open_only=True) == []
    last = ex.executions(KEY)[-1]
    assert (last["execType"], last["text"], last["side"], last["lastQty"]) == ("Trade", "Liquidation", "Sell", 1000)
    assert [a for t, a, _, _ in ex.rec.messages if t == "liquidation"] == ["insert", "delete"]


def test_isolated_short_liquidation_and_cross_margin_liquidation_price(ex):
    ex.set_leverage(KEY, "XBTUSD", 10)
    ex.set_level("Buy", 10000, 1000)
    ex.place_order(KEY, side="Sell", orderQty=1000, ordType="Market")
    # short: 1/L = 1/10000 - 950,000/1e11 = 9.05e-5 -> 11049.72, rounded down to 11049.5
    assert position(ex)["liquidationPrice"] == 11049.5
    ex.set_mark_price(11049)
    assert position(ex)["currentQty"] == -1000
    ex.set_level("Sell", 11050, 10)
    ex.market_order("Buy", 10)  # the mark follows the last trade to 11050
    assert position(ex)["currentQty"] == 0
    assert ex.wallet(KEY)["amount"] == 100_000_000 - 7_500 - 1_007_500

    # cross margin: the whole wallet backs the position.  KEY2 long 1000 @ 10000 with 1 XBT
    # (minus 7,500 fee = 99,992,500): 1/L = 1/10000 + (99,992,500 - 57,500)/1e11 -> 1.0994e-3 -> 909.6
    ex.set_levels([("Sell", 10000, 1000)])
    ex.place_order(KEY2, side="Buy", orderQty=1000, ordType="Market")
    pos = position(ex, KEY2)
    assert pos["crossMargin"] is True
    assert pos["liquidationPrice"] == pytest.approx(1 / (1e-4 + 99_935_000 / 1e11), abs=0.5)


def test_reduce_only_close_ioc_fok_and_market_without_liquidity(ex):
    ex.set_levels([("Sell", 10000, 50), ("Buy", 9999, 1000)])
    row = ex.place_order(KEY, side="Sell", orderQty=10, price=10001, execInst="ReduceOnly")
    assert row["ordStatus"] == "Canceled" and row["text"] == TEXT_REDUCE_ONLY  # no position
    row = ex.place_order(KEY, side="Buy", orderQty=100, price=10000, timeInForce="FillOrKill")
    assert row["ordStatus"] == "Canceled" and row["text"] == TEXT_FOK and row["cumQty"] == 0
    row = ex.place_order(KEY, side="Buy", orderQty=100, price=10000, timeInForce="ImmediateOrCancel")
    assert (row["ordStatus"], row["cumQty"]) == ("Canceled", 50)
    # a resting reduce-only sell larger than the position fills only the position, then cancels
    ro = ex.place_order(KEY, side="Sell", orderQty=80, price=10002, execInst="ReduceOnly")
    ex.set_level("Sell", 10005, 10)
    ex.market_order("Buy", 200, limit_price=10002)
    assert position(ex)["currentQty"] == 0
    row = [r for r in ex.orders(KEY) if r["orderID"] == ro["orderID"]][0]
    assert (row["ordStatus"], row["cumQty"], row["text"]) == ("Canceled", 50, TEXT_REDUCE_ONLY)
    # Close without orderQty closes the whole position
    ex.set_level("Sell", 10005, 100)
    ex.place_order(KEY, side="Buy", orderQty=30, ordType="Market")
    row = ex.place_order(KEY, execInst="Close", ordType="Market")
    assert (row["side"], row["cumQty"], position(ex)["currentQty"]) == ("Sell", 30, 0)
    ex.clear_market_levels()
    row = ex.place_order(KEY2, side="Buy", orderQty=5, ordType="Market")
    assert row["ordStatus"] == "Canceled" and row["cumQty"] == 0


@pytest.mark.parametrize(
    "params, message",
    [
        ({"side": "Buy", "orderQty": 10, "price": 10000.3}, "Invalid price tickSize"),
        ({"side": "Buy", "orderQty": 1.5, "price": 10000}, "Invalid orderQty"),
        ({"side": "Buy", "orderQty": 10, "price": -1}, "Invalid price"),
        ({"side": "Up", "orderQty": 10, "price": 10000}, "Invalid side: Up"),
        ({"symbol": "ETHUSD", "side": "Buy", "orderQty": 10, "price": 10000}, "Invalid symbol: ETHUSD"),
        ({"side": "Buy", "orderQty": 10, "price": 10000, "timeInForce": "Day"}, "Invalid timeInForce: Day"),
        ({"side": "Buy", "orderQty": 10, "price": 10000, "execInst": "Bogus"}, "Invalid execInst: Bogus"),
        ({"side": "Buy", "orderQty": 10, "ordType": "Market", "execInst": "ParticipateDoNotInitiate"},
         "ParticipateDoNotInitiate requires a GoodTillCancel Limit order"),
    ],
)
def test_invalid_orders_are_rejected_without_side_effects(ex, params, message):
    with pytest.raises(ExchangeError) as err:
        ex.place_order(KEY, **params)
    assert (err.value.status, err.value.message) == (400, message)
    assert ex.orders(KEY) == [] and not ex.rec.messages


def test_insufficient_balance_and_leverage_margin(ex):
    ex.set_levels([("Sell", 10000, 10**7), ("Buy", 9999.5, 10**7)])
    # 1 XBT at cross (1 % initial margin) supports about 100 XBT of notional: 1,000,000 USD at 10000
    with pytest.raises(ExchangeError) as err:
        ex.place_order(KEY, side="Buy", orderQty=1_100_000, price=9000)
    assert err.value.status == 400 and "insufficient Available Balance" in err.value.message
    ex.place_order(KEY, side="Buy", orderQty=50_000, price=9999.5)
    # 50,000 / 9999.5 * 1e8 = 500,025,001.25 XBt of order value; at 1 %: 5,000,250.01 -> 5,000,250
    assert ex.margin(KEY)["initMargin"] == 5_000_250
    # isolated 2x: 50 % of the order value = 250,012,500.6 -> 250,012,501, more than the wallet
    ex.set_leverage(KEY, "XBTUSD", 2)
    assert ex.margin(KEY)["initMargin"] == 250_012_501
    assert ex.margin(KEY)["availableMargin"] == 100_000_000 - 250_012_501
    assert position(ex)["leverage"] == 2 and position(ex)["crossMargin"] is False
    ex.isolate(KEY, "XBTUSD", False)
    assert position(ex)["crossMargin"] is True
    with pytest.raises(ExchangeError):
        ex.set_leverage(KEY, "XBTUSD", 500)


def test_book_messages_replay_to_the_book_and_never_cross(ex):
    """A client applying our orderBookL2 messages ends with exactly l2_rows()."""
    ex.set_levels([("Sell", 10000 + 0.5 * i, 100 + i) for i in range(20)])
    ex.set_levels([("Buy", 9999.5 - 0.5 * i, 100 + i) for i in range(20)])
    ex.place_order(KEY, side="Buy", orderQty=30, price=9999.5)
    ex.place_order(KEY, side="Sell", orderQty=30, price=10003)
    ex.place_order(KEY2, side="Buy", orderQty=700, price=10002)
    ex.market_order("Sell", 500)
    ex.set_level("Sell", 9998, 40)  # replayed ask through the bids: our bid is filled, the rest vanish
    o = ex.orders(KEY2, open_only=True)
    if o:
        ex.amend_order(KEY2, orderID=o[0]["orderID"], price=9990)
    ex.cancel_all(KEY)
    assert ex.rec.book == book_of(ex)
    bids = [r["price"] for r in ex.l2_rows() if r["side"] == "Buy"]
    asks = [r["price"] for r in ex.l2_rows() if r["side"] == "Sell"]
    assert max(bids) < min(asks)
    assert ex.quote_row()["bidPrice"] == max(bids) and ex.quote_row()["askPrice"] == min(asks)
    assert len(ex.l2_rows(depth=5)) == 10
    assert ex.l2_rows(depth=1)[0]["price"] == min(asks) and ex.l2_rows(depth=1)[1]["price"] == max(bids)


def test_rows_carry_bitmex_fields_and_private_rows_go_to_their_owner(ex):
    ex.set_level("Sell", 10000, 100)
    ex.place_order(KEY, side="Buy", orderQty=10, price=10000, clOrdID="c1", text="hello")
    tables = {(t, a) for t, _, _, a in ex.rec.messages}
    assert {("order", KEY), ("execution", KEY), ("position", KEY), ("margin", KEY), ("wallet", KEY)} <= tables
    assert ("trade", None) in tables and ("instrument", None) in tables and ("orderBookL2", None) in tables
    assert not any(a == KEY2 for _, a in tables)
    order = ex.orders(KEY)[0]
    for name in ("orderID", "clOrdID", "ordStatus", "leavesQty", "cumQty", "avgPx", "transactTime", "timestamp"):
        assert name in order
    assert order["text"] == "hello" and order["timestamp"] == "2018-11-19T00:00:00.000Z"
    trade = ex.trades()[0]
    assert trade["grossValue"] == 100_000 and trade["tickDirection"] in ("ZeroPlusTick", "PlusTick")
    assert ex.instrument_row()["lastPrice"] == 10000 and ex.instrument_row()["tickSize"] == 0.5
    with pytest.raises(ExchangeError) as err:
        ex.orders("unknown-key")
    assert err.value.status == 401


def test_history_queries(ex, clock):
    ex.set_level("Sell", 10000, 10_000)
    for _ in range(5):
        ex.market_order("Buy", 10)
        clock.advance(60)
    assert len(ex.trades(count=3)) == 3
    assert [r["timestamp"] for r in ex.trades(count=2, reverse=True)] == [iso(T0 + 240), iso(T0 + 180)]
    assert len(ex.trades(startTime=iso(T0 + 60), endTime=T0 + 180)) == 3
    assert ex.trades(count=2, start=4)[0]["timestamp"] == iso(T0 + 240)


def test_timestamps_never_go_backwards_and_truncate_to_the_millisecond(ex, clock):
    assert iso(T0 + 59.9999) == "2018-11-19T00:00:59.999Z"
    ex.set_level("Sell", 10000, 100)
    clock.advance(10)
    ex.place_order(KEY, side="Buy", orderQty=10, ordType="Market")  # at T0 + 10
    ex.event_time = T0 + 5  # a feed event applied late
    ex.market_order("Buy", 10)
    ex.event_time = None
    stamps = [r["timestamp"] for r in ex.trades()]
    assert stamps == [iso(T0 + 10), iso(T0 + 10)]
