"""The funding-settlement study: where the default `strategy.funding` table comes from.

For every settlement T with a non-zero rate r, the receiving side (short when r > 0, long when
r < 0) is entered at the open of the bar starting m minutes before T, for m = 1 ... `minutes`,
held through T and left at the open of the bar `exit_after` minutes after T, or earlier at the
stop: the first bar whose low (long) or high (short) reaches `stop` away from the entry closes
the trade at that price (no funding if that bar started before T). The post-funding reversal is
the other side, entered where the first trade ends and held `reverse_minutes`, with the same stop.

Returns are per unit of position value at entry (multiply by leverage for the return on margin),
for the inverse contract (1 contract = 1 USD; entry value qty/E XBT). A trade of side s (+1 long,
-1 short) from price E to X, held over a settlement priced P_T, with fee f per fill:

    net = inverse_pnl(s, E, X) * E                 = s * (1 - E/X)     price move
        + |r| * E / P_T     (if held at T)                             funding received
        - f * (1 + E / X)                                              entry and exit fee

(fees are charged on the traded value: qty/E at entry, qty/X at exit). Prices are last-trade
prices, P_T = the open of the bar starting at T: BitMEX charges funding on the mark price, which
stays within a few basis points of it.

Settlements are bucketed by sign and by |r| band: the band `above` a holds a < |r| <= the next
band's floor, as the config's table reads "strictly above". The output is the table
(sign x band x entry minute: count, mean, median, std, win rate), the reversal per band, a heat
map and a suggested `strategy.funding` block in the config's own format.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from sniper.model import MINUTE, inverse_pnl, parse_time

TAKER_FEE, MAKER_FEE = 0.00075, -0.00025  # BitMEX XBTUSD 2017-2020, fraction of traded value
SIGNS = ("positive", "negative")
STAT_COLUMNS = ("count", "mean", "median", "std", "t", "win_rate")


@dataclass(frozen=True)
class StudyParams:
    """What the study simulates; the defaults are the config's (exit 1 min after, reversal held 15)."""

    floors: tuple[float, ...] = (0.0, 0.0005, 0.0010, 0.0015, 0.0020, 0.0030)  # band floors, ascending
    minutes: int = 30  # entry minutes T-1 ... T-minutes
    exit_after: int = 1  # minutes after T the receiving side is left
    reverse_minutes: int = 15  # how long the reversal is held
    stop: float = 0.01  # adverse move (fraction of entry) that ends a trade early; 0 = none
    fee: float = TAKER_FEE  # per fill, fraction of traded value


@dataclass(frozen=True)
class Trades:
    """One row per trade. `into`: settlement x entry minute; `reversal`: one per settlement.
    Columns: time (settlement, epoch s), rate, sign, band (floor), [minute], ret, stopped."""

    into: pd.DataFrame
    reversal: pd.DataFrame
    skipped: int  # settlements within the bars' span, with a non-zero rate, but without every bar needed


def band_of(rates: np.ndarray, floors: tuple[float, ...]) -> np.ndarray:
    """The floor of the band each |rate| falls in: the largest floor strictly below it."""
    f = np.asarray(floors, dtype=np.float64)
    return f[np.searchsorted(f, np.abs(rates), side="left") - 1]


def _hold(bars: np.ndarray, start: np.ndarray, length: int, side: np.ndarray, stop: float):
    """Hold `side` from the open of bar `start` to the open of bar `start + length` (vectorised
    over trades). Returns (entry, exit price, bar where it ended: start + length if held)."""
    entry = bars["open"][start]
    end = start + length
    if stop <= 0:
        return entry, bars["open"][end], end
    idx = start[:, None] + np.arange(length)
    level = (entry * (1.0 - side * stop))[:, None]
    adverse = np.where(side[:, None] > 0, bars["low"][idx] <= level, bars["high"][idx] >= level)
    hit = adverse.any(axis=1)
    exit_price = np.where(hit, level[:, 0], bars["open"][end])
    return entry, exit_price, np.where(hit, start + adverse.argmax(axis=1), end)


def _net(side, entry, exit_price, fee, funding=0.0):
    return inverse_pnl(side, entry, exit_price) * entry + funding - fee * (1.0 + entry / exit_price)


def simulate(bars: np.ndarray, f_times: np.ndarray, f_rates: np.ndarray, p: StudyParams) -> Trades:
    """Every trade of the study over `bars` (BAR_DTYPE, open times) and the settlements
    (`f_times`, `f_rates`) that fall inside them."""
    times = bars["time"]
    f_times, f_rates = np.asarray(f_times, dtype=np.int64), np.asarray(f_rates, dtype=np.float64)
    inside = (f_rates != 0) & (f_times >= times[0]) & (f_times <= times[-1]) if len(times) else f_rates != 0
    f_times, f_rates = f_times[inside], f_rates[inside]
    at = np.searchsorted(times, f_times)
    first, last = at - p.minutes, at + p.exit_after + p.reverse_minutes
    ok = (first >= 0) & (last < len(times))
    ok[ok] = (times[at[ok]] == f_times[ok]) & (times[last[ok]] - times[first[ok]] == (last - first)[ok] * MINUTE)
    at, rate = at[ok], f_rates[ok]
    side = np.where(rate > 0, -1.0, 1.0)  # the receiving side
    base = pd.DataFrame({"time": f_times[ok], "rate": rate, "sign": np.where(rate > 0, SIGNS[0], SIGNS[1]),
                         "band": band_of(rate, p.floors)})
    settle_price = bars["open"][at]
    into = []
    for m in range(1, p.minutes + 1):
        entry, exit_price, ended = _hold(bars, at - m, m + p.exit_after, side, p.stop)
        funding = np.where(ended >= at, np.abs(rate) * entry / settle_price, 0.0)
        into.append(base.assign(minute=m, ret=_net(side, entry, exit_price, p.fee, funding),
                                stopped=ended < at + p.exit_after))
    entry, exit_price, ended = _hold(bars, at + p.exit_after, p.reverse_minutes, -side, p.stop)
    reversal = base.assign(ret=_net(-side, entry, exit_price, p.fee),
                           stopped=ended < at + p.exit_after + p.reverse_minutes)
    return Trades(pd.concat(into, ignore_index=True), reversal, int((~ok).sum()))


def _ceilings(floors: tuple[float, ...]) -> dict[float, float]:
    """Each band's upper edge (the next floor; inf for the top band)."""
    return dict(zip(floors, (*floors[1:], np.inf), strict=True))


def summarize(trades: pd.DataFrame, keys: list[str], floors: tuple[float, ...]) -> pd.DataFrame:
    """count, mean, median, std, t (the mean's t statistic: mean / std * sqrt(count)) and win
    rate (share of trades with net > 0) of `ret` per group of `keys`, with each band's ceiling
    (`up_to`, inf for the top band) beside its floor."""
    grouped = trades.groupby(keys, sort=True)["ret"]
    table = grouped.agg(["count", "mean", "median", "std"])
    table["t"] = table["mean"] / table["std"] * np.sqrt(table["count"])
    table["win_rate"] = grouped.apply(lambda r: float((r > 0).mean()))
    table = table.reset_index().rename(columns={"band": "above"})
    table.insert(table.columns.get_loc("above") + 1, "up_to", table["above"].map(_ceilings(floors)))
    table["sign"] = pd.Categorical(table["sign"], SIGNS)
    return table.sort_values(["sign", "above", *keys[2:]], ascending=[True, False, *[True] * len(keys[2:])],
                             ignore_index=True)


@dataclass(frozen=True)
class Suggestion:
    """One band of the suggested table, with the evidence for it."""

    sign: str
    above: float
    enter_minutes: int
    reverse: bool
    holds: bool  # some entry minute earned money net of fees, with t >= min_t
    best: pd.Series  # that minute's row of the table
    rev: pd.Series | None  # the band's reversal row


def suggest(table: pd.DataFrame, reversal: pd.DataFrame, min_count: int, min_t: float) -> list[Suggestion]:
    """Per sign, largest band first, over bands with at least `min_count` trades: an entry minute
    holds up when its mean is > 0 with a t statistic >= `min_t` (a mean noise would rarely give);
    the band takes the best mean among those minutes (or, flagged, the best mean of all when none
    holds up); `reverse` when the band's reversal holds up. Bands with fewer trades are left out
    (their rates fall to the band below, as the config reads the table). Bands at the bottom that
    do not hold up are left out, so their rates are not traded; one that fails above a band that
    holds stays in, flagged, since the table cannot skip it."""
    out: list[Suggestion] = []
    for sign in SIGNS:
        rows = []
        rows_of_sign = table[(table["sign"] == sign) & (table["count"] >= min_count)]
        for above, group in sorted(rows_of_sign.groupby("above"), key=lambda kv: -kv[0]):
            held = group[_holds(group, min_t)]
            best = (held if len(held) else group).sort_values("mean").iloc[-1]
            rev = reversal[(reversal["sign"] == sign) & (reversal["above"] == above)]
            rev_row = rev.iloc[0] if len(rev) and rev.iloc[0]["count"] >= min_count else None
            reverse = rev_row is not None and bool(_holds(rev_row, min_t))
            rows.append(Suggestion(sign, float(above), int(best["minute"]), reverse, bool(len(held)), best, rev_row))
        while rows and not rows[-1].holds:
            rows.pop()
        out.extend(rows)
    return out


def _holds(rows, min_t: float):
    """Whether a row (or each row of a frame) of the table earned money beyond noise."""
    return (rows["mean"] > 0) & (rows["t"] >= min_t)


def _bp(x: float) -> str:
    return f"{x * 1e4:+.1f} bp"


def render_block(suggestions: list[Suggestion], p: StudyParams, header: str) -> str:
    """The suggestion as a `strategy.funding` YAML block for a config file, evidence in comments;
    it also sets the exit and reversal timing the study assumed, which the bands depend on."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines += ["strategy:", "  funding:",
              f"    exit_after_minutes: {p.exit_after}   # as studied: the bands below assume it",
              f"    reverse_minutes: {p.reverse_minutes}"]
    for sign in SIGNS:
        bands = [s for s in suggestions if s.sign == sign]
        lines.append(f"    {sign}:" + ("" if bands else " []   # no band holds up"))
        for s in bands:
            rev = (f"reversal {_bp(s.rev['mean'])} t={s.rev['t']:.1f}, wins {s.rev['win_rate']:.0%}"
                   if s.rev is not None else "reversal: too few")
            flag = "" if s.holds else "  DOES NOT HOLD UP, kept: the table cannot skip a band"
            lines.append(f"      - {{above: {s.above:.4f}, enter_minutes: {s.enter_minutes}, "
                         f"reverse: {'true' if s.reverse else 'false'}}}   # n={int(s.best['count'])} "
                         f"mean {_bp(s.best['mean'])} t={s.best['t']:.1f} median {_bp(s.best['median'])} "
                         f"wins {s.best['win_rate']:.0%}; {rev}{flag}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- figure

def _band_label(above: float, up_to: float) -> str:
    return f"> {above * 100:.2f} %" if np.isinf(up_to) else f"{above * 100:.2f}–{up_to * 100:.2f} %"


def plot_heatmap(path: Path, table: pd.DataFrame, reversal: pd.DataFrame, p: StudyParams, title: str) -> Path:
    """Mean net return (bp) per band x entry minute, one panel per sign, the reversal beside."""
    from sniper.backtest import report

    ceilings = _ceilings(p.floors)
    floors = sorted(p.floors, reverse=True)
    minutes = list(range(1, p.minutes + 1))
    grids = {}
    for sign in SIGNS:
        t = table[table["sign"] == sign]
        r = reversal[reversal["sign"] == sign].set_index("above")
        grids[sign] = (t.pivot(index="above", columns="minute", values="mean").reindex(index=floors, columns=minutes),
                       r["mean"].reindex(floors), t.groupby("above")["count"].max().reindex(floors).fillna(0))
    finite = np.concatenate([np.ravel(g.to_numpy()) for grid in grids.values() for g in grid[:2]]) * 1e4
    finite = finite[np.isfinite(finite)]
    limit = float(np.percentile(np.abs(finite), 98)) if len(finite) else 1.0

    def draw(fig):
        axes = fig.subplots(2, 2, width_ratios=[p.minutes, 2.2], squeeze=False)
        for row, sign in enumerate(SIGNS):
            into, rev, counts = grids[sign]
            receiving = "short receives" if sign == "positive" else "long receives"
            labels = [f"{_band_label(a, ceilings[a])}  n={int(counts[a])}" for a in floors]
            image = report.heatmap(axes[row][0], into.to_numpy() * 1e4, labels, [str(m) for m in minutes],
                                   limit=limit)
            axes[row][0].set_title(f"rate {'> 0' if sign == 'positive' else '< 0'} ({receiving}): "
                                   "into settlement, entered T − m")
            axes[row][0].set_ylabel("|funding rate| band")
            axes[row][0].set_xlabel("entry m, minutes before settlement")
            report.heatmap(axes[row][1], rev.to_numpy()[:, None] * 1e4, [""] * len(floors), ["rev"], limit=limit)
            axes[row][1].set_title("reversal", fontsize="medium")
        fig.colorbar(image, ax=axes, shrink=0.8, label="mean net return, bp of position value")
        fig.suptitle(title)

    return report.save_figure(path, draw, size=(17, 9))


# ----------------------------------------------------------------------------- CLI

def _when(text: str, *, end: bool = False) -> int:
    """Epoch seconds of a UTC date, date-time or epoch number; a bare date as an end means the
    end of that day."""
    try:
        when = parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, e.g. 2019-01-31 or 2019-01-31T04:00 (UTC)") from None
    if when is None:
        raise argparse.ArgumentTypeError("expected a UTC date, e.g. 2019-01-31")
    return int(when) + (86400 if end and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()) else 0)


def _end(text: str) -> int:
    return _when(text, end=True)


def _fee(text: str) -> float:
    named = {"taker": TAKER_FEE, "maker": MAKER_FEE}
    if text in named:
        return named[text]
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected taker, maker or a fraction like 0.00075, got {text!r}") from None
    if not -0.01 <= value <= 0.01:
        raise argparse.ArgumentTypeError(f"expected a fraction between -0.01 and 0.01, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), e.g. 0.01 for 1 %, got {text!r}")
    return value


def _minutes_after(text: str) -> int:
    if not text.isdigit() or int(text) > 60:
        raise argparse.ArgumentTypeError(f"expected whole minutes 0 ... 60, got {text!r}")
    return int(text)


def _floors(text: str) -> tuple[float, ...]:
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values or values[0] <= 0 or values[-1] >= 0.1:
        raise argparse.ArgumentTypeError(f"expected comma-separated rates in (0, 0.1), e.g. 0.0005,0.001, got {text!r}")
    return (0.0, *values)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def _params(args: argparse.Namespace, cfg) -> StudyParams:
    funding = cfg.strategy.funding if cfg else None
    floors = args.bands or (
        (0.0, *sorted({b.above for b in (*funding.positive, *funding.negative)} - {0.0})) if funding
        else StudyParams.floors)
    return StudyParams(
        floors=floors, minutes=args.minutes, stop=args.stop, fee=args.fee,
        exit_after=args.exit_after if args.exit_after is not None else
        (funding.exit_after_minutes if funding else StudyParams.exit_after),
        reverse_minutes=args.reverse_minutes or (funding.reverse_minutes if funding else StudyParams.reverse_minutes))


def _cmd_funding(args: argparse.Namespace) -> int:
    from sniper.backtest import UsageError, read_config, read_history

    start, end = args.start, args.end
    if start is not None and end is not None and start >= end:
        raise UsageError(f"--from/--to: empty range: from {_iso(start)} up to {_iso(end)} "
                         "(a bare --to date includes its day)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a directory")
    params = _params(args, read_config(args))
    bars, f_times, f_rates = read_history(args, funding=True)
    f_times = np.asarray(f_times, dtype=np.int64)
    keep = (f_times >= (start if start is not None else -2**62)) & (f_times < (end if end is not None else 2**62))
    trades = simulate(bars, f_times[keep], np.asarray(f_rates)[keep], params)
    if trades.reversal.empty:
        covered = f"bars {_iso(bars['time'][0])} – {_iso(bars['time'][-1])}" if len(bars) else "no bars"
        raise UsageError(f"--from/--to: no settlement with a non-zero rate and the bars around it in that range "
                         f"(history: {covered}, {len(f_times)} settlements)")
    out.mkdir(parents=True, exist_ok=True)
    table = summarize(trades.into, ["sign", "band", "minute"], params.floors)
    reversal = summarize(trades.reversal, ["sign", "band"], params.floors)
    table.to_csv(out / "funding_table.csv", index=False)
    reversal.to_csv(out / "funding_reversal.csv", index=False)
    span = f"{_iso(trades.reversal['time'].min())} – {_iso(trades.reversal['time'].max())}"
    fee = {TAKER_FEE: "taker 0.075 %", MAKER_FEE: "maker -0.025 %"}.get(params.fee, f"{params.fee:.4%}")
    header = (f"sniper study funding: settlements {span}, {len(trades.reversal)} studied "
              f"({trades.skipped} without bars around them skipped)\n"
              f"fee {fee} per fill; exit {params.exit_after} min after T; reversal held "
              f"{params.reverse_minutes} min; stop {params.stop:.2%} adverse; a band holds up with >= {args.min_count} "
              f"trades, mean > 0 and t >= {args.min_t:g}\n"
              "returns: net of fees, per unit of position value (x leverage for margin)")
    plot_heatmap(out / "funding_heatmap.png", table, reversal, params,
                 f"Funding settlements {span} UTC: receiving side held from T − m to T + {params.exit_after} min, "
                 f"fee {fee}/fill, stop {params.stop:.1%}")
    block = render_block(suggest(table, reversal, args.min_count, args.min_t), params, header)
    (out / "funding_table.yaml").write_text(block)
    print(block, end="")
    print(f"wrote {out}/funding_table.csv, funding_reversal.csv, funding_heatmap.png, funding_table.yaml",
          file=sys.stderr)
    return 0


def add_cli(sub) -> None:
    from sniper.backtest import add_history_args, handler, positive_int

    study = sub.add_parser("study", help="research studies over history (sniper study funding --help)",
                           description="Research studies over the history store.")
    kinds = study.add_subparsers(dest="study", metavar="STUDY")
    kinds.required = True
    p = kinds.add_parser(
        "funding", help="returns of holding the receiving side through each funding settlement",
        description="For every settlement: bucket by sign and |rate| band; for each entry minute T-1 ... T-N "
                    "the net return of holding the receiving side through settlement (price move + funding "
                    "- fees, early exit at the stop) and of the post-funding reversal. Writes "
                    "funding_table.csv, funding_reversal.csv, funding_heatmap.png and a suggested "
                    "strategy.funding block (funding_table.yaml, also printed).")
    p.add_argument("--from", dest="start", type=_when, metavar="DATE", help="first settlement (UTC date or time)")
    p.add_argument("--to", dest="end", type=_end, metavar="DATE",
                   help="last day included (UTC date), or the time settlements stop before")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the table, heat map and block")
    p.add_argument("--bands", type=_floors, metavar="RATES",
                   help="band floors, comma-separated fractions (default: the config's table, else "
                        "0.0005,0.001,0.0015,0.002,0.003); |rate| up to the lowest is a band too")
    p.add_argument("--minutes", type=positive_int, default=30, metavar="N", help="entry minutes T-1 ... T-N (30)")
    p.add_argument("--exit-after", type=_minutes_after, metavar="MIN",
                   help="minutes after settlement to exit (default: the config's exit_after_minutes, 1)")
    p.add_argument("--reverse-minutes", type=positive_int, metavar="MIN",
                   help="how long the reversal is held (default: the config's reverse_minutes, 15)")
    p.add_argument("--stop", type=_fraction, default=0.01, metavar="FRACTION",
                   help="adverse move that ends a trade early, fraction of entry (0.01 = 1 %%; 0 = none)")
    p.add_argument("--fee", type=_fee, default=TAKER_FEE, metavar="FEE",
                   help="per fill: taker (0.075 %%, the default: the strategy trades market orders), "
                        "maker (-0.025 %%) or a fraction")
    p.add_argument("--min-count", type=positive_int, default=20, metavar="N",
                   help="trades a band needs before it is suggested (20)")
    p.add_argument("--min-t", type=float, default=2.0, metavar="T",
                   help="t statistic a band's mean needs to hold up (2.0)")
    add_history_args(p, funding=True)
    p.set_defaults(handler=handler(p, _cmd_funding))
