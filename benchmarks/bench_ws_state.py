"""The websocket state's full path, JSON text -> State, on the shipped
orderBookL2 stream (~8,000 levels, 200,000 frames), against baselines run
in the same process:

- `sorted-dict`: stdlib json + a plain dict/SortedDict book (ReferenceBook);
- `sample-client`: BitMEX's sample client's algorithm (rows kept in a list,
  each update finds its row by a linear scan), on a prefix of the stream.

Then a top-10 snapshot after every message, a reader thread snapshotting
every millisecond (GIL switch interval 5 ms vs the daemon's setting), a
writer at 100 messages/s with a 1 ms reader (copy time under the lock and
lock waits), and memory per 10,000 levels.

    .venv/bin/python benchmarks/bench_ws_state.py [--frames N]
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import statistics
import sys
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from sniper.ws.book import L2Book, ReferenceBook  # noqa: E402
from sniper.ws.state import SWITCH_INTERVAL_S, State  # noqa: E402

STREAM = ROOT.parent / "shared" / "data" / "streams" / "l2_modern.ndjson.gz"
FLOORS = {"msgs": 500_000, "msgs_top10": 250_000, "p99_us": 10.0, "copy_p99_us": 30.0, "bytes_10k": 1_500_000}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def verdict(ok: bool) -> str:
    return "meets floor" if ok else "BELOW FLOOR"


class SampleClientBook:
    """BitMEX's sample websocket client's way: a list of row dicts, every
    update/delete finds its row by scanning the list for matching keys."""

    keys = ("symbol", "id", "side")

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def _find(self, match: dict) -> dict | None:
        for item in self.rows:
            if all(item[k] == match[k] for k in self.keys):
                return item
        return None

    def apply(self, action: str, data: list[dict]) -> None:
        if action == "partial":
            self.rows = list(data)
        elif action == "insert":
            self.rows += data
        elif action == "update":
            for row in data:
                item = self._find(row)
                if item is not None:
                    item.update(row)
        else:
            for row in data:
                self.rows.remove(self._find(row))


def run_baseline(book, frames: list[bytes], loads) -> float:
    t0 = time.perf_counter()
    for raw in frames:
        msg = loads(raw)
        book.apply(msg["action"], msg["data"])
    return time.perf_counter() - t0


def fresh_state(partial: bytes) -> State:
    state = State()
    state.apply_message(partial)
    return state


def throughput(partial: bytes, frames: list[bytes], rows: int) -> dict:
    out = {}
    state = fresh_state(partial)
    gc.collect()
    t0 = time.perf_counter()
    for raw in frames:
        state.apply_message(raw)
    out["state_s"] = time.perf_counter() - t0
    assert not state.errors and state.book.valid

    state = fresh_state(partial)
    apply, snapshot = state.apply_message, state.snapshot
    t0 = time.perf_counter()
    for raw in frames:
        apply(raw)
        snap = snapshot(10)
        snap.bids, snap.asks  # noqa: B018 (the read is the point)
    out["state_top10_s"] = time.perf_counter() - t0

    state = fresh_state(partial)
    clock = time.perf_counter_ns
    lat = [0.0] * len(frames)
    for i, raw in enumerate(frames):
        t = clock()
        apply_ = state.apply_message
        apply_(raw)
        lat[i] = (clock() - t) / 1000
    timer_cost = statistics.median((lambda a, b: (b - a) / 1000)(clock(), clock()) for _ in range(10_000))
    out["lat"] = lat
    out["timer_us"] = timer_cost

    ref = ReferenceBook()
    ref.apply("partial", json.loads(partial)["data"])
    out["sorted_dict_s"] = run_baseline(ref, frames, json.loads)
    ref = ReferenceBook()
    ref.apply("partial", json.loads(partial)["data"])
    out["sorted_dict_orjson_s"] = run_baseline(ref, frames, orjson.loads)
    sample = SampleClientBook()
    sample.apply("partial", json.loads(partial)["data"])
    n_sample = min(1000, len(frames))
    out["sample_s"] = run_baseline(sample, frames[:n_sample], json.loads) * len(frames) / n_sample
    out["sample_n"] = n_sample
    return out


def reader_contention(partial: bytes, frames: list[bytes], switch: float, seconds: float = 2.0,
                      writer_rate: float | None = None) -> dict:
    """Writer thread applies frames (flat out, or `writer_rate` per second
    with sleeps like a socket); a reader takes a top-10 snapshot every 1 ms."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(switch)
    state = fresh_state(partial)
    stop = threading.Event()
    applied = [0]
    copy_us: list[float] = []
    late_us: list[float] = []

    def writer() -> None:
        n = 0
        period = 1.0 / writer_rate if writer_rate else 0.0
        next_t = time.perf_counter()
        while not stop.is_set():
            for raw in frames:
                if stop.is_set():
                    break
                if period:
                    next_t += period
                    time.sleep(max(0.0, next_t - time.perf_counter()))
                state.apply_message(raw)
                n += 1
            else:
                state.apply_message(partial)  # wrap around on a fresh image
        applied[0] = n

    def reader() -> None:
        target = time.perf_counter()
        while not stop.is_set():
            target += 0.001
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t0 = time.perf_counter()
            snap = state.snapshot(10)
            snap.bids, snap.asks  # noqa: B018
            t1 = time.perf_counter()
            copy_us.append((t1 - t0) * 1e6)
            late_us.append(max(0.0, t0 - target) * 1e6)
            if t0 - target > 0.001:
                target = t0  # do not burst to catch up

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    sys.setswitchinterval(old)
    lock = state.lock.stats()
    return {"switch_ms": switch * 1e3, "writer_msgs": applied[0] / elapsed, "reads": len(copy_us) / elapsed,
            "copy_p50": pct(copy_us, 0.5), "copy_p99": pct(copy_us, 0.99), "copy_max": max(copy_us),
            "late_p50": pct(late_us, 0.5), "late_p99": pct(late_us, 0.99), "lock": lock}


def memory(partial: bytes) -> dict:
    rows = orjson.loads(partial)["data"]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    book = L2Book("XBTUSD")
    book.apply("partial", rows)
    fast = tracemalloc.get_traced_memory()[0] - base
    ref = ReferenceBook()
    ref.apply("partial", rows)
    reference = tracemalloc.get_traced_memory()[0] - base - fast
    tracemalloc.stop()
    return {"levels": len(book), "fast": fast, "nbytes": book.nbytes, "ref": reference}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=0, help="limit the stream to N frames (0 = all)")
    args = parser.parse_args()
    if not STREAM.exists():
        print(f"stream {STREAM} missing; nothing to measure")
        return 0
    with gzip.open(STREAM, "rb") as f:
        lines = [line.rstrip(b"\n") for line in f if line.strip()]
    partial, frames = lines[0], lines[1:]
    if args.frames:
        frames = frames[: args.frames]
    rows = sum(len(orjson.loads(raw)["data"]) for raw in frames)
    levels = len(orjson.loads(partial)["data"])
    print(f"stream: {STREAM.name}, {len(frames):,} frames, {rows:,} rows, {levels:,} levels in the partial, "
          f"{sum(map(len, frames)) / len(frames):.0f} bytes/frame; python {sys.version.split()[0]}")

    r = throughput(partial, frames, rows)
    n = len(frames)
    state_mps, top10_mps = n / r["state_s"], n / r["state_top10_s"]
    sd_mps, sdo_mps, sample_mps = n / r["sorted_dict_s"], n / r["sorted_dict_orjson_s"], n / r["sample_s"]
    print("\n== full path, JSON text -> state (one thread)")
    print(f"State.apply_message            {state_mps:>12,.0f} msg/s {rows / r['state_s']:>12,.0f} rows/s"
          f"   [{verdict(state_mps >= FLOORS['msgs'])}: >= {FLOORS['msgs']:,}]")
    print(f"  + top-10 snapshot each msg   {top10_mps:>12,.0f} msg/s"
          f"   [{verdict(top10_mps >= FLOORS['msgs_top10'])}: >= {FLOORS['msgs_top10']:,}]")
    print(f"baseline sorted-dict + json    {sd_mps:>12,.0f} msg/s {rows / r['sorted_dict_s']:>12,.0f} rows/s"
          f"   ratio State/baseline {state_mps / sd_mps:.2f}x")
    print(f"baseline sorted-dict + orjson  {sdo_mps:>12,.0f} msg/s   ratio {state_mps / sdo_mps:.2f}x")
    print(f"baseline sample client (scan)  {sample_mps:>12,.0f} msg/s   (first {r['sample_n']} frames) "
          f"ratio {state_mps / sample_mps:,.0f}x")
    lat = r["lat"]
    p99 = pct(lat, 0.99)
    print(f"per-message latency (us, incl. ~{r['timer_us']:.2f} us timer): p50 {pct(lat, 0.5):.2f}  "
          f"p99 {p99:.2f}  p99.9 {pct(lat, 0.999):.2f}  max {max(lat):.1f}"
          f"   [{verdict(p99 <= FLOORS['p99_us'])}: p99 <= {FLOORS['p99_us']}]")

    print("\n== reader thread: top-10 snapshot every 1 ms, writer flat out")
    for switch in (0.005, SWITCH_INTERVAL_S):
        c = reader_contention(partial, frames, switch)
        print(f"switch {c['switch_ms']:.1f} ms: writer {c['writer_msgs']:>10,.0f} msg/s, reads {c['reads']:>6,.0f}/s, "
              f"snapshot call p50 {c['copy_p50']:.1f} us p99 {c['copy_p99']:.1f} us, reader late (GIL) "
              f"p50 {c['late_p50']:,.0f} us p99 {c['late_p99']:,.0f} us; lock contended "
              f"{c['lock']['contended']} of {c['lock']['acquisitions']:,}, max wait {c['lock']['wait_ns_max'] / 1e3:.1f} us")

    print("\n== writer at 100 msg/s (sleeps like a socket), reader top-10 every 1 ms")
    c = reader_contention(partial, frames, SWITCH_INTERVAL_S, seconds=3.0, writer_rate=100)
    print(f"snapshot call (lock + copy + lists) p50 {c['copy_p50']:.1f} us, p99 {c['copy_p99']:.1f} us, "
          f"max {c['copy_max']:.1f} us   [{verdict(c['copy_p99'] <= FLOORS['copy_p99_us'])}: p99 <= "
          f"{FLOORS['copy_p99_us']}]; reader late p99 {c['late_p99']:,.0f} us; lock contended "
          f"{c['lock']['contended']} of {c['lock']['acquisitions']:,}, max wait {c['lock']['wait_ns_max'] / 1e3:.1f} us")

    m = memory(partial)
    per10k = m["fast"] * 10_000 / m["levels"]
    print("\n== memory (tracemalloc)")
    print(f"L2Book {m['fast']:,} B for {m['levels']:,} levels = {per10k / 1e6:.2f} MB per 10,000 levels "
          f"[{verdict(per10k <= FLOORS['bytes_10k'])}: <= 1.5 MB]; reference sorted-dict book "
          f"{m['ref'] * 10_000 / m['levels'] / 1e6:.2f} MB per 10,000 (ratio {m['ref'] / m['fast']:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
