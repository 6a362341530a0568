"""`python -m sniper sim`: first stdout line is the base URL, clean exit 0 on
SIGINT/SIGTERM; options reach the simulator; and the in-process `SimServer` the daemon
embeds. (Bad arguments: tests/reliability/test_sim_hostile.py.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import requests

from sniper import auth
from sniper.sim import process

ROOT_ARGS = [sys.executable, "-m", "sniper", "sim"]


def run_until_url(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(args, cwd=process.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = process.first_line(proc, 60)
    assert url.startswith("http://127.0.0.1:"), (url, proc.stderr.read() if proc.poll() is not None else "")
    return proc, url


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_prints_url_first_and_exits_cleanly_on_signal(sig):
    proc, url = run_until_url(ROOT_ARGS + ["--port", "0", "--paused"])
    try:
        assert requests.get(url + "/api/v1/instrument", timeout=5).json()[0]["symbol"] == "XBTUSD"
    finally:
        proc.send_signal(sig)
        assert proc.wait(10) == 0
    assert "Traceback" not in proc.stderr.read()


def test_module_entry_without_the_cli():
    proc, url = run_until_url([sys.executable, "-m", "sniper.sim.server", "--port", "0", "--paused"])
    proc.terminate()
    assert proc.wait(10) == 0


def test_options_reach_the_simulator(sim_factory):
    sim = sim_factory(start="2018-11-20T06:00:00Z", rate_limit=7,
                      accounts=[("k1", "s:with:colons", 0.25), ("k2", "second-secret", 3)])
    state = sim.state()
    assert state["timestamp"] == "2018-11-20T06:00:00.000Z" and state["paused"] is True
    assert state["rate_limit"] == 7
    for key, secret, sats in (("k1", "s:with:colons", 25_000_000), ("k2", "second-secret", 300_000_000)):
        headers = auth.headers(auth.Credentials(key, secret), "GET", "/api/v1/user/wallet", "", time.time())
        assert requests.get(sim.url + "/api/v1/user/wallet", headers=headers, timeout=5).json()["amount"] == sats
    demo = auth.headers(auth.Credentials("sim-demo-key", "sim-demo-secret-0123456789"), "GET",
                        "/api/v1/user/wallet", "", time.time())
    assert requests.get(sim.url + "/api/v1/user/wallet", headers=demo, timeout=5).status_code == 401


def test_fees_are_configurable(sim_factory):
    sim = sim_factory(extra_args=["--maker-fee", "-0.0001", "--taker-fee", "0.0005"])
    inst = requests.get(sim.url + "/api/v1/instrument", timeout=5).json()[0]
    assert (inst["makerFee"], inst["takerFee"]) == (-0.0001, 0.0005)
    sim.control("book", {"clear": True, "levels": [{"side": "Sell", "price": 5000, "size": 100}]})
    body = '{"symbol": "XBTUSD", "side": "Buy", "orderQty": 100, "ordType": "Market"}'
    headers = {**sim.headers("POST", "/api/v1/order", body), "content-type": "application/json"}
    assert requests.post(sim.url + "/api/v1/order", data=body, headers=headers, timeout=5).status_code == 200
    path = "/api/v1/execution/tradeHistory"
    (fill,) = requests.get(sim.url + path, headers=sim.headers("GET", path), timeout=5).json()
    # value 100/5000*1e8 = 2,000,000 XBt; taker 0.05 % = 1,000 (the default 0.075 % would be 1,500)
    assert (fill["execComm"], fill["commission"]) == (1_000, 0.0005)


def test_demo_account_and_l2_rate(sim_factory):
    sim = sim_factory(paused=False, l2_rate=300)
    first = sim.state()
    time.sleep(1.0)
    rate = (sim.state()["counters"]["l2_messages"] - first["counters"].get("l2_messages", 0))
    assert 150 < rate < 600  # orderBookL2 messages in about one second at --l2-rate 300
    headers = sim.headers("GET", "/api/v1/user/margin")  # the fixture's default is the demo account
    assert requests.get(sim.url + "/api/v1/user/margin", headers=headers, timeout=5).status_code == 200


def test_in_process_sim_server(sim_factory):
    sim = sim_factory(in_process=True, accounts=[("inproc", "inproc-secret", 1.0)])
    server = sim.server
    assert server.url == sim.url
    assert server.call(lambda: server.sim.exchange.symbol) == "XBTUSD"
    ws = sim.ws(auth=True)
    ws.send({"op": "subscribe", "args": ["position"]})
    ws.until(lambda m: m.get("table") == "position")
    server.stop()
    assert not server._thread.is_alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(sim.url + "/api/v1/instrument", timeout=2)
