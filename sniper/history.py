"""The bar and funding store: one SQLite file in the reference system's DB.sqlite schema.

    bmxswap(time INT UNIQUE, open REAL, high REAL, low REAL, close REAL, volume INT)
    bmxfund(time INT UNIQUE, funding REAL)

The schema is kept to the letter so that a user's own DB.sqlite can be read and appended to
as it is, and a file we write stays readable by the reference system.

Time, and where it is converted: in `bmxswap`, as in BitMEX's REST `trade/bucketed`, `time`
is the bucket's END (open time + 60). Everything in sniper speaks open times (sniper.model),
so the conversion (END_OFFSET) happens here only, in the SQL and where REST buckets are read
or asked for: arrays in and out of this module always carry open times. `bmxfund.time` is the settlement instant, the same
everywhere, and is not converted.

Bad data is never patched. Duplicates, out-of-order times, times off the minute, and bad
values (NaN or non-positive prices, low > high, close outside [low, high], negative or
fractional volume) make a load or an append fail with ONE line naming the source, the first
bad row (CSV line or array row), its time and the field, plus how many other rows are bad;
nothing is written then (an append is one transaction). An open outside [low, high] is not
an error: BitMEX's bucket open is the previous bucket's close. Gaps (missing minutes) are
legitimate data (an exchange outage) and are not refused either: `find_gaps` reports them
with their times, `info()` lists them and the CLI prints them, but nothing fills them.

REST sync (`sync`, `rest_bars`, `rest_funding`): pages of 1,000 buckets (500 funding rows)
are each committed in their own transaction, so a sync that is killed resumes from the
store's last bar; pacing is the RestClient's (it reads the rate-limit headers).

`sniper history import|sync|info` is this module's command line (`add_cli`).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import numpy as np
from tqdm import tqdm

from sniper import config
from sniper.clock import RealClock
from sniper.model import BAR_DTYPE, BAR_FIELDS, MINUTE, iso, parse_time
from sniper.rest import ExchangeError, RateLimited, RestClient

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FATAL, EXIT_USAGE = 0, 1, 2
END_OFFSET = MINUTE  # bmxswap.time - open time
BUCKET_PAGE = 1000  # BitMEX's most rows per trade/bucketed request
FUNDING_PAGE = 500
_APPEND_CHUNK = 50_000  # rows per executemany: the progress bar moves this often
_PRICES = ("open", "high", "low", "close")
_BAR_COLUMNS = ("time", "open", "high", "low", "close", "volume")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS bmxswap(time INT UNIQUE, open REAL, high REAL, low REAL, close REAL, volume INT);
CREATE TABLE IF NOT EXISTS bmxfund(time INT UNIQUE, funding REAL);
"""


class HistoryError(Exception):
    """Bad history input or an unusable store; the message is one line naming where and what."""


# ------------------------------------------------------------------------------ validation
def _when(t: float) -> str:
    return f"time {int(t)} = {iso(t)}" if math.isfinite(t) else f"time {t}"


def _reject(source: str, label: Callable[[int], str], times: np.ndarray,
            checks: Sequence[tuple[str, np.ndarray, Callable[[int], str]]]) -> None:
    """Raise HistoryError for the first row any check marks bad: `checks` are
    (field, bad-row mask, describe(row) -> text), in the order fields are named."""
    bad = np.zeros(len(times), dtype=bool)
    for _field, mask, _describe in checks:
        bad |= mask
    if not bad.any():
        return
    i = int(np.argmax(bad))
    field, _, describe = next(c for c in checks if c[1][i])
    others = int(bad.sum()) - 1
    more = f"; {others:,} more bad row{'s' if others > 1 else ''}" if others else ""
    raise HistoryError(f"{source}: {label(i)} ({_when(times[i])}): {field} {describe(i)}{more}")


def _order_checks(times: np.ndarray, after: float | None, step: int):
    """Times must be whole multiples of `step`, each later than the previous row (and than `after`)."""
    prev = np.empty_like(times)
    prev[0] = -np.inf if after is None else after
    prev[1:] = times[:-1]
    with np.errstate(invalid="ignore"):
        return [
            ("time", ~np.isfinite(times), lambda i: "is missing or not a number"),
            ("time", np.isfinite(times) & (times % step != 0),
             lambda i: f"{times[i]:g} is not a whole {'minute' if step == MINUTE else 'second'}"),
            ("time", times == prev, lambda i: "repeats the previous row's time (duplicate)"),
            ("time", times < prev, lambda i: f"is earlier than the previous row's {_when(prev[i])} (out of order)"),
        ]


def _check_bars(cols: Mapping[str, np.ndarray], source: str, label: Callable[[int], str],
                after: float | None = None) -> None:
    """HistoryError for the first bad row of columns time..volume (time = open time)."""
    if len(cols["time"]) == 0:
        return
    t, o, h, lo, c, v = (np.asarray(cols[k], dtype=np.float64) for k in _BAR_COLUMNS)
    checks = _order_checks(t, after, MINUTE)
    for name, x in zip(_PRICES, (o, h, lo, c), strict=True):
        checks.append((name, ~np.isfinite(x), lambda i, x=x: f"{x[i]} is missing or not a number"))
        checks.append((name, x <= 0, lambda i, x=x: f"{x[i]:g} is not a positive price"))
    with np.errstate(invalid="ignore"):
        checks += [
            ("low", lo > h, lambda i: f"{lo[i]:g} is above high {h[i]:g}"),
            ("close", (c < lo) | (c > h), lambda i: f"{c[i]:g} is outside [low {lo[i]:g}, high {h[i]:g}]"),
            ("volume", ~np.isfinite(v), lambda i: f"{v[i]} is missing or not a number"),
            ("volume", v < 0, lambda i: f"{v[i]:g} is negative"),
            ("volume", np.isfinite(v) & (v != np.floor(v)), lambda i: f"{v[i]:g} is not a whole number of contracts"),
        ]
    _reject(source, label, t, checks)


def _as_bars(cols: Mapping[str, np.ndarray], source: str, label: Callable[[int], str],
             after: float | None = None) -> np.ndarray:
    """Checked columns time..volume as a BAR_DTYPE array."""
    _check_bars(cols, source, label, after)
    out = np.empty(len(cols["time"]), dtype=BAR_DTYPE)
    for name in _BAR_COLUMNS:
        out[name] = cols[name]
    return out


def _as_funding(times, rates, source: str, label: Callable[[int], str],
                after: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(times, dtype=np.float64)
    r = np.asarray(rates, dtype=np.float64)
    if len(t) != len(r):
        raise HistoryError(f"{source}: {len(t)} funding times but {len(r)} rates")
    if len(t):
        checks = _order_checks(t, after, 1)
        checks.append(("funding_rate", ~np.isfinite(r), lambda i: f"{r[i]} is missing or not a number"))
        _reject(source, label, t, checks)
    return t.astype(np.int64), r


def check_bars(bars: np.ndarray, source: str = "bars") -> np.ndarray:
    """`bars` (BAR_DTYPE, open times) if valid, else HistoryError naming the first bad row."""
    if not isinstance(bars, np.ndarray) or bars.dtype != BAR_DTYPE:
        raise HistoryError(f"{source}: expected a BAR_DTYPE array, got {getattr(bars, 'dtype', type(bars))}")
    _check_bars({k: bars[k] for k in BAR_FIELDS}, source, lambda i: f"row {i}")
    return bars


def find_gaps(times: np.ndarray) -> list[tuple[int, int]]:
    """Missing minutes in ascending open times: [(first missing open time, minutes missing)]."""
    times = np.asarray(times, dtype=np.int64)
    step = np.diff(times)
    at = np.flatnonzero(step > MINUTE)
    return [(int(times[i]) + MINUTE, int(step[i]) // MINUTE - 1) for i in at]


# ------------------------------------------------------------------------------ CSV files
def _read_csv(path, columns: Sequence[str], aliases: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """The named columns of a CSV(.gz) as float64 (a cell that is not a number becomes NaN,
    which the checks then name with its line)."""
    import pandas as pd  # only here: the daemon never reads CSV, and pandas is 80 MB resident

    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise HistoryError(f"{path}: no such file") from None
    except pd.errors.EmptyDataError:
        raise HistoryError(f"{path}: empty file (expected a header {','.join(columns)})") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise HistoryError(f"{path}: not a readable CSV ({str(exc).strip().splitlines()[-1]})") from None
    df = df.rename(columns={k: v for k, v in (aliases or {}).items() if v not in df.columns})
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise HistoryError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(map(str, df.columns))})")
    return {c: pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64) for c in columns}


def _csv_line(i: int) -> str:
    return f"line {i + 2}"  # line 1 is the header


def load_bars_csv(path) -> np.ndarray:
    """A bars CSV(.gz) (time = bar OPEN, open, high, low, close, volume) -> checked BAR_DTYPE array."""
    return _as_bars(_read_csv(path, _BAR_COLUMNS), str(path), _csv_line)


def load_funding_csv(path) -> tuple[np.ndarray, np.ndarray]:
    """A funding CSV (time = settlement, funding_rate; `funding` accepted as in bmxfund)
    -> checked (times int64, rates float64)."""
    cols = _read_csv(path, ("time", "funding_rate"), {"funding": "funding_rate"})
    return _as_funding(cols["time"], cols["funding_rate"], str(path), _csv_line)


# ------------------------------------------------------------------------------ REST rows
def _num(value) -> float:
    return math.nan if value is None else value


def bars_from_rest(rows: Sequence[Mapping], after: int | None = None,
                   source: str = "GET /trade/bucketed") -> np.ndarray:
    """BitMEX trade/bucketed rows (stamped with the bucket END) -> checked BAR_DTYPE (open
    times), each later than open time `after`."""
    def open_time(row: Mapping) -> float:
        try:
            end = parse_time(row.get("timestamp"))
        except ValueError as exc:
            raise HistoryError(f"{source}: {exc}") from None
        return math.nan if end is None else end - END_OFFSET

    cols = {"time": [open_time(r) for r in rows]}
    for name in _BAR_COLUMNS[1:]:
        cols[name] = [_num(r.get(name)) for r in rows]
    return _as_bars(cols, source, lambda i: f"bucket {i} of the page", after)


def funding_from_rest(rows: Sequence[Mapping], after: float | None = None,
                      source: str = "GET /funding") -> tuple[np.ndarray, np.ndarray]:
    try:
        times = [_num(parse_time(r.get("timestamp"))) for r in rows]
    except ValueError as exc:
        raise HistoryError(f"{source}: {exc}") from None
    return _as_funding(times, [_num(r.get("fundingRate")) for r in rows], source,
                       lambda i: f"row {i} of the page", after)


def _wait_out(rest, fetch: Callable[[], list], patient: bool) -> list:
    """`fetch()`; a patient caller (a long sync) waits out a 429's Retry-After instead of failing."""
    while True:
        try:
            return fetch()
        except RateLimited as exc:
            if not patient:
                raise
            logger.warning("rate limited by the exchange; waiting %.0f s", exc.retry_after)
            rest.clock.sleep(exc.retry_after)


def rest_bars(rest, *, after: int | None = None, until: int | None = None,
              patient: bool = False) -> Iterator[np.ndarray]:
    """The exchange's 1-minute bars with open time > `after` (from its first when None) and
    <= `until` (its newest completed when None), as checked BAR_DTYPE pages of up to 1,000."""
    while True:
        start = None if after is None else after + MINUTE + END_OFFSET  # END of the first wanted bucket
        end = None if until is None else until + END_OFFSET
        rows = _wait_out(rest, lambda s=start, e=end: rest.trade_bucketed(
            start_time=s, end_time=e, count=BUCKET_PAGE), patient)
        page = bars_from_rest(rows, after)
        if len(page):
            yield page
            after = int(page["time"][-1])
        if len(rows) < BUCKET_PAGE:
            return


def rest_funding(rest, *, after: float | None = None, patient: bool = False
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The exchange's funding settlements after `after` (all when None), in pages."""
    while True:
        start = None if after is None else after + 1
        rows = _wait_out(rest, lambda s=start: rest.funding(start_time=s, count=FUNDING_PAGE), patient)
        times, rates = funding_from_rest(rows, after)
        if len(times):
            yield times, rates
            after = int(times[-1])
        if len(rows) < FUNDING_PAGE:
            return


def edge_rest_bar(rest, *, newest: bool = True, patient: bool = False) -> int | None:
    """Open time of the exchange's newest (else first) completed 1-minute bar; None: it has none."""
    rows = _wait_out(rest, lambda: rest.trade_bucketed(count=1, reverse=newest), patient)
    page = bars_from_rest(rows)
    return int(page["time"][0]) if len(page) else None


# ------------------------------------------------------------------------------ the store
def _progress(stream: IO | None, total: int | None, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit=" bars", unit_scale=True, file=stream, disable=stream is None,
                mininterval=0.5, dynamic_ncols=True)


def _where(bounds: Mapping[str, int | None]) -> str:
    """' WHERE time >= a AND time < b' for the bounds given (whole numbers, inlined so the
    planner sees integer bounds on the time index)."""
    terms = [f"time {op} {int(v)}" for op, v in bounds.items() if v is not None]
    return " WHERE " + " AND ".join(terms) if terms else ""


class Store:
    """The SQLite bar/funding store (see the module docstring). One connection, WAL, shared by
    the threads of one process behind a lock (the strategy loop appends, the main thread reads)."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: cannot open ({exc})") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._check_schema()
        except (sqlite3.DatabaseError, HistoryError) as exc:
            self._db.close()
            if isinstance(exc, HistoryError):
                raise
            raise HistoryError(f"{self.path}: not a usable SQLite store ({exc})") from None

    def _check_schema(self) -> None:
        for table, cols in (("bmxswap", _BAR_COLUMNS), ("bmxfund", ("time", "funding"))):
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            missing = [c for c in cols if c not in have]
            if missing:
                raise HistoryError(f"{self.path}: table {table} has no column(s) {', '.join(missing)}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self, sql: str, rows: Iterator[tuple], n: int, progress: IO | None, desc: str) -> int:
        """executemany in chunks inside ONE transaction: all of it or nothing."""
        with self._lock, _progress(progress, n, desc) as bar:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                while chunk := list(itertools.islice(rows, _APPEND_CHUNK)):
                    self._db.executemany(sql, chunk)
                    bar.update(len(chunk))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return self._db.total_changes - before

    # ---- bars --------------------------------------------------------------------------------
    def append_bars(self, bars: np.ndarray, *, progress: IO | None = None) -> int:
        """Add checked bars (open times); times already stored keep their row. Returns the
        number of rows added. `progress`: a stream to draw a progress bar on."""
        bars = check_bars(bars, "append_bars")
        cols = [(bars["time"] + END_OFFSET).tolist()] + [bars[k].tolist() for k in BAR_FIELDS[1:]]
        return self._write("INSERT OR IGNORE INTO bmxswap(time, open, high, low, close, volume) "
                           "VALUES (?, ?, ?, ?, ?, ?)", zip(*cols, strict=True), len(bars), progress, "bars")

    def bars(self, start: int | None = None, end: int | None = None, last: int | None = None) -> np.ndarray:
        """Bars with open time in [start, end), oldest first; with `last`, only the newest `last` of them."""
        if last is not None and last <= 0:
            return np.zeros(0, dtype=BAR_DTYPE)
        bounds = {">=": None if start is None else int(start) + END_OFFSET,
                  "<": None if end is None else int(end) + END_OFFSET}
        with self._lock:
            if last is not None:  # where the newest `last` begin: an index-only scan, then one ascending read
                row = self._db.execute(f"SELECT time FROM bmxswap{_where(bounds)} ORDER BY time DESC LIMIT 1 "
                                       f"OFFSET {int(last) - 1}").fetchone()
                bounds[">="] = bounds[">="] if row is None else row[0]
            rows = self._db.execute(f"SELECT time - {END_OFFSET}, open, high, low, close, volume FROM bmxswap"
                                    f"{_where(bounds)} ORDER BY time")
            try:
                out = np.fromiter(rows, dtype=BAR_DTYPE)
            except (TypeError, ValueError):  # a NULL or text cell in a file another program wrote
                raise self._bad_cell() from None
        return check_bars(out, f"{self.path}: bmxswap")  # NULL prices arrive as NaN: refused here

    def _bad_cell(self) -> HistoryError:
        tests = " OR ".join(f"typeof({c}) NOT IN ('integer', 'real')" for c in _BAR_COLUMNS)
        row = self._db.execute(f"SELECT time, {', '.join(_BAR_COLUMNS)} FROM bmxswap WHERE {tests} "
                               "ORDER BY time LIMIT 1").fetchone()
        if row is None:
            return HistoryError(f"{self.path}: bmxswap holds values that are not numbers")
        field, value = next((c, v) for c, v in zip(_BAR_COLUMNS, row[1:], strict=True)
                            if not isinstance(v, (int, float)))
        t = row[0] - END_OFFSET if isinstance(row[0], (int, float)) else math.nan
        return HistoryError(f"{self.path}: bmxswap row ({_when(t)}): {field} is "
                            f"{'NULL' if value is None else repr(value)}, not a number")

    def last_bar_time(self) -> int | None:
        """Open time of the newest stored bar."""
        with self._lock:
            (end,) = self._db.execute("SELECT max(time) FROM bmxswap").fetchone()
        return None if end is None else int(end) - END_OFFSET

    # ---- funding -----------------------------------------------------------------------------
    def append_funding(self, times, rates) -> int:
        """Add checked settlements (epoch seconds, fractions); stored times keep their row."""
        t, r = _as_funding(times, rates, "append_funding", lambda i: f"row {i}")
        return self._write("INSERT OR IGNORE INTO bmxfund(time, funding) VALUES (?, ?)",
                           zip(t.tolist(), r.tolist(), strict=True), len(t), None, "funding")

    def funding(self, start: float | None = None, end: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Settlements with time in [start, end), oldest first: (times int64, rates float64)."""
        lo = -math.inf if start is None else start
        hi = math.inf if end is None else end
        with self._lock:
            rows = self._db.execute("SELECT time, funding FROM bmxfund WHERE time >= ? AND time < ? ORDER BY time",
                                    (lo, hi)).fetchall()
        times = np.array([r[0] for r in rows], dtype=np.int64)
        rates = np.array([_num(r[1]) for r in rows], dtype=np.float64)
        return times, rates

    def last_funding(self) -> tuple[int, float] | None:
        with self._lock:
            row = self._db.execute("SELECT time, funding FROM bmxfund ORDER BY time DESC LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), float(_num(row[1])))

    # ---- summary -----------------------------------------------------------------------------
    def info(self) -> dict:
        """What the store holds: path, rows, span (first, last open time), gaps, bad (the first
        stored row that fails the checks, as one line, or None), funding rows and last settlement."""
        bad = None
        try:
            times = self.bars()["time"]
        except HistoryError as exc:  # the times still give span and gaps
            bad = str(exc)
            with self._lock:
                times = np.fromiter((r[0] - END_OFFSET for r in self._db.execute(
                    "SELECT time FROM bmxswap WHERE typeof(time) = 'integer' ORDER BY time")), dtype=np.int64)
        with self._lock:
            (rows,) = self._db.execute("SELECT count(*) FROM bmxswap").fetchone()
            (funding_rows,) = self._db.execute("SELECT count(*) FROM bmxfund").fetchone()
        return {
            "path": self.path,
            "rows": int(rows),
            "span": (int(times[0]), int(times[-1])) if len(times) else None,
            "gaps": find_gaps(times),
            "bad": bad,
            "funding_rows": int(funding_rows),
            "last_funding": self.last_funding(),
        }


# ------------------------------------------------------------------------------ sync
def sync(store: Store, rest, *, since: float | None = None, progress: IO | None = None) -> tuple[int, int]:
    """Bring the store up to the exchange: every 1-minute bar after the store's last (after
    `since`, else from the exchange's first, when the store is empty) and every funding
    settlement after the store's last. Each page is committed on its own, so a killed sync
    resumes where it stopped. Returns (bars added, funding rows added)."""
    after = store.last_bar_time()
    if after is None and since is not None:
        after = int(since) // MINUTE * MINUTE - MINUTE
    newest = edge_rest_bar(rest, patient=True)
    first = after + MINUTE if after is not None else edge_rest_bar(rest, newest=False, patient=True)
    total = 0 if newest is None or first is None else max(0, (newest - first) // MINUTE + 1)
    added = 0
    with _progress(progress, total, "sync") as bar:
        for page in rest_bars(rest, after=after, until=newest, patient=True):
            added += store.append_bars(page)
            bar.update(len(page))
    last = store.last_funding()
    funded = 0
    for times, rates in rest_funding(rest, after=None if last is None else last[0], patient=True):
        funded += store.append_funding(times, rates)
    return added, funded


# ------------------------------------------------------------------------------ command line
def _describe(info: dict) -> str:
    lines = [f"{info['path']}: {info['rows']:,} bars"]
    if info["span"]:
        first, last = info["span"]
        lines[0] += f", opening {iso(first)} to {iso(last)}"
    gaps = info["gaps"]
    missing = sum(n for _, n in gaps)
    lines.append(f"gaps: {len(gaps):,} ({missing:,} minutes missing)")
    lines += [f"  gap: {n:,} minutes from {iso(t)}" for t, n in gaps[:20]]
    if len(gaps) > 20:
        lines.append(f"  ... and {len(gaps) - 20:,} more")
    if info["bad"]:
        lines.append(f"bad: {info['bad']}")
    last_funding = info["last_funding"]
    lines.append(f"funding: {info['funding_rows']:,} settlements"
                 + (f", last {iso(last_funding[0])} rate {last_funding[1]:.6f}" if last_funding else ""))
    return "\n".join(lines)


def _db_path(args: argparse.Namespace) -> str:
    if args.db:
        return args.db
    if args.config:
        return config.load(args.config).paths.history
    raise HistoryError("no store: give --db PATH or --config FILE (its paths.history)")


def _open(path: str, create: bool) -> Store:
    if create:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    elif not Path(path).is_file():
        raise HistoryError(f"{path}: no such store")
    return Store(path)


def _cmd_import(args: argparse.Namespace) -> int:
    if not args.file and not args.funding:
        raise HistoryError("nothing to import: give a bars FILE and/or --funding FILE")
    path = _db_path(args)
    bars = load_bars_csv(args.file) if args.file else None  # all of it checked before anything is written
    funding = load_funding_csv(args.funding) if args.funding else None
    with _open(path, create=True) as store:
        if bars is not None:
            for t, n in find_gaps(bars["time"]):
                print(f"{args.file}: gap of {n:,} minutes from {iso(t)} (kept as a gap)", file=sys.stderr)
            added = store.append_bars(bars, progress=sys.stderr)
            print(f"bars: {added:,} added, {len(bars) - added:,} already stored ({store.path})")
        if funding is not None:
            added = store.append_funding(*funding)
            print(f"funding: {added:,} added, {len(funding[0]) - added:,} already stored ({store.path})")
    return EXIT_OK


def _cmd_sync(args: argparse.Namespace) -> int:
    if args.url:
        base, creds, symbol = args.url, None, args.symbol
    elif args.config:
        cfg = config.load(args.config)
        if cfg.exchange.is_sim:
            raise HistoryError(f"{args.config}: exchange.base_url is sim, which has no URL until it runs; "
                               "start it and pass --url http://127.0.0.1:PORT")
        base, creds, symbol = cfg.exchange.rest_base(), cfg.api_credentials(), args.symbol or cfg.exchange.symbol
    else:
        raise HistoryError("no exchange: give --config FILE or --url URL")
    rest = RestClient(base, creds, RealClock(), symbol=symbol or "XBTUSD")
    try:
        since = parse_time(args.since)
    except ValueError as exc:
        raise HistoryError(f"--since: {exc}") from None
    with _open(_db_path(args), create=True) as store:
        try:
            bars, funding = sync(store, rest, since=since, progress=sys.stderr)
        except (ExchangeError, KeyboardInterrupt) as exc:
            last = store.last_bar_time()
            print(f"sniper history sync: stopped ({exc or 'interrupted'}); the store ends at "
                  f"{'nothing' if last is None else iso(last + MINUTE)}: run again to resume", file=sys.stderr)
            return EXIT_FATAL
        last = store.last_bar_time()
    print(f"synced from {base}: {bars:,} bars and {funding:,} funding rows added; the store ends at "
          f"{'nothing' if last is None else iso(last + MINUTE)}")
    return EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    with _open(_db_path(args), create=False) as store:
        print(_describe(store.info()))
    return EXIT_OK


def _handle(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Bad input (a file, a row, a config key) ends with one line and exit 2."""
    def handler(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (HistoryError, config.ConfigError) as exc:
            print(f"sniper history {args.history_command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:
            print(f"sniper history {args.history_command}: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
        except sqlite3.Error as exc:
            print(f"sniper history {args.history_command}: store error: {exc}", file=sys.stderr)
            return EXIT_FATAL

    return handler


def add_cli(sub) -> None:
    """`sniper history import|sync|info` (sniper.cli's COMMAND_MODULES)."""
    text = "sync and inspect the 1-minute OHLCV and funding store (DB.sqlite schema)"
    hist = sub.add_parser("history", help=text, description=text[0].upper() + text[1:] + ".")
    cmds = hist.add_subparsers(dest="history_command", metavar="COMMAND")
    cmds.required = True

    def store_args(p) -> None:
        p.add_argument("--db", help="the store (SQLite, DB.sqlite schema); default: the config's paths.history")
        p.add_argument("--config", help="YAML config (its paths.history is the default store)")

    imp = cmds.add_parser("import", help="import bars (and funding) CSV files into the store",
                          description="Import a 1-minute bars CSV(.gz) (time = bar open, open, high, low, close, "
                                      "volume) and/or a funding CSV (time, funding_rate). A file with a bad row is "
                                      "refused whole, naming the first bad line.")
    imp.add_argument("file", nargs="?", help="bars CSV(.gz)")
    imp.add_argument("--funding", help="funding CSV (time, funding_rate)")
    store_args(imp)
    imp.set_defaults(handler=_handle(_cmd_import))

    syn = cmds.add_parser("sync", help="fetch bars and funding from the exchange's REST API",
                          description="Fetch every 1-minute bar after the store's last and every funding "
                                      "settlement from REST trade/bucketed and funding; resumable after a kill.")
    store_args(syn)
    syn.add_argument("--url", help="a BitMEX-compatible base URL instead of the config's (e.g. a simulator's)")
    syn.add_argument("--symbol", help="instrument (default: the config's, else XBTUSD)")
    syn.add_argument("--since", help="where an empty store starts (ISO-8601 or epoch; default: the exchange's first)")
    syn.set_defaults(handler=_handle(_cmd_sync))

    inf = cmds.add_parser("info", help="span, rows, gaps and last funding of the store",
                          description="Show the store's span, row count, gaps, bad rows and last funding.")
    store_args(inf)
    inf.set_defaults(handler=_handle(_cmd_info))
