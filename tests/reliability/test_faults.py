"""The real daemon trades (a dual EMA flipping every few bars, at market) on the simulator while the
exchange misbehaves: a REST 503 storm of 31 s during which the websocket is dropped, stalled and
slowed, then 429s with Retry-After, replies lost after the exchange accepted the request, and
random rejections. After each fault /health says what happened and the daemon recovers; at the end,
judged from the exchange's side: every clOrdID unique and journaled, no working order left, the
position equal to the last target, the journal equal to the exchange. The same run is at DEBUG, and
everything it wrote is scanned for the API secret and for request signatures."""

from __future__ import annotations

import re
import statistics
import time

import pytest
from rigging import FAST, report, soak, wait_until

from sniper import auth
from sniper.config import SIM_DEMO_SECRET

STORM_S = 30.5
SIGNATURE = re.compile(rb"[0-9a-f]{64}")  # hex HMAC-SHA256: the only 64-hex-digit strings a run may hold


def _mentions(daemon: soak.Daemon, key: str, *words: str):
    """/health when its `key` mentions one of `words`, else None."""
    status = daemon.health() or {}
    text = str(status.get(key) or "")
    return status if any(w in text for w in words) else None


def _recovered(daemon: soak.Daemon, timeout: float, what: str, since: float, took: list[float]) -> dict:
    """/health once trading again (healthy, executor working, position at target); the time since
    the fault's end goes to `took`."""
    status = wait_until(lambda: (s := daemon.health()) and soak.working_now(s) and s, timeout, what, poll=0.05)
    took.append(time.monotonic() - since)
    return status


@pytest.fixture(scope="module")
def faulted_run(tmp_path_factory, request):
    """One run through every fault (see the module); yields what the tests judge."""
    workdir = tmp_path_factory.mktemp("faults")
    sim = soak.start_sim(workdir, speed=240, msg_rate=200, rate_limit=0)  # a target change every second or two
    daemon = soak.Daemon(workdir, sim.url, level="DEBUG", overrides=FAST)
    exchange = soak.Exchange(sim.url)
    seen: dict[str, dict] = {}
    took: list[float] = []  # seconds from each fault's end to trading again
    try:
        daemon.start()
        daemon.wait_healthy()
        sim.control("fault", {"mode": "overload", "seconds": STORM_S})
        storm_end = time.monotonic() + STORM_S
        seen["503"] = wait_until(lambda: _mentions(daemon, "rest_last_error", "Overloaded", "503"), 5,
                                 "/health naming the 503s")
        for name, body, end_words in (
                ("drop", {"mode": "drop"}, ("closed", "lost")),
                ("stall", {"mode": "stall", "seconds": 4}, ("silent", "stale")),
                ("slow", {"mode": "delay", "delay_ms": 300, "seconds": 3}, ())):
            before = daemon.health()["reconnects"]
            sim.control("fault", body)
            if end_words:
                seen[name] = wait_until(lambda w=end_words: _mentions(daemon, "websocket_last_end", *w), 10,
                                        f"/health naming the websocket {name}")
                assert seen[name]["reconnects"] > before or not seen[name]["ready"]
            time.sleep(body.get("seconds", 0))
            ended = time.monotonic()
            seen[f"{name} recovered"] = wait_until(
                lambda: (s := daemon.health()) and s["ready"] and s["data_age_s"] < 1.0 and s, 15,
                f"fresh data again after the websocket {name}", poll=0.05)
            took.append(time.monotonic() - ended)
        assert time.monotonic() < storm_end, "the websocket faults outlasted the storm: lengthen STORM_S"
        time.sleep(max(0.0, storm_end - time.monotonic()))
        seen["storm recovered"] = _recovered(daemon, 20, "trading again after the 503 storm", storm_end, took)
        for name, body, words in (
                ("429", {"mode": "ratelimit", "seconds": 3}, ("RateLimited", "429")),
                # held past the client's 5 s read timeout, after the exchange applied the request
                ("timeout after accept", {"mode": "timeout", "delay_ms": 5500, "after_commit": True, "seconds": 6},
                 ("Timeout", "no answer")),
                ("rejects", {"mode": "reject", "share": 0.6, "seconds": 3}, ())):
            sim.control("fault", body)
            if words:
                # a request sent late in the fault's window is answered (or times out) seconds after it
                seen[name] = wait_until(lambda w=words: _mentions(daemon, "rest_last_error", *w),
                                        body["seconds"] + 10, f"/health naming the {name}")
            time.sleep(body["seconds"])
            seen[f"{name} recovered"] = _recovered(daemon, 20, f"trading again after the {name}", time.monotonic(),
                                                   took)
        final = soak.settle(daemon, sim, exchange, timeout=30)
        seen["metrics"] = {"text": daemon.metrics()}
        target = (final.get("target") or {}).get("qty")
        exit_status = daemon.terminate()
        found = soak.audit(exchange, workdir / "journal.sqlite", target)
        report(request, f"faults injected 7, recoveries {len(took)}, time to recover p50 "
               f"{statistics.median(took):.2f} s max {max(took):.2f} s, orders sent {found['orders']}, "
               f"duplicates {found['duplicates']}, orphans {len(found['orphans'])}")
        yield {"workdir": workdir, "seen": seen, "final": final, "found": found, "exit": exit_status}
    finally:
        daemon.close()
        sim.stop()


def test_every_fault_is_survived_and_the_exchange_agrees(faulted_run):
    found = faulted_run["found"]
    assert faulted_run["exit"] == 0
    assert found["orders"] >= 8, f"too little trading to judge: {found}"
    assert soak.audit_failures(found) == [], found
    assert faulted_run["final"]["journal"] == "ok"


def test_nothing_the_run_wrote_holds_the_secret_or_a_signature(faulted_run):
    workdir = faulted_run["workdir"]
    files = [p for p in workdir.iterdir() if p.is_file() and p.name != "sim.log"]  # sim.log is the exchange's
    names = {p.name for p in files}
    assert {"sniper.log", "daemon.log", "journal.sqlite", "sniper.yaml"} <= names, names
    assert (workdir / "sniper.log").read_text().count(" DEBUG ") > 100, "the run did not log at DEBUG"
    texts = {p.name: p.read_bytes() for p in files if p.name != "sniper.yaml"}  # the config holds the key pair
    texts.update({f"/health after {k}": repr(v).encode() for k, v in faulted_run["seen"].items()})
    secret = SIM_DEMO_SECRET.encode()
    assert SIGNATURE.fullmatch(auth.signature(SIM_DEMO_SECRET, "GET", "/realtime", 1).encode()), "a blind scan"
    leaks = {name: (secret in text, SIGNATURE.findall(text)[:3]) for name, text in texts.items()
             if secret in text or SIGNATURE.search(text)}
    assert leaks == {}
