"""The soak: the real daemon trades against the simulator for SOAK_SECONDS (default an hour) at a
high orderBookL2 rate, with a fault every SOAK_FAULT_EVERY seconds, and is judged from the
exchange's side at the end.

Why a separate process for everything: what is under test is what systemd runs. The simulator is
`python -m sniper sim` (its own process, its own clock); the daemon is `run_sniper.py --config
<tmp config> --exchange-url <sim>`, SIGKILLed and started again as systemd would; this script only
injects faults through the simulator's control API, reads /health and /proc, and asks the
exchange (REST, the daemon's own account) what really happened.

Faults, in rotation (ROTATION): websocket drop, stall (open but silent past the client's
dead_after), slow (every frame delayed), REST 503 storm (35 s), 429 with Retry-After, timeouts
after the exchange accepted the request, random rejections, and after every two of those a SIGKILL
+ restart of the daemon. Kills happen in the first half of the run only, so the second half is one
process whose RSS growth means something.

A fault counts as recovered when /health is healthy again, the executor is not failing and the
position equals the standing target; the time to recover runs from the fault's end (from the kill
for a SIGKILL). At the end the feed is frozen, the daemon settles and is stopped with SIGTERM, and
the invariants are checked: every clOrdID unique, none unknown to the journal (no orphan), at most
one working order seen at any sample, the position equal to the last target, the journal equal to
the exchange (statuses, filled quantities, executions).

    .venv/bin/python -m benchmarks soak          # SOAK_SECONDS=120 for a quick look

Environment: SOAK_SECONDS (3600), SOAK_FAULT_EVERY (120), SOAK_MSG_RATE (2000 orderBookL2
messages per real second), SOAK_SPEED (20 x real time), SOAK_DIR (working files; default a temp dir).
The parts (start_sim, Daemon, Exchange, audit) are also what tests/reliability drive in CI, shorter.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sniper.auth import Credentials  # noqa: E402
from sniper.clock import RealClock  # noqa: E402
from sniper.config import SIM_DEMO_KEY, SIM_DEMO_SECRET  # noqa: E402
from sniper.model import OPEN_ORD_STATUSES  # noqa: E402
from sniper.rest import RestClient  # noqa: E402
from sniper.sim.process import SimProcess  # noqa: E402

START_TIMEOUT_S = 60.0
RECOVER_TIMEOUT_S = 120.0
RESTART_DELAY_S = 1.0  # systemd's RestartSec, shortened: the restart itself is what is tested
FAILING = ("error", "rejected", "not-ready", "new")  # executor statuses that are not "working"
RSS_GROWTH_LIMIT_KB = 5 * 1024
RSS_WARM_S = 120.0  # an incarnation's RSS "at start" is taken this long after it became healthy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------- simulator
def start_sim(workdir: Path, *, speed: float, msg_rate: float, rate_limit: int = 120, **opts) -> SimProcess:
    """The simulator in its own process, running (not paused), about `msg_rate` orderBookL2
    messages a real second: --l2-rate counts them per *simulated* second, hence the division."""
    with open(workdir / "sim.log", "ab") as log:
        return SimProcess(stderr=log, paused=False, speed=speed, l2_rate=f"{msg_rate / speed:.3f}",
                          rate_limit=rate_limit, **opts)


# ---------------------------------------------------------------------------------------- daemon
def daemon_config(workdir: Path, port: int, *, level: str = "INFO", style: str = "market",
                  overrides: dict | None = None) -> Path:
    """configs/sim.yaml with its files in `workdir`, /health on `port`, and a strategy that trades
    often: a dual EMA of 3 and 2 bars flips every few bars, at market so a target is reached without
    waiting for a passive fill. `overrides` are merged section by section."""
    cfg = yaml.safe_load((ROOT / "configs" / "sim.yaml").read_text())
    cfg["strategy"]["name"] = "trend"
    cfg["strategy"]["lookback_minutes"] = 1440
    cfg["strategy"]["trend"].update(fast_period=3, slow_period=2, style=style)
    cfg["risk"]["kill_switch_file"] = str(workdir / "KILL")
    # churning a dual EMA of 3 bars at market loses fees: the daily loss limit (tested on its own)
    # would stop the trading this run is here to exercise
    cfg["risk"]["daily_loss_limit_xbt"] = 0.9
    cfg["paths"] = {"journal": str(workdir / "journal.sqlite"), "history": str(workdir / "history.sqlite")}
    cfg["logging"].update(level=level, file=str(workdir / "sniper.log"))
    cfg["metrics"]["port"] = port
    for section, values in (overrides or {}).items():
        cfg[section].update(values)
    path = workdir / "sniper.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@dataclass
class Incarnation:
    """One daemon process: when it started, became healthy, and what /proc said meanwhile."""

    pid: int
    started: float
    healthy_at: float | None = None
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (time, VmRSS kB, threads)
    reconnects: int = 0
    exit: int | None = None


class Daemon:
    """run_sniper.py on a config, restarted by `restart` as systemd would; stderr to daemon.log."""

    def __init__(self, workdir: Path, url: str, *, level: str = "INFO", overrides: dict | None = None,
                 style: str = "market") -> None:
        self.workdir, self.url = workdir, url
        self.port = free_port()
        self.config = daemon_config(workdir, self.port, level=level, style=style, overrides=overrides)
        self.log = open(workdir / "daemon.log", "ab")
        self.proc: subprocess.Popen | None = None
        self.lives: list[Incarnation] = []

    def start(self) -> Incarnation:
        self.proc = subprocess.Popen([sys.executable, "run_sniper.py", "--config", str(self.config),
                                      "--exchange-url", self.url], cwd=ROOT, stdout=self.log, stderr=self.log)
        life = Incarnation(self.proc.pid, time.monotonic())
        self.lives.append(life)
        return life

    @property
    def life(self) -> Incarnation:
        return self.lives[-1]

    def health(self) -> dict | None:
        """/health's JSON (also when it answers 503), None when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())
        except (OSError, ValueError):
            return None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
            return resp.read().decode()

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}; see {self.workdir / 'daemon.log'}")
            status = self.health()
            if status and status.get("healthy"):
                if self.life.healthy_at is None:
                    self.life.healthy_at = time.monotonic()
                return status
            time.sleep(0.1)
        raise RuntimeError(f"daemon not healthy within {timeout:.0f} s; see {self.workdir / 'daemon.log'}")

    def sample(self) -> None:
        """VmRSS and thread count from /proc, and the reconnects /health reports."""
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text()
                          .splitlines() if ":" in line)
        except OSError:
            return
        self.life.samples.append((time.monotonic(), int(fields["VmRSS"].split()[0]), int(fields["Threads"])))

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed but what was already committed."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.life.exit = self.proc.wait(10)

    def restart(self, delay: float = RESTART_DELAY_S) -> Incarnation:
        time.sleep(delay)
        return self.start()

    def terminate(self, timeout: float = 15.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        self.life.exit = self.proc.wait(timeout)
        return self.life.exit

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


# ---------------------------------------------------------------------------------------- exchange
class Exchange:
    """What the exchange itself says about the account (REST, the daemon's own key)."""

    def __init__(self, url: str, key: str = SIM_DEMO_KEY, secret: str = SIM_DEMO_SECRET) -> None:
        self.rest = RestClient(url, Credentials(key, secret), RealClock(), max_elapsed=60.0)

    def _all(self, path: str) -> list[dict]:
        rows, start = [], 0
        while True:
            page = self.rest.request("GET", path, params={"symbol": self.rest.symbol, "count": 500,
                                                          "start": start})
            rows += page
            if len(page) < 500:
                return rows
            start += 500

    def orders(self) -> list[dict]:
        return self._all("/order")

    def fills(self) -> list[dict]:
        return self._all("/execution/tradeHistory")

    def working(self) -> list[dict]:
        return self.rest.orders(open_only=True)

    def position(self) -> int:
        return int((self.rest.position() or {}).get("currentQty") or 0)


def journal_rows(path: Path) -> tuple[dict[str, sqlite3.Row], dict[str, sqlite3.Row]]:
    """The journal's orders by clOrdID and fills by execID, read without writing."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        orders = {r["clordid"]: r for r in db.execute("SELECT * FROM orders")}
        fills = {r["exec_id"]: r for r in db.execute("SELECT * FROM fills")}
    return orders, fills


def audit(exchange: Exchange, journal: Path, target: int | None) -> dict:
    """The invariants, judged from the exchange's side with the daemon at rest (stopped or settled):
    the counts are findings, each must be 0 (`position_off` must be False)."""
    orders = exchange.orders()
    ids = [o.get("clOrdID") for o in orders]
    ours, fills = journal_rows(journal)
    by_id = {o.get("clOrdID"): o for o in orders}
    mismatched = []
    for clordid, rec in ours.items():
        row = by_id.get(clordid)
        if row is None:
            if rec["status"] != "void":  # journaled as sent, yet the exchange never heard of it
                mismatched.append((clordid, rec["status"], None))
            continue
        terminal = row["ordStatus"] not in OPEN_ORD_STATUSES
        if (rec["status"] == "done") != terminal or int(rec["cum_qty"]) != int(row.get("cumQty") or 0):
            mismatched.append((clordid, rec["status"], row["ordStatus"]))
    execs = [f for f in exchange.fills() if f.get("clOrdID") in ours]
    position = exchange.position()
    return {
        "orders": len(orders),
        "journaled": len(ours),
        "duplicates": len(ids) - len(set(ids)),
        "orphans": sorted(i for i in set(ids) if i not in ours),
        "working": len([o for o in orders if o["ordStatus"] in OPEN_ORD_STATUSES]),
        "journal_mismatch": mismatched,
        "fills_missing": sorted(f["execID"] for f in execs if f["execID"] not in fills),
        "fills_extra": sorted(set(fills) - {f["execID"] for f in execs}),
        "position": position,
        "target": target,
        "position_off": target is not None and position != target,
    }


def audit_failures(found: dict) -> list[str]:
    """What an audit found wrong, one text per broken invariant."""
    bad = [f"{k}: {found[k]}" for k in ("duplicates", "working") if found[k]]
    bad += [f"{k}: {found[k][:5]}" for k in ("orphans", "journal_mismatch", "fills_missing", "fills_extra")
            if found[k]]
    if found["position_off"]:
        bad.append(f"position {found['position']} != last target {found['target']}")
    return bad


def settle(daemon: Daemon, sim: SimProcess, exchange: Exchange, timeout: float = 60.0) -> dict:
    """Freeze the market, clear every fault, wait until the daemon holds its target with no
    working order; returns its last /health."""
    sim.control("fault", method="DELETE")
    sim.control("feed", {"paused": True})
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = daemon.health() or {}
        target = status.get("target")
        if status.get("healthy") and target is not None and status.get("position") == target["qty"] \
                and not status.get("open_orders") and exchange.position() == target["qty"] \
                and not exchange.working():
            return status
        time.sleep(0.5)
    return status


# ---------------------------------------------------------------------------------------- faults
FAULTS: dict[str, tuple[dict | None, float]] = {
    # name: (control body, seconds the fault lasts); None = SIGKILL the daemon and restart it
    "ws drop": ({"mode": "drop", "seconds": 2}, 2.0),
    "503 storm": ({"mode": "overload", "seconds": 35}, 35.0),
    "SIGKILL": (None, 0.0),
    "ws stall": ({"mode": "stall", "seconds": 20}, 20.0),
    "429 Retry-After": ({"mode": "ratelimit", "seconds": 8}, 8.0),
    "timeout after accept": ({"mode": "timeout", "delay_ms": 7000, "after_commit": True, "seconds": 20}, 20.0),
    "ws slow": ({"mode": "delay", "delay_ms": 300, "seconds": 20}, 20.0),
    "random rejects": ({"mode": "reject", "share": 0.5, "seconds": 30}, 30.0),
}
# the rotation: a SIGKILL after every two other faults (kills are skipped in the run's second half)
OTHERS = [name for name, (body, _) in FAULTS.items() if body is not None]
ROTATION = [name for i, other in enumerate(OTHERS) for name in ((other, "SIGKILL") if i % 2 else (other,))]


def working_now(status: dict | None) -> bool:
    """Healthy, the executor not failing, and the position where the standing target says."""
    if not status or not status.get("healthy") or status.get("executor") in FAILING:
        return False
    target = status.get("target")
    return target is None or status.get("position") == target["qty"]


@dataclass
class Soak:
    seconds: float
    fault_every: float
    speed: float
    msg_rate: float
    workdir: Path
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    injected: dict[str, int] = field(default_factory=dict)
    recover_s: list[float] = field(default_factory=list)
    unrecovered: list[str] = field(default_factory=list)
    max_working: int = 0
    max_data_age: float = 0.0
    unexpected_exits: list[int] = field(default_factory=list)
    last_health: dict = field(default_factory=dict)

    def run(self) -> dict:
        sim = start_sim(self.workdir, speed=self.speed, msg_rate=self.msg_rate)
        daemon = Daemon(self.workdir, sim.url)
        exchange = Exchange(sim.url)
        started = time.monotonic()
        try:
            daemon.start()
            daemon.wait_healthy()
            end = started + self.seconds
            names = ROTATION
            turn = 0
            next_fault = time.monotonic() + min(self.fault_every, 30.0)
            next_check = 0.0
            while time.monotonic() < end:
                self._tick(daemon)
                now = time.monotonic()
                if now >= next_check:
                    self.max_working = max(self.max_working, len(exchange.working()))
                    next_check = now + 15.0
                if now >= next_fault and now + 60 < end:
                    name = names[turn % len(names)]
                    turn += 1
                    if name == "SIGKILL" and now - started > self.seconds / 2:
                        continue  # the second half is one process: its RSS growth is the figure
                    self._fault(name, sim, daemon)
                    next_fault = time.monotonic() + self.fault_every
                time.sleep(1.0)
            final = settle(daemon, sim, exchange)
            target = (final.get("target") or {}).get("qty")
            daemon.life.reconnects = final.get("reconnects", daemon.life.reconnects)
            exit_status = daemon.terminate()
            found = audit(exchange, self.workdir / "journal.sqlite", target)
        finally:
            daemon.close()
            sim.stop()
        return self._report(daemon, found, exit_status, time.monotonic() - started)

    def _tick(self, daemon: Daemon, quiet_feed: bool = False) -> dict | None:
        """One look: restart a daemon that died on its own (as systemd would), sample /proc and /health.
        `quiet_feed`: the fault silences the websocket, so the data age is not the daemon's doing."""
        if daemon.proc.poll() is not None:
            self.unexpected_exits.append(daemon.proc.returncode)
            daemon.life.exit = daemon.proc.returncode
            daemon.restart()
            return None
        daemon.sample()
        status = daemon.health()
        if status:
            self.last_health = status
            daemon.life.reconnects = status.get("reconnects", 0)
            if status.get("ready") and not quiet_feed:
                self.max_data_age = max(self.max_data_age, status.get("data_age_s") or 0.0)
        return status

    def _fault(self, name: str, sim: SimProcess, daemon: Daemon) -> None:
        body, lasts = FAULTS[name]
        self.injected[name] = self.injected.get(name, 0) + 1
        if body is None:
            time.sleep(self.rng.uniform(0.0, 3.0))  # a random moment of its cycles
            daemon.kill()
            daemon.restart()
        else:
            sim.control("fault", body)
        print(f"{time.strftime('%H:%M:%S')} fault {name}", flush=True)
        ended = time.monotonic() + lasts
        quiet = name in ("ws stall", "ws slow")
        while time.monotonic() < ended:
            self._tick(daemon, quiet)
            time.sleep(0.5)
        deadline = ended + RECOVER_TIMEOUT_S
        while time.monotonic() < deadline:
            if working_now(self._tick(daemon, quiet)):
                self.recover_s.append(time.monotonic() - ended)
                return
            time.sleep(0.25)
        self.unrecovered.append(name)

    def _report(self, daemon: Daemon, found: dict, exit_status: int, elapsed: float) -> dict:
        lives = [life for life in daemon.lives if life.samples]
        longest = max(lives, key=lambda life: life.samples[-1][0] - life.samples[0][0])
        warm = next((s for s in longest.samples if s[0] - longest.samples[0][0] >= RSS_WARM_S), longest.samples[0])
        last = longest.samples[-1]
        rec = sorted(self.recover_s)
        return {
            "elapsed_s": elapsed,
            "faults": dict(self.injected),
            "faults_injected": sum(self.injected.values()),
            "recoveries": len(self.recover_s),
            "unrecovered": self.unrecovered,
            "recover_p50_s": statistics.median(rec) if rec else math.nan,
            "recover_max_s": rec[-1] if rec else math.nan,
            "restarts": len(daemon.lives) - 1,
            "unexpected_exits": self.unexpected_exits,
            "reconnects": sum(life.reconnects for life in daemon.lives),
            "rss_start_kb": warm[1], "rss_end_kb": last[1], "rss_growth_kb": last[1] - warm[1],
            "rss_span_s": last[0] - warm[0],
            "rss_samples_kb": [(round(t - warm[0]), kb) for t, kb, _ in longest.samples[::30]],
            "threads_start": warm[2], "threads_end": last[2],
            "max_working_orders": self.max_working,
            "max_data_age_s": self.max_data_age,
            "messages_per_s": self.last_health.get("messages_per_s"),
            "exit_status": exit_status,
            **found,
        }


def failures(report: dict) -> list[str]:
    bad = audit_failures(report)
    if report["unrecovered"]:
        bad.append(f"not recovered: {report['unrecovered']}")
    if report["unexpected_exits"]:
        bad.append(f"the daemon exited by itself: {report['unexpected_exits']}")
    if report["max_working_orders"] > 1:
        bad.append(f"{report['max_working_orders']} working orders at once")
    if report["rss_growth_kb"] >= RSS_GROWTH_LIMIT_KB:
        bad.append(f"RSS grew {report['rss_growth_kb']} kB")
    if report["exit_status"] != 0:
        bad.append(f"SIGTERM exit status {report['exit_status']}")
    return bad


def table(report: dict) -> str:
    rows = [
        ("run", f"{report['elapsed_s'] / 60:.1f} min at {report['messages_per_s']} orderBookL2 msg/s"),
        ("faults injected", f"{report['faults_injected']}  " + ", ".join(f"{k} {v}" for k, v in report["faults"].items())),
        ("recoveries", f"{report['recoveries']} (not recovered: {len(report['unrecovered'])})"),
        ("time to recover p50 / max", f"{report['recover_p50_s']:.2f} s / {report['recover_max_s']:.2f} s"),
        ("daemon restarts (SIGKILL)", str(report["restarts"])),
        ("websocket reconnects", str(report["reconnects"])),
        ("orders sent (exchange / journal)", f"{report['orders']} / {report['journaled']}"),
        ("duplicates", str(report["duplicates"])),
        ("orphans", str(len(report["orphans"]))),
        ("most working orders at once", str(report["max_working_orders"])),
        ("journal vs exchange mismatches", str(len(report["journal_mismatch"]) + len(report["fills_missing"])
                                               + len(report["fills_extra"]))),
        ("position / last target", f"{report['position']} / {report['target']}"),
        ("max data age (outside stalls)", f"{report['max_data_age_s']:.3f} s"),
        ("RSS start / end / growth", f"{report['rss_start_kb'] / 1024:.1f} / {report['rss_end_kb'] / 1024:.1f} / "
                                     f"{report['rss_growth_kb'] / 1024:+.2f} MB over {report['rss_span_s'] / 60:.0f} min"),
        ("threads start / end", f"{report['threads_start']} / {report['threads_end']}"),
        ("SIGTERM exit status", str(report["exit_status"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main() -> int:
    seconds = float(os.environ.get("SOAK_SECONDS", 3600))
    workdir = Path(os.environ.get("SOAK_DIR") or tempfile.mkdtemp(prefix="sniper-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    soak = Soak(seconds=seconds, fault_every=float(os.environ.get("SOAK_FAULT_EVERY", 120)),
                speed=float(os.environ.get("SOAK_SPEED", 20)), msg_rate=float(os.environ.get("SOAK_MSG_RATE", 2000)),
                workdir=workdir)
    print(f"soak: {seconds:.0f} s, a fault every {soak.fault_every:.0f} s, {soak.msg_rate:.0f} msg/s, "
          f"files in {workdir}", flush=True)
    report = soak.run()
    print(table(report))
    (workdir / "soak.json").write_text(json.dumps(report, indent=1, default=str))
    bad = failures(report)
    for line in bad:
        print("FAILED:", line)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
