"""Figures and one self-contained report.html for a results directory; `sniper report DIR`.

Why one file with the PNGs inside (base64): a run's report is mailed, archived and opened from
disk, with no server and no folder of images to lose. Each figure is drawn only when its inputs
are in the directory, so the backtester, the trainer and hand-made runs all share this module.

Inputs (CSV with a header row; times are epoch seconds UTC, returns are fractions):

trades.csv    entry_time, exit_time, side (long|short), qty (contracts, > 0), entry_price,
              exit_price, pnl_xbt (net of fees and funding), return (pnl_xbt over the entry
              value qty / entry_price)
equity.csv    time, equity_xbt (margin balance incl. unrealised PnL), close (XBTUSD price)
stats.json    an object of scalars (nested objects are shown as dotted keys), e.g.
              {"strategy": "trend", "return": 0.42, "max_drawdown": -0.18, "trades": 311}
forecasts.csv time (when the forecast was made), predicted, actual (relative move over the
              forecast horizon: (close at time + H) / close at time - 1)
funding.csv   time (settlement), rate, position (signed contracts held), funding_xbt (received > 0)
search.csv    one row per evaluated parameter set: a `score` column (higher is better) and one
              column per parameter (numbers or names); a `trial` column, if any, is ignored

Figures: price with entries and exits (equity.csv, marks from trades.csv), equity and drawdown
against buy-and-hold (equity.csv), predicted vs actual with a fit line and the forecast errors
(forecasts.csv), trade returns (trades.csv), funding per settlement (funding.csv), the
parameter-search landscape (search.csv). The plotting helpers (`save_figure`, `heatmap`) are
shared with the funding study, so every research figure has the same look.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from sniper.model import iso

STYLE = {
    "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "figure.titlesize": 13,
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "legend.frameon": False, "figure.facecolor": "white", "savefig.facecolor": "white",
}
DPI = 110
LONG, SHORT, NEUTRAL = "#1a9850", "#d73027", "#4575b4"

INPUTS = {
    "trades.csv": ("entry_time", "exit_time", "side", "qty", "entry_price", "exit_price", "pnl_xbt", "return"),
    "equity.csv": ("time", "equity_xbt", "close"),
    "forecasts.csv": ("time", "predicted", "actual"),
    "funding.csv": ("time", "rate", "position", "funding_xbt"),
    "search.csv": ("score",),
}


class ReportError(ValueError):
    """An input file that is there but unusable; the message names the file and what is wrong."""


# ----------------------------------------------------------------------------- shared plotting helpers

def save_figure(path: Path, draw: Callable[[Figure], None], *, size: tuple[float, float] = (12, 4.8)) -> Path:
    """Draw a figure in the house style on the Agg canvas (no pyplot, no display) and save it as PNG."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(fig)
        draw(fig)
        fig.savefig(path, dpi=DPI)
    return Path(path)


def heatmap(ax, values: np.ndarray, row_labels: list[str], col_labels: list[str], *, limit: float,
            fmt: str = "{:+.0f}"):
    """A diverging red-to-green grid centred on 0 (clipped at ±`limit`), each cell annotated;
    NaN cells stay blank. Returns the image for a colour bar."""
    values = np.asarray(values, dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", aspect="auto",
                      norm=colors.TwoSlopeNorm(0.0, -max(limit, 1e-12), max(limit, 1e-12)))
    ax.set_xticks(range(len(col_labels)), col_labels)
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.grid(False)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7.5,
                    color="white" if abs(v) > 0.6 * limit else "black")
    return image


def _dates(seconds) -> pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(seconds, dtype=np.int64), unit="s")


def _date_axis(ax) -> None:
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_xlabel("time (UTC)")


def _percent_axis(ax, axis: str = "y") -> None:
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(1.0, decimals=None))


# ----------------------------------------------------------------------------- figures

def _price(fig, equity: pd.DataFrame, trades: pd.DataFrame | None) -> None:
    ax = fig.subplots()
    ax.plot(_dates(equity["time"]), equity["close"], color="0.35", lw=0.8, label="XBTUSD close")
    if trades is not None and len(trades):
        size = 40 if len(trades) < 300 else 12
        for side, marker, color in (("long", "^", LONG), ("short", "v", SHORT)):
            t = trades[trades["side"] == side]
            ax.scatter(_dates(t["entry_time"]), t["entry_price"], marker=marker, s=size, color=color,
                       label=f"{side} entry ({len(t)})", zorder=3)
        ax.scatter(_dates(trades["exit_time"]), trades["exit_price"], marker="x", s=size * 0.8, color="black",
                   lw=1, label="exit", zorder=3)
    ax.set_title("Price with entries and exits")
    ax.set_ylabel("price (USD per XBT)")
    _date_axis(ax)
    ax.legend(loc="best")


def _drawdown(values: np.ndarray) -> np.ndarray:
    return values / np.maximum.accumulate(values) - 1.0


def _equity(fig, equity: pd.DataFrame) -> None:
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    when = _dates(equity["time"])
    usd = equity["equity_xbt"].to_numpy() * equity["close"].to_numpy()
    strategy = usd / usd[0]
    hold = equity["close"].to_numpy() / equity["close"].iloc[0]
    top.plot(when, strategy, color=NEUTRAL, lw=1.2,
             label=f"strategy (×{strategy[-1]:.2f}; {equity['equity_xbt'].iloc[-1]:.4f} XBT at the end)")
    top.plot(when, hold, color="0.5", lw=1, label=f"buy-and-hold: the starting XBT held (×{hold[-1]:.2f})")
    if max(strategy.max(), hold.max()) / max(min(strategy.min(), hold.min()), 1e-12) > 10:
        top.set_yscale("log")
    top.set_ylabel("account value in USD,\ngrowth of 1 (×)")
    top.set_title("Equity against buy-and-hold")
    top.legend(loc="upper left")
    bottom.fill_between(when, _drawdown(strategy), 0, color=NEUTRAL, alpha=0.35, label="strategy")
    bottom.plot(when, _drawdown(hold), color="0.5", lw=0.9, label="buy-and-hold")
    bottom.set_ylabel("drawdown")
    _percent_axis(bottom)
    bottom.legend(loc="lower left")
    _date_axis(bottom)


def _forecast_scatter(fig, forecasts: pd.DataFrame) -> None:
    ax = fig.subplots()
    x, y = forecasts["predicted"].to_numpy(), forecasts["actual"].to_numpy()
    ax.scatter(x, y, s=8 if len(x) > 2000 else 16, alpha=0.35 if len(x) > 2000 else 0.6, color=NEUTRAL,
               edgecolors="none", label=f"forecasts ({len(x)})")
    if len(x) >= 2 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        r = np.corrcoef(x, y)[0, 1]
        line = np.linspace(x.min(), x.max(), 2)
        ax.plot(line, slope * line + intercept, color=SHORT, lw=1.6,
                label=f"fit: actual = {slope:.2f} × predicted {intercept:+.2%}  (r = {r:.2f}, R² = {r * r:.2f})")
    lim = np.nanmax(np.abs(np.concatenate([x, y]))) if len(x) else 1.0
    ax.plot([-lim, lim], [-lim, lim], color="0.6", lw=0.8, ls="--", label="perfect forecast")
    ax.axhline(0, color="0.7", lw=0.6)
    ax.axvline(0, color="0.7", lw=0.6)
    ax.set_title("Predicted vs actual move over the forecast horizon (motif)")
    ax.set_xlabel("predicted move")
    ax.set_ylabel("actual move")
    _percent_axis(ax, "x")
    _percent_axis(ax)
    ax.legend(loc="upper left")


def _histogram(fig, values: np.ndarray, title: str, xlabel: str, color: str) -> None:
    ax = fig.subplots()
    values = values[np.isfinite(values)]
    ax.hist(values, bins=min(80, max(10, int(math.sqrt(len(values))) * 2)), color=color, alpha=0.8, edgecolor="white")
    mean, median = float(np.mean(values)), float(np.median(values))
    ax.axvline(0, color="black", lw=0.8)
    ax.axvline(mean, color=SHORT, lw=1.4, ls="--", label=f"mean {mean:+.3%}")
    ax.axvline(median, color="0.3", lw=1.2, ls=":", label=f"median {median:+.3%}")
    ax.set_title(f"{title} (n = {len(values)}, {np.mean(values > 0):.0%} above 0)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _percent_axis(ax, "x")
    ax.legend(loc="upper right")


def _funding(fig, funding: pd.DataFrame) -> None:
    ax = fig.subplots()
    when = _dates(funding["time"])
    amount = funding["funding_xbt"].to_numpy()
    width = 8 / 24 * 0.8 if len(funding) < 400 else 8 / 24
    ax.bar(when, amount, width=width, color=np.where(amount >= 0, LONG, SHORT))
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("funding per settlement (XBT,\nreceived > 0)")
    total = ax.twinx()
    total.plot(when, np.cumsum(amount), color=NEUTRAL, lw=1.4, label="cumulative")
    total.set_ylabel("cumulative funding (XBT)", color=NEUTRAL)
    total.grid(False)
    total.spines["right"].set_visible(True)
    held = int((funding["position"] != 0).sum())
    ax.set_title(f"Funding received per settlement ({held} of {len(funding)} settlements with a position; "
                 f"total {amount.sum():+.6f} XBT)")
    _date_axis(ax)


def _search(fig, search: pd.DataFrame) -> None:
    params = [c for c in search.columns if c not in ("score", "trial")]
    panels = len(params) + (len(params) >= 2)
    cols = min(3, panels)
    axes = np.atleast_1d(fig.subplots(math.ceil(panels / cols), cols, squeeze=False)).ravel()
    score = search["score"].to_numpy(dtype=float)
    best = int(np.nanargmax(score))
    norm = colors.Normalize(np.nanmin(score), np.nanmax(score))
    coded = {name: _coded(search[name]) for name in params}
    for ax, name in zip(axes, params, strict=False):
        x, labels = coded[name]
        ax.scatter(x, score, c=score, cmap="viridis", norm=norm, s=14, edgecolors="none")
        ax.scatter(x[best], score[best], marker="*", s=220, color=SHORT, zorder=3)
        _category_ticks(ax.xaxis, labels)
        ax.set_title(f"best {name} = {search[name].iloc[best]}", fontsize="medium")
        ax.set_xlabel(name)
        ax.set_ylabel("score")
    if len(params) >= 2:
        ax = axes[len(params)]
        a, b = sorted(params, key=lambda name: coded[name][1] is not None)[:2]  # numeric ones first
        image = ax.scatter(coded[a][0], coded[b][0], c=score, cmap="viridis", norm=norm, s=18, edgecolors="none")
        ax.scatter(coded[a][0][best], coded[b][0][best], marker="*", s=220, color=SHORT, zorder=3)
        _category_ticks(ax.xaxis, coded[a][1])
        _category_ticks(ax.yaxis, coded[b][1])
        ax.set_xlabel(a)
        ax.set_ylabel(b)
        ax.set_title(f"{a} × {b}", fontsize="medium")
        fig.colorbar(image, ax=ax, label="score")
    for ax in axes[panels:]:
        ax.set_visible(False)
    fig.suptitle(f"Parameter search: {len(search)} evaluations, best score {score[best]:.4g} (★)")


def _coded(column: pd.Series) -> tuple[np.ndarray, list[str] | None]:
    """A parameter's values as positions: numbers as they are, names as category positions
    (with the category names)."""
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=float), None
    cat = pd.Categorical(column.astype(str))
    return cat.codes.astype(float), list(cat.categories)


def _category_ticks(axis, labels: list[str] | None) -> None:
    if labels is not None:
        axis.set_ticks(range(len(labels)), labels)
        getattr(axis.axes, f"set_{axis.axis_name}lim")(-0.5, len(labels) - 0.5)


# ----------------------------------------------------------------------------- the report

def _read(results: Path, name: str) -> pd.DataFrame | None:
    path = results / name
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise ReportError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in INPUTS[name] if c not in df.columns]
    if missing:
        raise ReportError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(INPUTS[name])})")
    return df


def _read_stats(results: Path) -> dict | None:
    path = results / "stats.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise ReportError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ReportError(f"{path}: expected a JSON object of statistics")
    return _flatten(doc)


def _flatten(doc: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _figures(results: Path, data: dict) -> list[tuple[str, str, Path]]:
    """(title, caption, png) of every figure whose inputs are there, drawn into `results`."""
    trades, equity, forecasts = data["trades.csv"], data["equity.csv"], data["forecasts.csv"]
    funding, search = data["funding.csv"], data["search.csv"]
    plan: list[tuple[str, str, str, Callable[[Figure], None], tuple[float, float]]] = []
    if equity is not None and len(equity):
        plan.append(("Price and trades", "XBTUSD close; ▲ long and ▼ short entries, × exits.", "price.png",
                     lambda fig: _price(fig, equity, trades), (13, 5)))
        plan.append(("Equity and drawdown",
                     "Account value in USD (equity in XBT × price) as growth of 1, against holding the starting "
                     "XBT; the ratio of the two curves is the gain in XBT. Drawdown from the running peak.",
                     "equity.png", lambda fig: _equity(fig, equity), (13, 6.5)))
    if forecasts is not None and len(forecasts):
        plan.append(("Forecasts", "Each point is one forecast: its predicted and realised relative move.",
                     "forecast_scatter.png", lambda fig: _forecast_scatter(fig, forecasts), (9, 7.5)))
    if trades is not None and len(trades):
        plan.append(("Trade returns", "Net return of each closed trade (after fees and funding) on its entry value.",
                     "trade_returns.png", lambda fig: _histogram(
                         fig, trades["return"].to_numpy(dtype=float), "Trade returns", "net return per trade",
                         NEUTRAL), (11, 4.8)))
    if forecasts is not None and len(forecasts):
        plan.append(("Forecast errors", "actual − predicted move of each forecast.", "forecast_errors.png",
                     lambda fig: _histogram(fig, (forecasts["actual"] - forecasts["predicted"]).to_numpy(dtype=float),
                                            "Forecast errors", "actual − predicted move", "#7b3294"), (11, 4.8)))
    if funding is not None and len(funding):
        plan.append(("Funding", "Funding received (> 0) or paid (< 0) at each settlement, in XBT.", "funding.png",
                     lambda fig: _funding(fig, funding), (13, 4.8)))
    if search is not None and len(search) and len(search.columns.difference(["score", "trial"])):
        n = len(search.columns.difference(["score", "trial"]))
        plan.append(("Parameter search", "Score of every evaluated parameter set, per parameter; the best marked ★.",
                     "search.png", lambda fig: _search(fig, search),
                     (13, 4.2 * math.ceil((n + (n >= 2)) / 3) + 0.6)))
    return [(title, caption, save_figure(results / png, draw, size=size)) for title, caption, png, draw, size in plan]


def _stats_table(stats: dict) -> str:
    def show(v) -> str:
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v)

    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(show(v))}</td></tr>" for k, v in stats.items())
    return f"<h2>Summary</h2><table class='stats'>{rows}</table>"


def _windows_table(results: Path) -> str:
    """A walk-forward's windows (windows.csv, when there): each test window beside the training
    window before it, the parameters picked there and, for `sniper train`, their in-sample score."""
    path = results / "windows.csv"
    if not path.is_file():
        return ""

    def span(a, b) -> str:
        return f"{iso(a)[:10]} – {iso(b)[:10]}"

    rows = []
    try:
        for n, w in enumerate(pd.read_csv(path).to_dict("records"), 1):
            picked = json.loads(w["params"]) if isinstance(w.get("params"), str) else {}
            score = w.get("train_score")
            cells = [str(n), span(w["train_start"], w["train_end"]), span(w["test_start"], w["test_end"]),
                     f"{w['return']:+.2%}", str(w["trades"]),
                     "" if score is None or pd.isna(score) else f"{score:.4g}",
                     ", ".join(f"{k.removeprefix('strategy.')} = {v}" for k, v in picked.items()) or "as configured"]
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ReportError(f"{path}: not a walk-forward windows table ({exc})") from None
    head = "".join(f"<th>{h}</th>" for h in ("window", "train", "test", "test return", "trades", "train score",
                                               "parameters"))
    return (f"<h2>Walk-forward windows</h2><p>Each test window is traded with the parameters picked on the "
            f"training window before it; only the test windows make the summary above and the figures below.</p>"
            f"<table class='stats'><tr>{head}</tr>{''.join(rows)}</table>")


_CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1500px;
padding:0 1.5em;color:#222}h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
img{max-width:100%;height:auto;display:block}table.stats{border-collapse:collapse}
table.stats th,table.stats td{padding:.25em 1em;border-bottom:1px solid #eee;text-align:left}
table.stats td{font-variant-numeric:tabular-nums}.note{color:#666}"""


def build_report(results_dir: str | Path) -> Path:
    """Draw every figure the inputs in `results_dir` allow and write `report.html` beside
    them, the PNGs embedded. Raises FileNotFoundError for a missing directory, ReportError for
    a directory without any input or with an unusable one."""
    results = Path(results_dir)
    if not results.is_dir():
        raise FileNotFoundError(f"{results}: no such results directory")
    data = {name: _read(results, name) for name in INPUTS}
    stats = _read_stats(results)
    if stats is None and all(v is None for v in data.values()):
        raise ReportError(f"{results}: no report inputs (expected any of stats.json, {', '.join(INPUTS)})")
    figures = _figures(results, data)
    absent = [name for name, df in data.items() if df is None] + ([] if stats is not None else ["stats.json"])
    parts = [f"<h1>sniper report: {html.escape(results.resolve().name)}</h1>",
             f"<p class='note'>{html.escape(str(results.resolve()))} · generated "
             f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC</p>"]
    if stats:
        parts.append(_stats_table(stats))
    parts.append(_windows_table(results))
    for title, caption, png in figures:
        encoded = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<section><h2>{html.escape(title)}</h2><p>{html.escape(caption)}</p>"
                     f"<img alt='{html.escape(title)}' src='data:image/png;base64,{encoded}'></section>")
    if absent:
        parts.append(f"<p class='note'>Not in this run: {html.escape(', '.join(absent))}.</p>")
    out = results / "report.html"
    out.write_text("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                   f"<title>sniper report: {html.escape(results.resolve().name)}</title><style>{_CSS}</style>"
                   f"</head><body>{''.join(parts)}</body></html>\n", encoding="utf-8")
    return out


def _cmd_report(args: argparse.Namespace) -> int:
    from sniper.backtest import UsageError

    try:
        out = build_report(args.results_dir)
    except (FileNotFoundError, ReportError) as exc:
        raise UsageError(f"RESULTS_DIR: {exc}") from None
    print(out)
    return 0


def add_cli(sub) -> None:
    from sniper.backtest import handler

    p = sub.add_parser("report", help="render figures and an HTML report of a run",
                       description="Draw the figures of a results directory (trades.csv, equity.csv, stats.json, "
                                   "forecasts.csv, funding.csv, search.csv: whichever are there) and write "
                                   "report.html with the PNGs embedded; prints its path.")
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="directory a backtest or training run wrote")
    p.set_defaults(handler=handler(p, _cmd_report))
