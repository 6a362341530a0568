"""The bar/funding store against real files: a DB.sqlite in the reference schema (bucket END
times) read and appended to, CSV imports that refuse bad rows whole, and REST sync from a real
simulator on 127.0.0.1, resumable after a kill."""

from __future__ import annotations

import io
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA

from sniper import history
from sniper.clock import RealClock
from sniper.history import HistoryError, Store
from sniper.model import BAR_DTYPE, BAR_FIELDS, iso
from sniper.rest import RestClient

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_SCHEMA = {  # the reference system's DB.sqlite, verbatim
    "bmxswap": "CREATE TABLE bmxswap(time INT UNIQUE, open REAL, high REAL, low REAL, close REAL, volume INT)",
    "bmxfund": "CREATE TABLE bmxfund(time INT UNIQUE, funding REAL)",
}
HEADER = "time,open,high,low,close,volume\n"
T0 = 1542585600  # 2018-11-19T00:00:00Z: where the test market's minutes begin
MINUTES = 4320  # three days of them


@dataclass(frozen=True)
class Market:
    """Three days of real minutes and their funding, cut from the shared data into files of
    our own (what a simulator replays, what the store should end up holding)."""

    bars_csv: Path
    funding_csv: Path
    frame: pd.DataFrame  # read with pandas alone, to check our loaders against
    funding: pd.DataFrame

    @property
    def end(self) -> int:
        return T0 + MINUTES * 60  # the end of the last minute

    def bars(self) -> np.ndarray:
        out = np.empty(len(self.frame), dtype=BAR_DTYPE)
        for name in BAR_FIELDS:
            out[name] = self.frame[name].to_numpy()
        return out

    def funding_until(self, t: float) -> pd.DataFrame:
        return self.funding[self.funding["time"] <= t]


@pytest.fixture(scope="session")
def market(tmp_path_factory) -> Market:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    root = tmp_path_factory.mktemp("market")
    minutes = pd.read_csv(SHARED_DATA / "xbtusd_1m.csv.gz")
    frame = minutes[(minutes["time"] >= T0) & (minutes["time"] < T0 + MINUTES * 60)].reset_index(drop=True)
    funding = pd.read_csv(SHARED_DATA / "xbtusd_funding.csv")
    funding = funding[(funding["time"] > T0 - 86400) & (funding["time"] < T0 + MINUTES * 60 + 86400)]
    market = Market(root / "bars.csv.gz", root / "funding.csv", frame, funding.reset_index(drop=True))
    frame.to_csv(market.bars_csv, index=False)
    market.funding.to_csv(market.funding_csv, index=False)
    return market


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "sniper", "history", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def stored_rows(path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM bmxswap").fetchone()[0]


# ------------------------------------------------------------------------------ DB.sqlite compatibility
def test_a_reference_db_sqlite_is_read_with_open_times_and_appended_to_with_end_times(tmp_path, market):
    bars = market.bars()
    path = tmp_path / "DB.sqlite"
    with sqlite3.connect(path) as db:  # made the way the reference system made it: no WAL, END times
        for sql in REFERENCE_SCHEMA.values():
            db.execute(sql)
        db.executemany("INSERT INTO bmxswap VALUES (?, ?, ?, ?, ?, ?)",
                       [(int(b["time"]) + 60, *(float(b[k]) for k in ("open", "high", "low", "close")),
                         int(b["volume"])) for b in bars[:1000]])
        db.executemany("INSERT INTO bmxfund VALUES (?, ?)", [(1542513600, -9.7e-05), (1542542400, 0.0001)])
    db.close()

    with Store(path) as store:
        assert np.array_equal(store.bars(), bars[:1000])  # open times out, exactly the values in
        assert store.last_bar_time() == int(bars["time"][999])
        assert store.append_bars(bars[500:1500]) == 500  # the overlap is kept, the rest added
        assert store.last_funding() == (1542542400, 0.0001)

    with sqlite3.connect(path) as db:
        schema = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
        raw = db.execute("SELECT time, open, high, low, close, volume FROM bmxswap ORDER BY time").fetchall()
    assert schema == REFERENCE_SCHEMA  # untouched: the reference system can still read it
    assert [r[0] for r in raw] == (bars["time"][:1500] + 60).tolist()  # bucket END times on disk
    assert raw[1499][1:] == tuple(bars[1499].tolist()[1:])


def test_a_new_store_has_the_reference_schema_and_wal(tmp_path):
    path = tmp_path / "new.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as db:
        schema = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert schema == REFERENCE_SCHEMA


def test_a_file_that_is_not_a_store_is_named(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(HistoryError, match="junk.sqlite: not a usable SQLite store"):
        Store(junk)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE bmxswap(time INT UNIQUE, open REAL)")
    db.close()
    with pytest.raises(HistoryError, match="table bmxswap has no column"):
        Store(other)


# ------------------------------------------------------------------------------ reading and appending
def test_append_is_idempotent_on_time(tmp_path, market):
    bars = market.bars()
    with Store(tmp_path / "h.sqlite") as store:
        assert store.append_bars(bars[:100]) == 100
        assert store.append_bars(bars[:100]) == 0
        changed = bars[50:150].copy()
        changed["close"][:50] += 1  # times already stored keep their first row
        changed["high"][:50] += 1
        assert store.append_bars(changed) == 50
        assert np.array_equal(store.bars(), np.concatenate([bars[:100], changed[50:]]))


def test_bars_windows_are_half_open_on_open_times(tmp_path, market):
    bars = market.bars()[:500]
    t = bars["time"]
    with Store(tmp_path / "h.sqlite") as store:
        store.append_bars(bars)
        assert np.array_equal(store.bars(start=int(t[10]), end=int(t[20])), bars[10:20])
        assert np.array_equal(store.bars(last=7), bars[-7:])
        assert np.array_equal(store.bars(end=int(t[100]), last=3), bars[97:100])
        assert np.array_equal(store.bars(start=int(t[495]), last=50), bars[495:])
        assert len(store.bars(last=0)) == 0 and len(store.bars(start=int(t[5]), end=int(t[5]))) == 0
        assert store.bars().dtype == BAR_DTYPE


def test_empty_store(tmp_path):
    with Store(tmp_path / "h.sqlite") as store:
        assert len(store.bars()) == 0 and store.last_bar_time() is None and store.last_funding() is None
        times, rates = store.funding()
        assert times.dtype == np.int64 and rates.dtype == np.float64 and len(times) == 0
        info = store.info()
        assert info["rows"] == 0 and info["span"] is None and info["gaps"] == [] and info["bad"] is None


def test_a_cell_another_program_left_null_is_named_not_read_as_a_number(tmp_path, market):
    path = tmp_path / "DB.sqlite"
    bars = market.bars()[:10]
    with Store(path) as store:
        store.append_bars(bars)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE bmxswap SET low = NULL WHERE time = ?", (int(bars["time"][4]) + 60,))
        db.execute("UPDATE bmxswap SET volume = NULL WHERE time = ?", (int(bars["time"][7]) + 60,))
    db.close()
    with Store(path) as store:
        with pytest.raises(HistoryError, match=rf"time {bars['time'][4]} .*\): low is NULL, not a number"):
            store.bars()  # the NULL volume stops the read; the first bad cell is named
        assert len(store.bars(end=int(bars["time"][4]))) == 4
        with pytest.raises(HistoryError, match=rf"time {bars['time'][4]} .*\): low nan is missing"):
            store.bars(end=int(bars["time"][6]))
        info = store.info()
    assert "low is NULL" in info["bad"] and info["rows"] == 10
    assert info["span"] == (bars["time"][0], bars["time"][9]) and info["gaps"] == []


# ------------------------------------------------------------------------------ CSV files
def test_load_bars_csv_matches_an_independent_read(tmp_path, market):
    bars = history.load_bars_csv(market.bars_csv)
    assert bars.dtype == BAR_DTYPE and len(bars) == len(market.frame) == MINUTES
    for name in BAR_FIELDS:
        assert np.array_equal(bars[name], market.frame[name].to_numpy()), name
    plain = tmp_path / "plain.csv"
    market.frame.to_csv(plain, index=False)
    assert np.array_equal(history.load_bars_csv(plain), bars)


def test_load_funding_csv(tmp_path, market):
    times, rates = history.load_funding_csv(market.funding_csv)
    assert times.dtype == np.int64 and times.tolist() == market.funding["time"].tolist()
    assert rates.tolist() == market.funding["funding_rate"].tolist()
    as_db = tmp_path / "fund.csv"  # bmxfund's column name is accepted too
    as_db.write_text("time,funding\n1542513600,-9.7e-05\n1542542400,0.0001\n")
    assert history.load_funding_csv(as_db)[1].tolist() == [-9.7e-05, 0.0001]


@pytest.mark.parametrize("row, line, field, says", [
    (f"{T0 + 60},5556,5550,5551,5552,10", 3, "low", "5551 is above high 5550"),
    (f"{T0 + 60},5556,5560,5551,5549,10", 3, "close", "5549 is outside [low 5551, high 5560]"),
    (f"{T0 + 60},5556,5560,5551,5562,10", 3, "close", "outside"),
    (f"{T0 + 60},5556,,5551,5552,10", 3, "high", "nan is missing or not a number"),
    (f"{T0 + 60},5556,5560,abc,5552,10", 3, "low", "nan is missing or not a number"),
    (f"{T0 + 60},5556,5560,5551,5552,-1", 3, "volume", "-1 is negative"),
    (f"{T0 + 60},5556,5560,5551,5552,1.5", 3, "volume", "not a whole number of contracts"),
    (f"{T0 + 60},0,5560,5551,5552,1", 3, "open", "0 is not a positive price"),
    (f"{T0},5556,5560,5551,5552,1", 3, "time", "repeats the previous row's time (duplicate)"),
    (f"{T0 - 60},5556,5560,5551,5552,1", 3, "time", "is earlier than the previous row's"),
    (f"{T0 + 90},5556,5560,5551,5552,1", 3, "time", "is not a whole minute"),
])
def test_a_bad_row_fails_the_import_naming_line_time_and_field_and_writes_nothing(tmp_path, market, row, line,
                                                                                   field, says):
    good = f"{T0},5556,5557,5556,5556.5,985915"
    bad = write_csv(tmp_path / "bad.csv", [good, row, f"{T0 + 600},5556,5557,5556,5556.5,1"])
    with pytest.raises(HistoryError) as err:
        history.load_bars_csv(bad)
    message = str(err.value)
    assert message.startswith(f"{bad}: line {line} (time ") and f"): {field} " in message and says in message
    assert "\n" not in message

    db = tmp_path / "h.sqlite"
    with Store(db) as store:
        store.append_bars(market.bars()[:5])
    result = cli("import", bad, "--db", db)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"line {line}" in result.stderr and says in result.stderr
    assert stored_rows(db) == 5  # nothing of the file was written


def test_an_open_outside_its_bar_is_bitmex_and_accepted(tmp_path):
    path = write_csv(tmp_path / "ok.csv", [f"{T0},5556,5557,5556,5556.5,10", f"{T0 + 60},5556.5,5550,5540,5545,3"])
    assert history.load_bars_csv(path)["open"].tolist() == [5556.0, 5556.5]


def test_every_bad_row_is_counted_in_the_one_line(tmp_path):
    rows = [f"{T0 + 60 * i},5556,5557,5558,5556.5,10" for i in range(5)]  # low > high everywhere
    with pytest.raises(HistoryError, match=r"line 2 .*; 4 more bad rows$"):
        history.load_bars_csv(write_csv(tmp_path / "bad.csv", rows))


@pytest.mark.parametrize("content, says", [
    ("", "empty file"),
    ("time,open,high,low,close\n1,2,3,4,5\n", "missing column(s) volume"),
    ("time,open,high,low,close,volume\n1,2,3\n4,5,6,7,8,9,10,11\n", "not a readable CSV"),
])
def test_unreadable_files_are_named(tmp_path, content, says):
    path = tmp_path / "f.csv"
    path.write_text(content)
    with pytest.raises(HistoryError) as err:
        history.load_bars_csv(path)
    assert str(err.value).startswith(f"{path}: ") and says in str(err.value)
    with pytest.raises(HistoryError, match="absent.csv.gz: no such file"):
        history.load_bars_csv(tmp_path / "absent.csv.gz")


def test_bad_funding_rows_are_named(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("time,funding_rate\n1542513600,0.0001\n1542542400,\n")
    with pytest.raises(HistoryError, match=r"line 3 \(time 1542542400 .*\): funding_rate nan is missing"):
        history.load_funding_csv(path)
    path.write_text("time,funding_rate\n1542542400,0.0001\n1542513600,0.0002\n")
    with pytest.raises(HistoryError, match=r"line 3 .*: time is earlier than the previous row's"):
        history.load_funding_csv(path)
    with Store(tmp_path / "h.sqlite") as store, pytest.raises(HistoryError, match="row 1 .*duplicate"):
        store.append_funding([1542513600, 1542513600], [0.1, 0.2])


def test_append_bars_checks_its_array(tmp_path, market):
    bars = market.bars()[:3]
    bars["low"][1] = np.nan
    with Store(tmp_path / "h.sqlite") as store:
        with pytest.raises(HistoryError, match=rf"append_bars: row 1 \(time {T0 + 60} .*\): low nan is missing"):
            store.append_bars(bars)
        with pytest.raises(HistoryError, match="expected a BAR_DTYPE array"):
            store.append_bars(np.zeros(3))
        assert store.last_bar_time() is None


# ------------------------------------------------------------------------------ gaps
def test_gaps_are_reported_with_their_times_never_filled(tmp_path, market):
    bars = market.bars()[:100]
    holed = np.concatenate([bars[:10], bars[13:50], bars[51:]])
    assert history.find_gaps(holed["time"]) == [(int(bars["time"][10]), 3), (int(bars["time"][50]), 1)]
    path = tmp_path / "holed.csv"
    pd.DataFrame(holed).to_csv(path, index=False)
    db = tmp_path / "h.sqlite"
    result = cli("import", path, "--db", db)
    assert result.returncode == 0, result.stderr
    assert f"gap of 3 minutes from {iso(bars['time'][10])}" in result.stderr
    assert f"gap of 1 minutes from {iso(bars['time'][50])}" in result.stderr
    with Store(db) as store:
        assert len(store.bars()) == 96
        assert store.info()["gaps"] == [(int(bars["time"][10]), 3), (int(bars["time"][50]), 1)]
    info = cli("info", "--db", db)
    assert info.returncode == 0 and "gaps: 2 (4 minutes missing)" in info.stdout
    assert f"3 minutes from {iso(bars['time'][10])}" in info.stdout


# ------------------------------------------------------------------------------ the command line
def test_import_and_info_cli(tmp_path, market):
    db = tmp_path / "var" / "history.sqlite"
    result = cli("import", market.bars_csv, "--funding", market.funding_csv, "--db", db)
    assert result.returncode == 0, result.stderr
    n_funding = len(market.funding)
    assert "bars: 4,320 added, 0 already stored" in result.stdout
    assert f"funding: {n_funding} added" in result.stdout
    again = cli("import", market.bars_csv, "--db", db)
    assert again.returncode == 0 and "bars: 0 added, 4,320 already stored" in again.stdout
    info = cli("info", "--db", db)
    assert info.returncode == 0, info.stderr
    assert "4,320 bars, opening 2018-11-19T00:00:00.000Z to 2018-11-21T23:59:00.000Z" in info.stdout
    last_time, last_rate = market.funding.iloc[-1]
    assert "gaps: 0" in info.stdout
    assert f"funding: {n_funding} settlements, last {iso(last_time)} rate {last_rate:.6f}" in info.stdout
    with Store(db) as store:
        assert np.array_equal(store.bars(), market.bars())
        assert store.info()["last_funding"] == (int(last_time), last_rate)


@pytest.mark.parametrize("args, says", [
    (("import", "no/such.csv", "--db", "{tmp}/h.sqlite"), "no/such.csv: no such file"),
    (("import", "--db", "{tmp}/h.sqlite"), "nothing to import"),
    (("import", "{tmp}/any.csv"), "no store: give --db PATH or --config FILE"),
    (("info", "--db", "{tmp}/absent.sqlite"), "absent.sqlite: no such store"),
    (("info", "--config", "{tmp}/absent.yaml"), "absent.yaml: config file not found"),
    (("sync", "--db", "{tmp}/h.sqlite"), "no exchange: give --config FILE or --url URL"),
    (("sync", "--config", str(ROOT / "configs" / "sim.yaml"), "--db", "{tmp}/h.sqlite"),
     "base_url is sim, which has no URL until it runs"),
    (("sync", "--url", "http://127.0.0.1:9", "--since", "yesterday", "--db", "{tmp}/h.sqlite"), "--since: not a time"),
])
def test_cli_mistakes_exit_2_with_one_line(tmp_path, args, says):
    result = cli(*(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert says in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_an_unreachable_exchange_exits_1_with_one_line(tmp_path):
    result = cli("sync", "--url", "http://127.0.0.1:9", "--db", tmp_path / "h.sqlite")
    assert result.returncode == 1 and "stopped" in result.stderr and "run again to resume" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------ REST sync
def market_sim(sim_factory, market, **opts):
    """A simulator replaying the test market whose clock stands at its end: every bar is past."""
    return sim_factory(data=market.bars_csv, funding=market.funding_csv, start=market.end, rate_limit=0, **opts)


def test_sync_from_a_simulator_fills_the_store_and_a_second_sync_adds_nothing(sim_factory, tmp_path, market):
    sim = market_sim(sim_factory, market)
    db = tmp_path / "h.sqlite"
    result = cli("sync", "--url", sim.url, "--db", db)
    assert result.returncode == 0, result.stderr
    settled = market.funding_until(market.end)
    assert f"4,320 bars and {len(settled)} funding rows added" in result.stdout
    with Store(db) as store:
        assert np.array_equal(store.bars(), market.bars())
        times, rates = store.funding()
    assert times.tolist() == settled["time"].tolist() and rates.tolist() == settled["funding_rate"].tolist()
    requests_before = sim.state()["counters"]["rest_requests"]
    again = cli("sync", "--url", sim.url, "--db", db)
    assert again.returncode == 0 and "0 bars and 0 funding rows added" in again.stdout
    assert sim.state()["counters"]["rest_requests"] - requests_before == 3  # newest bar, one page, funding


def test_sync_continues_from_the_store_after_a_kill(sim_factory, tmp_path, market):
    sim = market_sim(sim_factory, market)
    sim.control("fault", {"mode": "timeout", "delay_ms": 700})  # every answer late: the sync is slow
    db = tmp_path / "h.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "sniper", "history", "sync", "--url", sim.url, "--db", str(db)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _rows_or_zero(db) < 1000:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = _rows_or_zero(db)
    assert 1000 <= partial < MINUTES, partial  # killed part-way, whole pages committed
    with Store(db) as store:
        assert np.array_equal(store.bars(), market.bars()[:partial])
    sim.control("fault", method="DELETE")
    before = sim.state()["counters"]["rest_requests"]
    result = cli("sync", "--url", sim.url, "--db", db)
    assert result.returncode == 0, result.stderr
    assert f"{MINUTES - partial:,} bars" in result.stdout
    pages = -(-(MINUTES - partial) // 1000)
    assert sim.state()["counters"]["rest_requests"] - before == 1 + pages + 1  # from the store's last bar on
    with Store(db) as store:
        assert np.array_equal(store.bars(), market.bars()) and store.info()["gaps"] == []


def _rows_or_zero(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM bmxswap").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not created yet
        return 0


def test_sync_waits_out_a_long_rate_limit_and_draws_a_progress_bar(sim_factory, tmp_path, market):
    sim = market_sim(sim_factory, market)
    rest = RestClient(sim.url, None, RealClock(), max_elapsed=0.2)  # a Retry-After beyond this is ours to wait
    sim.control("fault", {"mode": "ratelimit", "seconds": 2})
    shown = io.StringIO()
    started = time.monotonic()
    with Store(tmp_path / "h.sqlite") as store:
        assert history.sync(store, rest, progress=shown) == (MINUTES, len(market.funding_until(market.end)))
        assert np.array_equal(store.bars(), market.bars())
    assert time.monotonic() - started >= 1.5
    text = shown.getvalue()
    assert "sync: 100%" in text and "4.32k/4.32k" in text


def test_sync_into_the_configs_history_path(sim_factory, tmp_path, market):
    sim = market_sim(sim_factory, market)
    cfg = tmp_path / "sim.yaml"
    db = tmp_path / "var" / "hist.sqlite"
    cfg.write_text(f"exchange:\n  base_url: sim\npaths:\n  history: {db}\n")
    result = cli("sync", "--config", cfg, "--url", sim.url, "--since", iso(market.end - 120 * 60))
    assert result.returncode == 0, result.stderr
    with Store(db) as store:  # --since starts an empty store there
        assert np.array_equal(store.bars(), market.bars()[-120:])
    assert "120 bars" in cli("info", "--config", cfg).stdout


def test_rest_rows_are_converted_from_end_times_and_checked(market):
    rows = [{"timestamp": iso(b["time"] + 60), **{k: b[k].item() for k in BAR_FIELDS[1:]}} for b in market.bars()[:2]]
    assert np.array_equal(history.bars_from_rest(rows), market.bars()[:2])
    with pytest.raises(HistoryError, match=r"GET /trade/bucketed: bucket 0 of the page .*is earlier than"):
        history.bars_from_rest(rows, after=T0 + 60)
    rows[1]["high"] = None
    with pytest.raises(HistoryError, match=rf"bucket 1 of the page \(time {T0 + 60} .*\): high nan is missing"):
        history.bars_from_rest(rows)
