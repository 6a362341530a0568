"""Shared fixtures: a real simulator on 127.0.0.1 for every test that needs an exchange.

`sim_server` gives a fresh, paused simulator per test (the market only moves when
the test says so, through the control endpoint). `sim_factory(**opts)` starts one
with options, e.g. `sim_factory(accounts=[("k", "s", 2.0)], rate_limit=5,
paused=False, speed=60)`; pass `in_process=True` to run `SimServer` in this
process instead of `python -m sniper sim` (then `.server.sim` is the live `Sim`).

The handle: `.url` (http base), `.ws_url`, `.key`/`.secret` (first account),
`.accounts`, `.control(path, json=None, method="POST")` -> JSON reply of
`/_control/<path>`, `.state()`, `.headers(verb, path, body="")` (signed api-*
headers for the first account), `.ws(query="", auth=False)` -> `WsProbe` (a plain
websocket-client connection with JSON helpers), `.stop()`.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import websocket

from sniper import auth
from sniper.config import SIM_DEMO_KEY, SIM_DEMO_SECRET
from sniper.sim import process

ROOT = Path(__file__).resolve().parents[1]
# the reference data beside the checkout (../shared/data); SNIPER_SHARED_DATA points elsewhere
SHARED_DATA = Path(os.environ.get("SNIPER_SHARED_DATA", ROOT.parent / "shared" / "data"))
START_TIMEOUT_S = 60.0


class WsProbe:
    """A websocket-client connection with JSON helpers, for tests that watch the wire."""

    def __init__(self, url: str, header: list[str] | None = None, timeout: float = 5.0) -> None:
        self.conn = websocket.create_connection(url, timeout=timeout, header=header or [])
        self.seen: list = []  # every message received, in order

    def send(self, msg) -> None:
        self.conn.send(msg if isinstance(msg, str) else json.dumps(msg))

    def recv(self, timeout: float = 5.0):
        """The next message, decoded when it is JSON (BitMEX's 'pong' is not)."""
        self.conn.settimeout(timeout)
        raw = self.conn.recv()
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = raw
        self.seen.append(msg)
        return msg

    def until(self, predicate, timeout: float = 5.0):
        """Receive until `predicate(msg)` holds; returns that message."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching message within {timeout} s (last: {self.seen[-3:]})")
            msg = self.recv(left)
            if predicate(msg):
                return msg

    def authenticate(self, key: str, secret: str) -> dict:
        self.send(auth.ws_auth_message(auth.Credentials(key, secret), time.time()))
        return self.until(lambda m: isinstance(m, dict) and m.get("request", {}).get("op") == "authKeyExpires")

    def barrier(self, timeout: float = 5.0) -> list:
        """Send 'ping' and return everything received before the 'pong': the server
        answers in order, so every message queued before the ping has then arrived."""
        start = len(self.seen)
        self.send("ping")
        self.until(lambda m: m == "pong", timeout)
        return self.seen[start:-1]

    def close(self) -> None:
        self.conn.close()


@dataclass
class SimHandle:
    url: str
    accounts: list[tuple[str, str, float]]
    proc: subprocess.Popen | None = None
    server: object | None = None  # sniper.sim.server.SimServer when in-process
    log_path: Path | None = None
    session: requests.Session = field(default_factory=requests.Session)
    _probes: list = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http"):] + "/realtime"

    @property
    def key(self) -> str:
        return self.accounts[0][0]

    @property
    def secret(self) -> str:
        return self.accounts[0][1]

    def control(self, path: str, json: dict | None = None, method: str = "POST") -> dict:
        """Call `/_control/<path>`; raises on a non-2xx answer (with the server's reason)."""
        return process.control(self.session, self.url, path, json, method)

    def state(self) -> dict:
        return self.control("state", method="GET")

    def headers(self, verb: str, path: str, body: str | bytes = "", ttl: int = 5) -> dict:
        """Signed api-* headers for the first account; `path` includes /api/v1 and the query."""
        return auth.headers(auth.Credentials(self.key, self.secret), verb, path, body, time.time(), ttl)

    def ws(self, query: str = "", auth: bool = False, timeout: float = 5.0) -> WsProbe:
        """A websocket to /realtime (`query` e.g. "subscribe=trade:XBTUSD"), welcome consumed,
        authenticated as the first account when `auth`."""
        probe = WsProbe(self.ws_url + (f"?{query}" if query else ""), timeout=timeout)
        self._probes.append(probe)
        probe.until(lambda m: isinstance(m, dict) and "info" in m, timeout)
        if auth:
            reply = probe.authenticate(self.key, self.secret)
            assert reply.get("success"), reply
        return probe

    def server_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        self.session.close()
        for probe in self._probes:
            probe.close()
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.proc is not None:
            process.stop(self.proc)


sim_command = process.command  # tests assert on the argv a simulator is started with


def start_sim(**opts) -> SimHandle:
    """Start a simulator (subprocess unless in_process=True) and wait until it listens."""
    accounts = [tuple(a) for a in opts.get("accounts") or [(SIM_DEMO_KEY, SIM_DEMO_SECRET, 1.0)]]
    if opts.pop("in_process", False):
        from sniper.sim.server import SimServer

        kwargs = {k: v for k, v in opts.items() if k != "extra_args"}
        kwargs.setdefault("paused", True)
        kwargs.setdefault("seed", 1)
        server = SimServer(**kwargs)
        return SimHandle(server.start(), accounts, server=server)
    fd, log_name = tempfile.mkstemp(prefix="sim-", suffix=".log")
    os.close(fd)
    log_path = Path(log_name)
    with open(log_path, "wb") as err:
        proc = subprocess.Popen(sim_command(**opts), cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    url = process.first_line(proc, START_TIMEOUT_S)
    if not url.startswith("http://"):
        proc.kill()
        proc.wait(5)
        raise RuntimeError(f"simulator did not start (first line {url!r}); stderr:\n{log_path.read_text()}")
    return SimHandle(url, accounts, proc=proc, log_path=log_path)


@pytest.fixture
def sim_factory():
    """Start simulators with options; all are stopped at teardown."""
    handles: list[SimHandle] = []

    def factory(**opts) -> SimHandle:
        handle = start_sim(**opts)
        handles.append(handle)
        return handle

    yield factory
    for handle in handles:
        handle.stop()
        if handle.log_path is not None:
            handle.log_path.unlink(missing_ok=True)


@pytest.fixture
def sim_server(sim_factory) -> SimHandle:
    """A fresh paused simulator (subprocess, seed 1, the demo account)."""
    return sim_factory()


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip when this checkout has no shared data next to it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
