"""`sniper train` end to end on the bundled minutes: a small search on the local pool and on
real Dask LocalClusters (the same best parameters for a seed), best.yaml as a config, resume,
Ctrl-C, random and grid; and the pieces that decide what is searched and how it is scored."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sniper import config, history
from sniper.backtest import UsageError, engine, space, train
from sniper.model import parse_time

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "sniper" / "data"
BARS = DATA / "xbtusd_1m_20180820_20181122.csv.gz"
FUNDING = DATA / "xbtusd_funding_20180819_20181122.csv.gz"
SPACE = ("strategy.trend.fast_period: {low: 60, high: 600}\n"
         "strategy.trend.slow_period: {low: 20, high: 300}\n"
         "strategy.trend.leverage: {values: [1.0, 3.0]}\n")
PERIODS = ("--from", "2018-09-01", "--to", "2018-09-02", "--oos-from", "2018-09-03", "--oos-to", "2018-09-03")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A trend config (sim.yaml with strategy.name: trend) and the space above."""
    where = tmp_path_factory.mktemp("inputs")
    text = (ROOT / "configs" / "sim.yaml").read_text()
    assert text.count("  name: motif  ") == 1
    (where / "trend.yaml").write_text(text.replace("  name: motif  ", "  name: trend  "))
    (where / "space.yaml").write_text(SPACE)
    return where


def argv(inputs, out, *extra):
    return ["train", "--config", str(inputs / "trend.yaml"), "--space", str(inputs / "space.yaml"),
            "--out", str(out), "--bars", str(BARS), "--funding", str(FUNDING), "--budget", "15", *PERIODS, *extra]


def sniper(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "sniper", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def rows(out):
    """search.csv's parameter sets and scores, in the order of the parameters (not of evaluation)."""
    return pd.read_csv(out / "search.csv").drop(columns="trial").sort_values(
        ["strategy.trend.fast_period", "strategy.trend.slow_period", "strategy.trend.leverage"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def local_run(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "run"
    result = sniper(*argv(inputs, out, "--workers", "2"))
    assert result.returncode == 0, result.stderr
    return out, result


def test_a_small_search_runs_end_to_end_with_a_progress_bar(local_run, inputs):
    out, result = local_run
    assert re.search(r"train de: +\d+%\|.*\| \d+/15 \[.*<.*backtest/s, best -?\d", result.stderr)
    assert "Traceback" not in result.stderr
    search = pd.read_csv(out / "search.csv")
    assert list(search.columns) == ["trial", "score", "strategy.trend.fast_period", "strategy.trend.slow_period",
                                    "strategy.trend.leverage"]
    assert 5 <= len(search) <= 15 and list(search["trial"]) == list(range(1, len(search) + 1))
    assert search["strategy.trend.fast_period"].between(60, 600).all()
    assert set(search["strategy.trend.leverage"]) <= {1.0, 3.0}
    stats = json.loads((out / "stats.json").read_text())
    best = search.loc[search["score"].idxmax()]
    assert stats["best"] == {k: best[k] for k in stats["best"]}
    # the in-sample backtest of the best parameters scores what the search recorded
    assert stats["in_sample"]["score"] == pytest.approx(best["score"], rel=1e-12)
    assert stats["in_sample"]["from"] == "2018-09-01 00:00" and stats["in_sample"]["to"] == "2018-09-03 00:00"
    assert stats["out_of_sample"]["from"] == "2018-09-03 00:00" and stats["out_of_sample"]["to"] == "2018-09-04 00:00"
    assert stats["out_of_sample"]["score"] is None or math.isfinite(stats["out_of_sample"]["score"])
    assert f"best sharpe: {best['score']:.4g} in sample" in result.stdout
    for name in ("search.png", "report.html", "oos/report.html", "oos/equity.csv", "in_sample/stats.json"):
        assert (out / name).is_file(), name
    oos = json.loads((out / "oos" / "stats.json").read_text())
    assert oos["sharpe"] == stats["out_of_sample"]["sharpe"] and oos["start"].startswith("2018-09-03T00:0")


def test_best_yaml_is_the_input_config_with_the_best_values(local_run, inputs):
    out, _ = local_run
    stats = json.loads((out / "stats.json").read_text())
    best = config.load(out / "best.yaml")
    base = config.load(inputs / "trend.yaml")
    trend = best.strategy.trend
    assert (trend.fast_period, trend.slow_period, trend.leverage) == tuple(stats["best"].values())
    assert best.strategy.motif == base.strategy.motif and best.risk == base.risk and best.sim == base.sim
    text = (out / "best.yaml").read_text()
    assert text.startswith("# sniper train: the best of")
    assert text.count("\n") == (inputs / "trend.yaml").read_text().count("\n") + 1  # every line (and comment) kept
    assert f"    fast_period: {trend.fast_period}" in text and "# EMA period over the closes" in text


def test_the_engine_scores_a_trial_as_the_search_did(local_run, inputs):
    out, _ = local_run
    row = pd.read_csv(out / "search.csv").iloc[0]
    cfg = config.load(inputs / "trend.yaml")
    sp = space.load(inputs / "space.yaml", cfg)
    values = tuple(row[name] for name in sp.names)
    trial = sp.apply(cfg, (int(values[0]), int(values[1]), float(values[2])))
    result = engine.run(trial, history.load_bars_csv(BARS), history.load_funding_csv(FUNDING),
                        start=int(parse_time("2018-09-01")), end=int(parse_time("2018-09-03")))
    assert row["score"] == pytest.approx(result.stats["sharpe"], rel=1e-12)


def test_dask_local_finds_what_the_local_pool_finds(local_run, inputs, tmp_path):
    out, first = local_run
    result = sniper(*argv(inputs, tmp_path / "dask", "--dask", "local"))
    assert result.returncode == 0, result.stderr
    assert "on Dask local" in result.stderr and re.search(r"\d+/15 \[", result.stderr)
    assert "Traceback" not in result.stderr
    pd.testing.assert_frame_equal(rows(tmp_path / "dask"), rows(out))
    assert (json.loads((tmp_path / "dask" / "stats.json").read_text())["best"]
            == json.loads((out / "stats.json").read_text())["best"])
    assert first.stdout.splitlines()[0] == result.stdout.splitlines()[0]


def test_a_running_dask_scheduler_finds_the_same(local_run, inputs, tmp_path):
    from distributed import LocalCluster

    out, _ = local_run
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        assert len(cluster.workers) == 2 and cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        result = sniper(*argv(inputs, tmp_path / "tcp", "--dask", cluster.scheduler_address))
    assert result.returncode == 0, result.stderr
    pd.testing.assert_frame_equal(rows(tmp_path / "tcp"), rows(out))


def test_a_rerun_resumes_from_search_csv(local_run, inputs, tmp_path):
    out, _ = local_run
    copy = tmp_path / "again"
    copy.mkdir()
    for name in ("search.csv", "search.json"):
        (copy / name).write_bytes((out / name).read_bytes())
    before = (copy / "search.csv").read_text()
    result = sniper(*argv(inputs, copy, "--workers", "1"))
    assert result.returncode == 0, result.stderr
    stats = json.loads((copy / "stats.json").read_text())
    assert stats["resumed"] == stats["parameter_sets"] == before.count("\n") - 1
    assert (copy / "search.csv").read_text() == before  # nothing evaluated again
    assert stats["best"] == json.loads((out / "stats.json").read_text())["best"]
    assert f"resuming: {stats['resumed']} parameter sets" in result.stderr


def test_resuming_refuses_another_objective_or_period(local_run, inputs, tmp_path):
    out, _ = local_run
    for extra, word in ((("--objective", "return"), "objective"), (("--from", "2018-08-31"), "in_sample")):
        copy = tmp_path / word
        copy.mkdir()
        (copy / "search.json").write_bytes((out / "search.json").read_bytes())
        args = argv(inputs, copy)
        if extra[0] == "--from":
            args[args.index("--from") + 1] = extra[1]
        else:
            args += list(extra)
        result = sniper(*args)
        assert result.returncode == 2 and f"holds a search with another {word}" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("where", [["--workers", "2"], ["--dask", "local"]], ids=["pool", "dask"])
def test_ctrl_c_keeps_the_results_and_the_same_command_resumes(inputs, tmp_path, where):
    out = tmp_path / "stopped"
    args = argv(inputs, out, *where, "--from", "2018-09-01", "--to", "2018-09-20")
    args[args.index("--budget") + 1] = "300"
    args += ["--oos-from", "2018-09-21", "--oos-to", "2018-09-21"]
    proc = subprocess.Popen([sys.executable, "-m", "sniper", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not (out / "search.csv").exists()
                                           or (out / "search.csv").read_text().count("\n") < 4):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "the same command resumes" in stderr
    assert "Traceback" not in stderr and "leaked" not in stderr and "WARNING" not in stderr
    kept = pd.read_csv(out / "search.csv")
    assert 3 <= len(kept) < 270
    stats = json.loads((out / "stats.json").read_text())
    assert stats["interrupted"] and stats["ended"] == "interrupted" and "out_of_sample" not in stats
    assert config.load(out / "best.yaml").strategy.trend.fast_period == stats["best"]["strategy.trend.fast_period"]
    assert (out / "search.png").is_file()
    # the same command picks up the rows and goes on (a tiny budget: the population it starts with)
    args[args.index("--budget") + 1] = "15"
    again = sniper(*args)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "stats.json").read_text())["resumed"] == len(kept)


def test_random_and_grid_searches(inputs, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("strategy.trend.fast_period: {values: [100, 400]}\nstrategy.trend.slow_period: {low: 50, high: 51}\n")
    args = argv(inputs, tmp_path / "grid", "--method", "grid", "--workers", "2")
    args[args.index("--space") + 1] = str(grid)
    result = sniper(*args)
    assert result.returncode == 0, result.stderr
    search = pd.read_csv(tmp_path / "grid" / "search.csv")
    assert sorted(zip(search["strategy.trend.fast_period"], search["strategy.trend.slow_period"], strict=True)) == [
        (100, 50), (100, 51), (400, 50), (400, 51)]
    result = sniper(*argv(inputs, tmp_path / "random", "--method", "random", "--seed", "7", "--objective", "calmar"))
    assert result.returncode == 0, result.stderr
    search = pd.read_csv(tmp_path / "random" / "search.csv")
    assert len(search) == 15 and not search.duplicated(list(search.columns[2:])).any()
    assert json.loads((tmp_path / "random" / "stats.json").read_text())["objective"] == "calmar"


# ----------------------------------------------------------------------------- walk-forward

def forward_argv(inputs, out, *extra):
    args = argv(inputs, out, "--workers", "2", "--walk-forward", "2:1", *extra)
    i = args.index("--from")
    del args[i: i + len(PERIODS)]
    args[args.index("--budget") + 1] = "10"
    return args + ["--from", "2018-09-01", "--to", "2018-09-05"]  # three windows: tests of Sep 3, 4 and 5


@pytest.fixture(scope="module")
def forward_run(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("forward") / "run"
    result = sniper(*forward_argv(inputs, out))
    assert result.returncode == 0, result.stderr
    return out, result


def test_walk_forward_searches_each_train_window_and_tests_its_best_on_the_next(forward_run, inputs):
    out, result = forward_run
    windows = pd.read_csv(out / "windows.csv")
    day = 86400
    assert list(windows["train_start"] - windows["train_start"].iloc[0]) == [0, day, 2 * day]
    assert (windows["train_end"] - windows["train_start"] == 2 * day).all()
    assert (windows["test_start"] == windows["train_end"]).all()  # tested after its training, never on it
    assert list(windows["test_end"].iloc[:-1]) == list(windows["test_start"].iloc[1:])  # contiguous
    searched = sorted((out / "windows").iterdir())
    assert [d.name for d in searched] == ["01-2018-09-01", "02-2018-09-02", "03-2018-09-03"]
    assert result.stderr.count("sniper train: de over 3 parameters") == 3
    cfg = config.load(inputs / "trend.yaml")
    bars, funding = history.load_bars_csv(BARS), history.load_funding_csv(FUNDING)
    balance = cfg.sim.balance_xbt
    for (_, w), folder in zip(windows.iterrows(), searched, strict=True):
        search = pd.read_csv(folder / "search.csv")
        best = search.loc[search["score"].idxmax()]
        assert w["train_score"] == pytest.approx(best["score"], rel=1e-12)
        picked = config.load(folder / "best.yaml")
        trend = picked.strategy.trend
        assert (trend.fast_period, trend.slow_period, trend.leverage) == (
            best["strategy.trend.fast_period"], best["strategy.trend.slow_period"], best["strategy.trend.leverage"])
        # the test window is what the engine gives for that pick, starting with the equity carried over
        picked = picked.__class__(**{**picked.__dict__, "sim": picked.sim.__class__(
            **{**picked.sim.__dict__, "balance_xbt": balance})})
        alone = engine.run(picked, bars, funding, start=int(w["test_start"]), end=int(w["test_end"]))
        assert w["return"] == pytest.approx(alone.stats["total_return"], rel=1e-12, abs=1e-15)
        balance = float(alone.equity["equity_xbt"].iloc[-1])
    equity = pd.read_csv(out / "equity.csv")
    assert equity["time"].iloc[0] == windows["test_start"].iloc[0] and equity["time"].iloc[-1] == windows["test_end"].iloc[-1]
    assert equity["equity_xbt"].iloc[-1] == pytest.approx(balance, rel=1e-12)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["walk_forward"]["windows"] == 3 and stats["search"]["budget"] == 10
    # best.yaml: the latest window's pick, to trade from here on
    assert (out / "best.yaml").read_text().splitlines()[1:] == (searched[-1] / "best.yaml").read_text().splitlines()[1:]
    assert "2018-09-03 00:00 – 2018-09-05 00:00" in (out / "best.yaml").read_text().splitlines()[0]
    assert "3 windows, out of sample" in result.stdout
    page = (out / "report.html").read_text()
    assert "<h2>Walk-forward windows</h2>" in page and page.count("<tr><td>") == 3
    first = windows.iloc[0]
    assert (f"<td>1</td><td>2018-09-01 – 2018-09-03</td><td>2018-09-03 – 2018-09-04</td><td>{first['return']:+.2%}</td>"
            in page)


def test_walk_forward_resumes_every_window(forward_run, inputs, tmp_path):
    out, _ = forward_run
    copy = tmp_path / "again"
    for folder in (out / "windows").iterdir():
        (copy / "windows" / folder.name).mkdir(parents=True)
        for name in ("search.csv", "search.json"):
            (copy / "windows" / folder.name / name).write_bytes((folder / name).read_bytes())
    result = sniper(*forward_argv(inputs, copy))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("; resuming: ") == 3
    for folder in (out / "windows").iterdir():  # nothing evaluated again
        assert (copy / "windows" / folder.name / "search.csv").read_text() == (folder / "search.csv").read_text()
    assert pd.read_csv(copy / "windows.csv").equals(pd.read_csv(out / "windows.csv"))


def test_walk_forward_on_dask_picks_what_the_local_pool_picks(forward_run, inputs, tmp_path):
    out, _ = forward_run
    args = forward_argv(inputs, tmp_path / "dask", "--dask", "local")
    del args[args.index("--workers"): args.index("--workers") + 2]
    result = sniper(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("on Dask local") == 3
    assert pd.read_csv(tmp_path / "dask" / "windows.csv").equals(pd.read_csv(out / "windows.csv"))


def test_ctrl_c_in_a_walk_forward_keeps_the_window_searches(inputs, tmp_path):
    out = tmp_path / "stopped"
    args = forward_argv(inputs, out)
    args[args.index("--budget") + 1] = "300"
    proc = subprocess.Popen([sys.executable, "-m", "sniper", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    first = out / "windows" / "01-2018-09-01" / "search.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not first.exists() or first.read_text().count("\n") < 4):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted in window 1" in stderr and "the same command resumes" in stderr
    assert "Traceback" not in stderr and "leaked" not in stderr
    assert 3 <= len(pd.read_csv(first)) < 300 and not (out / "windows.csv").exists()


def test_a_walk_forward_span_too_short_for_one_window_is_one_line(inputs, tmp_path, capsys):
    code, err = in_process(forward_argv(inputs, tmp_path / "out", "--walk-forward", "60:7"), capsys)
    assert code == 2 and err.startswith("sniper train: error: --to: empty range: the first test window would start "
                                        "at 2018-10-31 00:00, not before the end 2018-09-06 00:00"), err
    assert len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- every bad argument: one line, exit 2

BAD = [
    (["--config"], "--config: expected one argument"),
    (["--method", "anneal"], "--method: invalid choice: 'anneal'"),
    (["--budget", "0"], "--budget: expected a whole number >= 1"),
    (["--budget", "3"], "--budget: differential evolution over 3 parameters needs at least 5 backtests"),
    (["--seed", "-1"], "--seed: expected a whole number >= 0"),
    (["--objective", "sortino"], "--objective: invalid choice: 'sortino'"),
    (["--from", "yesterday"], "--from:"),
    (["--to", "2018-08-31"], "--from/--to: empty in-sample period"),
    (["--oos-from", "2018-09-02"], "--oos-from: the out-of-sample period"),
    (["--oos-to", "2018-09-01"], "--oos-from/--oos-to: empty out-of-sample period"),
    (["--from", "2018-08-20"], "--from: the strategy needs 1,424 bars of history before 2018-08-20 00:00"),
    (["--oos-from", "2018-12-01", "--oos-to", "2018-12-02"], "--oos-from/--oos-to: no bars from 2018-12-01"),
    (["--dask", "10.0.0.1:8786"], "--dask: expected local or tcp://HOST:PORT"),
    (["--dask", "tcp://127.0.0.1:9", "--workers", "2"], "--workers: a running cluster"),
    (["--dask", "tcp://127.0.0.1:9"], "--dask: cannot reach tcp://127.0.0.1:9"),
    (["--workers", "0"], "--workers: expected a whole number >= 1"),
    (["--method", "grid"], "--budget: the grid has 304,042 points, more than the budget of 15"),
    (["--bars", "no/such.csv"], "--bars:"),
    (["--space", "no/such.yaml"], "--space: no/such.yaml: space file not found"),
    (["--config", "no/such.yaml"], "--config: no/such.yaml: config file not found"),
    (["--walk-forward", "2"], "--walk-forward: expected TRAIN:TEST days"),
    (["--walk-forward", "2:1"], "--oos-from: not with --walk-forward"),
    (["--walk-forward", "60:7", "--from", "2018-09-01", "--to", "2018-09-10", "--oos-from", "2018-09-11"],
     "--oos-from: not with --walk-forward"),
]


def in_process(args, capsys):
    from sniper import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("extra, message", BAD, ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(BAD)])
def test_every_bad_argument_is_one_line_and_exit_2(inputs, tmp_path, capsys, extra, message):
    args = argv(inputs, tmp_path / "out")
    for option in {"--config", "--space", "--bars", "--from", "--to", "--oos-from", "--oos-to"} & set(extra):
        i = args.index(option)
        del args[i: i + 2]
    code, err = in_process(args + extra, capsys)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("sniper train: error: ")


def test_bad_space_files_and_outputs_are_one_line(inputs, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy.trend.fast_period: {low: 1, high: 600}\n")
    args = argv(inputs, tmp_path / "out")
    args[args.index("--space") + 1] = str(bad)
    code, err = in_process(args, capsys)
    assert code == 2 and f"--space: {bad}: strategy.trend.fast_period.low: expected a value >= 2, got 1" in err
    (tmp_path / "file").write_text("")
    code, err = in_process(argv(inputs, tmp_path / "file"), capsys)
    assert code == 2 and "--out: " in err and "is not a directory" in err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "search.csv").write_text("score,x\n1,2\n")
    code, err = in_process(argv(inputs, foreign), capsys)
    assert code == 2 and "search.csv is not from sniper train" in err
    grid = tmp_path / "grid.yaml"
    grid.write_text("strategy.trend.leverage: {low: 1, high: 3}\n")
    args[args.index("--space") + 1] = str(grid)
    code, err = in_process(args + ["--method", "grid"], capsys)
    assert code == 2 and "--method: grid: strategy.trend.leverage is a range of numbers, which has no grid" in err
    no_config = argv(inputs, tmp_path / "out")
    del no_config[no_config.index("--config"): no_config.index("--config") + 2]
    code, err = in_process(no_config, capsys)
    assert code == 2 and "--config: needed" in err


def test_the_real_command_line_says_one_line(inputs, tmp_path):
    result = sniper(*argv(inputs, tmp_path / "out", "--budget", "3"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "sniper train: error: --budget: differential evolution over 3 parameters needs at least 5 backtests "
        "(one population), got 3 (see sniper train --help)"]


# ----------------------------------------------------------------------------- the pieces

def test_objectives_are_net_figures_of_the_stats():
    stats = {"total_return": 0.1, "annual_return": 2.0, "sharpe": 1.5, "max_drawdown": -0.25}
    assert train.score(stats, "return") == 0.1
    assert train.score(stats, "sharpe") == 1.5
    assert train.score(stats, "calmar") == 8.0
    assert train.score({**stats, "max_drawdown": 0.0}, "calmar") == 2.0 / train.CALMAR_FLOOR
    assert math.isnan(train.score({**stats, "sharpe": None}, "sharpe"))


def test_de_spends_at_most_the_budget():
    assert train.de_shape(15, 3) == (1, 5, 2)
    assert train.de_shape(200, 4) == (10, 40, 4)
    assert train.de_shape(10_000, 2) == (15, 30, 332)
    for budget, dims in ((15, 3), (200, 4), (77, 7), (5, 1)):
        _, members, generations = train.de_shape(budget, dims)
        assert members * (generations + 1) <= budget
    with pytest.raises(UsageError, match="--budget: differential evolution over 7 parameters needs at least 7"):
        train.de_shape(6, 7)


def test_random_points_are_distinct_seeded_and_cover_the_options(inputs):
    cfg = config.load(inputs / "trend.yaml")
    sp = space.load(inputs / "space.yaml", cfg)
    points = train.random_points(sp, 40, 3)
    values = [sp.decode(x) for x in points]
    assert len(set(values)) == 40 and {v[2] for v in values} == {1.0, 3.0}
    assert [sp.decode(x) for x in train.random_points(sp, 40, 3)] == values
    assert [sp.decode(x) for x in train.random_points(sp, 40, 4)] != values
    tiny = space.Space((space.Param("strategy.trend.leverage", ("trend", "leverage"), options=(1.0, 2.0)),), "-")
    assert sorted(tiny.decode(x) for x in train.random_points(tiny, 10, 1)) == [(1.0,), (2.0,)]


def test_results_skip_a_row_a_kill_cut_short(inputs, tmp_path):
    cfg = config.load(inputs / "trend.yaml")
    sp = space.load(inputs / "space.yaml", cfg)
    path = tmp_path / "search.csv"
    results = train.Results(path, sp)
    results.add(("100", "50", "1.0"), -1.25)
    results.add(("200", "60", "3.0"), math.inf)
    results.close()
    whole = path.read_text()
    path.write_text(whole + "3,0.5,30")  # a kill mid-row: "300" lost its last digit
    again = train.Results(path, sp)
    assert path.read_text() == whole
    assert again.resumed == 2 and again.scores[("100", "50", "1.0")] == 1.25
    assert math.isnan(again.scores[("200", "60", "3.0")]) and again.energy(("200", "60", "3.0")) == math.inf
    assert again.best() == ((100, 50, 1.0), 1.25)
    again.add(("300", "70", "1.0"), -2.0)
    again.close()
    assert path.read_text().splitlines()[-1] == "3,2.0,300,70,1.0"
    assert train.Results(path, sp).best() == ((300, 70, 1.0), 2.0)
    assert list(pd.read_csv(path)["score"].isna()) == [False, True, False]
