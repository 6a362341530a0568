"""Journal on real SQLite: clOrdIDs, durability before send, monotone updates, fills."""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sniper.clock import RealClock
from sniper.journal import Journal
from sniper.model import Unreadable

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "journal.sqlite", RealClock())
    yield j
    j.close()


def test_wal_mode_and_new_orders_commit_with_fsync(journal):
    db = sqlite3.connect(journal.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    intent = journal.record_intent(1, "market", "")
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: crash-safe in WAL
    journal.new_order(intent.id, "Buy", 1, 1.0, "Limit")
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: fsync before the send


def test_clordids_are_deterministic_unique_and_fit_bitmex(journal):
    intent = journal.record_intent(100, "passive", "trend up")
    first = journal.new_order(intent.id, "Buy", 100, 10000.0, "Limit", "ParticipateDoNotInitiate", "GoodTillCancel")
    second = journal.new_order(intent.id, "Buy", 60, 10000.5, "Limit", "ParticipateDoNotInitiate", "GoodTillCancel")
    other = journal.new_order(journal.record_intent(0, "market", "flat").id, "Sell", 40, 9990.0, "Limit")
    assert first.clordid == f"{journal.token}-{intent.id}-0"
    assert second.clordid == f"{journal.token}-{intent.id}-1"
    ids = [first.clordid, second.clordid, other.clordid]
    assert len(set(ids)) == 3 and all(len(c) <= 36 for c in ids)
    assert first.status == "pending" and first.leaves_qty == 100


def test_order_row_is_durable_before_send_even_after_kill_9(tmp_path):
    """A child journals an order then SIGKILLs itself (as if the send came next):
    a new process must find the clOrdID pending."""
    path = tmp_path / "j.sqlite"
    code = (
        "import os, signal, sys\n"
        "from sniper.clock import RealClock\nfrom sniper.journal import Journal\n"
        f"j = Journal({str(path)!r}, RealClock())\n"
        "i = j.record_intent(300, 'market', 'x')\n"
        "r = j.new_order(i.id, 'Buy', 300, 10100.0, 'Limit', '', 'ImmediateOrCancel')\n"
        "print(r.clordid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=30)
    assert proc.returncode == -signal.SIGKILL
    clordid = proc.stdout.strip()
    j = Journal(path, RealClock())
    rec = j.order(clordid)
    assert rec is not None and rec.status == "pending" and rec.qty == 300
    assert j.last_intent().qty == 300
    assert rec.request("XBTUSD") == {"symbol": "XBTUSD", "side": "Buy", "orderQty": 300, "ordType": "Limit",
                                     "clOrdID": clordid, "price": 10100.0, "timeInForce": "ImmediateOrCancel"}
    j.close()


def test_token_survives_reopen_and_numbering_continues(tmp_path):
    path = tmp_path / "j.sqlite"
    j = Journal(path, RealClock())
    intent = j.record_intent(5, "passive", "a")
    j.new_order(intent.id, "Buy", 5, 1.0, "Limit")
    token = j.token
    j.close()
    j = Journal(path, RealClock())
    assert j.token == token
    assert j.new_order(intent.id, "Buy", 5, 1.0, "Limit").clordid == f"{token}-{intent.id}-1"
    j.close()


def test_two_journals_never_share_clordids(tmp_path):
    a, b = Journal(tmp_path / "a.sqlite", RealClock()), Journal(tmp_path / "b.sqlite", RealClock())
    ca = a.new_order(a.record_intent(1, "market", "").id, "Buy", 1, 1.0, "Limit").clordid
    cb = b.new_order(b.record_intent(1, "market", "").id, "Buy", 1, 1.0, "Limit").clordid
    assert ca != cb
    a.close()
    b.close()


def test_updates_from_exchange_are_monotone(journal):
    rec = journal.new_order(journal.record_intent(100, "passive", "").id, "Buy", 100, 10.0, "Limit")
    row = {"clOrdID": rec.clordid, "orderID": "X", "ordStatus": "PartiallyFilled", "cumQty": 40, "leavesQty": 60,
           "orderQty": 100, "price": 10.0}
    assert journal.update_from_exchange(row).status == "live"
    stale = dict(row, ordStatus="New", cumQty=0, leavesQty=100)
    assert journal.update_from_exchange(stale).cum_qty == 40  # a late REST reply cannot undo a fill
    done = journal.update_from_exchange(dict(row, ordStatus="Filled", cumQty=100, leavesQty=0))
    assert (done.status, done.leaves_qty) == ("done", 0)
    assert journal.update_from_exchange(dict(row, ordStatus="New")).status == "done"
    assert journal.update_from_exchange({"clOrdID": "not-ours"}) is None
    assert [e["kind"] for e in journal.events() if e["clordid"] == rec.clordid] == ["request", "ack", "update"]


def test_void_and_open_orders(journal):
    intent = journal.record_intent(1, "market", "")
    a = journal.new_order(intent.id, "Buy", 1, 1.0, "Limit")
    b = journal.new_order(intent.id, "Buy", 1, 1.0, "Limit")
    journal.void_order(a.clordid, "Rejected(400): Invalid price")
    assert [o.clordid for o in journal.open_orders()] == [b.clordid]
    assert journal.order(a.clordid).status == "void"


def test_fills_are_idempotent_by_exec_id(journal):
    row = {"execID": "e1", "execType": "Trade", "clOrdID": "c", "side": "Buy", "lastQty": 10, "lastPx": 100.0,
           "transactTime": "2020-01-01T00:00:00.000Z"}
    assert journal.record_fill(row) is True
    assert journal.record_fill(row) is False
    assert journal.record_fill(dict(row, execID="e2", execType="New")) is False
    assert len(journal.fills()) == 1


def test_adopted_orders_never_become_the_target(journal):
    journal.record_intent(300, "passive", "strategy")
    rec = journal.adopt_order({"orderID": "o-1", "clOrdID": "", "side": "Sell", "orderQty": 50, "price": 10.0,
                               "ordStatus": "New", "leavesQty": 50, "cumQty": 0})
    assert rec.clordid == "adopted-o-1" and rec.status == "live"
    assert journal.last_intent().qty == 300


def test_intents_carry_who_decided_and_old_journals_gain_the_column(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)  # a journal from before intents had a source
    db.execute("CREATE TABLE intents (id INTEGER PRIMARY KEY, ts REAL NOT NULL, qty INTEGER NOT NULL,"
               " style TEXT NOT NULL, reason TEXT NOT NULL)")
    db.execute("INSERT INTO intents (ts, qty, style, reason) VALUES (1.0, 300, 'passive', 'old')")
    db.commit()
    db.close()
    j = Journal(path, RealClock())
    assert (j.last_intent().qty, j.last_intent().source) == (300, "strategy")
    flatten = j.record_intent(0, "market", "kill switch: test", source="risk")
    assert j.last_intent() == flatten and flatten.source == "risk"
    with pytest.raises(ValueError):
        j.record_intent(0, "market", "", source="someone")
    j.close()
    assert Journal(path, RealClock()).last_intent().source == "risk"


GOOD_ORDER = {"orderID": "X", "ordStatus": "PartiallyFilled", "cumQty": 40, "leavesQty": 60, "orderQty": 100,
              "price": 10.0}


@pytest.mark.parametrize("field, value", [
    ("cumQty", "x"), ("cumQty", 40.5), ("leavesQty", 1.9), ("leavesQty", -1), ("orderQty", True),
    ("price", math.nan), ("price", "10"), ("ordStatus", ["Filled"]), ("orderID", {"id": 1}),
])
def test_a_garbled_order_row_writes_nothing_says_so_once_and_the_next_good_row_applies(journal, caplog, field,
                                                                                        value):
    rec = journal.new_order(journal.record_intent(100, "passive", "").id, "Buy", 100, 10.0, "Limit")
    journal.update_from_exchange({"clOrdID": rec.clordid, "orderID": "X", "ordStatus": "New", "cumQty": 0,
                                  "leavesQty": 100, "orderQty": 100, "price": 10.0})
    before, events = journal.order(rec.clordid), journal.events()
    garbled = dict(GOOD_ORDER, clOrdID=rec.clordid, **{field: value})
    with caplog.at_level(logging.WARNING, "sniper.journal"):
        for _ in range(3):  # the live view shows the same row every cycle: one line
            assert journal.update_from_exchange(garbled) == before
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records] == [
        ("WARNING", f"refused order row {rec.clordid}: unreadable {field} {value!r}; nothing of it is journaled",
         None)]
    assert journal.order(rec.clordid) == before and journal.orders() == [before] and journal.events() == events
    applied = journal.update_from_exchange(dict(GOOD_ORDER, clOrdID=rec.clordid))
    assert (applied.status, applied.cum_qty, applied.leaves_qty) == ("live", 40, 60)
    with caplog.at_level(logging.WARNING, "sniper.journal"):
        journal.update_from_exchange(garbled)  # after a good row, the same garbage is news again
    assert len(caplog.records) == 2 and journal.order(rec.clordid) == applied


FILL = {"execID": "e1", "execType": "Trade", "clOrdID": "c", "side": "Buy", "lastQty": 10, "lastPx": 100.0,
        "transactTime": "2020-01-01T00:00:00.000Z"}


@pytest.mark.parametrize("field, value, why", [
    ("lastQty", 1.9, "unreadable lastQty 1.9"), ("lastQty", "10", "unreadable lastQty '10'"),
    ("lastQty", 0, "unreadable lastQty 0"), ("lastQty", None, "missing lastQty"),
    ("lastPx", math.nan, "unreadable lastPx nan"), ("lastPx", None, "missing lastPx"),
    ("side", "buy", "unreadable side 'buy'"), ("transactTime", [1], "unreadable transactTime [1]"),
    ("execID", ["e1"], "unreadable execID ['e1']"),
])
def test_a_garbled_execution_records_no_fill_says_so_once_and_a_good_one_records(journal, caplog, field, value,
                                                                               why):
    garbled = dict(FILL, **{field: value})
    with caplog.at_level(logging.WARNING, "sniper.journal"):
        assert journal.record_fill(garbled) is False
        assert journal.record_fill(garbled) is False  # listed again at the next reconciliation: no new line
    exec_id = garbled["execID"]
    assert [r.getMessage() for r in caplog.records] == [
        f"refused execution {exec_id} of order c: {why}; nothing of it is journaled"]
    assert journal.fills() == []
    assert journal.record_fill(dict(FILL, execComm=[1])) is True  # execComm is no figure the journal reads
    assert [(f["exec_id"], f["qty"], f["price"]) for f in journal.fills()] == [("e1", 10, 100.0)]


def test_a_garbled_stray_is_not_adopted(journal):
    row = {"orderID": "o-1", "clOrdID": "", "side": "Sell", "orderQty": 50, "price": 10.0, "ordStatus": "New",
           "leavesQty": 50, "cumQty": 0}
    for garbled, why in ((dict(row, leavesQty="50"), "unreadable leavesQty '50'"),
                         (dict(row, side=None), "unreadable side None"), (dict(row, orderID=None), "missing orderID")):
        with pytest.raises(Unreadable, match=re.escape(why)):
            journal.adopt_order(garbled)
    assert journal.orders() == [] and journal.events() == []
    assert journal.adopt_order(row).leaves_qty == 50
