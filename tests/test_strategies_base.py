"""The strategy protocol's shared parts (new-bar detection, sizing, flat, the factory), the
strategy config's errors, and helpers the other test_strategies_* files import."""

import dataclasses

import numpy as np
import pytest

from sniper import config
from sniper.config import ConfigError, StrategyConfig
from sniper.model import BAR_DTYPE, Target
from sniper.strategies import (
    Account,
    Flat,
    Funding,
    FundingStrategy,
    MotifStrategy,
    OrFlat,
    TrendStrategy,
    build,
)
from sniper.strategies.base import BarCursor, contracts

T0 = 1_577_836_800  # 2020-01-01 00:00 UTC
FEE = 0.00075
ACCOUNT = Account(margin_balance_xbt=1.0, mark=10_000.0)
NO_FUNDING = Funding(next_time=T0 + 4 * 3600, rate=0.0001)


def minute_bars(closes, start: int = T0) -> np.ndarray:
    """Bars at consecutive minutes from `start` whose open, high, low and close are `closes`."""
    closes = np.asarray(closes, dtype=np.float64)
    bars = np.zeros(len(closes), dtype=BAR_DTYPE)
    bars["time"] = start + 60 * np.arange(len(closes))
    for name in ("open", "high", "low", "close"):
        bars[name] = closes
    bars["volume"] = 1
    return bars


def decisions(strategy, bars, first, *, funding_at=lambda now: NO_FUNDING, account=ACCOUNT):
    """What `strategy` decides when fed the views bars[:i+1], i = first .. len(bars)-1, each at
    the close of its last bar."""
    out = []
    for i in range(first, len(bars)):
        now = float(bars["time"][i]) + 60
        out.append(strategy.decide(bars[: i + 1], funding_at(now), account, now))
    return out


def assert_no_look_ahead(make, bars, t, first, **kw):
    """Decisions up to bar t do not change when every bar after t becomes noise; the later
    ones do (the noise is seen at all)."""
    noisy = bars.copy()
    rng = np.random.default_rng(99)
    for name in ("open", "high", "low", "close"):
        noisy[name][t + 1:] = bars["close"][t] * np.exp(rng.normal(0, 0.01, len(bars) - t - 1))
    clean, dirty = decisions(make(), bars, first, **kw), decisions(make(), noisy, first, **kw)
    upto = t + 1 - first
    assert repr(clean[:upto]) == repr(dirty[:upto])
    assert repr(clean[upto:]) != repr(dirty[upto:])


# ------------------------------------------------------------------------------ sizing
def test_contracts_hand_computed():
    # 0.5 XBT x 10,000 USD x 5 = 25,000 USD, less 5 x 0.075 % for the taker fee: 24,906.25
    assert contracts(0.5, 10_000.0, 5.0, FEE) == 24_906
    assert contracts(1.0, 10_000.0, 3.0, FEE) == 29_932  # 30,000 x 0.99775
    assert contracts(0.0, 10_000.0, 5.0, FEE) == 0
    assert contracts(1.0, 0.0, 5.0, FEE) == 0


# ------------------------------------------------------------------------------ new bars
def test_cursor_hands_out_only_new_rows():
    bars = minute_bars(np.arange(1.0, 201.0))
    cur = BarCursor()
    rows, restart = cur.advance(bars[:100])
    assert restart and len(rows) == 100
    rows, restart = cur.advance(bars[:103])
    assert not restart and list(rows["close"]) == [101.0, 102.0, 103.0]
    rows, restart = cur.advance(bars[:103])
    assert not restart and len(rows) == 0
    rows, restart = cur.advance(bars[10:105])  # a sliding view: old rows dropped, two new
    assert not restart and list(rows["close"]) == [104.0, 105.0]
    rows, restart = cur.advance(bars[:200])  # 95 new rows: past the backwards scan
    assert not restart and rows["close"][0] == 106.0 and len(rows) == 95


@pytest.mark.parametrize("view", ["changed", "gap", "rewound", "empty"])
def test_cursor_restarts_when_the_last_row_seen_is_gone_or_changed(view):
    bars = minute_bars(np.arange(1.0, 201.0))
    cur = BarCursor()
    cur.advance(bars[:100])
    if view == "changed":
        nxt = bars[:101].copy()
        nxt["close"][99] = 0.5
    else:
        nxt = {"gap": bars[150:], "rewound": bars[:50], "empty": bars[:0]}[view]
    rows, restart = cur.advance(nxt)
    assert restart and len(rows) == len(nxt)
    if view == "empty":
        assert cur.advance(bars[:10])[1]


def test_funding_last_settlement():
    f = Funding(next_time=3_000.0, rate=0.001, past_times=np.array([1_000.0, 2_000.0]), past_rates=(0.1, 0.2))
    assert f.last(999.0) is None and f.last(1_000.0) == (1_000.0, 0.1)
    assert f.last(2_999.0) == (2_000.0, 0.2) and Funding(None, None).last(5.0) is None


# ------------------------------------------------------------------------------ flat and the factory
def test_flat_holds_nothing():
    d = Flat().decide(minute_bars([1.0]), NO_FUNDING, ACCOUNT, T0 + 60.0)
    assert d.target == Target(0, "passive", "flat") and d.seen["logic"] == "flat"


def test_or_flat_is_flat_outside_the_component_window():
    s = OrFlat(FundingStrategy(config.FundingConfig(), taker_fee=FEE))
    T = T0 + 12 * 3600
    fund = Funding(next_time=T, rate=0.0025)
    out = s.decide(minute_bars([1.0]), fund, ACCOUNT, T - 3600.0)
    assert out.target.qty == 0 and out.seen["reason"].startswith("flat: funding: not in")
    inside = s.decide(minute_bars([1.0]), fund, ACCOUNT, T - 240.0)
    assert inside.target.qty == -29_932


def test_build_by_name():
    cfg = StrategyConfig()
    made = {n: build(dataclasses.replace(cfg, name=n), taker_fee=FEE, min_liquidation_distance=0.2)
            for n in ("flat", "trend", "funding", "motif")}
    assert isinstance(made["flat"], Flat) and isinstance(made["trend"], TrendStrategy)
    assert isinstance(made["funding"], OrFlat) and isinstance(made["funding"].inner, FundingStrategy)
    assert made["funding"].inner.min_liquidation_distance == 0.2
    motif = made["motif"]
    assert isinstance(motif, MotifStrategy) and motif.trend.taker_fee == FEE
    assert motif.funding.min_liquidation_distance == 0.2
    assert [made[n].warmup for n in ("flat", "trend", "funding", "motif")] == [0, 1424, 0, 1424]


# ------------------------------------------------------------------------------ config errors
@pytest.mark.parametrize("body, key, words", [
    ("strategy: {nme: trend}", "strategy.nme", "unknown key"),
    ("strategy: {name: momentum}", "strategy.name", "motif"),
    ("strategy: {trend: {fast_period: 1}}", "strategy.trend.fast_period", ">= 2"),
    ("strategy: {trend: {style: limit}}", "strategy.trend.style", "passive"),
    ("strategy: {funding: {positive: [{above: 0.001, enter_minutes: 0}]}}",
     "strategy.funding.positive[0].enter_minutes", ">= 1"),
    ("strategy: {funding: {negative: [{enter_minutes: 3}]}}", "strategy.funding.negative[0].above",
     "missing required key"),
    ("strategy: {funding: {stop_fraction: 0}}", "strategy.funding.stop_fraction", "> 0"),
    ("strategy: {motif: {windw: 60}}", "strategy.motif.windw", "unknown key"),
    ("strategy: {motif: {metric: cosine}}", "strategy.motif.metric", "dtw"),
    ("strategy: {motif: {forecast_ema: 500}}", "strategy.motif.forecast_ema", "<= 240"),
    ("strategy: {motif: {wavelet: db99}}", "strategy.motif.wavelet", "db4"),
    ("strategy: {motif: {agreement: 1.5}}", "strategy.motif.agreement", "<= 1"),
])
def test_bad_strategy_keys_name_the_key(tmp_path, body, key, words):
    path = tmp_path / "bad.yaml"
    path.write_text("exchange: {base_url: sim}\n" + body + "\n")
    with pytest.raises(ConfigError) as info:
        config.load(path, environ={})
    err = info.value
    assert err.key == key and words in err.problem
    assert "\n" not in str(err) and str(err).startswith(f"{path}: {key}: ")


def test_config_wavelets_exist_in_pywavelets():
    import pywt

    assert set(config.WAVELETS) <= set(pywt.wavelist(kind="discrete")) and "db4" in config.WAVELETS


def test_good_strategy_config_loads(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("exchange: {base_url: sim}\nstrategy:\n  name: trend\n"
                    "  motif: {wavelet: db4, forecast_ema: 1}\n"
                    "  funding: {positive: [{above: 0.001, enter_minutes: 7, reverse: true}]}\n")
    s = config.load(path, environ={}).strategy
    assert s.name == "trend" and s.motif.wavelet == "db4" and s.motif.forecast_ema == 1
    assert s.funding.positive == (config.FundingBand(0.001, 7, True),)
