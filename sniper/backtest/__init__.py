"""Research side: funding study, report (and the backtester and trainer to come).

The research commands read history and report bad input alike, so the few pieces they share
live here: the history options (`--config`, `--db`, `--bars`, `--funding`), reading them, and
`UsageError`, which a command's handler turns into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


class UsageError(Exception):
    """A bad command-line input; the message starts with the option it is about."""


def handler(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int]):
    """`run` as a CLI handler: a UsageError becomes the parser's one-line error (exit 2), even
    when it quotes a multi-line message of a library."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except UsageError as exc:
            parser.error(" ".join(str(exc).split()))

    return wrapped


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse names the option in its message)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def add_history_args(p: argparse.ArgumentParser, *, funding: bool) -> None:
    p.add_argument("--config", help="YAML config; its paths.history is the default --db")
    p.add_argument("--db", help="history store (SQLite) to read (default: the config's paths.history)")
    p.add_argument("--bars", help="read 1-minute bars from this CSV(.gz) instead "
                                  "(time,open,high,low,close,volume; time = bar open, epoch s)")
    if funding:
        p.add_argument("--funding", help="with --bars: funding CSV (time,funding_rate; time = settlement)")


def read_config(args: argparse.Namespace):
    """The --config file as a Config, or None when none was given."""
    if not args.config:
        return None
    from sniper import config

    try:
        return config.load(args.config)
    except config.ConfigError as exc:
        raise UsageError(f"--config: {exc}") from None


def read_history(args: argparse.Namespace, *, funding: bool):
    """(bars, funding times, funding rates) from --bars/--funding or the store (sniper.history
    checks either); the funding arrays are empty when `funding` is false."""
    import numpy as np

    from sniper import history

    try:
        if args.bars:
            if funding and not args.funding:
                raise UsageError("--funding: needed with --bars (a time,funding_rate CSV)")
            bars = _option("--bars", history.load_bars_csv, args.bars)
            times, rates = (_option("--funding", history.load_funding_csv, args.funding) if funding
                            else (np.empty(0, np.int64), np.empty(0)))
            return bars, times, rates
        if getattr(args, "funding", None):
            raise UsageError("--funding: goes with --bars (or read both from --db)")
        cfg = read_config(args)
        path = Path(args.db or (cfg.paths.history if cfg else "var/history.sqlite"))
        if not path.is_file():
            raise UsageError(f"--db: no history store at {path} (pass --db PATH, or --bars CSV"
                             f"{' --funding CSV' if funding else ''})")
        with history.Store(path) as store:
            times, rates = store.funding() if funding else (np.empty(0, np.int64), np.empty(0))
            return store.bars(), times, rates
    except history.HistoryError as exc:
        raise UsageError(f"--db: {exc}") from None


def _option(option: str, load, path):
    """`load(path)`, its HistoryError (which names the file and line) worded for `option`."""
    from sniper import history

    try:
        return load(path)
    except history.HistoryError as exc:
        raise UsageError(f"{option}: {exc}") from None
