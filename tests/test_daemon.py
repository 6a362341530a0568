"""`make run`'s command: the daemon starts on the embedded simulator, becomes ready,
serves /health, and exits 0 within 10 s of SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sim_config_text(tmp_path) -> str:
    """configs/sim.yaml with its working files in tmp_path."""
    text = (ROOT / "configs" / "sim.yaml").read_text()
    for name in ("journal", "history"):
        assert f"var/{name}.sqlite" in text
        text = text.replace(f"var/{name}.sqlite", str(tmp_path / f"{name}.sqlite"))
    return text.replace("var/KILL", str(tmp_path / "KILL"))


def test_daemon_on_sim_serves_health_and_stops_on_sigterm(tmp_path):
    port = free_port()
    cfg = tmp_path / "sim.yaml"
    text = sim_config_text(tmp_path)
    text = text.replace("  port: 9108                     # 0 = any free port (the URL is logged at start)",
                        f"  port: {port}")
    text = text.replace("format: text ", "format: json ")
    assert f"port: {port}" in text
    cfg.write_text(text)
    proc = subprocess.Popen([sys.executable, "run_sniper.py", "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    status = json.loads(resp.read())
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.25)
        assert status is not None, "daemon never became healthy"
        assert status["ready"] and status["best_bid"] < status["best_ask"]
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    assert any("embedded simulator listening" in m for m in messages)
    assert any("SIGTERM" in m for m in messages) and messages[-1] == "stopped cleanly"
    assert "sim-demo-secret-0123456789" not in "\n".join(messages)


def test_refused_api_key_stops_the_daemon_with_status_3(tmp_path, sim_server):
    cfg = tmp_path / "remote.yaml"
    text = sim_config_text(tmp_path)
    for line in ("  base_url: sim", "  api_key: sim-demo-key", "  api_secret: sim-demo-secret-0123456789"):
        assert line in text
    text = text.replace("  base_url: sim", f"  base_url: {sim_server.url}")
    text = text.replace("  api_key: sim-demo-key", "").replace("  api_secret: sim-demo-secret-0123456789", "")
    cfg.write_text(text.replace("format: text ", "format: json "))
    wrong = "wrong-secret-" + "9" * 24
    env = {**os.environ, "BITMEX_API_KEY": "sim-demo-key", "BITMEX_API_SECRET": wrong}
    done = subprocess.run([sys.executable, "run_sniper.py", "--config", str(cfg)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert "refused" in lines[-1]["message"] and "401" in lines[-1]["message"]
    assert wrong not in done.stderr + done.stdout


def test_exchange_url_points_the_testnet_config_at_a_running_simulator(tmp_path, sim_server):
    """`--exchange-url` on a loopback simulator: testnet.yaml runs with no API keys in the
    environment (the simulator gets its demo keys, never real ones) and logs the health URL."""
    port = free_port()
    text = (ROOT / "configs" / "testnet.yaml").read_text()
    assert "port: 9108 " in text
    cfg = tmp_path / "testnet.yaml"
    cfg.write_text(text.replace("port: 9108 ", f"port: {port} ").replace("format: text ", "format: json "))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITMEX_")}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_sniper.py"), "--config", str(cfg), "--exchange-url",
                             sim_server.url], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    status = json.loads(resp.read())
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.25)
        assert status is not None and status["ready"], status
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    messages = [json.loads(line)["message"] for line in proc.stderr.read().splitlines() if line.startswith("{")]
    assert any(f"127.0.0.1:{port}/health" in m for m in messages)
    assert any(sim_server.url in m for m in messages)
    assert (tmp_path / "var" / "journal.sqlite").exists()


def test_a_bad_exchange_url_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "run_sniper.py", "--config", "configs/sim.yaml", "--exchange-url",
                           "ftp://nowhere"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--exchange-url" in done.stderr and "http" in done.stderr
