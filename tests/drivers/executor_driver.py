"""A small process that runs the real executor toward a series of targets, for the
crash-restart test (which SIGKILLs it at random points and starts it again).

    python tests/drivers/executor_driver.py URL KEY SECRET JOURNAL TARGETS [--die-at N:before|after]

TARGETS is a file of `qty style` lines. The driver resumes at the step of the journal's last
intent, so a restart pursues the same target the killed process did. Protocol on stdout:
`READY` (reconciled), `STEP i qty style` (then it waits for a line on stdin before setting
the target, so the test can arrange faults first), `REACHED i` (then it waits for a line
before the next step, so the test can check the exchange at rest), `DONE`.
`--die-at N:before|after|inflight` SIGKILLs the process itself around the N-th
order-changing request: just before it leaves (journaled, never sent), just after its reply
arrives (applied, never read), or 50 ms after it left (in flight: with a simulator that holds
requests, it lands after this process is gone).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

import requests
from rig import Rig

from sniper.model import Target

ORDER_PATH = "/api/v1/order"


class DyingSession(requests.Session):
    """A session that kills the process around the N-th write to /order."""

    def __init__(self, n: int, phase: str) -> None:
        super().__init__()
        self.n, self.phase, self.writes = n, phase, 0

    def request(self, method, url, *args, **kwargs):
        write = method != "GET" and ORDER_PATH in url and "cancelAllAfter" not in url
        if write:
            self.writes += 1
            if self.writes == self.n and self.phase == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.writes == self.n and self.phase == "inflight":
                threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGKILL)).start()
        response = super().request(method, url, *args, **kwargs)
        if write and self.writes == self.n and self.phase == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return response


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    for name in ("url", "key", "secret", "journal", "targets"):
        p.add_argument(name)
    p.add_argument("--die-at")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s.%(msecs)03d %(process)d %(threadName)s %(name)s: %(message)s")
    targets = []
    with open(args.targets) as f:
        for line in f:
            qty, style = line.split()
            targets.append((int(qty), style))
    rest_options = {}
    if args.die_at:
        n, phase = args.die_at.split(":")
        rest_options["session"] = DyingSession(int(n), phase)
    rig = Rig(args.url, args.key, args.secret, args.journal, rest_options=rest_options)
    last = rig.journal.last_intent()
    step = int(last.reason.split()[1]) if last and last.reason.startswith("step ") else 0
    rig.start()
    while rig.executor.last_status == "new":  # READY once the start-up reconciliation is done
        time.sleep(0.002)
    say("READY")
    while step < len(targets):
        qty, style = targets[step]
        target = Target(qty, style, f"step {step}")
        say(f"STEP {step} {qty} {style}")
        if not sys.stdin.readline():
            break
        rig.executor.set_target(target)
        while not (rig.reached(target) and rig.executor.last_status == "idle"):
            time.sleep(0.002)
        say(f"REACHED {step}")
        if not sys.stdin.readline():
            break
        step += 1
    say("DONE")
    rig.stop(cancel=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
