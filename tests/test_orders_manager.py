"""The order manager as pure functions: quantity never overshoots, one working order,
reducing legs are ReduceOnly, passive joins the touch, market is a banded IOC, a target is
rounded to the lot once."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sniper import model
from sniper.journal import OrderRecord
from sniper.model import GTC, IOC, POST_ONLY, REDUCE_ONLY, Target, Unreadable
from sniper.orders.manager import (
    Amend,
    Cancel,
    Market,
    Place,
    goal,
    leg,
    market_price,
    passive_price,
    plan,
    round_lot,
    to_tick,
)
from sniper.orders.venue import VenueError, contracts, number
from sniper.ws.state import State

MKT = Market(best_bid=9990.0, best_ask=10010.0, tick=0.5)


def working(side="Buy", qty=100, cum=0, price=9990.0, inst=POST_ONLY, tif=GTC) -> OrderRecord:
    return OrderRecord("tok-1-0", 1, 0, side, qty, price, "Limit", inst, tif, "live", "New", "oid", cum, qty - cum,
                       0.0, 0.0)


def test_grid_helpers():
    assert to_tick(10060.04, 0.5, -1) == 10060.0 and to_tick(10060.04, 0.5, +1) == 10060.5
    assert round_lot(250, 100) == 200 and round_lot(-250, 100) == -200 and round_lot(0, 100) == 0
    assert leg(100, -300, 1000) == (100, True)  # reduce to flat first
    assert leg(0, -300, 1000) == (300, False)
    assert leg(0, 5000, 1000) == (1000, False)  # capped by the max order size
    assert passive_price("Buy", MKT) == 9990.0 and passive_price("Sell", MKT) == 10010.0
    assert passive_price("Buy", Market(None, 10010.0, 0.5)) == 10009.5
    assert market_price("Buy", MKT, 0.005) == 10060.0 and market_price("Sell", MKT, 0.005) == 9940.5
    assert market_price("Buy", Market(9990.0, None, 0.5), 0.005) is None


def test_passive_places_post_only_at_the_touch():
    [p] = plan(Target(300, "passive"), 0, [], MKT, max_order_qty=1000)
    assert p == Place("Buy", 300, 9990.0, "Limit", POST_ONLY, GTC, "target")


def test_reducing_leg_carries_reduce_only():
    [p] = plan(Target(-100, "passive"), 200, [], MKT, max_order_qty=1000)
    assert (p.side, p.qty, p.price, p.exec_inst) == ("Sell", 200, 10010.0, f"{POST_ONLY},{REDUCE_ONLY}")
    [m] = plan(Target(-100, "market"), 200, [], MKT, max_order_qty=1000)
    assert (m.qty, m.exec_inst, m.time_in_force, m.price) == (200, REDUCE_ONLY, IOC, 9940.5)


def test_follows_the_touch_and_resizes_with_absolute_order_qty():
    moved = Market(9995.0, 10010.0, 0.5)
    assert plan(Target(300, "passive"), 0, [working(qty=300)], moved, max_order_qty=1000) == [
        Amend("tok-1-0", 9995.0, None, 300, "follow the touch")]
    assert plan(Target(300, "passive"), 0, [working(qty=300)], moved, max_order_qty=1000, reprice_ticks=10) == []
    # 40 filled of 300 (position 40), target now 200: leaves must become 160, orderQty 40 + 160
    assert plan(Target(200, "passive"), 40, [working(qty=300, cum=40)], MKT, max_order_qty=1000) == [
        Amend("tok-1-0", None, 200, 160, "target changed")]


def test_cancels_when_direction_style_or_goal_changes():
    w = [working(qty=300)]
    assert isinstance(plan(Target(-100, "passive"), 0, w, MKT, max_order_qty=1000)[0], Cancel)
    assert plan(Target(300, "market"), 0, w, MKT, max_order_qty=1000)[0].why == "style changed to market"
    assert plan(Target(0, "passive"), 0, w, MKT, max_order_qty=1000)[0].why == "target reached"
    second = OrderRecord("tok-1-1", 1, 1, "Buy", 100, 9990.0, "Limit", POST_ONLY, GTC, "live", "New",
                         "o2", 0, 100, 0.0, 0.0)
    two = [working(qty=100), second]
    assert plan(Target(300, "passive"), 0, two, MKT, max_order_qty=1000) == [
        Cancel("tok-1-1", "more than one working order")]


def test_a_target_is_rounded_to_the_lot_once_toward_zero():
    assert goal(Target(150, "market", "why"), 100) == Target(100, "market", "why")
    assert goal(Target(-250, "passive"), 100) == Target(-200, "passive")
    assert goal(Target(99, "passive"), 100).qty == 0
    t = Target(300, "passive")
    assert goal(t, 100) is t and goal(t, 1) is t
    # planned from the rounded goal, a 150-contract wish is one 100-lot order, then nothing
    mkt = Market(9990.0, 10010.0, 0.5, lot=100)
    [p] = plan(goal(Target(150, "market"), 100), 0, [], mkt, max_order_qty=1000)
    assert p.qty == 100
    assert plan(goal(Target(150, "market"), 100), 100, [], mkt, max_order_qty=1000) == []


def test_nothing_without_a_price():
    assert plan(Target(300, "passive"), 0, [], Market(None, None, 0.5), max_order_qty=1000) == []
    assert plan(Target(300, "market"), 0, [], Market(9990.0, None, 0.5), max_order_qty=1000) == []


@given(target=st.integers(-5000, 5000), position=st.integers(-5000, 5000),
       order=st.one_of(st.none(), st.tuples(st.sampled_from(["Buy", "Sell"]), st.integers(1, 3000),
                                            st.integers(0, 3000), st.booleans())),
       style=st.sampled_from(["passive", "market"]), cap=st.integers(1, 4000))
def test_never_overshoots(target, position, order, style, cap):
    """After any plan, position + the working order's leaves (as amended or placed) lies between
    position and target: no quantity ever points past the target."""
    work = []
    if order is not None:
        side, qty, cum, reduce = order
        cum = min(cum, qty - 1)
        inst = f"{POST_ONLY},{REDUCE_ONLY}" if reduce else POST_ONLY
        work = [working(side, qty, cum, 9990.0, inst)]
    actions = plan(Target(target, style), position, work, MKT, max_order_qty=cap)
    leaves = {w.clordid: w.sign * w.leaves_qty for w in work}
    for a in actions:
        if isinstance(a, Cancel):
            leaves.pop(a.clordid)
        elif isinstance(a, Amend):
            leaves[a.clordid] = (1 if work[0].side == "Buy" else -1) * a.leaves
        else:
            assert a.qty <= cap
            leaves["new"] = a.qty if a.side == "Buy" else -a.qty
            assert not work, "a new order while another works"
            if a.reduce_only:
                assert abs(leaves["new"]) <= abs(position)
    lo, hi = sorted((position, target))
    assert lo <= position + sum(leaves.values()) <= hi


def instrument_snapshot(**fields):
    state = State("XBTUSD")
    state.apply_message(json.dumps({"table": "instrument", "action": "partial", "keys": ["symbol"],
                                    "data": [{"symbol": "XBTUSD", **fields}]}))
    return state.snapshot(depth=1)


def test_the_grid_comes_from_the_instrument_and_defaults_without_one():
    market = Market.of(instrument_snapshot(tickSize=1, lotSize=100))
    assert (market.tick, market.lot) == (1.0, 100)
    market = Market.of(instrument_snapshot())
    assert (market.tick, market.lot) == (0.5, 1)


@pytest.mark.parametrize("fields, named", [
    ({"tickSize": "0.5"}, "unreadable instrument tickSize '0.5'"),
    ({"lotSize": True}, "unreadable instrument lotSize True"),
    ({"lotSize": 1.9}, "unusable instrument grid: tickSize 0.5, lotSize 1.9"),  # int() made it 1
    ({"tickSize": -0.5}, "unusable instrument grid: tickSize -0.5, lotSize 1"),
])
def test_a_garbled_grid_prices_nothing(fields, named):
    with pytest.raises(VenueError) as exc:
        Market.of(instrument_snapshot(**fields))
    assert str(exc.value) == named



@pytest.mark.parametrize("value", ["1", True, math.nan, math.inf, 2**63, [1]])
def test_the_venue_reads_figures_with_the_model_s_readers_and_refuses_as_a_venue_error(value):
    """One reader each (model.py, below the journal), the same refusal at the venue boundary."""
    with pytest.raises(Unreadable) as model_says:
        model.number(value, "instrument markPrice")
    with pytest.raises(VenueError) as venue_says:
        number(value, "instrument markPrice")
    assert str(venue_says.value) == str(model_says.value) == f"unreadable instrument markPrice {value!r}"
    with pytest.raises(VenueError, match="^unreadable position row: currentQty "):
        contracts({"currentQty": value})
    assert number(-2**63, "x") == -2**63 and contracts({"currentQty": -5}) == -5 and contracts(None) == 0
