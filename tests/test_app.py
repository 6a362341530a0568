"""The daemon's composition root end to end: `sniper.app.build(cfg)` on the embedded simulator,
with the strategy loop, the executor and the health endpoint as production runs them."""

import dataclasses
import gzip
import json
import logging
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from sniper import app as app_mod
from sniper import config
from sniper.history import Store, load_bars_csv
from sniper.model import parse_time
from sniper.sim import process

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_FUNDING = ROOT / "sniper" / "data" / "xbtusd_funding_20180819_20181122.csv.gz"
BUNDLED_BARS = ROOT / "sniper" / "data" / "xbtusd_1m_20180820_20181122.csv.gz"
FAST_EXECUTION = {"cycle_seconds": 0.05, "confirm_timeout_s": 2.0}


def sim_config(tmp_path, *, strategy="funding", speed=120.0, start=None, funding=None, **strategy_keys):
    cfg = config.load(ROOT / "configs" / "sim.yaml")
    return dataclasses.replace(
        cfg,
        sim=dataclasses.replace(cfg.sim, speed=speed, start=start, funding=funding),
        strategy=dataclasses.replace(cfg.strategy, name=strategy, lookback_minutes=1440, **strategy_keys),
        risk=dataclasses.replace(cfg.risk, kill_switch_file=str(tmp_path / "KILL")),
        execution=dataclasses.replace(cfg.execution, **FAST_EXECUTION),
        paths=dataclasses.replace(cfg.paths, journal=str(tmp_path / "journal.sqlite"),
                                  history=str(tmp_path / "history.sqlite")),
        metrics=dataclasses.replace(cfg.metrics, port=0),
    )


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def started():
    apps = []

    def start(cfg, **kwargs):
        app = app_mod.build(cfg).start(**kwargs)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop(cancel_orders=True)


def funding_file(tmp_path, settlement: str, rate: float) -> str:
    """The bundled funding rates with one settlement's rate replaced."""
    lines = gzip.open(BUNDLED_FUNDING, "rt").read().splitlines()
    t = int(parse_time(settlement))
    out = [lines[0]] + [f"{t},{rate}" if line.split(",")[0] == str(t) else line for line in lines[1:]]
    assert out != lines, f"no settlement at {settlement} in the bundled rates"
    path = tmp_path / "funding.csv"
    path.write_text("\n".join(out) + "\n")
    return str(path)


def compact(values):
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


def test_a_funding_cycle_on_an_accelerated_simulator(tmp_path, started):
    """+0.25 % is in the 0.20 % band (enter 4 min before, reversal on). Under the motif switch
    the funding logic takes control at its minute and goes short (shorts receive), the wallet
    receives the payment at settlement, it reverses long after it, and when the reversal ends
    control goes back to the long-term logic."""
    settlement = parse_time("2018-11-19T12:00:00Z")
    cfg = sim_config(tmp_path, strategy="motif", start="2018-11-19T11:45:00Z",
                     funding=funding_file(tmp_path, "2018-11-19T12:00:00Z", 0.0025))
    fcfg = cfg.strategy.funding
    band = next(b for b in fcfg.positive if b.above < 0.0025)
    app = started(cfg)
    seen = []  # (market time, position, active logic), on every change

    def record():
        h = app.health()
        row = (h["position"], h.get("active_logic"))
        if not seen or seen[-1][1:] != row:
            seen.append((app.market_clock.now(), *row))
        return app.market_clock.now() > settlement + 60 * (fcfg.exit_after_minutes + fcfg.reverse_minutes + 2)

    wait_for(record, 90, "the end of the reversal")
    logics = compact([logic for _, _, logic in seen if logic])
    assert logics == ["trend", "funding", "trend"], seen
    in_funding = [(t, p) for t, p, logic in seen if logic == "funding"]
    took_over = in_funding[0][0]
    assert settlement - band.enter_minutes * 60 <= took_over < settlement - (band.enter_minutes - 1) * 60, seen
    # a move across zero is two orders (reduce-only to flat, then open): the instant of flat
    # between them is not a position the strategy asked for
    signs = compact([int(np.sign(p)) for _, p in in_funding if p])
    assert signs == [-1, 1], seen
    long_at = next(t for t, p in in_funding if p > 0)
    assert settlement < long_at < settlement + 60 * (fcfg.exit_after_minutes + 1), seen
    gave_back = next(t for t, _, logic in seen if t > took_over and logic == "trend")
    assert gave_back >= settlement + 60 * (fcfg.exit_after_minutes + fcfg.reverse_minutes), seen
    funding = [r for r in app.state.executions_since(0) if r.get("execType") == "Funding"]
    assert len(funding) == 1 and funding[0]["execComm"] < 0, funding  # negative: received
    assert funding[0]["lastQty"] < 0  # while short


def test_health_and_prometheus_metrics(tmp_path, started):
    app = started(sim_config(tmp_path, strategy="trend", speed=60.0))
    wait_for(lambda: app.health().get("last_decision_ts"), 30, "a first decision")
    wait_for(lambda: app.health()["position"] != 0, 30, "a first fill")
    with urllib.request.urlopen(app.health_server.url + "/health", timeout=5) as resp:
        health = json.loads(resp.read())
    assert health["healthy"] and health["active_logic"] == "trend" and health["reason"]
    assert set(health["threads"]) == {"websocket", "executor", "strategy"} and all(health["threads"].values())
    with urllib.request.urlopen(app.health_server.url + "/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
    for name in ("sniper_ws_messages", "sniper_data_age_seconds", "sniper_book_levels", "sniper_ws_reconnects",
                 "sniper_orders", "sniper_order_roundtrip_seconds", "sniper_position_contracts",
                 "sniper_target_contracts", "sniper_unrealised_pnl_xbt", "sniper_active_logic",
                 "sniper_last_decision_timestamp_seconds", "sniper_thread_alive"):
        assert name in families, name
    sent = [s for s in families["sniper_orders"].samples
            if s.name == "sniper_orders_total" and s.labels["kind"] == "place" and s.labels["outcome"] == "sent"]
    assert sent and sent[0].value >= 1, families["sniper_orders"].samples
    count = [s for s in families["sniper_order_roundtrip_seconds"].samples if s.name.endswith("_count")]
    assert count[0].value >= 1
    position = families["sniper_position_contracts"].samples[0].value
    assert position == app.health()["position"] != 0
    ages = {s.labels["table"]: s.value for s in families["sniper_data_age_seconds"].samples}
    assert {"all", "instrument", "position", "margin"} <= set(ages) and all(0 <= v < 60 for v in ages.values()), ages
    logic = {s.labels["logic"]: s.value for s in families["sniper_active_logic"].samples}
    assert logic == {"trend": 1.0}
    assert families["sniper_book_levels"].samples and all(s.value > 0 for s in families["sniper_book_levels"].samples)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the deaths are the point
def test_a_dead_strategy_or_executor_thread_is_restarted(tmp_path, started, monkeypatch):
    app = started(sim_config(tmp_path, strategy="flat", speed=60.0))
    for part in (app.loop, app.executor):
        original = part.step if part is app.executor else app.strategy.decide
        target = app.executor if part is app.executor else app.strategy
        attr = "step" if part is app.executor else "decide"

        def dies(*args, _original=original, _target=target, _attr=attr, **kwargs):
            setattr(_target, _attr, _original)  # one death only
            raise SystemExit("simulated thread death")

        monkeypatch.setattr(target, attr, dies)
        wait_for(lambda p=part: not p.is_alive(), 30, f"the {attr} thread to die")
        assert app.health()["healthy"] is False
        assert app.repair() == ["executor" if part is app.executor else "strategy"]
        wait_for(lambda p=part: p.is_alive(), 5, "the restart")
    assert app.restarts == {"executor": 1, "strategy": 1}
    wait_for(lambda: app.health()["healthy"], 10, "health after the restarts")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death is the point
def test_a_dead_websocket_thread_is_restarted_and_the_book_is_live_again(tmp_path, started, monkeypatch):
    """No frame reaches the websocket thread outside its catch-all any more; the last one that
    did was a 429's retryAfter of 1e308, which the reconnect wait could not obey. The test
    brings that death back by injection: the session's next delay is 1e308 once, and the
    simulator drops the connection."""
    app = started(sim_config(tmp_path, strategy="flat", speed=60.0))
    control = requests.Session()
    session = app.ws.session

    def absurd(healthy):
        monkeypatch.undo()  # one death only
        return 1e308

    monkeypatch.setattr(session, "next_delay", absurd)
    process.control(control, app.url, "fault", {"mode": "drop"})
    wait_for(lambda: not app.ws.is_alive(), 10, "the websocket thread to die")
    health = app.health()
    assert not health["healthy"] and not health["ready"] and health["dead_threads"] == ["websocket"], health
    assert app.repair() == ["websocket"] and app.restarts == {"websocket": 1}
    wait_for(lambda: app.health()["healthy"], 30, "health after the restart")
    assert app.health()["dead_threads"] == [] and app.state.snapshot(0).reconnects == 1
    # live: with the market paused, a size the simulator's book is given shows in ours
    process.control(control, app.url, "feed", {"paused": True})
    ask = process.control(control, app.url, "state", method="GET")["best_ask"]
    process.control(control, app.url, "book", {"levels": [{"side": "Sell", "price": ask, "size": 4321}]})
    wait_for(lambda: app.state.snapshot(1).asks == [(ask, 4321)], 10, "the new size in our book")
    assert app.repair() == []


def test_garbled_account_figures_are_reported_and_break_nothing(tmp_path, started, caplog):
    """Rows the exchange sends garbled (through the real State, on a paused market so nothing
    overwrites them): /health and /metrics show the figures as unknown and say why, the strategy
    loop decides nothing and says so once, and all is as before once good rows come."""
    app = started(sim_config(tmp_path, strategy="flat", speed=60.0))
    process.control(requests.Session(), app.url, "feed", {"paused": True})
    snap = app.state.snapshot(0)
    assert snap.position is None  # the flat strategy never traded: the position row is inserted
    account = snap.margin["account"]

    def send(table: str, action: str, **fields) -> None:
        key = {"symbol": "XBTUSD", "currency": "XBt"} if table == "position" else {"currency": "XBt"}
        app.state.apply_message(json.dumps({"table": table, "action": action,
                                            "data": [{"account": account, **key, **fields}]}))

    with caplog.at_level(logging.WARNING, "sniper.loop"):
        send("position", "insert", currentQty=1.9, unrealisedPnl="x")
        send("margin", "update", marginBalance="lots")
        health = app.health()
        assert health["position"] is None and health["unrealised_pnl_xbt"] is None
        assert health["margin_balance_xbt"] is None and health["unreadable"] == [
            "unreadable position row: currentQty 1.9", "unreadable position unrealisedPnl 'x'",
            "unreadable margin marginBalance 'lots'"]
        with urllib.request.urlopen(app.health_server.url + "/metrics", timeout=5) as resp:
            families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
        assert families["sniper_position_contracts"].samples == [] and families["sniper_up"].samples
        wait_for(lambda: any("no decision" in r.getMessage() for r in caplog.records), 10, "the loop's one line")
        time.sleep(0.5)  # wakes of the loop on the same garbled row: no more lines
        lines = [r.getMessage() for r in caplog.records if r.name == "sniper.loop"]
        assert lines == ["no decision: unreadable position row: currentQty 1.9"], lines
    assert app.loop.is_alive() and app.executor.is_alive()
    send("position", "update", currentQty=0, unrealisedPnl=0)
    send("margin", "update", marginBalance=snap.margin["marginBalance"])
    health = app.health()
    assert health["position"] == 0 and health["unreadable"] == [], health
    assert health["margin_balance_xbt"] == snap.margin["marginBalance"] / 1e8


def test_a_store_written_past_the_replays_now_is_not_seen(tmp_path, started):
    """A previous run of the replayed market left bars after this run's start in the store:
    the strategy's window ends at the last minute closed now, never later."""
    bars = load_bars_csv(BUNDLED_BARS)
    start = parse_time("2018-11-19T06:00:00Z")
    with Store(tmp_path / "history.sqlite") as store:
        store.append_bars(bars[bars["time"] < start + 3600])  # an hour past this run's start
    app = started(sim_config(tmp_path, strategy="flat", speed=1.0, start="2018-11-19T06:00:00Z"))
    window = app.bars.bars
    assert int(window["time"][-1]) < app.market_clock.now() - 60 + 1
    assert int(window["time"][-1]) >= start - 120
