"""No look-ahead, proven: every bar after t (and every funding rate not yet announced at t) is
replaced with noise, and every decision up to t is unchanged, for each strategy, through the
whole engine (views, funding schedule, instrument, the motif strategy's search ahead, the fill
models). The decisions after t do change: the noise reaches the run, so the check can fail."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_backtest_engine import BUNDLED, T, cfg_with

from sniper.backtest.engine import run
from sniper.model import next_funding_time

FAST_TREND = {"fast_period": 30, "slow_period": 10}
STRATEGIES = {
    "flat": cfg_with("flat"),
    "trend": cfg_with("trend", trend=FAST_TREND),
    "funding": cfg_with("funding"),
    "motif-ed": cfg_with("motif", trend=FAST_TREND, motif={"metric": "ed", "threshold": 0.0005}),
    "motif-dtw": cfg_with("motif", trend=FAST_TREND, motif={"threshold": 0.0005}),
}
START, CUT, END = T - 6 * 3600, T + 2 * 3600, T + 16 * 3600 + 1800  # settlements at T (before the cut),
# T + 8 h (its rate announced before the cut) and T + 16 h (announced after it)


def noisy(cut: int, seed: int = 7):
    """The bundled bars and funding with everything after `cut` replaced: a random walk on the
    tick grid (valid bars), and random rates for the settlements announced after `cut`."""
    bars, (times, rates) = BUNDLED
    bars, rates = bars.copy(), rates.copy()
    rng = np.random.default_rng(seed)
    after = bars["time"] > cut
    n = int(after.sum())
    close = np.round((float(bars["close"][~after][-1]) + np.cumsum(rng.normal(0, 8, n))) * 2) / 2
    spread = np.round(rng.uniform(0, 6, (2, n)) * 2) / 2
    bars["open"][after], bars["close"][after] = np.concatenate([[bars["close"][~after][-1]], close[:-1]]), close
    bars["high"][after] = np.maximum(bars["open"][after], close) + spread[0]
    bars["low"][after] = np.minimum(bars["open"][after], close) - spread[1]
    unannounced = times > next_funding_time(cut)
    rates[unannounced] = rng.normal(0, 0.003, int(unannounced.sum()))
    return bars, (times, rates)


def decisions(cfg, data, fill="bars") -> pd.DataFrame:
    return run(cfg, *data, start=START, end=END, fill=fill).decisions


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_decisions_up_to_t_ignore_everything_after_t(name):
    cfg = STRATEGIES[name]
    clean, noise = decisions(cfg, BUNDLED), decisions(cfg, noisy(CUT))
    past = clean["time"] <= CUT
    assert past.sum() == (CUT - START) // 60 + 1
    pd.testing.assert_frame_equal(clean[past], noise[past])
    if name != "flat":  # flat decides nothing from the data; every other strategy trades before the
        # cut (the motif strategies with the short-term logic in control at times) and reacts to the noise
        assert (clean[past]["qty"] != 0).any()
        assert not name.startswith("motif") or (clean[past]["logic"] == "motif").any()
        assert not clean[~past].equals(noise[~past]), "the noise never reached the decisions"


def test_the_book_model_sees_no_future_either():
    cfg = STRATEGIES["trend"]
    cut, end = T - 3600, T
    clean = run(cfg, *BUNDLED, start=T - 3 * 3600, end=end, fill="book").decisions
    noise = run(cfg, *noisy(cut), start=T - 3 * 3600, end=end, fill="book").decisions
    past = clean["time"] <= cut
    pd.testing.assert_frame_equal(clean[past], noise[past])
    assert not clean[~past].equals(noise[~past])
