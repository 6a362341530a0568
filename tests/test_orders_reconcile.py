"""Garbled exchange rows at reconciliation and in the strays' path, over the in-process venue
(a real sim Exchange, SQLite journal, the executor stepped): a REST or live-view row whose
clOrdID, orderID or figures cannot be read is refused in one warning naming the row and the
field, nothing of it is journaled, adopted or canceled, the cycles go on as usual, and the
exchange's next good row is handled as any. One exception: an order journaled void shown
with a garbled status may be working, so no cycle plans beside it until a good row shows."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping

import pytest
from drivers.rig import TEST_EXECUTION, LocalRig, local_exchange

from sniper.config import SIM_DEMO_KEY
from sniper.model import BUY, SELL, Target
from sniper.orders.local import LocalSnapshot, LocalVenue
from sniper.orders.venue import VenueError

DEEP = [(BUY, 9990.0, 100_000), (SELL, 10010.0, 100_000)]


class GarblingVenue(LocalVenue):
    """A LocalVenue whose REST records and live view show the orders (and executions) of the
    orderIDs in `garbled` with those fields overwritten, as a broken wire would deliver them."""

    def __init__(self, exchange, api_key: str) -> None:
        super().__init__(exchange, api_key)
        self.garbled: dict[str, dict] = {}  # orderID -> fields to overwrite

    def _garble(self, row: Mapping) -> Mapping:
        return {**row, **self.garbled.get(row.get("orderID"), {})}

    def open_orders(self) -> list[Mapping]:
        return [self._garble(r) for r in super().open_orders()]

    def fills(self) -> list[Mapping]:
        return [self._garble(r) for r in super().fills()]

    def snapshot(self) -> LocalSnapshot:
        snap = super().snapshot()
        return dataclasses.replace(snap, orders=tuple(self._garble(r) for r in snap.orders))


def rig_on(policy: str, tmp_path) -> LocalRig:
    exchange, clock = local_exchange()
    exchange.clear_market_levels()
    exchange.set_levels(DEEP)
    rig = LocalRig(exchange, clock, str(tmp_path / "journal.sqlite"),
                   execution=dataclasses.replace(TEST_EXECUTION, stray_orders=policy))
    rig.venue = GarblingVenue(exchange, SIM_DEMO_KEY)
    rig.executor.venue = rig.venue
    return rig


def stray(rig: LocalRig, clordid: str = "manual-1") -> str:
    """A resting order placed outside the daemon (by hand on the website); its orderID."""
    return rig.exchange.place_order(SIM_DEMO_KEY, symbol="XBTUSD", side=BUY, orderQty=100, price=9980.0,
                                    ordType="Limit", clOrdID=clordid)["orderID"]


def warnings(caplog) -> list[tuple]:
    return [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("policy, fields, why", [
    ("cancel", {"clOrdID": ["manual-1"]}, "unreadable clOrdID ['manual-1']"),
    ("cancel", {"clOrdID": {"id": 1}}, "unreadable clOrdID {'id': 1}"),
    ("cancel", {"orderID": None}, "missing orderID"),
    ("cancel", {"orderID": ["o"]}, "unreadable orderID ['o']"),
    ("adopt", {"clOrdID": ["manual-1"]}, "unreadable clOrdID ['manual-1']"),
    ("adopt", {"leavesQty": "100"}, "unreadable leavesQty '100'"),
    ("adopt", {"orderID": None}, "missing orderID"),
])
def test_a_garbled_stray_is_refused_in_one_line_and_handled_once_a_good_row_shows(tmp_path, caplog, policy,
                                                                                 fields, why):
    rig = rig_on(policy, tmp_path)
    order_id = stray(rig)
    rig.venue.garbled[order_id] = fields
    with caplog.at_level(logging.WARNING):
        assert rig.executor.settle() == "idle"  # reconciled, then a cycle on the live view's same row
        for _ in range(3):
            assert rig.executor.settle() == "idle"
    named = dict({"orderID": order_id, "clOrdID": "manual-1"}, **fields)
    what = f"stray order {named['orderID']!s:.40}" + (f" ({named['clOrdID']!s:.40})" if named["clOrdID"] else "")
    assert warnings(caplog) == [("WARNING", f"refused {what}: {why}; nothing of it is journaled", None)]
    assert rig.journal.orders() == [] and [e["kind"] for e in rig.journal.events()] == ["reconcile"]
    assert [r["orderID"] for r in rig.exchange.orders(SIM_DEMO_KEY, open_only=True)] == [order_id]
    rig.venue.garbled.clear()  # the exchange's next row is whole
    assert rig.executor.settle() == "idle"
    if policy == "cancel":
        assert rig.exchange.orders(SIM_DEMO_KEY, open_only=True) == []
        assert rig.journal.events("cancel_stray")[0]["data"] == {"orderID": order_id, "clOrdID": "manual-1"}
    else:
        assert [(o.clordid, o.order_id, o.leaves_qty) for o in rig.journal.open_orders()] == \
            [("manual-1", order_id, 100)]


def test_our_order_and_its_execution_listed_with_a_garbled_clordid_fail_no_reconciliation(tmp_path, caplog):
    """Reconciliation after a new session: the open orders list ours with a garbled clOrdID, and
    the recent fills an execution of it. Neither fails the cycle nor is canceled as a stray;
    the order is still followed (by its lookup and the live view), and the execution is
    refused by the journal until a good one is listed."""
    rig = rig_on("cancel", tmp_path)
    rig.executor.set_target(Target(300, "passive", "up"))
    assert rig.executor.settle() == "idle"
    (rec,) = rig.journal.open_orders()
    rig.exchange.market_order(SELL, 100_100, 9990.0)  # an outside taker: the touch and 100 of ours
    rig.venue.new_executions()  # the live view's executions are lost with the session
    (execution,) = rig.venue.fills()
    rig.venue.garbled[rec.order_id] = {"clOrdID": [rec.clordid]}
    rig.executor._session = None  # a new session: reconcile first
    with caplog.at_level(logging.WARNING):
        assert rig.executor.settle() == "idle"
        rig.executor._session = None
        assert rig.executor.settle() == "idle"
    assert warnings(caplog) == [
        ("WARNING", f"refused execution {execution['execID']} of order ['{rec.clordid}']: unreadable clOrdID"
                    f" ['{rec.clordid}']; nothing of it is journaled", None),
        ("WARNING", f"refused stray order {rec.order_id} (['{rec.clordid}']): unreadable clOrdID ['{rec.clordid}'];"
                    " nothing of it is journaled", None)]
    assert rig.journal.fills() == [] and not rig.journal.events("cancel_stray")
    (now,) = rig.journal.open_orders()
    assert (now.clordid, now.status, now.cum_qty, now.leaves_qty) == (rec.clordid, "live", 100, 200)
    rig.venue.garbled.clear()
    rig.executor._session = None
    assert rig.executor.settle() == "idle"
    assert [(f["clordid"], f["qty"]) for f in rig.journal.fills()] == [(rec.clordid, 100)]


def test_an_order_journaled_void_shown_with_a_garbled_status_blocks_planning_until_a_good_row(tmp_path):
    """It may be working: the cycle fails as the venue's (a warning, no traceback, the thread
    backs off) rather than plan a second order beside it; the next good row tracks it again."""
    rig = rig_on("cancel", tmp_path)
    rig.executor.set_target(Target(300, "passive", "up"))
    assert rig.executor.settle() == "idle"
    (rec,) = rig.journal.open_orders()
    rig.journal.void_order(rec.clordid, "wrongly, say after a lost reply")
    rig.venue.garbled[rec.order_id] = {"ordStatus": ["New"]}
    for _ in range(3):
        with pytest.raises(VenueError, match=re.escape(f"order {rec.clordid}, journaled void, shows with an"
                                                       " unreadable ordStatus ['New']")):
            rig.executor.settle()
    assert len(rig.exchange.orders(SIM_DEMO_KEY)) == 1 and rig.journal.order(rec.clordid).status == "void"
    rig.venue.garbled.clear()
    assert rig.executor.settle() == "idle"
    assert [o.clordid for o in rig.journal.open_orders()] == [rec.clordid]
    assert len(rig.exchange.orders(SIM_DEMO_KEY)) == 1
