"""The executor stepped over the in-process venue (a real sim Exchange, LocalVenue, SQLite
journal, RiskGate; no sockets, no threads): one decision is one intent rounded to the lot;
after a kill with flatten is cleared the strategy's next Target is pursued, never the stale
flatten, also after a restart; and a backtest drives it bar by bar synchronously."""

from __future__ import annotations

import dataclasses
import threading

from drivers.rig import TEST_EXECUTION, TEST_RISK, LocalRig, local_exchange

from sniper.journal import RISK, STRATEGY, Journal
from sniper.model import BUY, MINUTE, POST_ONLY, SELL, Target
from sniper.orders.executor import Executor
from sniper.sim import feed

DEEP = [(BUY, 9990.0, 100_000), (SELL, 10010.0, 100_000)]
FLATTEN_RISK = dataclasses.replace(TEST_RISK, flatten_on_kill=True)


def rig_on(book=DEEP, lot=None, **kw) -> LocalRig:
    exchange, clock = local_exchange(lot=lot)
    exchange.clear_market_levels()
    exchange.set_levels(book)
    return LocalRig(exchange, clock, **kw)


def reach(rig: LocalRig, target: Target) -> None:
    rig.executor.set_target(target)
    assert rig.executor.settle() == "idle"
    assert rig.reached(target), (rig.executor.position(), rig.journal.open_orders())


def intents(journal: Journal) -> list[tuple]:
    rows = journal._query("SELECT qty, style, source FROM intents ORDER BY id")
    return [tuple(r) for r in rows]


def test_one_decision_journals_one_intent_rounded_to_the_lot():
    rig = rig_on(lot=100)
    rig.executor.set_target(Target(150, "market", "wants 150"))
    assert rig.executor.settle() == "idle"
    assert intents(rig.journal) == [(100, "market", STRATEGY)]
    assert [(o.side, o.qty, o.intent_id) for o in rig.journal.orders()] == [(BUY, 100, 1)]
    assert rig.reached(Target(100))
    rig.executor.set_target(Target(199, "market", "still one lot"))  # the same decision once rounded
    rig.executor.settle()
    assert intents(rig.journal) == [(100, "market", STRATEGY)] and len(rig.journal.orders()) == 1


def test_a_target_set_during_a_kill_with_flatten_is_pursued_once_it_clears():
    rig = rig_on(risk_config=FLATTEN_RISK)
    reach(rig, Target(200, "market", "long"))
    rig.risk.kill("test")
    assert rig.executor.settle() == "idle" and rig.reached(Target(0))
    assert intents(rig.journal)[-1] == (0, "market", RISK)
    rig.executor.set_target(Target(-100, "passive", "during the kill"))
    rig.executor.settle()
    assert rig.reached(Target(0)) and rig.venue.open_orders() == []  # still killed: nothing opens
    rig.risk.clear()
    rig.executor.settle()
    [order] = rig.venue.open_orders()
    assert (order["side"], order["orderQty"], order["price"], order["execInst"]) == (SELL, 100, 10010.0, POST_ONLY)
    assert rig.executor.target == Target(-100, "passive", "during the kill")


def test_after_a_kill_with_flatten_clears_nothing_is_resumed_until_the_next_target(tmp_path):
    path = str(tmp_path / "journal.sqlite")
    rig = rig_on(risk_config=FLATTEN_RISK, journal_path=path)
    reach(rig, Target(200, "market", "long"))
    rig.risk.kill("test")
    rig.executor.settle()
    placed = len(rig.journal.orders())
    rig.risk.clear()
    assert rig.executor.settle() == "idle"
    assert rig.executor.target is None, "the flatten became the standing target"
    assert rig.reached(Target(0)) and len(rig.journal.orders()) == placed
    # a restart reads the same from the journal: the flatten is the latest decision, not a target
    restarted = Executor(rig.venue, Journal(path, rig.clock), rig.risk, rig.clock, rig.execution)
    assert restarted.target is None and restarted.settle() == "idle"
    assert len(rig.journal.orders()) == placed
    reach(rig, Target(200, "market", "next"))  # the strategy's next Target, the size it held before
    assert intents(rig.journal)[-1] == (200, "market", STRATEGY)


def test_a_backtest_steps_the_same_executor_bar_by_bar_without_threads():
    """The backtester's loop: step the feed a minute, set a target, settle. Every fill the
    exchange made is journaled, the position is the journal's, and no thread was started."""
    exchange, clock = local_exchange()
    bars = feed.load_bars(feed.DEFAULT_BARS)
    market = feed.Feed(exchange, bars, seed=1)
    rig = LocalRig(exchange, clock, execution=dataclasses.replace(TEST_EXECUTION, dead_mans_switch_ms=0))
    threads = threading.active_count()
    statuses = set()
    for minute in range(30):
        clock.advance(MINUTE)
        market.step_until(clock.now())
        exchange.advance()
        rig.executor.set_target(Target(100 if minute // 5 % 2 else -100, "market" if minute % 3 else "passive"))
        statuses.add(rig.executor.settle())
    assert threading.active_count() == threads and not rig.executor.is_alive()
    assert statuses == {"idle"}, statuses
    fills = rig.journal.fills()
    assert {f["exec_id"] for f in fills} == {r["execID"] for r in rig.venue.fills()}
    assert sum(f["qty"] if f["side"] == BUY else -f["qty"] for f in fills) == rig.venue.position() != 0


def test_a_restart_says_it_resumes_the_journal_s_last_target(tmp_path, caplog):
    path = str(tmp_path / "journal.sqlite")
    rig = rig_on(journal_path=path)
    reach(rig, Target(200, "market", "long"))
    restarted = Executor(rig.venue, Journal(path, rig.clock), rig.risk, rig.clock, rig.execution)
    with caplog.at_level("INFO", logger="sniper.orders.executor"):
        restarted.start()
        restarted.stop(cancel=False)
    assert "resuming the journal's last target +200 (market, intent 1) until the strategy decides" in caplog.text
    fresh = Executor(rig.venue, Journal(str(tmp_path / "new.sqlite"), rig.clock), rig.risk, rig.clock, rig.execution)
    caplog.clear()
    with caplog.at_level("INFO", logger="sniper.orders.executor"):
        fresh.start()
        fresh.stop(cancel=False)
    assert "resuming" not in caplog.text
