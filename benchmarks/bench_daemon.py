"""The daemon's memory on the target machine's budget (1 GiB): a full order book and a year of
1-minute history must stay under 150 MB RSS.

As deployed: the daemon (`run_sniper.py --exchange-url`) in its own process against a simulator
in another (as it would trade BitMEX), the motif strategy with a year of bars in memory (the
store pre-filled by `sniper history import`, the rest backfilled over REST), the full simulated
book (2 x 50 levels) streaming. RSS is sampled from /proc while it decides every minute.
Baseline, measured in the same run: a bare interpreter that imports the same packages
(numpy, TA-Lib as sniper.ta loads it, PyWavelets, orjson, websocket-client, requests, prometheus-client) and holds no
data, so the ratio shows what the daemon's own state costs.

    .venv/bin/python benchmarks/bench_daemon.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path(os.environ.get("SNIPER_SHARED_DATA", ROOT.parent / "shared" / "data"))
YEAR = 525_600
FLOOR_MB = 150.0
START = "2019-01-01T00:00:00Z"  # the replay starts here; the year before it is the history
BASELINE_IMPORTS = "import numpy, pywt, orjson, websocket, requests, prometheus_client, yaml; from sniper.ta import talib"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def baseline_mb() -> float:
    code = f"{BASELINE_IMPORTS}\nimport os\nprint(open(f'/proc/{{os.getpid()}}/status').read())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return next(int(line.split()[1]) / 1024 for line in out.splitlines() if line.startswith("VmRSS:"))


def write_year(tmp: Path) -> tuple[Path, Path]:
    """A year and a week of real minutes around START as a CSV (the simulator's data), and the
    funding rates."""
    import pandas as pd

    from sniper.model import parse_time

    start = parse_time(START)
    bars = pd.read_csv(DATA / "xbtusd_1m.csv.gz")
    bars = bars[(bars.time >= start - YEAR * 60 - 86400) & (bars.time < start + 7 * 86400)]
    path = tmp / "bars.csv"
    bars.to_csv(path, index=False)
    return path, DATA / "xbtusd_funding.csv"


def config(tmp: Path, port: int) -> Path:
    text = (ROOT / "configs" / "sim.yaml").read_text()
    for name in ("journal", "history"):
        text = text.replace(f"var/{name}.sqlite", str(tmp / f"{name}.sqlite"))
    text = text.replace("var/KILL", str(tmp / "KILL"))
    text = text.replace("port: 9108 ", f"port: {port} ")
    path = tmp / "daemon.yaml"
    path.write_text(text)
    return path


def health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return json.loads(resp.read())
    except OSError as exc:
        body = getattr(exc, "read", None)
        return json.loads(body()) if body else None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=60.0, help="how long RSS is sampled after the first decision")
    args = p.parse_args()
    if not (DATA / "xbtusd_1m.csv.gz").exists():
        print(f"skipped: {DATA} is absent (set SNIPER_SHARED_DATA)")
        return 0
    base = baseline_mb()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bars_csv, funding_csv = write_year(tmp)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sniper", "history", "import", str(bars_csv), "--funding",
                        str(funding_csv), "--db", str(tmp / "history.sqlite")], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"history imported in {time.perf_counter() - t0:.1f} s")
        sim = subprocess.Popen([sys.executable, "-m", "sniper", "sim", "--port", "0", "--data", str(bars_csv),
                                "--funding", str(funding_csv), "--start", START], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        daemon = None
        try:
            url = sim.stdout.readline().strip().split()[-1]
            port = free_port()
            daemon = subprocess.Popen([sys.executable, "run_sniper.py", "--config", str(config(tmp, port)),
                                       "--exchange-url", url], cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=open(tmp / "daemon.log", "w"))
            deadline = time.monotonic() + 300
            status = None
            while time.monotonic() < deadline:
                status = health(port)
                if status and status.get("last_decision_ts"):
                    break
                if daemon.poll() is not None:
                    print((tmp / "daemon.log").read_text()[-3000:])
                    return 1
                time.sleep(0.5)
            else:
                print("the daemon made no decision within 300 s")
                print((tmp / "daemon.log").read_text()[-3000:])
                return 1
            samples = []
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                samples.append(rss_mb(daemon.pid))
                time.sleep(0.5)
            status = health(port)
        finally:
            for proc in (daemon, sim):
                if proc is not None:
                    proc.terminate()
                    proc.wait(30)
    peak = max(samples)
    levels = status.get("book_levels") or {}
    ok = peak < FLOOR_MB
    print(f"daemon RSS: start {samples[0]:.1f} MB, end {samples[-1]:.1f} MB, peak {peak:.1f} MB "
          f"(floor < {FLOOR_MB:.0f} MB: {'ok' if ok else 'FAILED'})")
    print(f"baseline (bare interpreter with the same imports): {base:.1f} MB; daemon / baseline = "
          f"{peak / base:.2f}x; the daemon's own state: {peak - base:.1f} MB")
    print(f"held: {status.get('last_bar_time') and 'a window of bars to ' + str(status.get('market_time'))}, "
          f"book levels {levels}, logic {status.get('active_logic')}, position {status.get('position')}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
