"""The bar store's two performance claims, each against baselines measured in the same run:

- import the full 2017-2020 file (2,022,000 minutes, ../shared/data/xbtusd_1m.csv.gz) with
  `sniper history import` (progress bar included) in < 30 s; baseline: pandas `read_csv` +
  `DataFrame.to_sql` into the same reference schema;
- load a year of minutes (525,600 rows) from the store into a BAR_DTYPE array in < 0.5 s
  (`Store.bars(last=...)`); baselines: `pandas.read_sql` of the same query, and a naive loop
  that appends each row's fields to Python lists.

    .venv/bin/python benchmarks/bench_history.py [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sniper import cli  # noqa: E402
from sniper.history import Store  # noqa: E402
from sniper.model import BAR_DTYPE  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "xbtusd_1m.csv.gz"
YEAR = 525_600
FLOORS = {"import_s": 30.0, "year_s": 0.5}
REFERENCE_SCHEMA = "CREATE TABLE bmxswap(time INT UNIQUE, open REAL, high REAL, low REAL, close REAL, volume INT)"


def verdict(ok: bool) -> str:
    return "meets floor" if ok else "BELOW FLOOR"


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def import_ours(db: Path) -> int:
    status = cli.main(["history", "import", str(DATA), "--db", str(db)])
    assert status == 0, status
    return status


def import_pandas(db: Path) -> None:
    df = pd.read_csv(DATA)
    df["time"] += 60  # the schema's bucket END times
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute(REFERENCE_SCHEMA)
        df.to_sql("bmxswap", conn, if_exists="append", index=False, chunksize=50_000)
        conn.commit()


def year_query(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (end,) = conn.execute("SELECT max(time) FROM bmxswap").fetchone()
    return (f"SELECT time - 60 AS time, open, high, low, close, volume FROM bmxswap "
            f"WHERE time > {end - YEAR * 60} ORDER BY time")


def load_read_sql(db: Path, sql: str) -> np.ndarray:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        df = pd.read_sql(sql, conn)
    out = np.empty(len(df), dtype=BAR_DTYPE)
    for name in BAR_DTYPE.names:
        out[name] = df[name].to_numpy()
    return out


def load_row_loop(db: Path, sql: str) -> np.ndarray:
    cols: list[list] = [[] for _ in BAR_DTYPE.names]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for row in conn.execute(sql):
            for col, value in zip(cols, row, strict=True):
                col.append(value)
    out = np.empty(len(cols[0]), dtype=BAR_DTYPE)
    for name, col in zip(BAR_DTYPE.names, cols, strict=True):
        out[name] = col
    return out


def best_of(n: int, fn) -> tuple[float, float, object]:
    """(median, min) seconds of n runs, and the last result."""
    times, out = [], None
    for _ in range(n):
        t, out = timed(fn)
        times.append(t)
    return statistics.median(times), min(times), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each year load (median reported)")
    args = parser.parse_args()
    if not DATA.exists():
        print(f"{DATA} missing; nothing to measure")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        ours_db, pandas_db = Path(tmp) / "ours.sqlite", Path(tmp) / "pandas.sqlite"
        print(f"== import {DATA.name} (sniper history import, progress bar on stderr)")
        import_s, _ = timed(lambda: import_ours(ours_db))
        base_s, _ = timed(lambda: import_pandas(pandas_db))
        with Store(ours_db) as store:
            rows = store.info()["rows"]
        print(f"sniper history import      {import_s:7.2f} s  {rows / import_s:>12,.0f} rows/s  "
              f"[{verdict(import_s < FLOORS['import_s'])}: < {FLOORS['import_s']:.0f} s]")
        print(f"baseline read_csv + to_sql {base_s:7.2f} s  {rows / base_s:>12,.0f} rows/s  "
              f"ratio {base_s / import_s:.2f}x")

        print(f"\n== load the newest {YEAR:,} bars into NumPy (median of {args.repeat})")
        sql = year_query(ours_db)
        with Store(ours_db) as store:
            ours_med, ours_min, year = best_of(args.repeat, lambda: store.bars(last=YEAR))
        sql_med, _, via_sql = best_of(args.repeat, lambda: load_read_sql(ours_db, sql))
        loop_med, _, via_loop = best_of(args.repeat, lambda: load_row_loop(ours_db, sql))
        assert len(year) == YEAR and np.array_equal(year, via_sql) and np.array_equal(year, via_loop)
        print(f"Store.bars(last=)          {ours_med:7.3f} s  (min {ours_min:.3f})  "
              f"[{verdict(ours_med < FLOORS['year_s'])}: < {FLOORS['year_s']} s]")
        print(f"baseline pandas.read_sql   {sql_med:7.3f} s  ratio {sql_med / ours_med:.2f}x")
        print(f"baseline row loop          {loop_med:7.3f} s  ratio {loop_med / ours_med:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
