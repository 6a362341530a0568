"""The simulator as a child process: what tests, benchmarks and soak runs start when the
exchange must live in another process (its CPU and memory apart from the client's), as a
user starts it with `sniper sim`. Its first stdout line is its URL."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = ("speed", "data", "funding", "start", "l2_rate", "rate_limit", "max_backlog", "host")


def command(**opts) -> list[str]:
    """The argv of `python -m sniper sim` with these options (SimOptions' names; `paused`
    defaults to True, `accounts` are (key, secret, balance) tuples, `extra_args` appended)."""
    cmd = [sys.executable, "-m", "sniper", "sim", "--port", "0", "--seed", str(opts.get("seed", 1))]
    if opts.get("paused", True):
        cmd.append("--paused")
    for name in OPTIONS:
        if opts.get(name) is not None:
            cmd += ["--" + name.replace("_", "-"), str(opts[name])]
    for key, secret, balance in opts.get("accounts") or []:
        cmd += ["--account", f"{key}:{secret}:{balance}"]
    return cmd + list(opts.get("extra_args", []))


def first_line(proc: subprocess.Popen, timeout: float) -> str:
    """The child's first stdout line, or '' if none came within `timeout` seconds."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout).strip()
    except queue.Empty:
        return ""


def control(session: requests.Session, url: str, path: str, json: dict | None = None, method: str = "POST") -> dict:
    """Call the simulator's `/_control/<path>`; raises naming the answer when it is not 2xx."""
    resp = session.request(method, f"{url}/_control/{path.lstrip('/')}", json=json, timeout=10)
    if resp.status_code >= 300:
        raise RuntimeError(f"control {method} {path} -> {resp.status_code}: {resp.text}")
    return resp.json()


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (the simulator's clean stop), then kill if it has not exited within 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class SimProcess:
    """`python -m sniper sim` in a child process, its control API, and a clean stop."""

    def __init__(self, *, stderr=subprocess.DEVNULL, timeout: float = 60.0, **opts) -> None:
        self.proc = subprocess.Popen(command(**opts), cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
        self.url = first_line(self.proc, timeout)
        if not self.url.startswith("http://"):
            self.stop()
            raise RuntimeError(f"simulator did not start (first line {self.url!r})")
        self.session = requests.Session()

    def control(self, path: str, json: dict | None = None, method: str = "POST") -> dict:
        return control(self.session, self.url, path, json, method)

    def stop(self) -> None:
        if getattr(self, "session", None) is not None:
            self.session.close()
        stop(self.proc)
