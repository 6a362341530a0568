"""Each risk rule refuses with the rule and the numbers; reductions pass exposure limits;
the kill switch works from a file and by hand. Snapshots come from a real State fed BitMEX
partials."""

from __future__ import annotations

import json
import logging
import os
import signal

import pytest

from sniper.clock import SimClock
from sniper.config import RiskConfig
from sniper.journal import Journal
from sniper.model import Target
from sniper.risk import ProposedOrder, RiskGate, Steering
from sniper.ws.state import State

DAY = 1_600_000_000.0  # 2020-09-13 12:26 UTC


def snapshot(position=0, liq=None, mark=10_000.0, balance=100_000_000):
    state = State("XBTUSD")
    msgs = [
        ("instrument", ["symbol"], {"symbol": "XBTUSD", "markPrice": mark, "tickSize": 0.5, "lotSize": 1}),
        ("position", ["account", "symbol"], {"account": 1, "symbol": "XBTUSD", "currentQty": position,
                                            "liquidationPrice": liq, "markPrice": mark}),
        ("margin", ["account", "currency"], {"account": 1, "currency": "XBt", "marginBalance": balance}),
    ]
    for table, keys, row in msgs:
        state.apply_message(json.dumps({"table": table, "action": "partial", "keys": keys, "data": [row]}))
    return state.snapshot(depth=1)


def gate(**overrides) -> RiskGate:
    cfg = RiskConfig(**{"kill_switch_file": "", **overrides})
    return RiskGate(cfg, SimClock(DAY, speed=0))


def test_accepts_an_ordinary_order():
    assert gate().check(ProposedOrder("Buy", 100, 10_000.0), snapshot())


@pytest.mark.parametrize("overrides, order, snap, rule, numbers", [
    ({"max_position": 500}, ProposedOrder("Buy", 200, 10_000.0), snapshot(position=400), "max_position",
     ["400", "600", "500"]),
    ({"max_order_qty": 100}, ProposedOrder("Buy", 150, 10_000.0), snapshot(), "max_order_qty", ["150", "100"]),
    ({"max_leverage": 2.0, "max_order_qty": 50_000, "max_position": 50_000}, ProposedOrder("Buy", 25_000, 10_000.0),
     snapshot(balance=100_000_000),
     "max_leverage", ["2.50x", "2.0x"]),
    ({"min_liquidation_distance": 0.2}, ProposedOrder("Buy", 10, 10_000.0), snapshot(position=100, liq=9_000.0),
     "min_liquidation_distance", ["10.00%", "20.00%"]),
])
def test_each_exposure_rule_refuses_with_rule_and_numbers(overrides, order, snap, rule, numbers, caplog):
    with caplog.at_level(logging.WARNING, logger="sniper.risk"):
        verdict = gate(**overrides).check(order, snap)
    assert not verdict and verdict.rule == rule
    for n in numbers:
        assert n in verdict.message, (n, verdict.message)
    assert rule in caplog.text


def test_working_orders_count_toward_position():
    g = gate(max_position=500)
    assert g.check(ProposedOrder("Buy", 200, 10_000.0), snapshot(position=200))
    verdict = g.check(ProposedOrder("Buy", 200, 10_000.0), snapshot(position=200), working=200)
    assert verdict.rule == "max_position"


def test_reducing_orders_pass_exposure_limits():
    snap = snapshot(position=900, liq=9_900.0)
    g = gate(max_position=500, max_leverage=0.01, min_liquidation_distance=0.5)
    assert g.check(ProposedOrder("Sell", 300, 10_000.0, reduce_only=True), snap)
    assert g.check(ProposedOrder("Sell", 300, 10_000.0), snap)  # reduces |position| even without the flag
    assert g.check(ProposedOrder("Buy", 1, 10_000.0), snap).rule == "max_position"


def test_orders_per_minute():
    g = gate(max_orders_per_minute=3)
    snap = snapshot()
    for _ in range(3):
        assert g.check(ProposedOrder("Buy", 1, 10_000.0), snap)
        g.record_sent()
    verdict = g.check(ProposedOrder("Buy", 1, 10_000.0), snap)
    assert verdict.rule == "max_orders_per_minute" and "3 orders in the last 60 s" in verdict.message
    g._clock.advance(61)
    assert g.check(ProposedOrder("Buy", 1, 10_000.0), snap)


def test_daily_loss_limit_persists_across_restarts_and_resets_next_day(tmp_path):
    clock = SimClock(DAY, speed=0)
    journal = Journal(tmp_path / "j.sqlite", clock)
    cfg = RiskConfig(kill_switch_file="", daily_loss_limit_xbt=0.05)
    assert RiskGate(cfg, clock, store=journal).check(ProposedOrder("Buy", 1, 10_000.0), snapshot(balance=100_000_000))
    # a restart later that day, after losing 0.06 XBT: the opening balance is remembered
    verdict = RiskGate(cfg, clock, store=journal).check(ProposedOrder("Buy", 1, 10_000.0),
                                                        snapshot(balance=94_000_000))
    assert verdict.rule == "daily_loss_limit" and "0.06000000" in verdict.message
    clock.advance(86_400)
    assert RiskGate(cfg, clock, store=journal).check(ProposedOrder("Buy", 1, 10_000.0), snapshot(balance=94_000_000))
    journal.close()


def test_kill_switch_file_and_manual(tmp_path):
    kill_file = tmp_path / "KILL"
    g = gate(kill_switch_file=str(kill_file))
    order = ProposedOrder("Buy", 1, 10_000.0)
    assert g.check(order, snapshot()) and g.kill_reason is None
    kill_file.write_text("stop")
    verdict = g.check(order, snapshot())
    assert verdict.rule == "kill_switch" and str(kill_file) in verdict.message
    assert not g.check(ProposedOrder("Sell", 1, 10_000.0, reduce_only=True), snapshot(position=5))
    kill_file.unlink()
    assert g.check(order, snapshot())
    g.kill("operator said so")
    assert "operator said so" in g.check(order, snapshot()).message
    g.clear()
    assert g.check(order, snapshot())


def test_kill_with_flatten_allows_only_reductions():
    g = gate(flatten_on_kill=True)
    g.kill("test")
    assert g.check(ProposedOrder("Sell", 5, 10_000.0, reduce_only=True), snapshot(position=5))
    assert g.check(ProposedOrder("Buy", 1, 10_000.0), snapshot(position=5)).rule == "kill_switch"


def test_kill_switch_by_signal():
    g = gate()
    previous = signal.signal(signal.SIGUSR1, g.on_signal)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        verdict = g.check(ProposedOrder("Buy", 1, 10_000.0), snapshot())
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert verdict.rule == "kill_switch" and "SIGUSR1" in verdict.message


def test_steer_passes_the_target_stops_when_killed_and_flattens_when_configured():
    target = Target(300, "passive", "strategy")
    g = gate()
    assert g.steer(target) == Steering(target)
    g.kill("operator")
    assert g.steer(target) == Steering(None, "operator")
    g = gate(flatten_on_kill=True)
    g.kill("operator")
    assert g.steer(target) == Steering(Target(0, "market", "kill switch: operator"), "operator")
    assert g.steer(None).target == Target(0, "market", "kill switch: operator")
    g.clear()
    assert g.steer(None) == Steering(None)


def test_cap_target_keeps_a_wish_within_position_and_leverage():
    g = gate(max_position=500, max_leverage=2.0)
    snap = snapshot(mark=10_000.0, balance=10_000_000)  # 0.1 XBT: 2x at 10000 is 2000 contracts
    assert g.cap_target(Target(400, "passive", "x"), snap) == Target(400, "passive", "x")
    assert g.cap_target(Target(-900, "market", "x"), snap) == Target(-500, "market", "x (capped from -900)")
    assert gate(max_position=5000, max_leverage=2.0).cap_target(Target(3000), snap).qty == 2000
    assert g.order_cap == RiskConfig().max_order_qty


def test_a_refusal_is_journaled_once_per_change_of_rule(tmp_path):
    journal = Journal(tmp_path / "j.sqlite", SimClock(DAY, speed=0))
    g = RiskGate(RiskConfig(kill_switch_file="", max_position=100), SimClock(DAY, speed=0), store=journal)
    too_big = ProposedOrder("Buy", 200, 10_000.0)
    for _ in range(3):
        assert g.check(too_big, snapshot()).rule == "max_position"
    assert g.check(ProposedOrder("Buy", 50, 10_000.0), snapshot())
    assert g.check(too_big, snapshot()).rule == "max_position"
    refusals = [e["data"] for e in journal.events("refused")]
    assert len(refusals) == 2 and refusals[0]["rule"] == "max_position" and refusals[0]["qty"] == 200
    journal.close()


@pytest.mark.parametrize("qty", ["x", 1.9, True, None, [5]])
def test_an_unreadable_position_refuses_every_order_naming_the_field(qty):
    """Whether an order reduces cannot be known on a position that cannot be read: a reduction
    is refused too, and so is a flatten while killed (int() would have read 1.9 as 1, or died)."""
    snap = snapshot(position=qty)
    if qty is None:  # null is no position: BitMEX sends it for an account that never traded
        assert gate().check(ProposedOrder("Sell", 10, 10_000.0, reduce_only=True), snap)
        return
    g = gate(flatten_on_kill=True)
    for order in (ProposedOrder("Buy", 10, 10_000.0), ProposedOrder("Sell", 10, 10_000.0, reduce_only=True)):
        verdict = g.check(order, snap)
        assert not verdict and verdict.rule == "unreadable_account", verdict
        assert verdict.message == f"unreadable position row: currentQty {qty!r}"
    g.kill("operator")
    assert g.check(ProposedOrder("Sell", 10, None, reduce_only=True), snap).rule == "unreadable_account"
    assert g.refusals == {"unreadable_account": 3}


@pytest.mark.parametrize("garbled, field", [
    ({"balance": "100000000"}, "margin marginBalance"),
    ({"balance": True}, "margin marginBalance"),
    ({"mark": "10000"}, "instrument markPrice"),
    ({"liq": "9000"}, "position liquidationPrice"),
])
def test_a_garbled_figure_refuses_increases_only_and_the_target_keeps_the_position_cap(garbled, field):
    snap = snapshot(position=100, **garbled)
    g = gate(max_position=500)
    verdict = g.check(ProposedOrder("Buy", 10, None), snap)
    assert not verdict and verdict.rule == "unreadable_account" and verdict.message.startswith(f"unreadable {field} ")
    assert g.check(ProposedOrder("Sell", 10, 10_000.0), snap)  # a reduction needs none of the figures
    assert g.cap_target(Target(900), snap).qty == 500  # leverage unknown: check refuses what it cannot size
