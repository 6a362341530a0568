"""How many orderBookL2 messages a second the simulator sustains to one websocket
subscriber, against baselines run in the same process with the SAME frames:

- `bare`: an aiohttp websocket handler writing pre-serialised frames in a loop
  (the transport's ceiling: no exchange, no fan-out);
- `naive`: the same handler doing json.dumps + send_str per message (what a
  straightforward server would do).

`sim` is the real path: exchange book change -> Hub fan-out (orjson, once per
message) -> per-connection queue -> writer task, driven flat out by a task that
changes book levels while the subscriber's backlog stays under 2,000 frames (so
the figure is a sustained rate, not a queue filling up). `feed` runs the real
`sniper sim` with --l2-rate targets and reports the delivered rate per target.

Each server is a subprocess; the subscriber (this process) reads the raw socket
and counts frames by their headers, so the client is not what is measured.

    .venv/bin/python benchmarks/bench_sim_l2.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import websocket  # noqa: E402
from aiohttp import WSMsgType, web  # noqa: E402

BACKLOG_CAP = 2000
SAMPLE_FRAMES = 2000
FEED_TARGETS = (1000, 5000)


# ---- servers (run as subprocesses of this script) ---------------------------------------------------
async def _serve_app(app: web.Application) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"http://{host}:{port}", flush=True)
    await asyncio.Event().wait()


def serve_baseline(kind: str, frames_path: str) -> None:
    frames = Path(frames_path).read_bytes().splitlines()
    objects = [json.loads(f) for f in frames]

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        i = 0
        try:
            while not ws.closed:
                if kind == "bare":
                    await ws.send_frame(frames[i % len(frames)], WSMsgType.TEXT)
                else:
                    await ws.send_str(json.dumps(objects[i % len(objects)]))
                i += 1
                if i % 256 == 0:
                    await asyncio.sleep(0)  # let the loop read the client's close
        except ConnectionResetError:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/realtime", handler)
    asyncio.run(_serve_app(app))


def serve_sim_flat_out(frames_path: str | None) -> None:
    """The simulator in-process, driven as fast as the subscriber drains: by book-level
    changes through the exchange model, or (with frames) by handing the Hub ready rows."""
    from sniper.sim.server import Sim, SimOptions

    rows = [json.loads(f)["data"] for f in Path(frames_path).read_bytes().splitlines()] if frames_path else None

    async def main() -> None:
        sim = Sim(SimOptions(paused=True, rate_limit=0))
        print(await sim.start(), flush=True)
        ex, hub, rng = sim.exchange, sim.hub, random.Random(1)
        bid, ask, tick = ex.best_bid(), ex.best_ask(), ex.tick_size
        i = 0
        while True:
            if max((c.backlog for c in hub.connections), default=0) > BACKLOG_CAP:
                await asyncio.sleep(0.0005)
                continue
            for _ in range(100):
                i += 1
                if rows is not None:
                    hub.publish("orderBookL2", "update", rows[i % len(rows)], None)
                elif rng.random() < 0.5:
                    ex.set_level("Buy", bid - tick * rng.randrange(50), rng.randrange(1, 50_000))
                else:
                    ex.set_level("Sell", ask + tick * rng.randrange(50), rng.randrange(1, 50_000))
            await asyncio.sleep(0)

    asyncio.run(main())


# ---- the subscriber ---------------------------------------------------------------------------------
def start(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit(f"server did not start: {args}")
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _raw_websocket(url: str, path: str) -> tuple[socket.socket, bytearray]:
    """A websocket handshake by hand: the socket and whatever arrived after the headers."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("handshake failed")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.decode(errors="replace"))
    return sock, bytearray(rest)


def count_frames(url: str, seconds: float, warmup: float = 0.5, subscribe: str = "") -> float:
    """Frames per second received on /realtime after `warmup`, counted from raw frame headers."""
    sock, buf = _raw_websocket(url, "/realtime" + subscribe)
    frames, counting, t_start = 0, False, time.perf_counter()
    t_count = t_start + warmup
    t_end = t_count + seconds
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
        pos, n = 0, len(buf)
        while n - pos >= 2:
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if n - pos < head + length:
                break
            pos += head + length
            frames += counting
        del buf[:pos]
        now = time.perf_counter()
        if not counting and now >= t_count:
            counting, t_count = True, now
        if now >= t_end:
            break
    sock.close()
    return frames / (time.perf_counter() - t_count)


def sample_frames(url: str, n: int) -> bytes:
    """`n` real orderBookL2 frames from the simulator, for the baselines to send."""
    ws = websocket.create_connection(url.replace("http", "ws", 1) + "/realtime?subscribe=orderBookL2:XBTUSD")
    out = []
    while len(out) < n:
        msg = ws.recv()
        if msg.startswith('{"table":"orderBookL2","action":"update"'):
            out.append(msg.encode())
    ws.close()
    return b"\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--serve", choices=("sim", "hub", "bare", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--frames", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve in ("sim", "hub"):
        serve_sim_flat_out(args.frames)
        return 0
    if args.serve:
        serve_baseline(args.serve, args.frames)
        return 0

    me = [sys.executable, str(Path(__file__).resolve())]
    proc, url = start(me + ["--serve", "sim"])
    try:
        frames = sample_frames(url, SAMPLE_FRAMES)
        sim_rate = count_frames(url, args.seconds, subscribe="?subscribe=orderBookL2:XBTUSD")
    finally:
        stop(proc)
    rates = {"sim": sim_rate}
    with tempfile.NamedTemporaryFile(suffix=".ndjson") as tmp:
        tmp.write(frames)
        tmp.flush()
        for kind in ("hub", "bare", "naive"):
            proc, url = start(me + ["--serve", kind, "--frames", tmp.name])
            try:
                rates[kind] = count_frames(url, args.seconds, subscribe="?subscribe=orderBookL2:XBTUSD")
            finally:
                stop(proc)
    mean_bytes = len(frames) / SAMPLE_FRAMES
    print(f"orderBookL2 to one subscriber, {mean_bytes:.0f}-byte frames, {args.seconds:.0f} s each:")
    hub, bare, naive = rates["hub"], rates["bare"], rates["naive"]
    print(f"  sim: exchange -> fan-out -> ws   {sim_rate:>10,.0f} msg/s   sim/bare = {sim_rate / bare:.2f}"
          f"   sim/naive = {sim_rate / naive:.2f}")
    print(f"  hub: rows -> fan-out -> ws       {hub:>10,.0f} msg/s   hub/bare = {hub / bare:.2f}"
          f"   hub/naive = {hub / naive:.2f}")
    print(f"  bare: pre-serialised send_frame  {bare:>10,.0f} msg/s")
    print(f"  naive: json.dumps + send_str     {naive:>10,.0f} msg/s")

    print("feed-driven (`sniper sim --l2-rate R`, real clock), delivered vs target:")
    for target in FEED_TARGETS:
        proc, url = start([sys.executable, "-m", "sniper", "sim", "--port", "0", "--l2-rate", str(target),
                           "--rate-limit", "0"])
        try:
            delivered = count_frames(url, args.seconds, warmup=1.0, subscribe="?subscribe=orderBookL2:XBTUSD")
        finally:
            stop(proc)
        print(f"  --l2-rate {target:>6}: {delivered:>10,.0f} msg/s   delivered/target = {delivered / target:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
