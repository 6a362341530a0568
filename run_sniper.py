#!/usr/bin/env python3
"""Production entry: `python run_sniper.py --config FILE` is `sniper run --config FILE`."""

import sys

from sniper.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", *sys.argv[1:]]))
