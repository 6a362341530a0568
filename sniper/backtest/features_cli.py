"""`sniper features`: the TA-Lib feature suite (sniper/features.py) over random windows of the
bar store, written as Parquet or CSV. The command lives with the research tools, so the
feature code itself stays a bottom-layer library the strategies may use."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sniper.backtest import UsageError, add_history_args, handler, positive_int, read_history
from sniper.features import COLUMNS, sample, write_table

OUT_SUFFIXES = (".parquet", ".csv", ".csv.gz")


def _cmd_features(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not str(out).endswith(OUT_SUFFIXES):
        raise UsageError(f"--out: expected a file ending in {', '.join(OUT_SUFFIXES)}, got {args.out!r}")
    if not out.parent.is_dir():
        raise UsageError(f"--out: no such directory {out.parent}")
    bars, _, _ = read_history(args, funding=False)
    try:
        table = sample(bars, args.sample, args.window, np.random.default_rng(args.seed))
    except ValueError as exc:
        raise UsageError(f"--sample/--window: {exc}") from None
    write_table(table, out)
    print(f"{out}: {args.sample} windows x {args.window} bars, {len(COLUMNS)} features", file=sys.stderr)
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("features", help="compute the TA-Lib feature suite over random windows of history",
                       description="Sample N random windows of W consecutive minutes from history, compute "
                                   f"the {len(COLUMNS)} TA-Lib features over each and store them "
                                   "(one row per bar: sample, time, OHLCV, features).")
    p.add_argument("--sample", type=positive_int, required=True, metavar="N", help="windows to draw")
    p.add_argument("--window", type=positive_int, required=True, metavar="W", help="bars per window")
    p.add_argument("--out", required=True, metavar="FILE", help="output: .parquet (pyarrow), .csv or .csv.gz")
    p.add_argument("--seed", type=int, default=0, help="random seed of the draw (default 0)")
    add_history_args(p, funding=False)
    p.set_defaults(handler=handler(p, _cmd_features))
