"""The journal's disk fills up under the running daemon: trading stops with one clear line (no
order is sent that is not journaled), /health says so, nothing is half-written, and trading resumes
once the disk takes writes again. A read-only journal disk stops the start with one line. After
both, the journal still equals the exchange.

The disk is a real one: a 1 MiB tmpfs mounted for the test (these tests run as root, and root
ignores file modes, so a chmod'ed directory would not stop a write; a mount refuses it for
everyone). Where mounting is not allowed the test skips, saying so."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import time

import pytest
from rigging import FAST, soak, trading, wait_until

STOPPED = "trading stopped"
RESUMED = "journal writable again: trading resumes"


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk) -> None:
    """Write a file until the disk has no byte left."""
    with open(disk / "filler", "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def log_lines(daemon: soak.Daemon, text: str) -> int:
    return (daemon.workdir / "sniper.log").read_text().count(text)


def orders_at_exchange(exchange: soak.Exchange) -> int:
    return len(exchange.orders())


def stopped_then_resumed(daemon, exchange, break_disk, mend_disk) -> None:
    """Break the disk: one line, /health unhealthy naming the journal, no order sent meanwhile;
    mend it: trading resumes (the exchange sees new orders)."""
    before = orders_at_exchange(exchange)
    wait_until(lambda: orders_at_exchange(exchange) > before, 15, "the daemon trading before the fault")
    break_disk()
    status = wait_until(lambda: (s := daemon.health()) and s["journal"] != "ok" and s, 20,
                        "/health naming the unwritable journal")
    assert not status["healthy"] and "cannot be written" in status["journal"] and "disk is full" in status["journal"]
    time.sleep(1.0)  # an order journaled just before the fault may still be on its way
    frozen = orders_at_exchange(exchange)
    time.sleep(3.0)  # targets change every second or two at this speed: an unjournaled order would show
    assert orders_at_exchange(exchange) == frozen, "an order went out while the journal could not be written"
    assert log_lines(daemon, STOPPED) == 1, "not exactly one line for the outage"
    mend_disk()
    wait_until(lambda: (s := daemon.health()) and s["journal"] == "ok" and s["healthy"], 20,
               "the journal writable again")
    wait_until(lambda: orders_at_exchange(exchange) > frozen, 20, "trading again after the outage")
    assert log_lines(daemon, RESUMED) == 1


def test_disk_full_stops_and_resumes_trading_and_a_read_only_disk_stops_the_start(tmp_path, small_disk):
    journal = small_disk / "journal.sqlite"
    with trading(tmp_path, speed=240, rate_limit=0, overrides={**FAST, "paths": {"journal": str(journal)}}) as rigged:
        full_then_read_only(small_disk, journal, *rigged)


def full_then_read_only(small_disk, journal, sim, daemon, exchange) -> None:
    stopped_then_resumed(daemon, exchange, lambda: fill(small_disk), lambda: os.remove(small_disk / "filler"))
    assert daemon.terminate() == 0
    # read-only: Linux refuses to remount a file system read-only while a process holds a file
    # open for writing, so this is the disk the daemon finds at its (re)start, as after the kernel
    # remounted it read-only on errors: one line, exit 1 (systemd restarts it), no traceback
    remount = ["mount", "-o", "remount,{}", str(small_disk)]
    subprocess.run([a.format("ro") for a in remount], check=True)
    daemon.start()
    assert daemon.proc.wait(30) == 1
    lines = [line for line in (daemon.workdir / "sniper.log").read_text().splitlines() if "cannot be written" in line]
    assert len(lines) == 2 and "stopping: journal" in lines[-1] and "read-only" in lines[-1], lines[-1:]
    assert "Traceback" not in (daemon.workdir / "daemon.log").read_text()
    subprocess.run([a.format("rw") for a in remount], check=True)
    before = orders_at_exchange(exchange)
    daemon.start()
    daemon.wait_healthy()
    wait_until(lambda: orders_at_exchange(exchange) > before, 20, "trading again once the disk is writable")
    final = soak.settle(daemon, sim, exchange, timeout=30)
    assert daemon.terminate() == 0
    with sqlite3.connect(journal) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    found = soak.audit(exchange, journal, (final.get("target") or {}).get("qty"))
    assert soak.audit_failures(found) == [], found
