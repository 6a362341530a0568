"""kill -9 at random points of order cycles, then restart: after every restart the
exchange's position and open orders are exactly right, every clOrdID is unique and
journaled, and the contracts traded equal the path between targets (no order was ever
duplicated). The simulator is paused and driven by explicit book and trade commands, so
fills are deterministic; the driver process uses the real RestClient, WsClient, BitmexVenue,
Journal and Executor."""

from __future__ import annotations

import collections
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from sniper.auth import Credentials
from sniper.clock import RealClock
from sniper.model import BUY, OPEN_ORD_STATUSES, POST_ONLY, SELL, has_inst
from sniper.rest import RestClient

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "drivers" / "executor_driver.py"
KILLS = 24
LATE, LATE_MS = 4, 1500  # restarts while a killed process's order write is still held by the exchange
STEPS = 30
TOUCH = 1  # market-maker contracts at the touch, ahead of our passive orders
BOOK = {"clear": True, "levels": [
    {"side": "Buy", "price": 9990, "size": TOUCH}, {"side": "Sell", "price": 10010, "size": TOUCH},
    {"side": "Buy", "price": 9985, "size": 1_000_000}, {"side": "Sell", "price": 10015, "size": 1_000_000}]}


class Driver:
    """One driver process and a thread turning its stdout into a queue of lines."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, str(DRIVER), *args], cwd=ROOT, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def go(self) -> None:
        try:
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)


def fill_passive(sim, rest: RestClient, rng: random.Random) -> None:
    """If one of our post-only orders rests, an outside taker fills part or all of it."""
    sim.control("book", {"levels": BOOK["levels"][:2]})  # restore the touch a market order took
    for order in rest.orders(open_only=True):
        if has_inst(order.get("execInst"), POST_ONLY):
            qty = rng.choice([order["leavesQty"], max(1, order["leavesQty"] // 2)])
            side = SELL if order["side"] == BUY else BUY
            sim.control("trade", {"side": side, "qty": TOUCH + qty, "price": order["price"]})


def check_at_rest(rest: RestClient, journal_path: Path, targets: list[tuple[int, str]], step: int) -> None:
    position = int((rest.position() or {}).get("currentQty") or 0)
    orders = rest.orders(count=500)
    assert position == targets[step][0], f"step {step}: position {position} != target {targets[step][0]}"
    assert not [o for o in orders if o["ordStatus"] in OPEN_ORD_STATUSES], "open orders at rest"
    ids = [o["clOrdID"] for o in orders]
    assert len(ids) == len(set(ids)), "duplicate clOrdID at the exchange"
    with sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True) as db:
        journaled = {r[0] for r in db.execute("SELECT clordid FROM orders")}
    assert set(ids) <= journaled, f"orphans (not journaled): {set(ids) - journaled}"
    path = sum(abs(targets[k][0] - (targets[k - 1][0] if k else 0)) for k in range(step + 1))
    traded = sum(e["lastQty"] for e in rest.fills(count=1000))
    assert traded == path, f"step {step}: traded {traded} contracts, the targets need exactly {path}"


def test_kill_9_at_random_points_and_restart(sim_factory, tmp_path):
    sim = sim_factory(rate_limit=0)
    sim.control("book", BOOK)
    rng = random.Random(20240601)
    qtys = [0]
    while len(qtys) <= STEPS:
        q = rng.choice(range(-500, 501, 100))
        if q != qtys[-1]:
            qtys.append(q)
    targets = [(q, rng.choice(["market", "passive"])) for q in qtys[1:]]
    targets_file = tmp_path / "targets.txt"
    targets_file.write_text("".join(f"{q} {s}\n" for q, s in targets))
    journal = tmp_path / "journal.sqlite"
    rest = RestClient(sim.url, Credentials(sim.key, sim.secret), RealClock())
    base = [sim.url, sim.key, sim.secret, str(journal), str(targets_file)]

    # how each driver process dies: at the N-th order write (before it leaves, after its reply
    # arrives, or in flight while the exchange holds it) or at a random moment of a step
    plans = ["late"] * LATE + [rng.choice(["before", "after", "timer"]) for _ in range(KILLS - LATE)]
    rng.shuffle(plans)
    schedule = collections.deque(plans)
    kills, checked, done, kill_points, late = 0, 0, False, set(), 0
    deadline = time.monotonic() + 150
    while not done:
        assert time.monotonic() < deadline, f"no progress: {kills} kills, {checked} checks"
        plan = schedule.popleft() if schedule else None
        args = list(base)
        if plan in ("before", "after"):
            args += ["--die-at", f"{rng.randint(1, 3)}:{plan}"]
        elif plan == "late":
            args += ["--die-at", "1:inflight"]
        driver = Driver(args)
        kill_at, held = None, 0.0  # held: when the late-landing fault was switched on
        while True:
            if time.monotonic() > deadline:
                driver.kill()
                raise AssertionError(f"driver stuck: plan {plan}, {kills} kills, {checked} checks")
            try:
                line = driver.lines.get(timeout=0.02)
            except queue.Empty:
                if kill_at is not None and time.monotonic() >= kill_at:
                    driver.kill()
                    kill_at = None
                elif held and time.monotonic() > held + 3 * LATE_MS / 1000 and driver.proc.poll() is None:
                    sim.control("fault", method="DELETE")  # the step needed no write: carry on
                    held = 0.0
                elif driver.proc.poll() is None and not held:
                    fill_passive(sim, rest, rng)
                continue
            if line is None:
                break
            if line.startswith("STEP"):
                if plan == "late" and not held:
                    # the simulator now holds every request before applying it: the driver's
                    # first order write is still held when it dies, and lands after the restart
                    sim.control("fault", {"mode": "timeout", "delay_ms": LATE_MS, "seconds": 30})
                    held = time.monotonic()
                if plan == "timer" and kill_at is None:
                    kill_at = time.monotonic() + rng.uniform(0.0, 0.05)
                    kill_points.add(("timer", line))
                driver.go()
            elif line.startswith("REACHED"):
                check_at_rest(rest, journal, targets, int(line.split()[1]))
                checked += 1
                driver.go()
            elif line == "DONE":
                done = True
        driver.proc.wait(10)
        if held:
            sim.control("fault", method="DELETE")
            late += 1
        elif plan == "late":
            schedule.appendleft("late")  # that step needed no order write: try the next one
        if driver.proc.returncode == -signal.SIGKILL:
            kills += 1
            kill_points.add((plan, " ".join(args[5:])))
        else:
            assert driver.proc.returncode == 0, f"driver failed with {driver.proc.returncode}"
    assert kills >= 20 and late == LATE and checked >= STEPS, (kills, late, checked, sorted(kill_points, key=str))
    check_at_rest(rest, journal, targets, STEPS - 1)
