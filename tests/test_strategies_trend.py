"""The long-term logic: dual EMA, TA-Lib seeding, O(1) updates equal to talib from scratch."""

import numpy as np
import talib
from test_strategies_base import ACCOUNT, FEE, NO_FUNDING, assert_no_look_ahead, decisions, minute_bars

from sniper.config import TrendConfig
from sniper.model import Target
from sniper.strategies import Account, TrendStrategy

SMALL = TrendConfig(fast_period=3, slow_period=2)


def decide(strategy, closes, account=ACCOUNT):
    bars = minute_bars(closes)
    return strategy.decide(bars, NO_FUNDING, account, float(bars["time"][-1]) + 60)


def test_rising_slow_ema_is_long_hand_computed():
    # fast EMA(3) of 1..5: SMA(1,2,3) = 2, then 2 + (4-2)/2 = 3, 3 + (5-3)/2 = 4
    # slow EMA(2) of 2,3,4: SMA(2,3) = 2.5, then 2.5 + (4-2.5) * 2/3 = 3.5; slope +1
    s = TrendStrategy(SMALL, taker_fee=FEE)
    d = decide(s, [1.0, 2.0, 3.0, 4.0, 5.0], Account(margin_balance_xbt=0.5, mark=10_000.0))
    assert (s.ema_fast, s.ema_slow, s.slope) == (4.0, 3.5, 1.0)
    # 0.5 XBT x 10,000 x 5 x (1 - 0.00075 x 5) = 24,906.25
    assert d.target == Target(24_906, "passive", "trend: slow EMA rising")
    assert d.seen["logic"] == "trend" and d.seen["slope"] == 1.0


def test_falling_slow_ema_is_short_hand_computed():
    # fast: SMA(5,4,3) = 4, then 3, 2; slow: SMA(4,3) = 3.5, then 3.5 + (2-3.5) * 2/3 = 2.5
    s = TrendStrategy(TrendConfig(fast_period=3, slow_period=2, leverage=2.0, style="market"), taker_fee=FEE)
    d = decide(s, [5.0, 4.0, 3.0, 2.0, 1.0])
    assert (s.ema_fast, s.ema_slow, s.slope) == (2.0, 2.5, -1.0)
    assert d.target == Target(-19_970, "market", "trend: slow EMA falling")  # 20,000 x 0.9985


def test_constant_history_holds_nothing():
    d = decide(TrendStrategy(SMALL, taker_fee=FEE), [7.0] * 6)
    assert d.target.qty == 0 and d.seen["reason"] == "trend: slow EMA flat"


def test_warm_up_refuses_a_position_and_says_why():
    s = TrendStrategy(SMALL, taker_fee=FEE)
    d = decide(s, [1.0, 2.0, 3.0, 4.0])  # the slow EMA has one value: no slope yet
    assert d.target.qty == 0 and d.seen["reason"] == "trend: warm-up, 4 of 5 bars"
    assert s.warmup == 5
    walk = 10_000 + np.cumsum(np.random.default_rng(3).normal(0, 5, 1424))
    full = TrendStrategy(TrendConfig(), taker_fee=FEE)
    assert decide(full, walk[:1423]).seen["reason"] == "trend: warm-up, 1423 of 1424 bars"
    assert decide(full, walk).target.qty != 0  # bar 1,424: the first slope


def test_incremental_equals_talib_from_scratch():
    closes = 10_000 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 1e-3, 3_200)))
    bars = minute_bars(closes)
    fast = talib.EMA(closes, 1054)
    slow = talib.EMA(fast, 370)
    one_by_one = TrendStrategy(TrendConfig(), taker_fee=FEE)
    from_bulk = TrendStrategy(TrendConfig(), taker_fee=FEE)  # starts from 2,000 bars at once
    for i in range(len(bars)):
        one_by_one.decide(bars[: i + 1], NO_FUNDING, ACCOUNT, 0.0)
        if i >= 1999:
            from_bulk.decide(bars[: i + 1], NO_FUNDING, ACCOUNT, 0.0)
        for s in (one_by_one, from_bulk) if i >= 1999 else (one_by_one,):
            if i >= 1053:
                assert abs(s.ema_fast - fast[i]) <= 1e-9 * fast[i]
            if i >= 1423:
                assert abs(s.ema_slow - slow[i]) <= 1e-9 * slow[i]
                assert np.sign(s.slope) == np.sign(slow[i] - slow[i - 1])
    assert np.isnan(slow[1421]) and not np.isnan(slow[1422])  # talib's seeding, as documented


def test_no_look_ahead():
    closes = 10_000 * np.exp(np.cumsum(np.random.default_rng(8).normal(0, 1e-3, 260)))
    assert_no_look_ahead(lambda: TrendStrategy(TrendConfig(fast_period=40, slow_period=20), taker_fee=FEE),
                         minute_bars(closes), t=200, first=30)


def test_a_sliding_view_continues_the_same_emas():
    closes = 100 + np.cumsum(np.random.default_rng(2).normal(0, 1, 400))
    bars = minute_bars(closes)
    cfg = TrendConfig(fast_period=30, slow_period=10)
    growing, sliding = TrendStrategy(cfg, taker_fee=FEE), TrendStrategy(cfg, taker_fee=FEE)
    a = decisions(growing, bars, 100)
    b = [sliding.decide(bars[max(0, i - 100): i + 1], NO_FUNDING, ACCOUNT, 0.0) for i in range(100, 400)]
    assert [x.target for x in a] == [x.target for x in b]
    assert sliding.ema_slow == growing.ema_slow  # the dropped bars are not forgotten
