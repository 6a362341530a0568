"""The regime switch: a planted pattern hands control to the short-term logic in its
direction, noise leaves trend in control, hand-overs are one Target change, no look-ahead,
incremental equals fresh, and the wavelet smoothing is causal."""

import dataclasses

import numpy as np
import pytest
import pywt
from test_strategies_base import ACCOUNT, FEE, NO_FUNDING, T0, assert_no_look_ahead, decisions, minute_bars

from sniper.config import FundingConfig, MotifConfig, TrendConfig
from sniper.motif import MotifIndex
from sniper.strategies import Funding, FundingStrategy, MotifStrategy, TrendStrategy
from sniper.strategies.motif import causal_taps, claim, ema_weights

L, H = 62, 18
SHAPE = 0.01 * np.sin(np.linspace(0, 4 * np.pi, L)) * np.linspace(1, 2, L)  # relative to the bar before
MOVE = 0.02  # what followed every planted copy, over H bars
PLANTS = range(600, 5400, 600)


def planted(direction: int, n: int = 6_000, drift: float = 0.0, seed: int = 1) -> np.ndarray:
    """A random walk (0.02 % a minute) holding the pattern at every PLANTS start, each followed
    by a steady move of direction x 2 % over H bars, and ending with the pattern once more."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(drift, 2e-4, n)
    closes = np.empty(n)
    closes[0] = 10_000.0
    i = 1
    while i < n:
        if i in PLANTS or i == n - L:
            closes[i: i + L] = closes[i - 1] * (1 + SHAPE)
            i += L
            if i < n:
                closes[i: i + H] = closes[i - 1] * (1 + direction * MOVE * np.arange(1, H + 1) / H)
                i += H
        else:
            closes[i] = closes[i - 1] * np.exp(steps[i])
            i += 1
    return closes


QUICK_TREND = TrendConfig(fast_period=50, slow_period=20)


def switch(motif=None):
    """The switch over a quick trend and the default funding table."""
    return MotifStrategy(motif or MotifConfig(), trend=TrendStrategy(QUICK_TREND, taker_fee=FEE),
                         funding=FundingStrategy(FundingConfig(), taker_fee=FEE), taker_fee=FEE)


SHARP = MotifConfig(forecast_ema=1)  # the planted forecast is seen at once, not after 38 bars


def last_decision(strategy, closes, funding=NO_FUNDING, account=ACCOUNT):
    bars = minute_bars(closes)
    return strategy.decide(bars, funding, account, float(bars["time"][-1]) + 60)


@pytest.mark.parametrize("metric", ["dtw", "ed"])
@pytest.mark.parametrize("direction", [1, -1])
def test_planted_pattern_hands_control_to_the_short_term_logic(direction, metric):
    d = last_decision(switch(dataclasses.replace(SHARP, metric=metric)), planted(direction))
    assert d.seen["logic"] == "motif"
    # the four nearest are planted copies, each followed by exactly +-2 %: all agree
    copies = {T0 + 60 * p for p in PLANTS}
    assert len(d.seen["neighbours"]) == 4 and {n["start"] for n in d.seen["neighbours"]} <= copies
    assert d.seen["forecast"] == pytest.approx(direction * MOVE, rel=1e-9)
    assert d.seen["agreement"] == 1.0
    # 1 XBT x 10,000 x 3 x (1 - 3 x 0.075 %), in the forecast's direction, passive
    assert d.target.qty == direction * 29_932 and d.target.style == "passive"
    assert d.seen["reason"].startswith(f"motif: forecast {direction * MOVE:+.3%} over 18 min")


def test_neighbours_futures_lie_before_now():
    # the latest admissible start ends its window H bars before now: s + L - 1 + H <= now
    bars = minute_bars(planted(1, n=1_500))
    latest = []
    for i, d in enumerate(decisions(switch(SHARP), bars, 1_300), start=1_300):
        assert len(d.seen["neighbours"]) == 4
        for n in d.seen["neighbours"]:
            assert n["start"] + 60 * (L - 1 + H) <= bars["time"][i] and n["distance"] >= 0
        latest.append(max(n["start"] for n in d.seen["neighbours"]) - int(bars["time"][i]))
    assert max(latest) == -60 * (L - 1 + H)  # and such recent neighbours do come up


def test_noise_leaves_trend_in_control():
    closes = 10_000 * np.exp(np.cumsum(np.random.default_rng(6).normal(0, 2e-4, 4_000)))
    bars = minute_bars(closes)
    out = decisions(switch(), bars, 3_700)
    assert {d.seen["logic"] for d in out} == {"trend"}
    assert all(abs(d.seen["forecast"]) < 0.002 for d in out)
    alone = decisions(TrendStrategy(QUICK_TREND, taker_fee=FEE), bars, 3_700)
    assert [d.target for d in out] == [d.target for d in alone]
    assert {d.target.qty > 0 for d in out} == {True, False}  # the trend itself went both ways
    assert {"logic", "forecast", "neighbours", "agreement", "reason"} <= set(out[-1].seen)


def test_trend_to_motif_is_one_target_change():
    # a rising market: trend is long; the planted pattern then calls for a 2 % fall
    bars = minute_bars(planted(-1, drift=1e-4))
    out = decisions(switch(SHARP), bars, len(bars) - L)
    logics = [d.seen["logic"] for d in out]
    hand = logics.index("motif")
    assert hand > 0 and logics[:hand] == ["trend"] * hand and logics[-1] == "motif"
    # straight from the trend's long to the motif's short
    assert out[hand - 1].target.qty > 0 and out[hand].target.qty == -29_932


def test_funding_window_overrides_and_hands_back_in_one_change():
    # noise, trend long; a +0.25 % settlement: short 4 minutes before, long 15 after, then trend
    closes = 10_000 * np.exp(np.cumsum(np.random.default_rng(7).normal(5e-5, 1e-5, 600)))
    bars = minute_bars(closes)
    T = T0 + 60 * 580  # a bar boundary near the end (any time works: the schedule is given)

    def schedule(now):
        return (Funding(next_time=T, rate=0.0025, past_times=(T - 28_800,), past_rates=(0.0001,)) if now < T
                else Funding(next_time=T + 28_800, rate=0.0001, past_times=(T,), past_rates=(0.0025,)))

    out = decisions(switch(), bars, 560, funding_at=schedule)
    logics = [d.seen["logic"] for d in out]
    first, back = logics.index("funding"), len(logics) - logics[::-1].index("funding")
    assert logics[:first] == ["trend"] * first and logics[back:] == ["trend"] * (len(logics) - back)
    assert float(bars["time"][560 + first]) + 60 == T - 240  # entered at the table's minute
    qty = [d.target.qty for d in out]
    assert 0 not in qty  # never flat in between: every hand-over is one change
    assert qty[first - 1] > 0 and qty[first] == -29_932 and qty[back - 1] == 29_932 and qty[back] > 0
    assert out[first].seen["funding"]["leg"] == "receive" and "trend" in out[first].seen


def test_claim_rule():
    thr, agree = 0.002, 0.75
    strong, weak_agreement, faded = (0.003, 1.0), (0.003, 0.5), (0.001, 1.0)
    assert claim([strong, faded], thr, agree) == 0
    assert claim([weak_agreement, weak_agreement, strong, faded], thr, agree) == 2  # held since
    assert claim([weak_agreement, faded, strong], thr, agree) is None  # faded in between
    assert claim([weak_agreement, (-0.003, 1.0)], thr, agree) is None  # flipped in between
    assert claim([(-0.003, 0.5), (-0.004, 1.0)], thr, agree) == 1  # short side alike
    assert claim([weak_agreement] * 18, thr, agree) is None  # strong more than H bars ago: not seen
    assert claim([faded, strong], thr, agree) is None  # below threshold now


def test_ema_weights_hand_computed():
    w = ema_weights(3)  # decay 1 - 2/4 = 0.5: 1, 0.5, 0.25, ... down to 2^-19 (> 1e-6 > 2^-20)
    assert len(w) == 20 and w[:3].tolist() == [1.0, 0.5, 0.25] and w[-1] == 2.0 ** -19
    assert ema_weights(1).tolist() == [1.0]
    assert len(ema_weights(38)) == 263  # ceil(ln 1e-6 / ln(37/39))


def test_smoothed_forecast_is_the_normalised_truncated_ema():
    s = switch(dataclasses.replace(SHARP, forecast_ema=3))
    s._recent.extend([(0.0, np.empty(0)), (0.0, np.empty(0)), (0.007, np.array([1.0, -1.0]))])
    # newest first: 0.007, 0, 0 with weights 1, 0.5, 0.25: 0.007 / 1.75
    f, agreement = s._smoothed(np.array([0.0, 0.0, 0.007]), 2)
    assert f == pytest.approx(0.004, rel=1e-12) and agreement == 0.5


@pytest.mark.parametrize("wavelet", [None, "db4"])
def test_incremental_equals_a_fresh_strategy(wavelet):
    cfg = dataclasses.replace(MotifConfig(), wavelet=wavelet)
    bars = minute_bars(planted(1, n=3_000))
    running = switch(cfg)
    for i, d in enumerate(decisions(running, bars, 2_900)):
        if i % 33 == 0 or i == 99:
            fresh = switch(cfg).decide(bars[: 2_901 + i], NO_FUNDING, ACCOUNT, float(bars["time"][2_900 + i]) + 60)
            assert d.target == fresh.target and d.seen["logic"] == fresh.seen["logic"]
            assert d.seen["forecast"] == pytest.approx(fresh.seen["forecast"], rel=1e-9, abs=1e-15)
            assert [n["start"] for n in d.seen["neighbours"]] == [n["start"] for n in fresh.seen["neighbours"]]


@pytest.mark.parametrize("wavelet", [None, "db4"])
def test_no_look_ahead(wavelet):
    cfg = dataclasses.replace(MotifConfig(), wavelet=wavelet)
    assert_no_look_ahead(lambda: switch(cfg), minute_bars(planted(1, n=2_000)), t=1_960, first=1_930)


def test_a_sliding_view_restarts_from_the_view_past_an_eighth():
    bars = minute_bars(planted(1, n=2_400))
    s = switch(SHARP)
    s.decide(bars[:1_600], NO_FUNDING, ACCOUNT, 0.0)
    s.decide(bars[200:1_800], NO_FUNDING, ACCOUNT, 0.0)  # 200 dropped of 1,600: an eighth, kept
    assert len(s._index) == 1_800
    s.decide(bars[201:1_801], NO_FUNDING, ACCOUNT, 0.0)  # 201 dropped: restart on the view
    assert len(s._index) == 1_600 and s._index.values[0] == bars["close"][201]


# ------------------------------------------------------------------------------ wavelet smoothing
def test_causal_taps_hand_computed():
    # haar, level 1, no detail kept: each pair becomes its mean; the last sample is (c + d) / 2
    assert causal_taps("haar", 1, 0, 4) == pytest.approx([0, 0, 0.5, 0.5], abs=1e-15)
    assert causal_taps("haar", 2, 0, 4) == pytest.approx([0.25] * 4, abs=1e-15)
    assert causal_taps("haar", 2, 1, 4) == pytest.approx([0, 0, 0.5, 0.5], abs=1e-15)
    assert causal_taps("db4", 3, 3, L) == pytest.approx(np.eye(L)[-1], abs=1e-12)  # all kept: identity


def test_causal_taps_equal_the_pywt_round_trip_of_each_window():
    window = 10_000 + np.cumsum(np.random.default_rng(3).normal(0, 5, L))
    coeffs = pywt.wavedec(window, "db4", level=3)
    coeffs[2:] = [np.zeros_like(c) for c in coeffs[2:]]  # keep 1: approximation + coarsest detail
    expected = pywt.waverec(coeffs, "db4")[L - 1]
    assert causal_taps("db4", 3, 1, L) @ window == pytest.approx(expected, rel=1e-12)


def test_wavelet_smoothing_never_sees_later_closes():
    cfg = dataclasses.replace(SHARP, wavelet="db4")
    closes = planted(1, n=1_000)
    changed = closes.copy()
    changed[700:] *= 1.05
    a, b = switch(cfg), switch(cfg)
    last_decision(a, closes), last_decision(b, changed)
    assert np.isnan(a._index.values[: L - 1]).all()
    assert np.array_equal(a._index.values[:700], b._index.values[:700], equal_nan=True)
    assert not np.array_equal(a._index.values[700:], b._index.values[700:])
    taps = causal_taps("db4", 3, 1, L)
    assert a._index.values[699] == pytest.approx(taps @ closes[700 - L: 700], rel=1e-12)


def test_too_deep_a_wavelet_level_names_the_key():
    with pytest.raises(ValueError, match="strategy.motif.wavelet_level: 4 is deeper"):
        switch(dataclasses.replace(MotifConfig(), wavelet="db4", wavelet_level=4))


# ------------------------------------------------------------------------------ searching ahead
def sliding_decisions(strategy, bars, first, last, lookback):
    """Decisions on bars[max(0, e - lookback): e] for e = first ... last - 1 (a backtest's views)."""
    out = []
    for e in range(first, last):
        now = float(bars["time"][e - 1]) + 60
        out.append(strategy.decide(bars[max(0, e - lookback): e], NO_FUNDING, ACCOUNT, now))
    return out


def neighbours(d):
    return [(n["start"], n["distance"]) for n in d.seen["neighbours"]]


@pytest.mark.parametrize("metric, wavelet", [("ed", None), ("dtw", None), ("ed", "db4")])
def test_presearch_gives_the_same_decisions_as_searching_each_bar(metric, wavelet, monkeypatch):
    """Across restarts of a sliding view (every 1,600 / 8 = 200 bars here): the same targets,
    forecasts and neighbours, distances to the last bit; and no search was left to do."""
    cfg = dataclasses.replace(SHARP, metric=metric, wavelet=wavelet)
    bars = minute_bars(planted(1, n=3_000))
    first, last, lookback = 1_700, 2_300, 1_600
    searched = sliding_decisions(switch(cfg), bars, first, last, lookback)
    ahead = switch(cfg)
    ahead.presearch(bars, first, last, lookback)
    assert len(ahead._ahead) == 3  # the first view's index, restarts at e = 1,901 and 2,102
    calls = []
    monkeypatch.setattr(ahead._index, "batch", lambda *a, **k: calls.append(a))  # an index made later
    monkeypatch.setattr(MotifIndex, "batch", lambda *a, **k: calls.append(a))  # keeps the class's
    for mine, theirs in zip(sliding_decisions(ahead, bars, first, last, lookback), searched, strict=True):
        assert mine.target == theirs.target and mine.seen["logic"] == theirs.seen["logic"]
        assert mine.seen["forecast"] == theirs.seen["forecast"] and neighbours(mine) == neighbours(theirs)
    assert calls == [] and any(d.seen["logic"] == "motif" for d in searched)


def test_presearched_neighbours_are_not_used_for_other_bars():
    """A view whose bars differ from those presearched (here: one close changed) is searched as
    usual, so it decides exactly as a strategy that never searched ahead."""
    bars = minute_bars(planted(1, n=2_600))
    other = bars.copy()
    other["close"][2_150] *= 1.001
    first, last, lookback = 2_100, 2_200, 2_000
    ahead = switch(SHARP)
    ahead.presearch(bars, first, last, lookback)
    mine = sliding_decisions(ahead, other, first, last, lookback)
    theirs = sliding_decisions(switch(SHARP), other, first, last, lookback)
    assert [neighbours(d) for d in mine] == [neighbours(d) for d in theirs]
    assert ahead._epoch is None  # dropped at the changed bar
