"""The settlement table: entry minute and side per band, hold, reversal, exit, the liquidation
refusal and the early stop, all on hand-computed numbers."""

import dataclasses

import numpy as np
import pytest
from test_strategies_base import FEE, assert_no_look_ahead, minute_bars

from sniper.config import FundingConfig
from sniper.model import Target
from sniper.strategies import Account, Funding, FundingStrategy
from sniper.strategies.funding import liquidation_price

T = 1_577_880_000  # 2020-01-01 12:00 UTC, a settlement
EIGHT_H = 8 * 3600
BARS = minute_bars([10_000.0])
FLAT = Account(margin_balance_xbt=1.0, mark=10_000.0)
SIZE = 29_932  # 1 XBT x 10,000 x 3 x (1 - 0.00075 x 3)


def before(rate):
    return Funding(next_time=T, rate=rate, past_times=(T - EIGHT_H,), past_rates=(0.0001,))


def after(rate):
    return Funding(next_time=T + EIGHT_H, rate=0.0001, past_times=(T - EIGHT_H, T), past_rates=(0.0001, rate))


def target(s, funding, now, account=FLAT):
    return s.decide(BARS, funding, account, float(now)).target


@pytest.fixture
def s():
    return FundingStrategy(FundingConfig(), taker_fee=FEE)


@pytest.mark.parametrize("rate, minutes, qty", [
    (0.0025, 4, -SIZE),   # > 0.20 %: longs pay, short 4 minutes before
    (0.0035, 3, -SIZE),   # > 0.30 %: 3 minutes
    (0.0006, 8, -SIZE),   # > 0.05 %: 8 minutes
    (-0.0025, 5, SIZE),   # < -0.20 %: shorts pay, long 5 minutes before
    (-0.0016, 7, SIZE),   # < -0.15 %: 7 minutes
])
def test_enters_at_the_tables_minute_on_the_receiving_side(s, rate, minutes, qty):
    start = T - 60 * minutes
    assert target(s, before(rate), start - 1) is None and not s.in_window(start - 1, before(rate))
    got = target(s, before(rate), start)
    assert got.qty == qty and got.style == "market" and s.in_window(start, before(rate))
    assert target(s, before(rate), T - 1).qty == qty


def test_a_rate_below_every_band_never_enters(s):
    for rate in (0.0004, 0.0005, -0.0005, 0.0):  # `above` is strict: 0.05 % itself is no band
        for now in range(T - 15 * 60, T + 30 * 60, 60):
            f = before(rate) if now < T else after(rate)
            assert target(s, f, now) is None and not s.in_window(now, f)


def test_the_band_is_the_largest_threshold_exceeded_in_any_order():
    reordered = FundingConfig(positive=tuple(reversed(FundingConfig().positive)))
    for cfg in (FundingConfig(), reordered):
        s = FundingStrategy(cfg, taker_fee=FEE)
        assert s.band(0.0016).enter_minutes == 5 and s.band(0.0031).enter_minutes == 3
        assert target(s, before(0.0016), T - 300).qty == -SIZE
        assert target(s, before(0.0016), T - 301) is None


def test_holds_through_settlement_then_reverses_per_table(s):
    # 0.25 % band: reverse. Receive leg until T + 1 min, then long for 15 minutes, then done
    assert target(s, after(0.0025), T).qty == -SIZE
    assert target(s, after(0.0025), T + 59).qty == -SIZE
    rev = s.decide(BARS, after(0.0025), FLAT, float(T + 60))
    assert rev.target.qty == SIZE and rev.seen["leg"] == "reverse"
    assert target(s, after(0.0025), T + 60 + 15 * 60 - 1).qty == SIZE
    assert target(s, after(0.0025), T + 60 + 15 * 60) is None
    assert not s.in_window(T + 16 * 60, after(0.0025))
    # a negative rate reverses the other way: long before, short after
    assert target(s, after(-0.0035), T + 30).qty == SIZE
    assert target(s, after(-0.0035), T + 60).qty == -SIZE


def test_exits_after_settlement_without_reversal(s):
    assert target(s, after(0.0012), T + 30).qty == -SIZE  # 0.10 % band: no reversal
    assert target(s, after(0.0012), T + 60) is None
    # the settled rate decides after T: a rate that fell out of its band ends the hold at T
    assert target(s, after(0.0004), T) is None


def test_the_announced_rate_stands_in_until_the_settlement_row_arrives(s):
    assert target(s, before(0.0025), T - 60).qty == -SIZE  # announced for T: 0.25 %
    late = Funding(next_time=T + EIGHT_H, rate=0.0001, past_times=(T - EIGHT_H,), past_rates=(0.0001,))
    assert target(s, late, T + 30).qty == -SIZE and target(s, late, T + 60).qty == SIZE
    assert target(FundingStrategy(FundingConfig(), taker_fee=FEE), late, T + 60) is None  # never saw it
    assert target(s, after(0.0012), T + 60) is None  # the settlement row, once there, decides


def test_unknown_schedule_never_enters(s):
    for now in (T - 240, T - 1, T + 30):
        assert target(s, Funding(next_time=None, rate=None), now) is None


def test_exit_after_zero_reverses_at_settlement():
    s = FundingStrategy(dataclasses.replace(FundingConfig(), exit_after_minutes=0), taker_fee=FEE)
    assert target(s, before(0.0025), T - 1).qty == -SIZE
    assert target(s, after(0.0025), T).qty == SIZE


def test_liquidation_price_hand_computed():
    # 6x long: liquidated when the loss leaves 0.5 % x notional: 10,000 x 6 / (6 + 1 - 0.03)
    assert liquidation_price(10_000.0, 6.0, True, 0.005) == pytest.approx(60_000 / 6.97, rel=1e-12)
    assert liquidation_price(10_000.0, 6.0, False, 0.005) == pytest.approx(60_000 / 5.03, rel=1e-12)
    assert liquidation_price(10_000.0, 3.0, True, 0.0) == 7_500.0  # the bankruptcy price
    assert liquidation_price(10_000.0, 250.0, True, 0.005) == 10_000.0  # margin below maintenance


def test_refuses_a_leg_whose_liquidation_is_too_close():
    s = FundingStrategy(dataclasses.replace(FundingConfig(), leverage=6.0), taker_fee=FEE)
    # long at 6x: liquidation 8,608.32, 13.9 % below mark < 15 %: refused, window not claimed
    d = s.decide(BARS, before(-0.0025), FLAT, float(T - 60))
    assert d.target is None and "refused" in d.seen["reason"] and not s.in_window(T - 60, before(-0.0025))
    assert d.seen["liquidation_distance"] == pytest.approx(1 - 60_000 / 6.97 / 10_000)
    # short at 6x: liquidation 11,928.43, 19.3 % above: entered; 60,000 x (1 - 0.0045) = 59,730
    assert target(s, before(0.0025), T - 60).qty == -59_730 and s.in_window(T - 60, before(0.0025))
    looser = FundingStrategy(dataclasses.replace(FundingConfig(), leverage=6.0), taker_fee=FEE,
                             min_liquidation_distance=0.1)
    assert target(looser, before(-0.0025), T - 60).qty == 59_730


def test_stops_at_half_the_distance_to_bankruptcy_short(s):
    # short from 10,000 at 3x: bankrupt at 15,000; half of the 5,000 is eaten at 12,500
    held = dict(position=-SIZE, margin_balance_xbt=1.0, avg_entry=10_000.0)
    assert target(s, before(0.0025), T - 240).qty == -SIZE
    assert target(s, before(0.0025), T - 120, Account(mark=12_499.0, **held)).qty == -SIZE  # not added to
    stop = s.decide(BARS, before(0.0025), Account(mark=12_500.0, **held), float(T - 60))
    assert stop.target == Target(0, "market", stop.seen["reason"]) and "stopped" in stop.seen["reason"]
    # flat for the rest of the leg, across the settlement, even after the price comes back
    assert target(s, before(0.0025), T - 30, Account(mark=10_000.0, margin_balance_xbt=1.0)).qty == 0
    assert target(s, after(0.0025), T + 30, Account(mark=10_000.0, margin_balance_xbt=1.0)).qty == 0
    # the reversal is a new leg
    assert target(s, after(0.0025), T + 60, Account(mark=10_000.0, margin_balance_xbt=1.0)).qty == SIZE


def test_stops_at_half_the_distance_to_bankruptcy_long(s):
    # long from 10,000 at 3x: bankrupt at 7,500; the stop is at 8,750
    held = dict(position=SIZE, margin_balance_xbt=1.0, avg_entry=10_000.0)
    assert target(s, before(-0.0025), T - 300).qty == SIZE
    assert target(s, before(-0.0025), T - 120, Account(mark=8_751.0, **held)).qty == SIZE
    assert target(s, before(-0.0025), T - 60, Account(mark=8_750.0, **held)).qty == 0


def test_no_stop_for_a_position_on_the_other_side(s):
    # a long left from another logic is not this short leg's position
    long_held = Account(mark=12_500.0, position=5_000, margin_balance_xbt=1.0, avg_entry=10_000.0)
    assert target(s, before(0.0025), T - 60, long_held).qty == -37_415  # 37,500 x 0.99775, sized at 12,500


def test_a_legs_size_is_fixed_at_its_start(s):
    assert target(s, before(0.0025), T - 240).qty == -SIZE
    assert target(s, before(0.0025), T - 180, Account(margin_balance_xbt=2.0, mark=9_000.0)).qty == -SIZE
    # the reversal is sized anew: 2 XBT x 9,000 x 3 x 0.99775 = 53,878.5
    assert target(s, after(0.0025), T + 60, Account(margin_balance_xbt=2.0, mark=9_000.0)).qty == 53_878


def test_no_look_ahead():
    # sized at the last close (no mark): bar 20 (decided at T + 1 min) starts the reversal leg,
    # so noise from bar 20 on changes its size, and nothing before
    closes = 10_000 * np.exp(np.cumsum(np.random.default_rng(4).normal(0, 1e-3, 40)))
    start = T - 20 * 60
    bars = minute_bars(closes, start)

    def schedule(now):
        return before(0.0025) if now < T else after(0.0025)

    assert_no_look_ahead(lambda: FundingStrategy(FundingConfig(), taker_fee=FEE), bars, t=19, first=0,
                         funding_at=schedule, account=Account(margin_balance_xbt=1.0))
