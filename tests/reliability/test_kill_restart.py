"""SIGKILL of the real daemon mid-cycle, restarted at once as systemd would, KILLS times in one
run while its strategy keeps changing the target: judged from the exchange's side, every clOrdID
is unique and journaled, never more than one order works, the position ends at the last target
and the journal equals the exchange (statuses, filled quantities, executions)."""

from __future__ import annotations

import random
import time

from rigging import soak, trading, wait_until

KILLS = 20
HOLD_MS = 200  # the exchange holds each REST request this long: an order write is in flight for it


def test_sigkill_mid_cycle_and_restart_20_times(tmp_path):
    with trading(tmp_path, speed=600, rate_limit=0) as rigged:  # 20 starts a minute would spend any budget
        kill_and_restart(*rigged)


def kill_and_restart(sim, daemon, exchange) -> None:
    rng = random.Random(11)
    in_flight = most_working = 0

    def moving():
        status = daemon.health() or {}
        target = status.get("target")
        return target is not None and status.get("position") != target["qty"]

    for kill in range(KILLS):
        # every other kill lands after the exchange applied the order but before its reply left
        sim.control("fault", {"mode": "timeout", "delay_ms": HOLD_MS, "after_commit": kill % 2 == 1, "seconds": 6})
        try:
            wait_until(moving, 5.0, "an order in flight", poll=0.01)
            in_flight += 1
            time.sleep(rng.uniform(0.0, HOLD_MS / 1000))
        except AssertionError:
            pass  # no target change came in time: this kill lands at a random moment instead
        daemon.kill()
        sim.control("fault", method="DELETE")
        most_working = max(most_working, len(exchange.working()))
        daemon.restart(delay=0.05)
        daemon.wait_healthy()
    assert len(daemon.lives) == KILLS + 1 and all(life.exit == -9 for life in daemon.lives[:-1])
    assert in_flight >= KILLS // 2, f"only {in_flight} kills caught an order in flight"
    final = soak.settle(daemon, sim, exchange, timeout=30)
    target = (final.get("target") or {}).get("qty")
    assert daemon.terminate() == 0
    found = soak.audit(exchange, daemon.workdir / "journal.sqlite", target)
    assert found["orders"] >= KILLS, f"too little trading to judge: {found['orders']} orders"
    assert most_working <= 1
    assert soak.audit_failures(found) == [], found
