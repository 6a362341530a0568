"""The strategy loop: the thread that turns closed bars into Targets.

It wakes on each closed minute (all funding-window edges are minute boundaries) and on our
private websocket changes (fills), keeps the bars current (`LiveBars.update`: the store's disk
I/O and REST checks happen here, never on the websocket thread), reads ONE state snapshot,
asks the strategy, caps the Target through the risk gate and hands it to the executor. Each
decision is kept (`last`) for logs, /health and /metrics.

Time: decisions run on the market's clock (the exchange's time: the simulator's clock when it
is embedded), timeouts on the real one; a backtest runs the same strategy objects with no loop.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from sniper.model import MINUTE, SATOSHI, Target, parse_time
from sniper.orders.venue import VenueError, balance_of, mark_of, number, position_of
from sniper.strategies.base import Account, Decision, Funding

logger = logging.getLogger("sniper.loop")

WAKE_S = 0.2  # longest real-time sleep between looks at the market clock (at 1x)
MIN_WAKE_S = 0.005  # ... and its floor when the market clock runs faster (an accelerated simulator)
CLOSE_GRACE_S = 1.0  # market seconds after a minute ends before its bar is asked for


@dataclass
class LastDecision:
    """What the loop decided last, as /health and the status line show it."""

    at: float = 0.0  # market time of the decision
    bar_time: int | None = None  # open time of the last closed bar it saw
    target: Target | None = None
    seen: dict = field(default_factory=dict)


class StrategyLoop:
    def __init__(self, strategy, bars, state, executor, risk, market_clock, *, taker_fee: float,
                 maker_fee: float, on_wake=lambda: None) -> None:
        self.strategy, self.bars, self.state = strategy, bars, state
        self.on_wake = on_wake  # e.g. re-sync the market clock to the exchange's timestamps
        self.executor, self.risk, self.market_clock = executor, risk, market_clock
        self.taker_fee, self.maker_fee = taker_fee, maker_fee
        self.last = LastDecision()
        self._shown: tuple | None = None  # the target last logged
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._unreadable: str | None = None  # the garbled account figure last logged
        # a clock running at 100x must be looked at 100x as often, or minutes go by unseen
        self._wake = max(MIN_WAKE_S, WAKE_S / max(1.0, float(getattr(market_clock, "speed", 1.0) or 1.0)))

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="strategy", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        private, position = self.state.private_seq, None
        next_bar = 0.0  # decide at once on start: the bars were just backfilled
        while not self._stop.is_set():
            try:
                self.on_wake()
                now = self.market_clock.now()
                held = position_of(self.state.snapshot(depth=0))
                moved = position is not None and held != position
                if moved:
                    target = self.executor.target
                    logger.info("position %+d -> %+d (target %s)", position, held,
                                "none" if target is None else f"{target.qty:+d}")
                position = held
                if now >= next_bar or moved:  # a new bar, or a fill: the strategy may see it
                    self.step(now)
                    next_bar = self._next_close()
                self._unreadable = None
            except VenueError as exc:
                # a garbled account figure: no decision on it; one line while it stays the same
                if str(exc) != self._unreadable:
                    logger.warning("no decision: %s", exc)
                    self._unreadable = str(exc)
                next_bar = self._next_close()
            except Exception:
                # a bug in one decision must show, and must not leave the daemon without a loop
                logger.exception("strategy step failed; trying again at the next wake")
                next_bar = self._next_close()
            private = self.state.wait_private(private, self._wake)

    def _next_close(self) -> float:
        """Market time at which the next minute's bar may be asked for."""
        now = self.market_clock.now()
        return (now // MINUTE + 1) * MINUTE + CLOSE_GRACE_S

    # ------------------------------------------------------------------ one decision
    def step(self, now: float) -> Decision | None:
        """Bring the bars up to date, decide once, and hand the Target on. Returns the decision,
        or None when the market data is not complete (nothing is decided blind)."""
        new = self.bars.update(now)
        snap = self.state.snapshot(depth=1)
        if not snap.ready:
            logger.info("no decision: market data not ready (%s)", snap.reason)
            return None
        bars = self.bars.bars
        if not len(bars):
            return None
        decision = self.strategy.decide(bars, self._funding(snap), self._account(snap), now)
        target = decision.target
        if target is not None:
            target = self.risk.cap_target(target, snap)
            self.executor.set_target(target)
        with self._lock:
            self.last = LastDecision(now, int(bars["time"][-1]), target, dict(decision.seen))
        shown = None if target is None else (target.qty, target.style)
        if new or shown != self._shown:
            self._log(decision, target)
            self._shown = shown
        return decision

    def _log(self, decision: Decision, target: Target | None) -> None:
        seen = decision.seen
        parts = [f"logic={seen.get('logic', '-')}",
                 "target=none" if target is None else f"target={target.qty:+d} {target.style}"]
        if "forecast" in seen:
            parts.append(f"forecast={seen['forecast'] * 100:+.3f}%")
        if "agreement" in seen:
            parts.append(f"agreement={seen['agreement']:.2f}")
        neighbours = seen.get("neighbours") or []
        if neighbours:
            parts.append(f"neighbours={len(neighbours)} nearest={neighbours[0].get('distance', 0):.3f}")
        logger.info("decision: %s (%s)", " ".join(parts), seen.get("reason", ""))

    def _funding(self, snap) -> Funding:
        times, rates = self.bars.funding_history
        ts = snap.funding_timestamp
        return Funding(next_time=parse_time(ts) if ts else None,
                       rate=number(snap.funding_rate, "instrument fundingRate"), past_times=times, past_rates=rates)

    def _account(self, snap) -> Account:
        """Our side as the strategy sees it; a garbled figure raises VenueError (no decision)."""
        pos = snap.position or {}
        balance = balance_of(snap)
        return Account(
            position=position_of(snap),
            margin_balance_xbt=balance / SATOSHI if balance else 0.0,
            mark=mark_of(snap), best_bid=snap.best_bid, best_ask=snap.best_ask,
            avg_entry=number(pos.get("avgEntryPrice"), "position avgEntryPrice"),
            liquidation_price=number(pos.get("liquidationPrice"), "position liquidationPrice"),
            taker_fee=self.taker_fee, maker_fee=self.maker_fee,
        )

    def status(self) -> dict:
        with self._lock:
            last = self.last
        target = last.target
        return {
            "active_logic": last.seen.get("logic"),
            "reason": last.seen.get("reason"),
            "decision_target": None if target is None else {"qty": target.qty, "style": target.style},
            "last_decision_ts": last.at or None,
            "last_bar_time": last.bar_time,
            "decision": {k: _short(v) for k, v in last.seen.items()},
        }


def _short(value):
    """Floats to 6 significant digits, sequences as lists: a readable log and JSON."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return [_short(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
    return value
