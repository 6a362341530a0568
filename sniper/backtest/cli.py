"""`sniper backtest`: one strategy over history (or step-forward windows of it) into a results
directory: trades.csv, equity.csv, stats.json, funding.csv, fills.csv (forecasts.csv for the
motif strategy, windows.csv for a walk-forward) and report.html.

The data is the config's simulator data unless --bars/--funding or --db say otherwise: with no
dates, the simulator's own replay (from sim.start, or the data's default start, to the data's
end), so `sniper backtest --config configs/sim.yaml --out DIR` backtests what `make run` trades,
with everything before as history. With --bars or --db and no dates, the whole history after
the strategy's warm-up. Every bad input is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sniper.backtest.study import _end, _fraction, _when


def windows(text: str) -> tuple[float, float]:
    """--walk-forward TRAIN:TEST, both in days."""
    try:
        train, test = (float(v) for v in text.split(":"))
    except ValueError:
        train = test = -1.0
    if not (train > 0 and test > 0):
        raise argparse.ArgumentTypeError(f"expected TRAIN:TEST days, e.g. 60:7, got {text!r}")
    return train, test


def _data(args: argparse.Namespace, cfg):
    """(bars, (funding times, rates), default start, what to call the bars in messages)."""
    from sniper import history
    from sniper.backtest import UsageError, read_history
    from sniper.model import parse_time
    from sniper.sim import feed

    if args.bars or args.db or args.funding:
        bars, times, rates = read_history(args, funding=True)
        return bars, (times, rates), None, "--bars" if args.bars else "--db"
    sources = (("sim.data", cfg.sim.data or feed.DEFAULT_BARS, history.load_bars_csv),
               ("sim.funding", cfg.sim.funding or feed.DEFAULT_FUNDING, history.load_funding_csv))
    loaded = []
    for key, path, load in sources:
        try:
            loaded.append(load(path))
        except history.HistoryError as exc:
            raise UsageError(f"--config: {cfg.source}: {key}: {exc}") from None
    bars, funding = loaded
    try:
        start = parse_time(cfg.sim.start)
    except ValueError as exc:
        raise UsageError(f"--config: {cfg.source}: sim.start: {exc}") from None
    if start is None and len(bars):
        start = feed.default_start(bars)
    return bars, funding, None if start is None else int(start) // 60 * 60, "sim.data"


def _cmd_backtest(args: argparse.Namespace) -> int:
    from sniper.backtest import UsageError, read_config
    from sniper.backtest.engine import BacktestError, run, walk_forward

    if not args.config:
        raise UsageError("--config: required (a YAML config, e.g. configs/sim.yaml)")
    cfg = read_config(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a directory")
    if args.start is not None and args.end is not None and args.start >= args.end:
        raise UsageError("--from/--to: empty range: --from must come before --to (a bare --to date includes its day)")
    bars, funding, default_start, source = _data(args, cfg)
    start = args.start if args.start is not None else default_start
    options = {"start": start, "end": args.end, "fill": args.fill, "progress": args.progress,
               "slippage": args.slippage}
    names = {"start": "--from", "end": "--to", "bars": source, "funding": "--funding" if args.bars else source}
    try:
        if args.walk_forward:
            train, test = args.walk_forward
            result = walk_forward(cfg, bars, funding, train_days=train, test_days=test, **options)
        else:
            result = run(cfg, bars, funding, **options)
    except BacktestError as exc:
        raise UsageError(f"{names[exc.field]}: {exc}") from None
    result.write(out, report=not args.no_report)
    s = result.stats
    print(f"sniper backtest {s['strategy']} ({s['fill_model']} fills) {s['start']} - {s['end']}: "
          f"return {s['total_return']:+.2%} (buy-and-hold {s['buy_hold_return']:+.2%}), XBT {s['total_return_xbt']:+.2%}, "
          f"max drawdown {s['max_drawdown']:.2%}, {s['trades']} trades, fees {s['fees_xbt']:+.6f} XBT, "
          f"funding {s['funding_received_xbt'] - s['funding_paid_xbt']:+.6f} XBT")
    print(f"wrote {out}/", file=sys.stderr)
    return 0


def add_cli(sub) -> None:
    from sniper.backtest import add_history_args, handler
    from sniper.backtest.fills import DEFAULT_SLIPPAGE

    p = sub.add_parser(
        "backtest", help="run a strategy over history against the simulated exchange",
        description="Backtest the config's strategy bar by bar (the daemon's strategy objects, risk gate and, "
                    "with --fill book, its order manager on the simulator's exchange), with the simulator's fee, "
                    "funding, margin and liquidation arithmetic. Data: the config's simulator data (with no "
                    "dates: its replay span, everything before as history), or --bars/--funding, or --db (with "
                    "no dates: the whole history after the warm-up). Writes trades.csv, equity.csv, stats.json, "
                    "funding.csv, fills.csv (forecasts.csv, windows.csv) and report.html into --out.")
    add_history_args(p, funding=True)
    p.add_argument("--from", dest="start", type=_when, metavar="DATE",
                   help="first traded bar (UTC date or time); earlier bars are history")
    p.add_argument("--to", dest="end", type=_end, metavar="DATE",
                   help="last day traded (UTC date), or the time trading stops before")
    p.add_argument("--out", required=True, metavar="DIR", help="results directory (created)")
    p.add_argument("--fill", choices=("bars", "book"), default="bars",
                   help="bars: fills against each bar's range, fast (default); book: the daemon's order manager on "
                        "the simulator's exchange and feed")
    p.add_argument("--slippage", type=_fraction, default=DEFAULT_SLIPPAGE, metavar="FRACTION",
                   help=f"bars model: market orders fill this fraction beyond the close ({DEFAULT_SLIPPAGE:g})")
    p.add_argument("--walk-forward", type=windows, metavar="TRAIN:TEST",
                   help="step forward: windows of TRAIN days then TEST days, rolled by TEST; the test windows "
                        "concatenated, each run with the config's parameters (sniper train --walk-forward searches them "
                        "on every train window)")
    p.add_argument("--no-report", action="store_true", help="write the CSVs and stats.json only")
    p.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    p.set_defaults(handler=handler(p, _cmd_backtest))
