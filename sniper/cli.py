"""`python -m sniper <command>` / `sniper <command>`.

Every user error (unknown command, missing file, bad config) ends with one
line on stderr and exit status 2; a fatal runtime error exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

EXIT_OK, EXIT_FATAL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that says what is wrong in one line and exits 2 (its default code)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _cmd_run(args: argparse.Namespace) -> int:
    from sniper import config
    from sniper.daemon import run_daemon

    url = args.exchange_url
    if url is not None and not url.startswith(("http://", "https://")):
        print(f"sniper run: --exchange-url: expected an http(s):// URL, got {url!r}", file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = config.load(args.config, exchange_url=url)
    except config.ConfigError as exc:
        print(f"sniper: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_daemon(cfg, exchange_url=url, log_format=args.log_format, log_level=args.log_level)


def _cmd_sim(argv: list[str]) -> int:
    """The simulator owns its own options; everything after `sim` goes to it."""
    from sniper.sim import server

    return server.main(argv)


# Each research/tool command lives with the code it drives: the module's `add_cli(sub)` adds its
# subparser(s) and sets `handler` (a function of the parsed args returning the exit status).
# Only the module of the command being run is imported: the daemon never loads the plotting
# and TA-Lib stacks it does not use (memory on a 1 GiB machine, start-up time).
COMMAND_MODULES: dict[str, str] = {
    "history": "sniper.history",
    "features": "sniper.backtest.features_cli",
    "study": "sniper.backtest.study",
    "report": "sniper.backtest.report",
    "train": "sniper.backtest.train",
    "backtest": "sniper.backtest.cli",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `command` (the first argument) only that command's module is imported."""
    parser = _Parser(prog="sniper", description="BitMEX XBTUSD trading daemon, simulator and research tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="run the trading daemon", description="Run the trading daemon.")
    run.add_argument("--config", required=True, help="YAML config, e.g. configs/sim.yaml")
    run.add_argument("--exchange-url", help="trade on this BitMEX-compatible endpoint instead of the config's "
                                            "(e.g. http://127.0.0.1:PORT, an already-running simulator)")
    run.add_argument("--log-format", choices=("text", "json"), help="override logging.format")
    run.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="override logging.level")
    run.set_defaults(handler=_cmd_run)

    # Listed for --help; `main` hands `sim` and its arguments to the simulator before parsing.
    sub.add_parser("sim", help="run the BitMEX-compatible exchange simulator (sniper sim --help)", add_help=False)

    wanted = [COMMAND_MODULES[command]] if command in COMMAND_MODULES else \
        [] if command in sub.choices else list(dict.fromkeys(COMMAND_MODULES.values()))
    for module in wanted:
        importlib.import_module(module).add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sim"]:
        return _cmd_sim(argv[1:])
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
