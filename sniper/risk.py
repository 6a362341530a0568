"""The risk gate: every risk decision, in one place.

Targets pass it twice: the strategy loop caps a wish to what the exposure limits
allow (`cap_target`), and the executor asks each cycle what it may pursue now
(`steer`): the strategy's target, nothing while the kill switch is on, or a
flatten when `flatten_on_kill` says so. Orders pass it once: `check` sees one
proposed order plus the exchange's view (a snapshot) and says yes or no, naming
the rule and the numbers; `order_cap` tells the planner how large a leg may be.
The gate is deliberately dumb and separate from the executor. Limits that bound
exposure (position, leverage, liquidation distance, daily loss) never block an
order that can only reduce exposure; size, rate and the kill switch apply to
everything (except that a configured flatten may still reduce while killed).
The account figures are read with the venue's checked readers: a position the
gate cannot read refuses every order (whether one reduces is unknown), a garbled
figure an exposure limit needs refuses the orders that increase exposure; both
as `unreadable_account`, naming the field.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import math
import os
import signal
from dataclasses import dataclass

from sniper.config import RiskConfig
from sniper.model import SATOSHI, Target, side_sign
from sniper.orders.venue import VenueError, balance_of, mark_of, number, position_of

logger = logging.getLogger(__name__)

REPEAT_LOG_S = 60.0  # the same refusal is logged again at most this often


@dataclass(frozen=True)
class ProposedOrder:
    side: str  # BUY | SELL
    qty: int  # contracts, > 0
    price: float | None  # limit price; None = market (mark or touch is used for notional)
    reduce_only: bool = False

    @property
    def signed(self) -> int:
        return side_sign(self.side) * self.qty


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rule: str = ""
    message: str = ""

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return "ok" if self.ok else f"{self.rule}: {self.message}"


OK = Verdict(True)


@dataclass(frozen=True)
class Steering:
    """What the executor may pursue this cycle: `target` (None: nothing), and `kill`, the
    kill switch's reason while it is on (then every order must be canceled)."""

    target: Target | None
    kill: str | None = None


class RiskGate:
    """`steer` each cycle, `check` before sending, `record_sent` after a new order is sent.
    `store` (a Journal) keeps the day's opening balance across restarts and records each
    refusal (once per change of rule, so a refusal that persists is one event)."""

    def __init__(self, config: RiskConfig, clock, *, store=None) -> None:
        self.config = config
        self._clock = clock
        self._store = store
        self._sent = collections.deque()
        self._manual_kill: str | None = None
        self._last_logged: tuple[str, float] = ("", -1e18)
        self._day_start: tuple[str, float] | None = None
        self._last_refusal = ""  # the rule of the last refusal journaled; "" after a pass
        self.refusals: collections.Counter[str] = collections.Counter()  # rule -> orders refused (metrics)

    # ------------------------------------------------------------------ kill switch
    def kill(self, reason: str) -> None:
        """Trip the kill switch by hand (e.g. from a signal handler)."""
        self._manual_kill = reason or "manual"
        logger.error("kill switch tripped: %s", self._manual_kill)

    def on_signal(self, signum, _frame=None) -> None:
        """A signal handler (e.g. `signal.signal(SIGUSR1, gate.on_signal)` in the main thread)."""
        self.kill(f"signal {signal.Signals(signum).name}")

    def clear(self) -> None:
        """Clear the manual kill; the file, if any, must be removed by whoever created it."""
        self._manual_kill = None

    @property
    def kill_reason(self) -> str | None:
        if self._manual_kill:
            return self._manual_kill
        path = self.config.kill_switch_file
        if path and os.path.exists(path):
            return f"file {path} exists"
        return None

    # ------------------------------------------------------------------ targets
    def steer(self, target: Target | None) -> Steering:
        """What may be pursued now instead of `target` (the strategy's): the target itself;
        while the kill switch is on nothing, or a flatten at market when `flatten_on_kill`."""
        reason = self.kill_reason
        if not reason:
            return Steering(target)
        if self.config.flatten_on_kill:
            return Steering(Target(0, "market", f"kill switch: {reason}"), reason)
        return Steering(None, reason)

    def cap_target(self, target: Target, snap) -> Target:
        """`target` within the exposure limits: |qty| at most max_position and what max_leverage
        allows on the margin balance at the mark. A wish beyond them becomes the largest allowed
        position instead of an order `check` would refuse every cycle."""
        limit = self.config.max_position
        try:
            price, balance = mark_of(snap) or snap.best_ask or snap.best_bid, balance_of(snap)
        except VenueError:  # unknown: `check` refuses the orders that would need them, naming the field
            price = balance = None
        if price and balance and balance > 0:
            limit = min(limit, int(self.config.max_leverage * balance / SATOSHI * price))
        if abs(target.qty) <= limit:
            return target
        capped = int(math.copysign(limit, target.qty))
        logger.debug("target %+d capped to %+d by the exposure limits", target.qty, capped)
        return Target(capped, target.style, f"{target.reason} (capped from {target.qty:+d})")

    # ------------------------------------------------------------------ orders
    @property
    def order_cap(self) -> int:
        """The largest order `check` passes: the planner splits a move into legs this big."""
        return self.config.max_order_qty

    def record_sent(self) -> None:
        self._sent.append(self._clock.monotonic())

    def check(self, order: ProposedOrder, snap, working: int = 0) -> Verdict:
        """May `order` be sent? `working` is the signed leaves of our other open orders."""
        try:
            verdict = self._check(order, snap, working)
        except VenueError as exc:  # a figure of the exchange's view is garbled: nothing rests on it
            verdict = Verdict(False, "unreadable_account", str(exc))
        if verdict.ok:
            self._last_refusal = ""
            return verdict
        self.refusals[verdict.rule] += 1
        now = self._clock.monotonic()
        rule, last = self._last_logged
        if rule != verdict.rule or now - last >= REPEAT_LOG_S:
            logger.warning("risk refused %s %d @ %s: %s", order.side, order.qty, order.price, verdict)
            self._last_logged = (verdict.rule, now)
        if self._store is not None and verdict.rule != self._last_refusal:
            self._store.record_event("refused", {"rule": verdict.rule, "message": verdict.message, "side": order.side,
                                                 "qty": order.qty, "price": order.price})
        self._last_refusal = verdict.rule
        return verdict

    def _check(self, order: ProposedOrder, snap, working: int) -> Verdict:
        cfg = self.config
        position = position_of(snap)
        before = position + working
        after = before + order.signed
        increases = not order.reduce_only and abs(after) > abs(before)

        reason = self.kill_reason
        if reason and not (cfg.flatten_on_kill and not increases):
            return Verdict(False, "kill_switch", f"trading stopped: {reason}")
        if order.qty > cfg.max_order_qty:
            return Verdict(False, "max_order_qty", f"order {order.qty} > max {cfg.max_order_qty} contracts")
        now = self._clock.monotonic()
        while self._sent and now - self._sent[0] >= 60.0:
            self._sent.popleft()
        if len(self._sent) >= cfg.max_orders_per_minute:
            return Verdict(False, "max_orders_per_minute",
                           f"{len(self._sent)} orders in the last 60 s, max {cfg.max_orders_per_minute}")
        if not increases:
            return OK
        if abs(after) > cfg.max_position:
            return Verdict(False, "max_position",
                           f"position {position} + working {working} + order {order.signed} = {after},"
                           f" |{after}| > max {cfg.max_position}")
        price = order.price or mark_of(snap) or snap.best_ask or snap.best_bid
        balance = balance_of(snap)
        if not price or not balance or balance <= 0:
            return Verdict(False, "max_leverage", f"cannot size leverage: price {price}, margin balance {balance}")
        leverage = abs(after) / price / (balance / SATOSHI)
        if leverage > cfg.max_leverage:
            return Verdict(False, "max_leverage",
                           f"{abs(after)} contracts at {price} on {balance / SATOSHI:.8f} XBT"
                           f" = {leverage:.2f}x > max {cfg.max_leverage}x")
        row = snap.position or {}
        liq = number(row.get("liquidationPrice"), "position liquidationPrice")
        mark = mark_of(snap) or number(row.get("markPrice"), "position markPrice")
        if position and liq and mark:
            distance = abs(mark - liq) / mark
            if distance < cfg.min_liquidation_distance:
                return Verdict(False, "min_liquidation_distance",
                               f"mark {mark} liquidation {liq}: distance {distance:.2%}"
                               f" < min {cfg.min_liquidation_distance:.2%}")
        loss = self._daily_loss(balance)
        if loss >= cfg.daily_loss_limit_xbt:
            return Verdict(False, "daily_loss_limit",
                           f"lost {loss:.8f} XBT today >= limit {cfg.daily_loss_limit_xbt} XBT")
        return OK

    def _daily_loss(self, balance: float) -> float:
        """XBT lost since the first balance seen this UTC day (persisted in the store)."""
        day = dt.datetime.fromtimestamp(self._clock.now(), dt.UTC).date().isoformat()
        start = self._day_start
        if self._store is not None and (start is None or start[0] != day):
            saved = self._store.get_meta("risk.day_start")
            start = tuple(json.loads(saved)) if saved else None
        if start is None or start[0] != day:
            start = (day, float(balance))
            if self._store is not None:
                self._store.set_meta("risk.day_start", json.dumps(start))
        self._day_start = start
        return (start[1] - balance) / SATOSHI
