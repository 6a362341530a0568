"""The TA-Lib feature suite: stable columns, no look-ahead (by truncation), random windows
and the `sniper features` command."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sniper import features
from sniper.model import BAR_DTYPE

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SNIPER_SHARED_DATA", ROOT.parent / "shared" / "data"))
T0 = 1546300800


def random_walk(n: int, seed: int = 3, start: int = T0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    close = 4000 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])  # BitMEX: open = previous close
    spread = np.abs(rng.normal(0, 0.001, (2, n))) * close
    bars = np.zeros(n, dtype=BAR_DTYPE)
    bars["time"] = start + 60 * np.arange(n)
    bars["open"], bars["close"] = open_, close
    bars["high"] = np.maximum(open_, close) + spread[0]
    bars["low"] = np.minimum(open_, close) - spread[1]
    bars["volume"] = rng.integers(0, 50_000, n)  # zero-volume minutes happen in the real data
    return bars


def test_columns_are_stable_and_cover_every_family():
    cols = features.COLUMNS
    assert len(cols) == 71 and features.INDICATORS == 60 and len(set(cols)) == len(cols)
    assert {c.split("_")[0] for c in cols} == set(features.FAMILIES)
    for name in ("trend_sma_200", "trend_ema_20", "trend_mama_fama", "trend_aroon_14_up", "momentum_rsi_14",
                 "momentum_macd_12_26_9_hist", "momentum_stoch_5_3_3_k", "volatility_atr_14",
                 "volatility_bbands_20_2_lower", "volume_obv", "volume_mfi_14", "cycle_ht_sine_leadsine",
                 "cycle_ht_trendmode"):
        assert name in cols, name
    df = features.compute(random_walk(300))
    assert tuple(df.columns) == cols and df.index.name == "time" and df.index[0] == T0


def test_no_look_ahead_by_truncation():
    bars = random_walk(700)
    full = features.compute(bars)
    assert np.isfinite(full.iloc[-1].to_numpy()).all()  # every indicator has a value by the end
    for cut in (1, 33, 64, 199, 250, 421, 699):
        part = features.compute(bars[:cut])
        pd.testing.assert_frame_equal(part, full.iloc[:cut], check_exact=True, obj=f"features over bars[:{cut}]")


def test_a_changed_future_bar_leaves_earlier_rows_alone():
    bars = random_walk(500)
    full = features.compute(bars)
    shocked = bars.copy()
    for name in ("close", "high"):
        shocked[name][400:] *= 1.2
    changed = features.compute(shocked)
    pd.testing.assert_frame_equal(changed.iloc[:400], full.iloc[:400], check_exact=True)
    assert not np.allclose(changed["trend_sma_10"].iloc[400:], full["trend_sma_10"].iloc[400:])


def test_short_and_empty_windows():
    assert features.compute(random_walk(5))["trend_sma_200"].isna().all()
    empty = features.compute(np.zeros(0, dtype=BAR_DTYPE))
    assert empty.empty and tuple(empty.columns) == features.COLUMNS


def test_sampled_windows_are_consecutive_minutes_and_never_span_a_gap():
    bars = np.concatenate([random_walk(400), random_walk(300, seed=4, start=T0 + 60 * 500)])  # 100-minute gap
    table = features.sample(bars, 6, 250, np.random.default_rng(1))
    assert len(table) == 6 * 250 and list(table.columns[:7]) == ["sample", "time", "open", "high", "low",
                                                                  "close", "volume"]
    for _, window in table.groupby("sample"):
        assert (np.diff(window["time"]) == 60).all()
    assert table.groupby("sample")["time"].first().is_unique
    with pytest.raises(ValueError, match="windows of 350 consecutive minutes"):
        features.sample(bars, 100, 350, np.random.default_rng(1))


@pytest.mark.skipif(not (SHARED / "xbtusd_1m.csv.gz").exists(), reason=f"no real bars in {SHARED}")
def test_real_minutes_give_finite_features_past_the_lookback():
    import gzip

    with gzip.open(SHARED / "xbtusd_1m.csv.gz", "rt") as f:
        df = pd.read_csv(f, nrows=3000)  # thin early 2017: many zero-volume minutes
    bars = np.zeros(len(df), dtype=BAR_DTYPE)
    for name in BAR_DTYPE.names:
        bars[name] = df[name]
    assert (bars["volume"] == 0).any()
    values = features.compute(bars).iloc[400:].to_numpy()
    assert np.isfinite(values).all()


# ----------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def bars_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("bars") / "bars.csv.gz"
    pd.DataFrame(random_walk(1200)).to_csv(path, index=False)
    return path


def sniper(*args):
    return subprocess.run([sys.executable, "-m", "sniper", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.mark.parametrize("name, read", [("f.parquet", pd.read_parquet), ("f.csv", pd.read_csv),
                                        ("f.csv.gz", pd.read_csv)])
def test_cli_stores_the_windows(bars_csv, tmp_path, name, read):
    result = sniper("features", "--sample", 3, "--window", 300, "--out", tmp_path / name, "--bars", bars_csv)
    assert result.returncode == 0, result.stderr
    table = read(tmp_path / name)
    assert len(table) == 900 and table.columns[-len(features.COLUMNS):].tolist() == list(features.COLUMNS)
    assert sorted(table["sample"].unique()) == [0, 1, 2]


@pytest.mark.parametrize("args, option", [
    (("--sample", "0"), "--sample"),
    (("--window", "ten"), "--window"),
    (("--window", "5000"), "--sample/--window"),  # longer than the history
    (("--out", "OUT/f.txt"), "--out"),
    (("--out", "OUT/no/such/dir/f.csv"), "--out"),
    (("--bars", "OUT/none.csv"), "--bars"),
])
def test_cli_bad_arguments_one_line_exit_2(bars_csv, tmp_path, args, option):
    base = {"--sample": "2", "--window": "100", "--out": "OUT/f.csv", "--bars": str(bars_csv)}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = [part.replace("OUT", str(tmp_path)) for kv in base.items() for part in kv]
    result = sniper("features", *argv)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and option in result.stderr and "Traceback" not in result.stderr


def test_cli_missing_store_one_line_exit_2(tmp_path):
    result = sniper("features", "--sample", 1, "--window", 10, "--out", tmp_path / "f.csv",
                    "--db", tmp_path / "none.sqlite")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--db" in result.stderr
