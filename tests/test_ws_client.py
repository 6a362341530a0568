"""The websocket thread against the real simulator on 127.0.0.1: state equals
REST after activity, drops and stalls rebuild identical state, readiness
drops while the connection is down, 401 stops for good, pings keep a quiet
connection alive."""

from __future__ import annotations

import json
import random
import threading
import time
from urllib.parse import urlencode

import pytest
import requests

from sniper import auth
from sniper.clock import SimClock
from sniper.ws.client import WsClient
from sniper.ws.state import PUBLIC_TABLES, State


def rest(sim, verb: str, path: str, params: dict | None = None) -> object:
    """A signed REST call to the simulator (path under /api/v1)."""
    full = "/api/v1" + path
    body = ""
    if params and verb == "GET":
        full += "?" + urlencode(params)
    elif params:
        body = json.dumps(params)
    headers = {**sim.headers(verb, full, body), "Content-Type": "application/json"}
    resp = requests.request(verb, sim.url + full, data=body or None, headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def start_client(sim, *, creds=True, **kwargs) -> tuple[WsClient, State]:
    state = State()
    credentials = auth.Credentials(sim.key, sim.secret) if creds else None
    kwargs.setdefault("backoff_initial", 0.2)
    kwargs.setdefault("backoff_max", 1.0)
    client = WsClient(sim.ws_url, state, credentials=credentials, rng=random.Random(1), **kwargs)
    client.start()
    return client, state


@pytest.fixture
def clients():
    started: list[WsClient] = []
    yield started
    for client in started:
        client.stop()


def view(state: State) -> dict:
    """Everything a reconnect must rebuild, in comparable form."""
    snap = state.snapshot(None)
    return {"bids": snap.bids, "asks": snap.asks, "instrument": dict(snap.instrument),
            "position": dict(snap.position or {}), "margin": dict(snap.margin or {}),
            "wallet": dict(snap.wallet or {}), "orders": sorted((dict(o) for o in snap.orders),
                                                                key=lambda o: o["orderID"])}


def rest_view(sim) -> dict:
    book = rest(sim, "GET", "/orderBook/L2", {"symbol": "XBTUSD", "depth": 0})
    orders = rest(sim, "GET", "/order", {"symbol": "XBTUSD", "filter": json.dumps({"open": True}),
                                         "count": 500})
    return {
        "bids": sorted(((r["price"], r["size"]) for r in book if r["side"] == "Buy"), reverse=True),
        "asks": sorted((r["price"], r["size"]) for r in book if r["side"] == "Sell"),
        "orders": {o["orderID"]: (o["price"], o["leavesQty"], o["ordStatus"]) for o in orders},
        "position": next((p["currentQty"] for p in rest(sim, "GET", "/position") if p["symbol"] == "XBTUSD"), 0),
        "wallet": rest(sim, "GET", "/user/margin")["walletBalance"],
    }


def ws_view(state: State) -> dict:
    snap = state.snapshot(None)
    return {"bids": snap.bids, "asks": snap.asks,
            "orders": {o["orderID"]: (o["price"], o["leavesQty"], o["ordStatus"]) for o in snap.orders},
            "position": (snap.position or {}).get("currentQty", 0),
            "wallet": (snap.margin or {}).get("walletBalance")}


def eventually(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


class ReadyMonitor:
    """Samples snapshot.ready every millisecond in its own thread."""

    def __init__(self, state: State) -> None:
        self.state, self.samples, self._stop = state, [], threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.state.snapshot(0).ready)
            time.sleep(0.001)

    def stop(self) -> list[bool]:
        """The samples, ending with one taken now (the thread's last may predate the caller's news)."""
        self._stop.set()
        self._thread.join()
        self.samples.append(self.state.snapshot(0).ready)
        return self.samples


def activity(sim, state: State) -> None:
    """A fresh market-maker book (many levels deleted and inserted), our bid
    improving the touch and part-filled by an outside seller, a far ask
    placed and another cancelled: every table moves."""
    mid = float(round(state.snapshot(1).best_bid))
    sim.control("book", {"clear": True, "levels": [
        {"side": "Buy", "price": mid - 1, "size": 1000}, {"side": "Buy", "price": mid - 1.5, "size": 500},
        {"side": "Sell", "price": mid + 3, "size": 800}, {"side": "Sell", "price": mid + 3.5, "size": 900}]})
    rest(sim, "POST", "/order", {"symbol": "XBTUSD", "side": "Buy", "orderQty": 100, "price": mid,
                                 "ordType": "Limit", "clOrdID": "ws-bid"})
    rest(sim, "POST", "/order", {"symbol": "XBTUSD", "side": "Sell", "orderQty": 30, "price": mid + 20,
                                 "ordType": "Limit", "clOrdID": "ws-ask"})
    gone = rest(sim, "POST", "/order", {"symbol": "XBTUSD", "side": "Sell", "orderQty": 10, "price": mid + 40,
                                        "ordType": "Limit", "clOrdID": "ws-gone"})
    rest(sim, "DELETE", "/order", {"orderID": gone["orderID"]})
    sim.control("trade", {"side": "Sell", "qty": 60, "price": mid})


def test_state_matches_rest_after_activity(sim_server, clients):
    client, state = start_client(sim_server)
    clients.append(client)
    assert client.wait_ready(20), state.snapshot(0).reason
    assert eventually(lambda: ws_view(state) == rest_view(sim_server))  # the initial image
    seq = state.private_seq
    activity(sim_server, state)
    assert eventually(lambda: ws_view(state) == rest_view(sim_server)), (ws_view(state), rest_view(sim_server))
    bid = state.order_by_clordid("ws-bid")
    assert (bid["cumQty"], bid["leavesQty"]) == (60, 40)
    assert state.order_by_clordid("ws-gone")["ordStatus"] == "Canceled"
    fills = [e for e in state.executions_since(seq) if e.get("execType") == "Trade"]
    assert [e["lastQty"] for e in fills] == [60]
    assert state.snapshot().position["currentQty"] == 60
    assert not state.errors, state.errors


def _reconnect_rebuilds_identical_state(sim, clients, fault: dict, **client_kwargs):
    client, state = start_client(sim, **client_kwargs)
    clients.append(client)
    assert client.wait_ready(20), state.snapshot(0).reason
    activity(sim, state)
    assert eventually(lambda: ws_view(state) == rest_view(sim))
    before = view(state)
    monitor = ReadyMonitor(state)
    sim.control("fault", fault)
    assert eventually(lambda: client.reconnects >= 1, 15), client.last_end
    assert client.wait_ready(20), state.snapshot(0).reason
    samples = monitor.stop()
    assert False in samples and samples[-1]  # readiness went away and came back
    after = view(state)
    # the exchange did not move: the rebuilt tables equal the ones before the fault
    # (the instrument's streamed bid/ask/mid/openInterest included)...
    assert after == before
    # ...and equal what a brand-new connection builds
    fresh, fresh_state = start_client(sim)
    clients.append(fresh)
    assert fresh.wait_ready(20)
    assert view(fresh_state) == after
    assert ws_view(state) == rest_view(sim)
    return client, state


def test_reconnect_after_drop_rebuilds_identical_state(sim_server, clients):
    client, _ = _reconnect_rebuilds_identical_state(sim_server, clients, {"mode": "drop"})
    assert "connection lost" in client.last_end or "closed" in client.last_end


def test_reconnect_after_stall_rebuilds_identical_state(sim_server, clients):
    client, state = _reconnect_rebuilds_identical_state(
        sim_server, clients, {"mode": "stall", "seconds": 1.5}, ping_interval=0.3, dead_after=0.8)
    assert "silent for" in client.last_end
    assert state.snapshot(0).data_age < 5


def test_trading_inputs_vanish_while_not_ready(sim_server, clients):
    """While the connection is down the snapshot says not ready, with the
    reason, so the executor (which checks `ready`) places nothing."""
    client, state = start_client(sim_server, backoff_initial=2.0, backoff_max=2.0)
    clients.append(client)
    assert client.wait_ready(20)
    sim_server.control("fault", {"mode": "drop", "seconds": 1.0})

    def not_ready():
        snap = state.snapshot(1)
        return None if snap.ready else snap

    snap = eventually(not_ready, 10)
    assert snap is not None and "websocket" in snap.reason
    assert client.wait_ready(20)


def test_wrong_secret_stops_for_good(sim_server, clients):
    state = State()
    client = WsClient(sim_server.ws_url, state, credentials=auth.Credentials(sim_server.key, "wrong-secret-xyz"),
                      backoff_initial=0.05)
    clients.append(client)
    client.start()
    assert eventually(lambda: not client.is_alive(), 10)
    snap = state.snapshot(0)
    assert "authentication failed (401)" in client.fatal and not snap.ready and snap.reason == client.fatal
    assert client.sessions == 1 and client.reconnects == 0


def test_public_only_client_and_pings_keep_a_quiet_connection(sim_server, clients):
    """The paused market sends nothing: our pings (answered by pongs) keep
    the connection alive well past dead_after."""
    client, state = start_client(sim_server, creds=False, ping_interval=0.2, dead_after=0.6)
    clients.append(client)
    assert client.wait_ready(20)
    assert client.tables == PUBLIC_TABLES and state.snapshot(0).position is None
    time.sleep(2.0)
    assert client.sessions == 1 and client.reconnects == 0 and state.snapshot(0).ready


def test_connection_refused_backs_off_and_stops(clients):
    state = State()
    client = WsClient("ws://127.0.0.1:9/realtime", state, backoff_initial=0.05, backoff_max=0.2)
    clients.append(client)
    client.start()
    assert eventually(lambda: client.last_end is not None, 5)
    assert "connect failed" in client.last_end and not state.snapshot(0).ready and client.is_alive()
    client.stop()
    assert not client.is_alive()


def test_backoff_is_jittered_exponential_and_capped():
    client = WsClient("ws://127.0.0.1:9/realtime", State(), backoff_initial=0.5, backoff_max=8.0,
                      rng=random.Random(7))
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (4, 8.0), (50, 8.0)]:
        delays = [client.session.backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # really jittered
    with pytest.raises(ValueError):
        WsClient("ws://x", State(), ping_interval=5, dead_after=5)


def test_stale_data_deadline_reconnects(sim_server, clients):
    """With `stale_after`, pongs alone do not keep a session whose market data
    stopped: the paused market goes stale and the client resubscribes."""
    client, state = start_client(sim_server, creds=False, ping_interval=0.2, dead_after=5.0, stale_after=0.6)
    clients.append(client)
    assert client.wait_ready(20)
    assert eventually(lambda: client.reconnects >= 1, 10)
    assert "stale data" in client.last_end
    assert client.wait_ready(20) and state.snapshot(0).data_age < 0.6


def test_stale_data_is_detected_by_default_in_real_time(sim_server, clients):
    """The deadline is on by default (a live daemon must notice a feed that
    stopped on a live socket), and it counts real time: a state whose clock
    is frozen (a simulated clock at speed 0) still goes stale."""
    assert WsClient(sim_server.ws_url, State()).stale_after == pytest.approx(30.0)
    state = State(clock=SimClock(start=1_600_000_000.0, speed=0))
    client = WsClient(sim_server.ws_url, state, ping_interval=0.2, dead_after=5.0, stale_after=0.6,
                      backoff_initial=0.05, backoff_max=0.2, rng=random.Random(1))
    clients.append(client)
    client.start()
    assert client.wait_ready(20)
    assert eventually(lambda: client.reconnects >= 1, 10), client.last_end
    assert "stale data" in client.last_end
    assert client.wait_ready(20)
    with pytest.raises(ValueError):
        WsClient(sim_server.ws_url, State(), stale_after=0)


def test_book_inconsistency_resyncs_from_a_new_partial(sim_server, clients):
    """A message the book cannot apply (here: a delete of an unknown level,
    as if a frame had been lost) makes the client reconnect and rebuild the
    book from a fresh partial instead of trading on a wrong book."""
    client, state = start_client(sim_server, creds=False)
    clients.append(client)
    assert client.wait_ready(20)
    good = state.snapshot(None)
    state.apply_message(json.dumps({"table": "orderBookL2", "action": "delete",
                                    "data": [{"symbol": "XBTUSD", "id": -1, "side": "Buy"}]}))
    assert not state.snapshot(0).ready
    assert eventually(lambda: client.reconnects >= 1, 10)
    assert "resync" in client.last_end
    assert client.wait_ready(20)
    snap = state.snapshot(None)
    assert (snap.bids, snap.asks) == (good.bids, good.asks) and state.resync_reason is None


def test_live_feed_is_applied_exactly(sim_factory, clients):
    """The simulator's market runs (thousands of book changes), then pauses:
    the websocket book and tables equal REST's to the last level."""
    sim = sim_factory(paused=False, speed=30)
    client, state = start_client(sim)
    clients.append(client)
    assert client.wait_ready(20)
    assert eventually(lambda: state.seq > 500, 20)  # a busy market went through
    sim.control("feed", {"paused": True})
    assert eventually(lambda: ws_view(state) == rest_view(sim)), (ws_view(state), rest_view(sim))
    assert state.snapshot(0).ready and not state.errors and client.sessions == 1
