"""What the reliability tests share (a module, not a conftest.py: a second conftest would shadow
tests/conftest.py for every `from conftest import`).

They drive the same harness as `make soak` (benchmarks/soak.py): the simulator
and the real daemon (run_sniper.py) as separate processes, faults through the simulator's control
API, the verdict from the exchange's side. Here every run is seconds long; SNIPER_FUZZ_EXAMPLES and
SNIPER_LOAD_SECONDS make the fuzz and load tests as large as `make soak` asks."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a directory beside the package, not installed

from benchmarks import soak  # noqa: E402

# a daemon that notices a dead or stalled socket in seconds, renews the dead man's switch every
# second (so a REST fault shows in /health at once)
FAST = {"websocket": {"ping_interval_s": 0.5, "dead_after_s": 2.0, "stale_after_s": 3.0,
                      "backoff_initial_s": 0.1, "backoff_max_s": 1.0},
        "execution": {"dead_mans_refresh_s": 1.0}}


def report(request, text: str) -> None:
    """Write `text` to the terminal past pytest's capture (a test's figures, like the soak's table)."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(text)


def wait_until(predicate, timeout: float, what: str, poll: float = 0.1):
    """Poll `predicate` until it returns something truthy (returned); fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


@contextlib.contextmanager
def trading(workdir: Path, *, speed: float = 60, msg_rate: float = 200, level: str = "INFO",
            overrides: dict | None = None, **sim_opts):
    """(sim, daemon, exchange): a simulator process, the daemon trading on it (healthy) with its
    files in `workdir`, and the exchange's REST view; both processes stopped on leaving."""
    sim = soak.start_sim(workdir, speed=speed, msg_rate=msg_rate, **sim_opts)
    daemon = soak.Daemon(workdir, sim.url, level=level, overrides=overrides or FAST)
    try:
        daemon.start()
        daemon.wait_healthy()
        yield sim, daemon, soak.Exchange(sim.url)
    finally:
        daemon.close()
        sim.stop()
