"""Tick-to-order: from the websocket message that moves the best bid to the amend request
arriving at the simulator, on 127.0.0.1.

The simulator has no hook that timestamps requests, so this script puts a small TCP
proxy (threads, in this process) in front of it: the proxy stamps the moment it hands the
orderBookL2 frame to the client and the moment the client's `PUT /api/v1/order` reaches
it, both on CLOCK_MONOTONIC, which Linux shares between processes. The client under test
runs in its own process (no GIL shared with the proxy) and also stamps, on the same clock,
when its State received the frame and when the executor called the REST client. So each
move splits into
    network-in : proxy hands the frame over -> our State has it (kernel + websocket-client)
    our code   : State has it -> executor calls RestClient.amend (State, wake-up, plan, journal fsync)
    http-out   : RestClient called -> the PUT is at the proxy (signing, requests/urllib3, kernel)
Baseline, same run, same proxy: a bare client (websocket-client + a raw socket) that
sends a prepared PUT the instant a book frame arrives: the floor of the network stack.

    .venv/bin/python benchmarks/bench_tick_to_order.py [--moves 1000] [--baseline-moves 300]

Last line: `p50_ms=<x> p99_ms=<y> moves=<n>` (the executor's tick-to-order).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

FLOOR_P50_MS, FLOOR_P99_MS = 2.0, 10.0
START_BID, TICK, ASK = 9000.0, 0.5, 20000.0
BOOK_MARK = b'"table":"orderBookL2"'


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------------------- the proxy

class StampingProxy:
    """Forwards 127.0.0.1 TCP to the simulator; stamps book frames going to a websocket
    client and PUT requests coming from a client."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.frames: list[float] = []  # book frames handed to the client
        self.puts: list[float] = []  # PUT requests received from the client
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            server = socket.create_connection(self.upstream)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                now = time.monotonic()
                if not data:
                    break
                if from_client and data.startswith(b"PUT /api/v1/order"):
                    with self.lock:
                        self.puts.append(now)
                elif not from_client and BOOK_MARK in data:
                    with self.lock:
                        self.frames.append(time.monotonic())
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def mark(self) -> tuple[int, int]:
        with self.lock:
            return len(self.frames), len(self.puts)

    def pair_after(self, mark: tuple[int, int], timeout: float = 2.0) -> tuple[float, float] | None:
        """The first book frame and the first PUT after `mark` (None if no PUT came)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.puts) > mark[1] and len(self.frames) > mark[0]:
                    return self.frames[mark[0]], self.puts[mark[1]]
            time.sleep(0.0002)
        return None


# ---------------------------------------------------------------------------- children

def child_executor(url: str, journal: str, out: str) -> None:
    """The daemon's own order stack (sniper.app: State, WsClient, RestClient, BitmexVenue, Journal,
    RiskGate, Executor; configs/sim.yaml's execution settings, the order-rate limit lifted so the
    chase is not throttled) holding a passive buy that follows the touch; records when book
    frames and PUTs happen."""
    import dataclasses

    from sniper import config
    from sniper.app import build
    from sniper.model import Target
    from sniper.ws.state import configure_switch_interval

    configure_switch_interval()  # as the daemon does
    rx: list[float] = []
    req: list[float] = []

    class StampedSession(requests.Session):
        def request(self, method, url, *args, **kwargs):
            if method == "PUT":
                req.append(time.monotonic())
            return super().request(method, url, *args, **kwargs)

    cfg = config.load(Path(__file__).resolve().parents[1] / "configs" / "sim.yaml")
    cfg = dataclasses.replace(
        cfg, risk=dataclasses.replace(cfg.risk, max_orders_per_minute=1_000_000, kill_switch_file=""),
        paths=dataclasses.replace(cfg.paths, journal=journal), metrics=dataclasses.replace(cfg.metrics, enabled=False))
    rig = build(cfg, exchange_url=url, rest_options={"session": StampedSession()}).wire()
    apply = rig.state.apply_message

    def stamped_apply(raw):
        t = time.monotonic()
        apply(raw)
        if BOOK_MARK.decode() in (raw if isinstance(raw, str) else raw.decode(errors="replace")):
            rx.append(t)

    rig.state.apply_message = stamped_apply
    rig.start(strategy=False, serve=False)
    rig.executor.set_target(Target(100, "passive", "bench"))
    print("READY", flush=True)
    sys.stdin.readline()
    rig.stop(cancel_orders=True)
    Path(out).write_text(json.dumps({"rx": rx, "req": req, "rest": rig.rest.stats}))


def child_raw(url: str) -> None:
    """The floor: websocket-client receives, a raw keep-alive socket sends a prepared PUT."""
    import websocket

    ws = websocket.create_connection(url.replace("http", "ws", 1) + "/realtime?subscribe=orderBookL2:XBTUSD")
    host, port = url.split("//")[1].split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = b'{"origClOrdID":"none","price":1}'
    put = (b"PUT /api/v1/order HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def drain() -> None:
        while sock.recv(65536):
            pass

    threading.Thread(target=drain, daemon=True).start()
    partial = False
    print("READY", flush=True)
    while True:
        frame = ws.recv()
        if '"orderBookL2"' in frame:
            if partial:
                sock.sendall(put)
            partial = partial or '"partial"' in frame


# ---------------------------------------------------------------------------- the run

def start_child(args: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, *args], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = proc.stdout.readline().strip()
    if line != "READY":
        proc.kill()
        raise RuntimeError(f"child did not start: {line!r}")
    return proc


def idle_cpu(pid: int, seconds: float) -> float:
    """Share of one core a process burns over `seconds` of a quiet market (from /proc)."""
    def used() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before, start = used(), time.monotonic()
    time.sleep(seconds)
    return (used() - before) / (time.monotonic() - start)


def run_moves(sim, proxy: StampingProxy, n: int, bid: float, settle: callable) -> tuple[list, float]:
    """Move the best bid up one tick `n` times; returns [(frame, put)] stamps and the last bid."""
    pairs = []
    for _ in range(n):
        bid += TICK
        mark = proxy.mark()
        sim.control("book", {"levels": [{"side": "Buy", "price": bid, "size": 1}]})
        pair = proxy.pair_after(mark)
        if pair is None:
            raise RuntimeError(f"no PUT after the book moved to {bid}")
        pairs.append(pair)
        settle(bid)
    return pairs, bid


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--moves", type=int, default=1000)
    p.add_argument("--baseline-moves", type=int, default=300)
    p.add_argument("--idle-seconds", type=float, default=3.0, help="CPU sampled while the book is quiet")
    p.add_argument("--child", choices=("executor", "raw"))
    p.add_argument("--url")
    p.add_argument("--journal")
    p.add_argument("--out")
    args = p.parse_args()
    if args.child == "executor":
        child_executor(args.url, args.journal, args.out)
        return 0
    if args.child == "raw":
        child_raw(args.url)
        return 0

    from sniper.sim.process import SimProcess

    sim = SimProcess(rate_limit=0)  # a real `python -m sniper sim`, paused
    tmp = Path(tempfile.mkdtemp(prefix="bench-t2o-"))
    try:
        host, port = sim.url.split("//")[1].split(":")
        proxy = StampingProxy((host, int(port)))
        url = f"http://127.0.0.1:{proxy.port}"
        sim.control("book", {"clear": True, "levels": [{"side": "Buy", "price": START_BID, "size": 1},
                                                      {"side": "Sell", "price": ASK, "size": 1}]})
        # baseline: the network stack alone
        raw = start_child(["--child", "raw", "--url", url])
        base, bid = run_moves(sim, proxy, args.baseline_moves, START_BID, lambda b: time.sleep(0.002))
        idle = {"bare client": idle_cpu(raw.pid, args.idle_seconds)}
        raw.kill()
        raw.wait()
        # the executor
        out = tmp / "child.json"
        proc = start_child(["--child", "executor", "--url", url, "--journal", str(tmp / "j.sqlite"),
                            "--out", str(out)])
        deadline = time.monotonic() + 10
        while proxy.mark()[1] == 0 and time.monotonic() < deadline:  # first amend proves it chases
            bid += TICK
            sim.control("book", {"levels": [{"side": "Buy", "price": bid, "size": 1}]})
            time.sleep(0.05)
        time.sleep(0.1)
        ours, bid = run_moves(sim, proxy, args.moves, bid, lambda b: time.sleep(0.003))
        idle["executor"] = idle_cpu(proc.pid, args.idle_seconds)
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(20)
        child = json.loads(out.read_text())
    finally:
        sim.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return report(base, ours, child, idle)


def report(base: list, ours: list, child: dict, idle: dict) -> int:
    base_ms = [(b - a) * 1e3 for a, b in base]
    total_ms = [(b - a) * 1e3 for a, b in ours]
    rx, req = child["rx"], child["req"]
    split = {"network-in": [], "our code": [], "http-out": []}
    for a, b in ours:
        t_rx = next((t for t in rx if t >= a), None)
        t_req = next((t for t in req if t_rx is not None and t >= t_rx and t <= b), None)
        if t_rx is None or t_req is None or t_rx > b:
            continue
        split["network-in"].append((t_rx - a) * 1e3)
        split["our code"].append((t_req - t_rx) * 1e3)
        split["http-out"].append((b - t_req) * 1e3)
    p50, p99 = pct(total_ms, 0.5), pct(total_ms, 0.99)
    b50, b99 = pct(base_ms, 0.5), pct(base_ms, 0.99)
    print(f"tick-to-order over {len(total_ms)} moves of the best bid (ms, 127.0.0.1)")
    print(f"  {'':22s} {'p50':>8s} {'p90':>8s} {'p99':>8s} {'max':>8s}")
    print(f"  {'baseline (bare client)':22s} {b50:8.3f} {pct(base_ms, .9):8.3f} {b99:8.3f} {max(base_ms):8.3f}")
    print(f"  {'executor':22s} {p50:8.3f} {pct(total_ms, .9):8.3f} {p99:8.3f} {max(total_ms):8.3f}")
    print(f"  ratio executor/baseline: p50 {p50 / b50:.1f}x, p99 {p99 / b99:.1f}x")
    n = len(split["our code"])
    means = {k: statistics.fmean(v) for k, v in split.items() if v}
    whole = sum(means.values())
    print(f"where the time goes (mean over {n} matched moves):")
    for k, v in means.items():
        print(f"  {k:12s} {v:7.3f} ms  {v / whole:6.1%}  (p50 {pct(split[k], .5):.3f}, p99 {pct(split[k], .99):.3f})")
    print(f"  REST: {child['rest']}")
    print("CPU while a passive order rests on a quiet book: "
          + ", ".join(f"{k} {v:.1%} of a core" for k, v in idle.items()))
    ok = p50 < FLOOR_P50_MS and p99 < FLOOR_P99_MS
    print(f"floor p50 < {FLOOR_P50_MS} ms, p99 < {FLOOR_P99_MS} ms: {'meets floor' if ok else 'BELOW FLOOR'}")
    print(f"p50_ms={p50:.3f} p99_ms={p99:.3f} moves={len(total_ms)}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    raise SystemExit(main())
