"""The executor over the BitMEX venue against the simulator on 127.0.0.1 (real REST, websocket, SQLite): each
style reaches the target exactly through partial fills, book moves, post-only cancels and
target changes; and the end state stays right, without duplicates, through faults."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from types import SimpleNamespace

import pytest
from drivers.rig import TEST_EXECUTION, TEST_RISK, LocalRig, Rig, exchange_view, local_exchange, wait_for
from drivers.sessions import FlakyLink

from sniper.clock import SimClock
from sniper.config import SIM_DEMO_KEY
from sniper.model import Target
from sniper.orders.bitmex import BitmexVenue
from sniper.orders.executor import BACK_OFF
from sniper.orders.local import LocalVenue
from sniper.orders.venue import Refused
from sniper.ws.state import State

TOUCH = [{"side": "Buy", "price": 9990, "size": 1}, {"side": "Sell", "price": 10010, "size": 1},
         {"side": "Buy", "price": 9900, "size": 100_000}, {"side": "Sell", "price": 10100, "size": 100_000}]
DEEP = [{"side": "Buy", "price": 9990, "size": 100_000}, {"side": "Sell", "price": 10010, "size": 100_000}]


@pytest.fixture
def rigs(tmp_path):
    made: list[Rig] = []

    def make(sim, book=TOUCH, execution=TEST_EXECUTION, risk=TEST_RISK, start=True, **kw) -> Rig:
        if book:
            sim.control("book", {"clear": True, "levels": book})
        rig = Rig(sim.url, sim.key, sim.secret, str(tmp_path / f"journal{len(made)}.sqlite"), execution, risk, **kw)
        made.append(rig)
        return rig.start() if start else rig

    yield make
    for rig in made:
        rig.stop()


def reach(rig: Rig, target: Target, timeout: float = 10.0) -> None:
    """Set `target`, wait until the executor says it is there, then check the exchange agrees."""
    rig.executor.set_target(target)
    wait_for(lambda: rig.reached(target), timeout, what=f"target {target}")
    assert_agrees(rig, target.qty)


def assert_agrees(rig: Rig, position: int) -> None:
    """The exchange (by REST) matches the executor: position, open orders, clOrdIDs unique
    and every one of them journaled."""
    pos, open_orders, orders = exchange_view(rig.rest)
    assert pos == position
    assert [o["clOrdID"] for o in open_orders] == [o.clordid for o in rig.journal.open_orders()]
    ids = [o["clOrdID"] for o in orders]
    assert len(ids) == len(set(ids)), f"duplicate clOrdIDs {ids}"
    assert all(rig.journal.order(c) is not None for c in ids), "an order the journal does not know"


def our_order(rig: Rig, timeout: float = 5.0) -> dict:
    """The single open order, once the exchange has it."""
    return wait_for(lambda: (exchange_view(rig.rest)[1] or [None])[0], timeout, what="a working order")


def fill(sim, order: dict, qty: int, touch_size: int = 1) -> None:
    """An outside taker trades through the market maker's `touch_size` and `qty` of our order."""
    side = "Sell" if order["side"] == "Buy" else "Buy"
    sim.control("trade", {"side": side, "qty": touch_size + qty, "price": order["price"]})


def traded(rig: Rig) -> int:
    return sum(f["qty"] for f in rig.journal.fills())


def test_passive_reaches_target_through_book_moves_partial_fills_and_target_change(sim_server, rigs):
    rig = rigs(sim_server)
    rig.executor.set_target(Target(300, "passive", "up"))
    order = our_order(rig)
    assert (order["side"], order["orderQty"], order["price"], order["execInst"]) == \
        ("Buy", 300, 9990, "ParticipateDoNotInitiate")
    sim_server.control("book", {"levels": [{"side": "Buy", "price": 9995, "size": 1}]})  # touch moves up
    wait_for(lambda: our_order(rig)["price"] == 9995, what="amend to the new touch")
    fill(sim_server, our_order(rig), 100)
    wait_for(lambda: our_order(rig)["cumQty"] == 100, what="partial fill")
    rig.executor.set_target(Target(200, "passive", "smaller"))  # 100 done, 100 more
    wait_for(lambda: our_order(rig)["leavesQty"] == 100, what="amend down")
    sim_server.control("book", {"levels": [{"side": "Buy", "price": 9995, "size": 1}]})
    fill(sim_server, our_order(rig), 100)
    wait_for(lambda: rig.reached(Target(200)), what="target")
    assert_agrees(rig, 200)
    orders = exchange_view(rig.rest)[2]
    assert len(orders) == 1 and orders[0]["ordStatus"] == "Filled"  # one order, amended, never replaced
    assert traded(rig) == 200


def test_post_only_cancel_for_crossing_is_replaced(sim_server, rigs):
    """The websocket runs late (delay fault), so the executor prices against a stale book;
    the post-only order crosses, the exchange cancels it, the executor places a new one."""
    rig = rigs(sim_server)
    sim_server.control("fault", {"mode": "delay", "delay_ms": 150, "seconds": 5})
    sim_server.control("book", {"clear": True, "levels": [{"side": "Buy", "price": 9985, "size": 1},
                                                        {"side": "Sell", "price": 9990, "size": 1}]})
    rig.executor.set_target(Target(100, "passive", "stale book"))
    orders = wait_for(lambda: len(exchange_view(rig.rest)[2]) == 2 and exchange_view(rig.rest)[2], 8,
                      what="the replacement order")
    first, second = sorted(orders, key=lambda o: o["clOrdID"])
    assert first["ordStatus"] == "Canceled" and "ParticipateDoNotInitiate" in first["text"]
    assert (first["price"], second["price"]) == (9990, 9985)
    sim_server.control("fault", method="DELETE")
    fill(sim_server, second, 100)
    wait_for(lambda: rig.reached(Target(100)), what="target")
    assert_agrees(rig, 100)


def test_market_reaches_target_through_partial_fills_and_crosses_zero(sim_server, rigs):
    book = [{"side": "Sell", "price": 10010, "size": 50}, {"side": "Sell", "price": 10100, "size": 100_000},
            {"side": "Buy", "price": 9990, "size": 100_000}]
    rig = rigs(sim_server, book)
    reach(rig, Target(300, "market", "go"))
    orders = exchange_view(rig.rest)[2]
    assert sorted(o["cumQty"] for o in orders) == [50, 250]  # the band stopped the first IOC at 10010
    reach(rig, Target(-200, "market", "reverse"))
    legs = sorted(exchange_view(rig.rest)[2], key=lambda o: o["clOrdID"])[2:]
    assert [(o["side"], o["cumQty"], o["execInst"]) for o in legs] == [("Sell", 300, "ReduceOnly"),
                                                                     ("Sell", 200, "")]
    assert traded(rig) == 300 + 500


def test_new_target_mid_way_changes_direction_and_style(sim_server, rigs):
    rig = rigs(sim_server)
    rig.executor.set_target(Target(300, "passive", "up"))
    fill(sim_server, our_order(rig), 120)
    wait_for(lambda: our_order(rig)["cumQty"] == 120, what="partial fill")
    rig.executor.set_target(Target(-100, "passive", "down"))  # cancel the buy, reduce 120, then open 100
    wait_for(lambda: our_order(rig)["side"] == "Sell", what="sell leg")
    reduce_leg = our_order(rig)
    assert (reduce_leg["orderQty"], reduce_leg["execInst"]) == (120, "ParticipateDoNotInitiate,ReduceOnly")
    reach(rig, Target(-100, "market", "hurry"))  # cancel passive, IOC the rest
    assert traded(rig) == 120 + 220
    assert_agrees(rig, -100)


def test_503_storm_and_lost_replies_make_no_duplicate(sim_server, rigs):
    """The order is applied but every reply is a 503 for longer than the client's retry
    budget: the order stays pending in the journal and is completed by re-sending the same
    clOrdID, never replaced."""
    rig = rigs(sim_server, DEEP, rest_options={"max_attempts": 2, "backoff_base": 0.01, "backoff_cap": 0.02})
    storm_ends = time.monotonic() + 0.6
    sim_server.control("fault", {"mode": "overload", "seconds": 0.6, "after_commit": True})
    reach(rig, Target(200, "market", "storm"))
    time.sleep(max(0.0, storm_ends + 0.1 - time.monotonic()))  # the view is read once the storm is over
    assert [o["cumQty"] for o in exchange_view(rig.rest)[2]] == [200]
    assert sim_server.state()["orders_placed"] == 1
    assert rig.rest.stats["retries"] >= 1


def test_lost_reply_and_a_lagging_lookup_make_no_second_order(sim_server, rigs):
    """The order lands, its reply is lost, the retry hears 'Duplicate clOrdID' and the lookup
    shows nothing yet. The executor must keep the order as unknown and learn its fate from
    the websocket or a later lookup, not take it for refused and place a second one."""
    link = FlakyLink()
    rig = rigs(sim_server, rest_options={"session": link, "backoff_base": 0.01})
    wait_for(lambda: rig.executor.last_status == "idle", what="start-up reconciliation")
    link.lose_replies(1)
    link.lag_reads(1)
    rig.executor.set_target(Target(300, "passive", "lagging reads"))
    order = our_order(rig)
    wait_for(lambda: [(o.clordid, o.status) for o in rig.journal.open_orders()] == [(order["clOrdID"], "live")],
             what="the one order journaled live")
    assert (link.lost, link.hidden) == (1, 1)
    fill(sim_server, order, 300)
    wait_for(lambda: rig.reached(Target(300)), what="target")
    assert_agrees(rig, 300)
    assert sim_server.state()["orders_placed"] == 1 and not rig.journal.events("void")


def test_an_order_wrongly_journaled_void_is_tracked_again(sim_server, rigs):
    """Whatever made the journal believe a working order was never created, the websocket
    showing it working puts it back under the executor's control: no second order."""
    rig = rigs(sim_server)
    rig.executor.set_target(Target(300, "passive", "up"))
    order = our_order(rig)
    wait_for(lambda: rig.journal.open_orders() and rig.journal.open_orders()[0].status == "live", what="live")
    rig.executor.stop(cancel=False)
    rig.journal.void_order(order["clOrdID"], "test: a wrong void")
    rig.executor.start()
    wait_for(lambda: [o.clordid for o in rig.journal.open_orders()] == [order["clOrdID"]], what="tracked again")
    fill(sim_server, our_order(rig), 300)
    wait_for(lambda: rig.reached(Target(300)), what="target")
    assert_agrees(rig, 300)
    assert sim_server.state()["orders_placed"] == 1


def test_429_storm_and_timeouts_after_accept(sim_server, rigs):
    rig = rigs(sim_server, DEEP, rest_options={"read_timeout": 0.2, "backoff_base": 0.01})
    sim_server.control("fault", {"mode": "ratelimit", "seconds": 0.3})
    reach(rig, Target(100, "market", "limited"))
    sim_server.control("fault", {"mode": "timeout", "delay_ms": 400, "seconds": 0.3, "after_commit": True})
    reach(rig, Target(-100, "market", "slow replies"))
    assert sim_server.state()["orders_placed"] == 3  # 100 up, then 100 reduce + 100 open
    assert traded(rig) == 300


def test_rejected_orders_are_voided_replaced_and_not_hammered(sim_server, rigs):
    """The exchange refuses every new order (400) for a while: each refused clOrdID is journaled
    void (it certainly does not exist), the executor backs off instead of re-placing in a
    tight loop, and once orders pass the remaining quantity goes out under a new clOrdID."""
    rig = rigs(sim_server, DEEP)
    sim_server.control("fault", {"mode": "reject", "seconds": 30})
    rig.executor.set_target(Target(300, "market", "refused"))
    wait_for(lambda: rig.journal.events("void"), what="a refusal")
    time.sleep(1.0)
    refused = sim_server.state()["counters"]["orders_rejected"]
    assert 2 <= refused <= 8, f"{refused} orders sent in ~1 s into an exchange refusing them all"
    sim_server.control("fault", method="DELETE")
    wait_for(lambda: rig.reached(Target(300)), what="target")
    assert_agrees(rig, 300)
    voided = {e["clordid"] for e in rig.journal.events("void")}
    assert len(voided) == refused and all(rig.journal.order(c).status == "void" for c in voided)
    assert voided.isdisjoint(o["clOrdID"] for o in exchange_view(rig.rest)[2])
    assert sim_server.state()["orders_placed"] == 1 and traded(rig) == 300


def test_dropped_websocket_during_a_fill(sim_server, rigs):
    rig = rigs(sim_server)
    rig.executor.set_target(Target(300, "passive", "up"))
    order = our_order(rig)
    reconnects = rig.state.reconnects
    sim_server.control("fault", {"mode": "drop", "seconds": 0.3})  # and refuse reconnects for a while
    fill(sim_server, order, 300)  # the fill happens while we are blind
    wait_for(lambda: rig.state.reconnects > reconnects and rig.reached(Target(300)), 10, what="recovery")
    assert_agrees(rig, 300)
    assert len(exchange_view(rig.rest)[2]) == 1 and traded(rig) == 300
    assert len(rig.journal.events("reconcile")) >= 2  # at start, and again after the reconnect


def test_risk_refusal_places_nothing_and_is_journaled(sim_server, rigs):
    rig = rigs(sim_server, risk=dataclasses.replace(TEST_RISK, max_position=100))
    rig.executor.set_target(Target(300, "market", "too big"))
    refusal = wait_for(lambda: rig.journal.events("refused"), what="a refusal")[0]["data"]
    assert refusal["rule"] == "max_position" and "300" in refusal["message"]
    assert exchange_view(rig.rest)[2] == []


def test_kill_switch_cancels_stops_and_resumes(sim_server, rigs, tmp_path):
    kill = tmp_path / "KILL"
    rig = rigs(sim_server, risk=dataclasses.replace(TEST_RISK, kill_switch_file=str(kill)))
    rig.executor.set_target(Target(300, "passive", "up"))
    our_order(rig)
    kill.write_text("")
    wait_for(lambda: not exchange_view(rig.rest)[1], what="orders canceled")
    rig.executor.set_target(Target(500, "market", "ignored while killed"))
    wait_for(lambda: rig.executor.last_status == "killed", what="killed")
    assert not exchange_view(rig.rest)[1] and exchange_view(rig.rest)[0] == 0
    kill.unlink()
    reach(rig, Target(500, "market", "resumed"))


def test_kill_switch_flattens_when_configured(sim_server, rigs, tmp_path):
    kill = tmp_path / "KILL"
    rig = rigs(sim_server, risk=dataclasses.replace(TEST_RISK, kill_switch_file=str(kill), flatten_on_kill=True))
    reach(rig, Target(200, "market", "long"))
    kill.write_text("")
    wait_for(lambda: exchange_view(rig.rest)[0] == 0, what="flat")
    assert_agrees(rig, 0)


@pytest.mark.parametrize("policy", ["cancel", "adopt"])
def test_stray_orders_are_canceled_or_adopted(sim_server, rigs, policy):
    rig = rigs(sim_server, execution=dataclasses.replace(TEST_EXECUTION, stray_orders=policy), start=False)
    rig.rest.place_order(side="Buy", orderQty=100, price=9980, clOrdID="manual-1")
    rig.start()
    if policy == "cancel":
        wait_for(lambda: not exchange_view(rig.rest)[1], what="stray canceled")
        assert rig.journal.events("cancel_stray")
    else:
        wait_for(lambda: rig.journal.order("manual-1") is not None, what="stray adopted")
        assert exchange_view(rig.rest)[1][0]["clOrdID"] == "manual-1"
        rig.executor.set_target(Target(100, "passive", "use it"))  # the adopted order is amended, not doubled
        wait_for(lambda: our_order(rig)["price"] == 9990, what="adopted order follows the touch")
        assert len(exchange_view(rig.rest)[2]) == 1


def test_dead_mans_switch_cancels_orders_of_a_dead_process(sim_server, rigs):
    rig = rigs(sim_server)
    rig.executor.set_target(Target(300, "passive", "up"))
    our_order(rig)
    rig.executor.stop(cancel=False)  # the process "dies" with its order working
    sim_server.control("clock", {"advance": TEST_EXECUTION.dead_mans_switch_ms / 1000 + 1})
    wait_for(lambda: not exchange_view(rig.rest)[1], what="the exchange canceled it")


def test_dead_mans_switch_is_refreshed_while_the_process_lives(sim_server, rigs):
    """Armed once, the switch would cancel a live executor's order after 60 s of exchange time;
    refreshed, the order outlives several such spans."""
    rig = rigs(sim_server, execution=dataclasses.replace(TEST_EXECUTION, dead_mans_refresh_s=0.05))
    rig.executor.set_target(Target(300, "passive", "up"))
    order = our_order(rig)
    span = TEST_EXECUTION.dead_mans_switch_ms / 1000
    for _ in range(3):
        sim_server.control("clock", {"advance": 0.7 * span})
        for _ in range(2):  # the second refresh was certainly sent after the clock moved
            armed = rig.executor._next_dms
            wait_for(lambda armed=armed: rig.executor._next_dms != armed, what="a refresh")
    sim_server.control("clock", {"advance": 0.7 * span})  # 2.8 spans since the first arming
    assert [o["clOrdID"] for o in exchange_view(rig.rest)[1]] == [order["clOrdID"]]
    assert sim_server.state()["orders_placed"] == 1


def test_places_nothing_while_the_state_is_not_ready(sim_server, rigs):
    rig = rigs(sim_server, DEEP)
    sim_server.control("fault", {"mode": "drop", "seconds": 0.5})  # websocket gone, reconnects refused
    wait_for(lambda: not rig.state.snapshot(depth=1).ready, what="not ready")
    rig.executor.set_target(Target(100, "market", "blind"))
    wait_for(lambda: rig.executor.last_status == "not-ready", what="the executor to notice")
    assert exchange_view(rig.rest)[2] == []
    wait_for(lambda: rig.reached(Target(100)), 10, what="target after reconnect")
    assert_agrees(rig, 100)


def test_garbled_order_and_execution_rows_are_refused_in_one_line_each_and_trading_goes_on(sim_server, rigs,
                                                                                          caplog):
    """Rows the websocket delivers garbled for our working order (through the real State): the
    journal refuses each in one warning naming the row and the field, however many cycles show
    it, writes nothing of them, no cycle fails, and the exchange's next rows reach the target."""
    rig = rigs(sim_server)
    rig.executor.set_target(Target(300, "passive", "up"))
    order = our_order(rig)
    clordid = order["clOrdID"]
    wait_for(lambda: rig.journal.open_orders() and rig.journal.open_orders()[0].status == "live"
             and rig.venue.order(clordid) is not None, what="the order live and shown")
    before, events = rig.journal.order(clordid), len(rig.journal.events())

    def send(table: str, **fields) -> None:
        rig.state.apply_message(json.dumps({"table": table, "action": "update" if table == "order" else "insert",
                                            "data": [{"orderID": order["orderID"], "clOrdID": clordid, **fields}]}))

    with caplog.at_level(logging.WARNING):
        send("order", cumQty="x", leavesQty=1.9, orderQty=True)
        send("execution", execID="garbled-1", execType="Trade", side="Buy", lastQty=1.9, lastPx=9990)
        send("execution", execID="garbled-2", execType="Trade", side="Buy", lastQty=5, lastPx="x", execComm=None)
        wait_for(lambda: len(caplog.records) >= 3, what="the refusals")
        time.sleep(0.5)  # ten cycles on the same garbled order row: no more lines
        lines = sorted((r.getMessage(), r.name, r.levelname, r.exc_info is not None) for r in caplog.records)
    assert lines == [
        (f"refused execution garbled-1 of order {clordid}: unreadable lastQty 1.9; nothing of it is journaled",
         "sniper.journal", "WARNING", False),
        (f"refused execution garbled-2 of order {clordid}: unreadable lastPx 'x'; nothing of it is journaled",
         "sniper.journal", "WARNING", False),
        (f"refused order row {clordid}: unreadable cumQty 'x'; nothing of it is journaled",
         "sniper.journal", "WARNING", False)], lines
    assert rig.executor.is_alive() and rig.executor.last_error is None
    assert rig.journal.order(clordid) == before and rig.journal.fills() == []
    assert len(rig.journal.events()) == events
    fill(sim_server, our_order(rig), 300)  # the exchange's own rows for the order, whole again
    wait_for(lambda: rig.reached(Target(300)), what="target")
    assert_agrees(rig, 300)
    assert traded(rig) == 300 and sim_server.state()["orders_placed"] == 1


def test_a_garbled_stray_in_the_live_view_is_refused_in_one_line_and_a_good_one_adopted(sim_server, rigs, caplog):
    """A stray's row the websocket delivers garbled, with `stray_orders: adopt`: one warning
    naming the row and the field however many cycles show it, no traceback, nothing journaled,
    the executor cycling on; a good stray after it is adopted."""
    rig = rigs(sim_server, execution=dataclasses.replace(TEST_EXECUTION, stray_orders="adopt"))
    wait_for(lambda: rig.executor.last_status == "idle", what="the executor idle")
    row = {"orderID": "stray-1", "clOrdID": "manual-1", "symbol": "XBTUSD", "side": "Buy", "ordStatus": "New",
           "orderQty": 100, "leavesQty": "100", "cumQty": 0, "price": 9980}
    with caplog.at_level(logging.WARNING):
        rig.state.apply_message(json.dumps({"table": "order", "action": "insert", "data": [row]}))
        wait_for(lambda: caplog.records, what="the refusal")
        time.sleep(0.5)  # ten cycles on the same garbled row: no more lines
        lines = [(r.getMessage(), r.name, r.levelname, r.exc_info is not None) for r in caplog.records]
    assert lines == [("refused stray order stray-1 (manual-1): unreadable leavesQty '100'; nothing of it is journaled",
                      "sniper.journal", "WARNING", False)], lines
    assert rig.executor.is_alive() and rig.executor.last_error is None and rig.executor.last_status == "idle"
    assert rig.journal.orders() == [] and not rig.journal.events("adopt")
    rig.rest.place_order(side="Buy", orderQty=100, price=9970, clOrdID="manual-2")
    wait_for(lambda: rig.journal.order("manual-2") is not None, what="the good stray adopted")
    assert [o.clordid for o in rig.journal.orders()] == ["manual-2"]


def test_the_bitmex_venue_holds_back_a_garbled_row_and_a_garbled_reply_holds_nothing_back():
    """Behind a reply, a websocket row whose figures cannot be read shows nothing (until the
    confirmation timeout, when the journal refuses it); a reply that cannot be read holds back
    no row."""
    state, clock = State(), SimClock(1_700_000_000.0, speed=0)
    row = {"orderID": "O", "clOrdID": "c", "symbol": "XBTUSD", "ordStatus": "New", "orderQty": 100, "price": 10.0,
           "cumQty": 0, "leavesQty": 100}
    state.apply_message(json.dumps({"table": "order", "action": "partial", "keys": ["orderID"], "data": [row]}))
    replies = []
    rest = SimpleNamespace(symbol="XBTUSD", amend_order=lambda **kw: replies.pop(0))
    venue = BitmexVenue(rest, state, clock, confirm_timeout_s=5.0)

    def shown() -> dict | None:
        found = venue.order("c")
        return None if found is None else dict(found)

    replies.append(dict(row, price=11.0))
    venue.amend("c", price=11.0)
    assert shown() is None  # the websocket's row predates the amend
    state.apply_message(json.dumps({"table": "order", "action": "update",
                                    "data": [{"orderID": "O", "price": 11.0, "cumQty": "x"}]}))
    assert shown() is None
    clock.advance(5.1)
    assert shown()["cumQty"] == "x"
    replies.append(dict(row, price=12.0, cumQty=[0]))
    venue.amend("c", price=12.0)
    assert shown()["cumQty"] == "x"  # the garbled reply waits for nothing


class RefusingCancels(LocalVenue):
    """An in-process venue whose exchange refuses every cancel while `refuse` is set (as BitMEX
    does one of an order that ended before the websocket says so)."""

    refuse = True

    def cancel(self, **kw) -> list:
        if self.refuse:
            raise Refused("400 HTTPError: simulated refusal")
        return super().cancel(**kw)


def test_a_refused_cancel_backs_off_like_any_refusal():
    """A cancel the exchange refuses ends the cycle as 'rejected' (the thread waits, doubling),
    not 'acted' (the next cycle at once, the same cancel refused again: a tight loop)."""
    exchange, clock = local_exchange()
    rig = LocalRig(exchange, clock)
    rig.venue = rig.executor.venue = RefusingCancels(exchange, SIM_DEMO_KEY)
    rig.executor.set_target(Target(300, "passive", "up"))
    assert rig.executor.settle() == "idle"
    (order,) = rig.journal.open_orders()
    rig.executor.set_target(Target(0, "passive", "back"))
    assert rig.executor.settle() == "rejected" and "rejected" in BACK_OFF
    assert [e["kind"] for e in rig.journal.events()].count("cancel") == 1
    assert rig.journal.open_orders() == [order]
    rig.venue.refuse = False
    assert rig.executor.settle() == "idle" and rig.reached(Target(0))
