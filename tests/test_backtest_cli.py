"""`sniper backtest`: the default run on the bundled data, a short run's files, and every bad
argument (unknown dates, empty range, missing history, bad options) as one line and exit 2."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from test_backtest_engine import ROOT

from sniper.cli import main

SIM_YAML = str(ROOT / "configs" / "sim.yaml")


def fails(capsys, *argv) -> str:
    """The one stderr line of a refused command line (exit status 2)."""
    with pytest.raises(SystemExit) as e:
        main(["backtest", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def trend_yaml(tmp_path):
    raw = yaml.safe_load(open(SIM_YAML))
    raw["strategy"].update(name="trend", lookback_minutes=1440)
    raw["strategy"]["trend"].update(fast_period=30, slow_period=10)
    path = tmp_path / "trend.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_the_default_run_backtests_the_simulators_replay_in_seconds(tmp_path, capsys):
    t0 = time.monotonic()
    assert main(["backtest", "--config", SIM_YAML, "--out", str(tmp_path / "out")]) == 0
    took = time.monotonic() - t0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    # the bundled data's replay: its last three days, the 91 before them history
    assert (stats["start"], stats["end"]) == ("2018-11-19T00:00:00.000Z", "2018-11-22T00:00:00.000Z")
    assert stats["strategy"] == "motif" and stats["bars"] == 3 * 1440
    assert {"report.html", "trades.csv", "equity.csv", "forecasts.csv", "funding.csv"} <= {
        p.name for p in (tmp_path / "out").iterdir()}
    assert "sniper backtest motif (bars fills)" in capsys.readouterr().out
    assert took < 120, f"{took:.0f} s"


def test_a_dated_run_on_csv_history_writes_its_files(tmp_path, trend_yaml):
    bars, funding = ROOT / "sniper" / "data", ROOT / "sniper" / "data"
    out = tmp_path / "out"
    assert main(["backtest", "--config", trend_yaml, "--bars", str(next(bars.glob("xbtusd_1m_*.csv.gz"))),
                 "--funding", str(next(funding.glob("xbtusd_funding_*.csv.gz"))), "--from", "2018-11-20T00:00",
                 "--to", "2018-11-20T02:00", "--fill", "book", "--no-report", "--out", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["start"], stats["end"], stats["fill_model"]) == ("2018-11-20T00:00:00.000Z",
                                                                   "2018-11-20T02:00:00.000Z", "book")
    assert not (out / "report.html").exists() and (out / "fills.csv").exists()


@pytest.mark.parametrize("argv, words", [
    (["--from", "2016-01-01"], ["--from:", "outside the bars", "2018-08-20 00:00 to 2018-11-22 00:00"]),
    (["--to", "2019-06-01"], ["--to:", "outside the bars"]),
    (["--from", "2018-11-20", "--to", "2018-11-19"], ["--from/--to:", "empty range"]),
    (["--from", "2018-11-21T12:00", "--to", "2018-11-21T12:00"], ["--from/--to:", "empty range"]),
    (["--from", "2018-08-20T01:00"], ["--from:", "needs 1,424 bars of history"]),
    (["--from", "soon"], ["--from:", "not a time"]),
    (["--walk-forward", "30"], ["--walk-forward:", "TRAIN:TEST"]),
    (["--walk-forward", "90:5"], ["--to:", "empty range", "first test window"]),
    (["--slippage", "2"], ["--slippage:", "fraction"]),
    (["--fill", "ticks"], ["--fill:", "invalid choice"]),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys, tmp_path, argv, words):
    err = fails(capsys, "--config", SIM_YAML, "--out", str(tmp_path / "out"), *argv)
    for word in words:
        assert word in err, err


def test_missing_history_or_config_is_one_line_and_exit_2(capsys, tmp_path, trend_yaml):
    out = ["--out", str(tmp_path / "out")]
    assert "no such file" in fails(capsys, "--config", trend_yaml, "--bars", "no/bars.csv", "--funding", "x.csv", *out)
    assert "--funding: needed with --bars" in fails(capsys, "--config", trend_yaml, "--bars", "no/bars.csv", *out)
    assert "--db: no history store at no/such.sqlite" in fails(capsys, "--config", trend_yaml, "--db",
                                                               "no/such.sqlite", *out)
    empty = tmp_path / "empty.csv"
    empty.write_text("time,funding_rate\n")
    bars = next((ROOT / "sniper" / "data").glob("xbtusd_1m_*.csv.gz"))
    assert "--funding: no funding history" in fails(capsys, "--config", trend_yaml, "--bars", str(bars), "--funding",
                                                    str(empty), *out)
    assert "--config: required" in fails(capsys, *out)
    assert "config file not found" in fails(capsys, "--config", "no/such.yaml", *out)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"exchange": {"base_url": "sim"}, "sim": {"data": "no/minutes.csv"}}))
    assert "sim.data: no/minutes.csv: no such file" in fails(capsys, "--config", str(bad), *out)
    (tmp_path / "file").write_text("")
    assert "--out:" in fails(capsys, "--config", trend_yaml, "--out", str(tmp_path / "file"))
