"""The funding study on a hand-made history whose every number is worked out here, its
suggested block (which must load as a config), and the CLI's one-line errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sniper import config
from sniper.backtest import study
from sniper.config import FundingBand
from sniper.model import BAR_DTYPE

ROOT = Path(__file__).resolve().parents[1]
DAY = 1546300800  # 2019-01-01 00:00 UTC
T_A, T_B, T_C, T_D, T_E = DAY + 4 * 3600, DAY + 12 * 3600, DAY + 20 * 3600, DAY + 28 * 3600, DAY + 36 * 3600
FEE = 0.0005
PARAMS = study.StudyParams(floors=(0.0, 0.001), minutes=2, exit_after=1, reverse_minutes=2, stop=0.01, fee=FEE)

# (minutes from settlement, open, high, low, close); close = the next bar's open, as BitMEX's buckets
BARS = {
    T_A: [(-3, 10000, 10010, 9990, 10000), (-2, 10000, 10020, 9995, 10010), (-1, 10010, 10015, 9990, 9990),
          (0, 9990, 10000, 9900, 9950), (1, 9950, 9960, 9940, 9960), (2, 9960, 9990, 9950, 9980),
          (3, 9980, 9985, 9975, 9980)],
    # the T-2 short is stopped before settlement (high 8090 >= 8080), the T-1 short after it (8140 >= 8130.5),
    # the reversal long at 8019 (low 8000)
    T_B: [(-3, 8000, 8005, 7995, 8000), (-2, 8000, 8090, 7990, 8050), (-1, 8050, 8060, 8040, 8040),
          (0, 8040, 8140, 8030, 8100), (1, 8100, 8110, 8000, 8010), (2, 8010, 8020, 8000, 8015),
          (3, 8015, 8020, 8010, 8015)],
    T_C: [(-3, 5000, 5000, 5000, 5000), (-2, 5000, 5005, 5000, 5005), (-1, 5005, 5010, 5005, 5010),
          (0, 5010, 5010, 5000, 5000), (1, 5000, 5002, 5000, 5002), (2, 5002, 5004, 5002, 5004),
          (3, 5004, 5004, 5004, 5004)],
    T_D: [(k, 5004, 5004, 5004, 5004) for k in range(-3, 4)],
    T_E: [(k, 5004, 5004, 5004, 5004) for k in range(-3, 1)],  # history ends at settlement: not studied
}
FUNDING = [(DAY - 8 * 3600, 0.01),  # before the bars: not counted at all
           (T_A, 0.002), (T_B, 0.0015), (T_C, -0.001), (T_D, 0.0), (T_E, 0.003)]


def make_bars() -> np.ndarray:
    rows = [(t + 60 * k, o, h, lo, c, 10) for t, bars in BARS.items() for k, o, h, lo, c in bars]
    return np.array(rows, dtype=BAR_DTYPE)


def funding_arrays():
    return np.array([t for t, _ in FUNDING]), np.array([r for _, r in FUNDING])


def net(side, entry, exit_price, funding=0.0):
    """The formula of the module docstring, written out: price move + funding - two fees."""
    return side * (1 - entry / exit_price) + funding - FEE * (1 + entry / exit_price)


# settlement A (+0.2 %, band 0.001, short receives): held to the open of T+1 (9950), P_T = 9990
A1 = net(-1, 10010, 9950, 0.002 * 10010 / 9990)
A2 = net(-1, 10000, 9950, 0.002 * 10000 / 9990)
A_REV = net(+1, 9950, 9980)  # long from T+1 to T+3
# settlement B (+0.15 %, band 0.001): stopped 1 % above the entry
B1 = net(-1, 8050, 8130.5, 0.0015 * 8050 / 8040)  # stopped in the bar starting at T: funding was earned
B2 = net(-1, 8000, 8080)  # stopped at T-2: no funding
B_REV = net(+1, 8100, 8019)  # the reversal long stopped 1 % below 8100
# settlement C (-0.1 % exactly: band 0, since a band holds rates strictly above its floor; long receives)
C1 = net(+1, 5005, 5000, 0.001 * 5005 / 5010)
C2 = net(+1, 5000, 5000, 0.001 * 5000 / 5010)
C_REV = net(-1, 5000, 5004)


def test_hand_computed_trades():
    trades = study.simulate(make_bars(), *funding_arrays(), PARAMS)
    assert trades.skipped == 1  # E: its bars stop at settlement; D has no rate, the first is outside
    got = trades.into.set_index(["time", "minute"])
    for (t, m), want, stopped in (((T_A, 1), A1, False), ((T_A, 2), A2, False), ((T_B, 1), B1, True),
                                  ((T_B, 2), B2, True), ((T_C, 1), C1, False), ((T_C, 2), C2, False)):
        assert got.loc[(t, m), "ret"] == pytest.approx(want, abs=1e-12), (t, m)
        assert bool(got.loc[(t, m), "stopped"]) is stopped
    assert got.loc[(T_C, 1), "band"] == 0.0 and got.loc[(T_A, 1), "band"] == 0.001
    rev = trades.reversal.set_index("time")
    assert rev["ret"].to_dict() == pytest.approx({T_A: A_REV, T_B: B_REV, T_C: C_REV}, abs=1e-12)
    assert rev["stopped"].to_dict() == {T_A: False, T_B: True, T_C: False}


def test_table_by_band_and_minute():
    trades = study.simulate(make_bars(), *funding_arrays(), PARAMS)
    table = study.summarize(trades.into, ["sign", "band", "minute"], PARAMS.floors)
    assert list(table.columns) == ["sign", "above", "up_to", "minute", *study.STAT_COLUMNS]
    rows = {(r.sign, r.above, r.minute): r for r in table.itertuples()}
    assert set(rows) == {("positive", 0.001, 1), ("positive", 0.001, 2), ("negative", 0.0, 1), ("negative", 0.0, 2)}
    for minute, pair in ((1, (A1, B1)), (2, (A2, B2))):
        r = rows[("positive", 0.001, minute)]
        assert (r.count, r.up_to) == (2, np.inf)
        assert r.mean == pytest.approx(sum(pair) / 2) and r.median == pytest.approx(sum(pair) / 2)
        assert r.std == pytest.approx(abs(pair[0] - pair[1]) / np.sqrt(2))
        assert r.t == pytest.approx(r.mean / r.std * np.sqrt(2))
        assert r.win_rate == 0.5  # A won, B lost
    c2 = rows[("negative", 0.0, 2)]
    assert (c2.count, c2.up_to, c2.win_rate) == (1, 0.001, 0.0) and c2.mean == pytest.approx(C2)
    assert C2 < 0  # the funding (0.1 % * 5000/5010) falls just short of the two fees
    reversal = study.summarize(trades.reversal, ["sign", "band"], PARAMS.floors)
    assert reversal.set_index("sign")["win_rate"].to_dict() == {"positive": 0.5, "negative": 0.0}


def _row(sign, above, minute, mean, t, count=50):
    return {"sign": sign, "above": above, "minute": minute, "count": count, "mean": mean, "median": mean,
            "std": 0.01, "t": t, "win_rate": 0.6}


def test_suggestion_keeps_bands_that_hold_up_in_the_configs_format(tmp_path):
    table = pd.DataFrame([
        _row("positive", 0.003, 1, 0.0030, 1.5), _row("positive", 0.003, 2, 0.0020, 3.0),  # minute 2: t >= 2
        _row("positive", 0.002, 1, -0.001, -1.0),  # fails, but sits above a band that holds: kept, flagged
        _row("positive", 0.001, 4, 0.0015, 2.5),
        _row("positive", 0.0, 1, -0.001, -9.0),  # fails at the bottom: dropped (not traded)
        _row("negative", 0.003, 3, 0.0050, 4.0, count=5),  # too few: left to the band below
        _row("negative", 0.002, 7, 0.0010, 2.2),
    ])
    reversal = pd.DataFrame([
        {"sign": "positive", "above": 0.003, "count": 50, "mean": 0.002, "t": 2.5, "win_rate": 0.6},
        {"sign": "positive", "above": 0.001, "count": 50, "mean": 0.002, "t": 0.5, "win_rate": 0.5},
        {"sign": "negative", "above": 0.002, "count": 50, "mean": -0.001, "t": -3.0, "win_rate": 0.3},
    ])
    rows = study.suggest(table, reversal, min_count=20, min_t=2.0)
    assert [(s.sign, s.above, s.enter_minutes, s.reverse, s.holds) for s in rows] == [
        ("positive", 0.003, 2, True, True), ("positive", 0.002, 1, False, False),
        ("positive", 0.001, 4, False, True), ("negative", 0.002, 7, False, True)]
    params = study.StudyParams(exit_after=0, reverse_minutes=12)
    block = study.render_block(rows, params, "made by hand\nfor the test")
    assert "DOES NOT HOLD UP" in block.splitlines()[8]
    path = tmp_path / "cfg.yaml"
    path.write_text("exchange:\n  base_url: sim\n" + block)
    funding = config.load(path).strategy.funding
    assert funding.positive == (FundingBand(0.003, 2, True), FundingBand(0.002, 1, False), FundingBand(0.001, 4, False))
    assert funding.negative == (FundingBand(0.002, 7, False),)
    assert (funding.exit_after_minutes, funding.reverse_minutes) == (0, 12)


# ----------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def history(tmp_path_factory):
    d = tmp_path_factory.mktemp("history")
    pd.DataFrame(make_bars()).to_csv(d / "bars.csv.gz", index=False)
    pd.DataFrame(FUNDING, columns=["time", "funding_rate"]).to_csv(d / "funding.csv", index=False)
    return d


def sniper(*args):
    return subprocess.run([sys.executable, "-m", "sniper", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_cli_writes_table_heatmap_and_block(history, tmp_path):
    out = tmp_path / "study"
    result = sniper("study", "funding", "--bars", history / "bars.csv.gz", "--funding", history / "funding.csv",
                    "--out", out, "--bands", "0.001", "--minutes", 2, "--exit-after", 1, "--reverse-minutes", 2,
                    "--fee", FEE, "--min-count", 1, "--from", "2019-01-01", "--to", "2019-01-01")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "funding_table.csv")
    assert len(table) == 4  # the --to day ends before D
    positive = table[(table["sign"] == "positive") & (table["minute"] == 1)].iloc[0]
    assert positive["mean"] == pytest.approx((A1 + B1) / 2)
    assert (out / "funding_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    block = (out / "funding_table.yaml").read_text()
    assert block == result.stdout and yaml.safe_load(block)["strategy"]["funding"]["positive"] == []
    assert len(pd.read_csv(out / "funding_reversal.csv")) == 2


def test_cli_reads_the_store_like_the_csvs(tmp_path):
    from sniper import history

    with history.Store(tmp_path / "h.sqlite") as store:
        store.append_bars(make_bars())
        store.append_funding(*funding_arrays())
    common = ("--bands", "0.001", "--minutes", 2, "--reverse-minutes", 2, "--fee", FEE, "--min-count", 1)
    result = sniper("study", "funding", "--db", tmp_path / "h.sqlite", "--out", tmp_path / "o", *common)
    assert result.returncode == 0, result.stderr
    positive = pd.read_csv(tmp_path / "o" / "funding_table.csv").query("sign == 'positive' and minute == 2")
    assert positive["mean"].iloc[0] == pytest.approx((A2 + B2) / 2)


@pytest.mark.parametrize("args, option", [
    (("--from", "yesterday"), "--from"),
    (("--to", "2019-13-01"), "--to"),
    (("--from", "2019-01-02", "--to", "2019-01-01"), "--from/--to"),  # empty range
    (("--from", "2030-01-01"), "--from/--to"),  # no settlement there
    (("--fee", "cheap"), "--fee"),
    (("--stop", "2"), "--stop"),
    (("--bands", "0.2"), "--bands"),
    (("--minutes", "0"), "--minutes"),
])
def test_cli_bad_arguments_one_line_exit_2(history, tmp_path, args, option):
    result = sniper("study", "funding", "--bars", history / "bars.csv.gz", "--funding", history / "funding.csv",
                    "--out", tmp_path / "o", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and option in result.stderr and "Traceback" not in result.stderr


def test_cli_missing_history_one_line_exit_2(history, tmp_path):
    for args, option in ((("--bars", tmp_path / "none.csv", "--funding", history / "funding.csv"), "--bars"),
                         (("--bars", history / "bars.csv.gz", "--funding", tmp_path / "none.csv"), "--funding"),
                         (("--bars", history / "bars.csv.gz"), "--funding"),
                         (("--db", tmp_path / "none.sqlite"), "--db")):
        result = sniper("study", "funding", "--out", tmp_path / "o", *args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and option in result.stderr and "Traceback" not in result.stderr
