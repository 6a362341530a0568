"""The report: from a hand-made results directory, every figure whose inputs exist is a valid
PNG embedded in one report.html that needs nothing else; bad inputs give one line, exit 2."""

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image

from sniper.backtest import report

ROOT = Path(__file__).resolve().parents[1]
START = 1546300800  # 2019-01-01 00:00 UTC
ALL_FIGURES = {"price.png", "equity.png", "forecast_scatter.png", "trade_returns.png", "forecast_errors.png",
               "funding.png", "search.png"}


def write_results(d: Path) -> Path:
    """A small run: three days of minutes, a dozen trades, forecasts, funding and a search."""
    rng = np.random.default_rng(7)
    minutes = 3 * 1440
    time = START + 60 * np.arange(minutes)
    close = 3800 * np.exp(np.cumsum(rng.normal(0, 0.001, minutes)))
    equity = 1.0 + np.cumsum(rng.normal(0.00002, 0.0005, minutes))
    pd.DataFrame({"time": time, "equity_xbt": equity, "close": close}).to_csv(d / "equity.csv", index=False)
    entries = np.sort(rng.choice(minutes - 200, 12, replace=False))
    exits = entries + rng.integers(10, 180, 12)
    side = np.where(np.arange(12) % 3 == 0, "short", "long")
    sign = np.where(side == "long", 1, -1)
    qty = np.full(12, 1000)
    pnl = sign * qty * (1 / close[entries] - 1 / close[exits])
    pd.DataFrame({"entry_time": time[entries], "exit_time": time[exits], "side": side, "qty": qty,
                  "entry_price": close[entries], "exit_price": close[exits], "pnl_xbt": pnl,
                  "return": pnl / (qty / close[entries])}).to_csv(d / "trades.csv", index=False)
    predicted = rng.normal(0, 0.003, 400)
    pd.DataFrame({"time": time[:400] * 1, "predicted": predicted,
                  "actual": 0.6 * predicted + rng.normal(0, 0.002, 400)}).to_csv(d / "forecasts.csv", index=False)
    settlements = START + 4 * 3600 + 8 * 3600 * np.arange(9)
    rate = rng.normal(0.0001, 0.0003, 9)
    position = np.where(np.arange(9) % 2 == 0, -1000, 0)
    pd.DataFrame({"time": settlements, "rate": rate, "position": position,
                  "funding_xbt": -position * rate / 3800}).to_csv(d / "funding.csv", index=False)
    fast, slow = rng.integers(50, 2000, 40), rng.integers(50, 2000, 40)
    pd.DataFrame({"trial": np.arange(40), "fast_period": fast, "slow_period": slow,
                  "metric": np.where(np.arange(40) % 2, "dtw", "ed"),
                  "score": -((fast - 1000) / 500.0) ** 2 - ((slow - 400) / 300.0) ** 2}).to_csv(d / "search.csv",
                                                                                               index=False)
    (d / "stats.json").write_text(json.dumps({"strategy": "trend", "return": 0.0123, "max_drawdown": -0.031,
                                              "trades": 12, "fees": {"paid_xbt": 0.0004}}))
    return d


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.imread(path).ndim == 3


def test_full_report_embeds_every_figure(tmp_path):
    out = report.build_report(write_results(tmp_path))
    assert out == tmp_path / "report.html"
    page = out.read_text()
    pngs = {p.name for p in tmp_path.glob("*.png")}
    assert pngs == ALL_FIGURES
    for name in pngs:
        assert is_png(tmp_path / name), name
        assert base64.b64encode((tmp_path / name).read_bytes()).decode() in page, name
    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) == len(ALL_FIGURES) and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "href=" not in page and "<script" not in page  # nothing to fetch: it opens from disk
    assert "fees.paid_xbt" in page and "Not in this run" not in page


def test_figures_only_for_inputs_present(tmp_path):
    write_results(tmp_path)
    for name in ("trades.csv", "forecasts.csv", "funding.csv", "search.csv", "stats.json"):
        (tmp_path / name).unlink()
    page = report.build_report(tmp_path).read_text()
    assert {p.name for p in tmp_path.glob("*.png")} == {"price.png", "equity.png"}
    assert page.count("data:image/png;base64,") == 2
    assert "Not in this run: trades.csv, forecasts.csv, funding.csv, search.csv, stats.json." in page


def test_unusable_inputs_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        report.build_report(tmp_path / "nowhere")
    with pytest.raises(report.ReportError, match="no report inputs"):
        report.build_report(tmp_path)
    pd.DataFrame({"time": [1], "equity": [1.0]}).to_csv(tmp_path / "equity.csv", index=False)
    with pytest.raises(report.ReportError, match=r"equity.csv: missing column\(s\) equity_xbt, close"):
        report.build_report(tmp_path)


def test_heatmap_helper_annotates_and_blanks_nan(tmp_path):
    values = np.array([[1.0, -2.0], [np.nan, 4.0]])

    def draw(fig):
        ax = fig.subplots()
        report.heatmap(ax, values, ["a", "b"], ["1", "2"], limit=4.0)
        assert sorted(t.get_text() for t in ax.texts) == ["+1", "+4", "-2"]

    assert is_png(report.save_figure(tmp_path / "h.png", draw, size=(4, 3)))


def sniper(*args):
    return subprocess.run([sys.executable, "-m", "sniper", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_cli_prints_the_page(tmp_path):
    write_results(tmp_path)
    result = sniper("report", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "report.html")


def test_cli_bad_inputs_one_line_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "trades.csv").write_text("entry_time,side\n1,long\n")
    for target, words in ((tmp_path / "missing", "no such results directory"), (tmp_path / "empty", "no report inputs"),
                          (tmp_path / "bad", "trades.csv: missing column(s) exit_time")):
        result = sniper("report", target)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and words in result.stderr and "Traceback" not in result.stderr
