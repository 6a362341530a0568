"""The executor: moves the position to the strategy's Target, and nothing more.

Why it cannot double-order:
  * one thread owns all order traffic and keeps at most ONE working order;
  * a new order is planned only when the journal has no order in an unknown
    state (`pending`), every order the exchange acknowledged is visible on the
    websocket, and the websocket position agrees with the fills of our orders
    (`_consistent`), so a fill can never be missing from both the position and
    the open orders when the quantity is computed;
  * quantity = target - position - working leaves, capped by the leg (a
    reducing leg never crosses zero and carries ReduceOnly);
  * every order is journaled with a deterministic clOrdID before it is sent,
    and an order whose reply was lost is *completed* by re-sending the same
    request (same clOrdID), never replaced: the exchange's clOrdID uniqueness
    turns the retry into a lookup if the first attempt landed.

`plan` is a pure function of (target, position, working orders, top of book);
`Executor.step` is one cycle of sync -> check -> plan -> journal -> send ->
confirm on the websocket. The thread (`start`) just repeats `step`, waking on
a new target, a private websocket change, a move of the touch, or the cycle.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sniper.config import ExecutionConfig
from sniper.journal import TERMINAL_ORD_STATUSES, Intent, Journal, OrderRecord
from sniper.rest import AuthError, ExchangeError, NotFound, Rejected, RestClient
from sniper.risk import ProposedOrder, RiskGate

logger = logging.getLogger(__name__)

STYLES = ("passive", "market")
POST_ONLY = "ParticipateDoNotInitiate"
REDUCE_ONLY = "ReduceOnly"
IOC = "ImmediateOrCancel"
GTC = "GoodTillCancel"
ERROR_BACKOFF_S, ERROR_BACKOFF_CAP_S = 0.05, 2.0  # after a failed cycle
WAIT_SLICE_S = 0.02  # longest wait before re-checking for a new target


@dataclass(frozen=True)
class Target:
    """What the strategy wants: signed contracts, how to get there, and why."""

    qty: int
    style: str = "passive"
    reason: str = ""

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"Target style must be one of {STYLES}, got {self.style!r}")
        if int(self.qty) != self.qty:
            raise ValueError(f"Target qty must be whole contracts, got {self.qty!r}")


@dataclass(frozen=True)
class Market:
    """The top of book and the instrument's grid, as the planner needs them."""

    best_bid: float | None
    best_ask: float | None
    tick: float
    lot: int = 1


@dataclass(frozen=True)
class Place:
    side: str
    qty: int
    price: float
    ord_type: str
    exec_inst: str
    time_in_force: str
    why: str

    @property
    def reduce_only(self) -> bool:
        return REDUCE_ONLY in self.exec_inst


@dataclass(frozen=True)
class Amend:
    clordid: str
    price: float | None  # None = unchanged
    order_qty: int | None  # absolute orderQty = cumQty + wanted leaves; None = unchanged
    leaves: int  # the leaves the amend aims for
    why: str


@dataclass(frozen=True)
class Cancel:
    clordid: str
    why: str


Action = Place | Amend | Cancel


# ---------------------------------------------------------------------------- pure planning

def to_tick(price: float, tick: float, direction: int = 0) -> float:
    """Round `price` to the tick grid: down (-1), up (+1) or nearest (0)."""
    steps = price / tick
    steps = math.floor(steps + 1e-9) if direction < 0 else math.ceil(steps - 1e-9) if direction > 0 else round(steps)
    return round(steps * tick, 10)


def round_lot(qty: int, lot: int) -> int:
    """Toward zero to a whole number of lots (the exchange refuses other sizes)."""
    lot = max(1, int(lot))
    return int(math.copysign(abs(int(qty)) // lot * lot, qty)) if qty else 0


def leg(position: int, need: int, max_order_qty: int, lot: int = 1) -> tuple[int, bool]:
    """The next order's size and whether it is reduce-only. A move that crosses zero is two
    legs: first reduce to flat (ReduceOnly), then open; each capped at max_order_qty."""
    reducing = position != 0 and need != 0 and (position > 0) != (need > 0)
    qty = min(abs(need), abs(position)) if reducing else abs(need)
    return round_lot(min(qty, max_order_qty), lot), reducing


def passive_price(side: str, mkt: Market) -> float | None:
    """Join the touch on our side; never cross (post-only would be canceled)."""
    if side == "Buy":
        if mkt.best_bid is not None:
            return mkt.best_bid
        return to_tick(mkt.best_ask - mkt.tick, mkt.tick) if mkt.best_ask is not None else None
    if mkt.best_ask is not None:
        return mkt.best_ask
    return to_tick(mkt.best_bid + mkt.tick, mkt.tick) if mkt.best_bid is not None else None


def market_price(side: str, mkt: Market, band: float) -> float | None:
    """The limit of an aggressive IOC order: the far touch plus a band, so a thin book
    cannot fill us at any price."""
    if side == "Buy":
        return to_tick(mkt.best_ask * (1 + band), mkt.tick, -1) if mkt.best_ask is not None else None
    return to_tick(mkt.best_bid * (1 - band), mkt.tick, +1) if mkt.best_bid is not None else None


def order_style(order: OrderRecord) -> str:
    return "market" if order.time_in_force == IOC else "passive"


def plan(target: Target, position: int, working: list[OrderRecord], mkt: Market, *, max_order_qty: int,
         reprice_ticks: int = 0, band: float = 0.005) -> list[Action]:
    """The actions that move `position` (plus `working`, our live orders) toward `target`.
    Never more than one working order; never leaves that would overshoot the target."""
    if len(working) > 1:
        return [Cancel(o.clordid, "more than one working order") for o in working[1:]]
    need = target.qty - position
    side = "Buy" if need > 0 else "Sell"
    qty, reduce = leg(position, need, max_order_qty, mkt.lot)
    if working:
        order = working[0]
        if need == 0 or qty == 0:
            return [Cancel(order.clordid, "target reached")]
        if order.side != side:
            return [Cancel(order.clordid, "direction changed")]
        if order.reduce_only != reduce:
            return [Cancel(order.clordid, "reduce-only no longer matches the leg")]
        if order_style(order) != target.style:
            return [Cancel(order.clordid, f"style changed to {target.style}")]
        if target.style == "market":
            return []  # an IOC order ends by itself
        price = passive_price(side, mkt)
        if price is not None and order.price is not None \
                and abs(price - order.price) <= reprice_ticks * mkt.tick + 1e-9:
            price = None
        order_qty = order.cum_qty + qty if order.leaves_qty != qty else None
        if price is None and order_qty is None:
            return []
        why = "follow the touch" if order_qty is None else "target changed"
        return [Amend(order.clordid, price, order_qty, qty, why)]
    if qty == 0:
        return []
    if target.style == "passive":
        price = passive_price(side, mkt)
        inst = f"{POST_ONLY},{REDUCE_ONLY}" if reduce else POST_ONLY
        tif = GTC
    else:
        price = market_price(side, mkt, band)
        inst = REDUCE_ONLY if reduce else ""
        tif = IOC
    if price is None:
        return []
    return [Place(side, qty, price, "Limit", inst, tif, target.reason or "target")]


# ---------------------------------------------------------------------------- the executor

class Executor:
    """Drives the position to the latest Target. `step()` is one cycle (tests call it
    directly); `start()` runs cycles on a thread until `stop()`."""

    def __init__(self, rest: RestClient, state, journal: Journal, risk: RiskGate, clock,
                 config: ExecutionConfig | None = None, *, symbol: str = "XBTUSD") -> None:
        self.rest, self.state, self.journal, self.risk, self.clock = rest, state, journal, risk, clock
        self.config = config or ExecutionConfig()
        self.symbol = symbol
        self._lock = threading.Lock()  # guards _wanted, the one field other threads write
        self._wanted: Target | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._intent: Intent | None = journal.last_intent()
        self._reconciled_at: int | None = None  # snapshot.reconnects when we last reconciled
        self._next_dms = 0.0
        self._kill_handled = False
        self._kill_cancel_at = 0.0
        # consistency baseline: position and the cumQty of the orders tracked since then
        self._base_pos = 0
        self._base_cum: dict[str, int] = {}
        self._mismatch_since: float | None = None
        self._exec_cursor = 0
        self._unconfirmed: dict[str, tuple] = {}  # clOrdID -> (price, orderQty) REST replied, websocket not yet
        self._last_refusal = ""
        self.last_status = "new"

    # ------------------------------------------------------------------ public
    @property
    def target(self) -> Target | None:
        """The target being pursued (the journal's last intent unless a newer one waits)."""
        with self._lock:
            if self._wanted is not None:
                return self._wanted
        if self._intent is None or self._intent.style not in STYLES:
            return None
        return Target(self._intent.qty, self._intent.style, self._intent.reason)

    def set_target(self, target: Target) -> None:
        """Thread-safe; the executor thread journals it as an intent on its next cycle."""
        with self._lock:
            self._wanted = target

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="executor", daemon=True)
        self._thread.start()

    def stop(self, cancel: bool | None = None, timeout: float = 10.0) -> None:
        """Stop the thread; cancel our orders if `cancel` (default: config.cancel_on_exit)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.config.cancel_on_exit if cancel is None else cancel:
            try:
                self.rest.cancel_all(text="sniper stopping")
                self.journal.record_event("cancel_all", {"why": "stop"})
            except ExchangeError as exc:
                logger.error("cancel on exit failed (%s); the dead man's switch will cancel", exc)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def position(self, snap=None) -> int:
        snap = snap or self.state.snapshot(depth=1)
        return int((snap.position or {}).get("currentQty") or 0)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.last_status = self.step()
            except ExchangeError as exc:
                logger.warning("executor cycle failed: %s", exc)
                self.last_status = "error"
            except Exception:
                logger.exception("executor cycle crashed; continuing")
                self.last_status = "error"
            if self.last_status in ("error", "rejected"):
                # an exchange in trouble (503 storm, down) or refusing our orders (e.g. not enough
                # balance) is not hammered: back off, doubling while it goes on, capped
                failures += 1
                self._stop.wait(min(ERROR_BACKOFF_CAP_S, ERROR_BACKOFF_S * 2 ** (failures - 1)))
                continue
            failures = 0
            if self.last_status not in ("acted", "reconciled"):
                self._wait_for_change(self.config.cycle_seconds)

    def _wait_for_change(self, timeout: float) -> None:
        """Sleep until a new target, a private websocket change, a move of the touch (only while a
        passive order works: it must follow) or `timeout`. Waits in slices so a new target or
        stop() is seen within WAIT_SLICE_S."""
        deadline = self.clock.monotonic() + timeout
        private = self.state.private_seq
        chasing = any(o.status == "live" and order_style(o) == "passive" for o in self.journal.open_orders())
        touch = self.state.touch() if chasing else None
        while not self._stop.is_set() and self._wanted is None:
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0 or self.state.wait_change(private, touch, min(remaining, WAIT_SLICE_S)):
                return

    # ------------------------------------------------------------------ one cycle
    def step(self) -> str:
        """One cycle. Returns what happened: not-ready, reconciled, killed, waiting, acted,
        refused (by the risk gate), rejected (by the exchange) or idle."""
        snap = self.state.snapshot(depth=1)
        if not snap.ready:
            return "not-ready"
        if self._reconciled_at != snap.reconnects:
            self.reconcile()
            self._reconciled_at = snap.reconnects
            return "reconciled"
        self._refresh_dead_mans_switch()
        self._adopt_target()
        self._sync(snap)
        target = self.target
        reason = self.risk.kill_reason
        if reason:
            target = self._on_kill(reason, snap)
            if target is None:
                return "killed"
        else:
            self._kill_handled = False
        opened = self.journal.open_orders()
        pending = [o for o in opened if o.status == "pending"]
        if pending:
            return self._resend(pending[0])
        unseen = [o for o in opened if self.state.order_by_clordid(o.clordid) is None]
        if unseen:
            if not self._await(lambda: self.state.order_by_clordid(unseen[0].clordid) is not None):
                self._reconciled_at = None  # the websocket lost track: ask REST before going on
            return "waiting"
        if not self._consistent(snap):
            self.state.wait_private(self.state.private_seq, 0.05)
            return "waiting"
        if target is None:
            return "idle"
        mkt = self._market(snap)
        lot = mkt.lot
        goal = Target(round_lot(target.qty, lot), target.style, target.reason)
        actions = plan(goal, self.position(snap), opened, mkt, max_order_qty=self.risk.config.max_order_qty,
                       reprice_ticks=self.config.reprice_ticks, band=self.config.market_band)
        if not actions:
            return "idle"
        outcome = "idle"
        for action in actions:
            outcome = self._do(action, snap, opened, goal)
        return outcome

    # ------------------------------------------------------------------ cycle parts
    def _adopt_target(self) -> None:
        """Journal a new target as an intent (only a change of qty or style is a new intent)."""
        with self._lock:
            wanted, self._wanted = self._wanted, None
        if wanted is None:
            return
        cur = self._intent
        if cur is not None and cur.qty == wanted.qty and cur.style == wanted.style:
            return
        self._intent = self.journal.record_intent(wanted.qty, wanted.style, wanted.reason)
        logger.info("new target %+d (%s): %s [intent %d]", wanted.qty, wanted.style, wanted.reason,
                    self._intent.id)

    def _market(self, snap) -> Market:
        inst = snap.instrument or {}
        return Market(snap.best_bid, snap.best_ask, float(inst.get("tickSize") or 0.5),
                      int(inst.get("lotSize") or 1))

    def _sync(self, snap) -> None:
        """Fold the websocket's view of our orders and fills into the journal; handle strays."""
        for order in self.journal.open_orders():
            row = self.state.order_by_clordid(order.clordid)
            if row is not None:
                self._fold(row)
        self._record_fills()
        strays = []
        for row in snap.orders:
            rec = self.journal.order(row.get("clOrdID") or "")
            if rec is None:
                strays.append(dict(row))
            elif rec.status == "void" and row.get("ordStatus") not in TERMINAL_ORD_STATUSES:
                # journaled as never created, yet working: track it again, or it would be
                # neither ours nor a stray and the planner would place a second order beside it
                logger.error("order %s was journaled void but works at the exchange: tracking it again",
                             rec.clordid)
                self.journal.update_from_exchange(dict(row))
        if strays:
            self._handle_strays(strays)

    def _record_fills(self) -> None:
        """Journal the executions the websocket delivered since the last call."""
        cursor, self._exec_cursor = self._exec_cursor, self.state.private_seq
        for row in self.state.executions_since(cursor):
            self.journal.record_fill(dict(row))  # idempotent by execID, so overlaps are harmless

    def _handle_strays(self, rows: list[dict]) -> None:
        for row in rows:
            if self.config.stray_orders == "adopt":
                rec = self.journal.adopt_order(row)
                logger.warning("adopted stray order %s %s %s @ %s", rec.clordid, row.get("side"),
                               row.get("leavesQty"), row.get("price"))
                continue
            logger.warning("canceling stray order %s (%s %s @ %s)", row.get("orderID"), row.get("side"),
                           row.get("leavesQty"), row.get("price"))
            self.journal.record_event("cancel_stray", {"orderID": row.get("orderID"), "clOrdID": row.get("clOrdID")})
            try:
                self.rest.cancel_order(orderID=row["orderID"], text="sniper: stray")
            except ExchangeError as exc:
                logger.warning("cancel of stray %s failed: %s", row.get("orderID"), exc)

    def _consistent(self, snap) -> bool:
        """Does the websocket position equal the baseline plus our orders' fills since?
        True re-bases. A mismatch that outlives confirm_timeout_s is a position change we did
        not make (liquidation, a manual trade): it is logged and accepted."""
        pos = self.position(snap)
        fills = 0
        for clordid, base in self._base_cum.items():
            rec = self.journal.order(clordid)
            if rec is not None:
                fills += rec.sign * (rec.cum_qty - base)
        if pos - self._base_pos != fills:
            now = self.clock.monotonic()
            if self._mismatch_since is None:
                self._mismatch_since = now
                return False
            if now - self._mismatch_since < self.config.confirm_timeout_s:
                return False
            logger.warning("position %d differs from baseline %d + our fills %d: accepting the exchange's",
                           pos, self._base_pos, fills)
            self.journal.record_event("position_drift", {"position": pos, "expected": self._base_pos + fills})
        self._rebase(pos)
        return True

    def _rebase(self, pos: int) -> None:
        self._base_pos = pos
        self._base_cum = {o.clordid: o.cum_qty for o in self.journal.open_orders()}
        self._unconfirmed = {k: v for k, v in self._unconfirmed.items() if k in self._base_cum}
        self._mismatch_since = None

    def _on_kill(self, reason: str, snap) -> Target | None:
        """Cancel everything when tripped, and again (at most once per confirm_timeout_s) while
        orders still show; flatten if configured."""
        now = self.clock.monotonic()
        live = snap.orders or any(o.status == "live" for o in self.journal.open_orders())
        if not self._kill_handled or (live and now - self._kill_cancel_at >= self.config.confirm_timeout_s):
            if not self._kill_handled:
                logger.error("kill switch (%s): canceling all orders", reason)
                self.journal.record_event("kill", {"reason": reason})
            self._kill_cancel_at = now
            try:
                for row in self.rest.cancel_all(text="sniper: kill switch") or ():
                    self.journal.update_from_exchange(row)
                self._kill_handled = True
            except ExchangeError as exc:
                logger.error("kill switch cancel failed: %s", exc)
        if self.risk.config.flatten_on_kill:
            return Target(0, "market", f"kill switch: {reason}")
        return None

    def _refresh_dead_mans_switch(self) -> None:
        ms = self.config.dead_mans_switch_ms
        now = self.clock.monotonic()
        if ms <= 0 or now < self._next_dms:
            return
        try:
            self.rest.cancel_all_after(ms)
            self._next_dms = now + self.config.dead_mans_refresh_s
        except ExchangeError as exc:
            logger.warning("dead man's switch refresh failed: %s", exc)

    # ------------------------------------------------------------------ actions
    def _do(self, action: Action, snap, opened: list[OrderRecord], target: Target) -> str:
        if isinstance(action, Place):
            return self._place(action, snap, opened, target)
        if isinstance(action, Amend):
            return self._amend(action, snap, opened)
        return self._cancel(action)

    def _place(self, action: Place, snap, opened: list[OrderRecord], target: Target) -> str:
        working = sum(o.sign * o.leaves_qty for o in opened)
        verdict = self.risk.check(ProposedOrder(action.side, action.qty, action.price, action.reduce_only),
                                  snap, working)
        if not verdict:
            self._refused(verdict, {"side": action.side, "qty": action.qty, "price": action.price})
            return "refused"
        if self._intent is None or (self._intent.qty, self._intent.style) != (target.qty, target.style):
            # a flatten on kill is a target of its own: journal it like any other
            self._intent = self.journal.record_intent(target.qty, target.style, target.reason)
        rec = self.journal.new_order(self._intent.id, action.side, action.qty, action.price, action.ord_type,
                                     action.exec_inst, action.time_in_force)
        self._base_cum.setdefault(rec.clordid, 0)
        self.risk.record_sent()
        self._last_refusal = ""
        logger.info("place %s %s %d @ %s %s (%s)", rec.clordid, action.side, action.qty, action.price,
                    action.exec_inst or action.time_in_force, action.why)
        return self._send_new(rec)

    def _refused(self, verdict, order: dict) -> None:
        """Journal a risk refusal once per change of rule (the gate itself logs it)."""
        if verdict.rule != self._last_refusal:
            self.journal.record_event("refused", {"rule": verdict.rule, "message": verdict.message} | order)
        self._last_refusal = verdict.rule

    def _resend(self, rec: OrderRecord) -> str:
        """Complete an order whose outcome is unknown by sending the same request again."""
        logger.info("resolving %s (outcome unknown) by re-sending it", rec.clordid)
        self._base_cum.setdefault(rec.clordid, 0)
        return self._send_new(rec)

    def _send_new(self, rec: OrderRecord) -> str:
        """Send a journaled order: "acted"; "rejected" when the exchange refused it (the thread
        backs off: the same refusal, e.g. insufficient balance, would come again); "error"
        when the outcome is still unknown (the order stays pending)."""
        try:
            reply = self.rest.place_order(**rec.request(self.symbol))
        except (Rejected, AuthError, NotFound) as exc:
            logger.warning("order %s refused by the exchange: %s", rec.clordid, exc)
            self.journal.void_order(rec.clordid, str(exc))
            return "rejected"
        except ExchangeError as exc:
            logger.warning("order %s outcome unknown (%s): will re-send the same clOrdID", rec.clordid, exc)
            return "error"  # the client's retry budget is spent: back off before asking again
        self._from_rest(reply)
        self._await(lambda: self._ws_caught_up(rec.clordid))
        return "acted"

    def _amend(self, action: Amend, snap, opened: list[OrderRecord]) -> str:
        order = self.journal.order(action.clordid)
        if action.order_qty is not None and action.leaves > order.leaves_qty:
            working = sum(o.sign * o.leaves_qty for o in opened if o.clordid != order.clordid)
            verdict = self.risk.check(ProposedOrder(order.side, action.leaves, action.price or order.price,
                                                    order.reduce_only), snap, working)
            if not verdict:
                self._refused(verdict, {"amend": action.clordid, "leaves": action.leaves})
                return "refused"
        params = {k: v for k, v in (("price", action.price), ("orderQty", action.order_qty)) if v is not None}
        self.journal.record_request("amend", action.clordid, params | {"why": action.why})
        logger.debug("amend %s %s (%s)", action.clordid, params, action.why)
        try:
            reply = self.rest.amend_order(origClOrdID=action.clordid, **params)
        except Rejected as exc:
            # typically filled or canceled meanwhile: the websocket will tell. "rejected" makes the
            # thread pause briefly, so a refusal that persists cannot become a tight loop
            logger.info("amend %s refused: %s", action.clordid, exc)
            self._await(lambda: self._ws_caught_up(action.clordid))
            return "rejected"
        self._from_rest(reply)
        self._await(lambda: self._ws_caught_up(action.clordid))
        return "acted"

    def _cancel(self, action: Cancel) -> str:
        self.journal.record_request("cancel", action.clordid, {"why": action.why})
        logger.info("cancel %s (%s)", action.clordid, action.why)
        try:
            rows = self.rest.cancel_order(clOrdID=action.clordid, text=f"sniper: {action.why}")
        except (Rejected, NotFound) as exc:
            logger.info("cancel %s refused: %s", action.clordid, exc)
            rows = []
        for row in rows or ():
            self.journal.update_from_exchange(row)
        self._await(lambda: self._ws_caught_up(action.clordid))
        return "acted"

    # ------------------------------------------------------------------ confirmation
    def _from_rest(self, reply: dict) -> None:
        """Journal a REST reply; until the websocket shows the same price and size, its
        older rows for this order must not overwrite the reply (see `_fold`)."""
        rec = self.journal.update_from_exchange(reply)
        if rec is not None and rec.is_open:
            self._unconfirmed[rec.clordid] = (reply.get("price"), reply.get("orderQty"))

    def _fold(self, row) -> OrderRecord | None:
        """Fold a websocket order row into the journal, unless it predates a REST reply
        already journaled (the websocket runs behind REST: folding it would undo an amend)."""
        clordid = row.get("clOrdID")
        expected = self._unconfirmed.get(clordid)
        if expected is not None:
            if row.get("ordStatus") not in TERMINAL_ORD_STATUSES and (row.get("price"), row.get("orderQty")) != expected:
                return None
            del self._unconfirmed[clordid]
        return self.journal.update_from_exchange(dict(row))

    def _ws_caught_up(self, clordid: str) -> bool:
        """The websocket shows this order at least as far along as the journal does."""
        row = self.state.order_by_clordid(clordid)
        if row is None or self._fold(row) is None:
            return False
        rec = self.journal.order(clordid)
        if rec.status == "done":
            caught_up = row.get("ordStatus") in TERMINAL_ORD_STATUSES
        else:
            caught_up = int(row.get("cumQty") or 0) >= rec.cum_qty
        if caught_up:
            # the exchange sends an order's executions before its row: journal them now, so the
            # journal never holds a filled order without its fills (even while the thread backs off)
            self._record_fills()
        return caught_up

    def _await(self, predicate: Callable[[], bool]) -> bool:
        """Wait (up to confirm_timeout_s) for the websocket to show what REST told us."""
        deadline = self.clock.monotonic() + self.config.confirm_timeout_s
        while True:
            seq = self.state.private_seq
            if predicate():
                return True
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0 or self._stop.is_set():
                logger.warning("websocket did not confirm within %.1f s", self.config.confirm_timeout_s)
                return False
            self.state.wait_private(seq, remaining)

    # ------------------------------------------------------------------ reconciliation
    def reconcile(self) -> dict:
        """Before trading (start, and after every websocket reconnect): fold the exchange's
        open orders, our recent orders and executions into the journal, cancel or adopt strays,
        and set the position baseline. Pending orders stay pending: the next cycle completes
        them by re-sending the same clOrdID."""
        rest, journal = self.rest, self.journal
        self._unconfirmed.clear()  # a new session's partial is newer than any earlier REST reply
        open_rows = rest.orders(open_only=True)
        known = {o.clordid for o in journal.orders()}
        strays = [r for r in open_rows if r.get("clOrdID") not in known]
        for row in open_rows:
            if row.get("clOrdID") in known:
                journal.update_from_exchange(row)
        for rec in journal.open_orders():
            if any(r.get("clOrdID") == rec.clordid for r in open_rows):
                continue
            row = rest.order_by_clordid(rec.clordid)
            if row is not None:
                journal.update_from_exchange(row)
            elif rec.status == "live":
                logger.error("order %s was acknowledged but the exchange no longer knows it", rec.clordid)
                journal.void_order(rec.clordid, "unknown to the exchange at reconciliation")
        fills = sum(journal.record_fill(r) for r in rest.fills() if r.get("clOrdID") in known)
        if strays:
            self._handle_strays(strays)
        position = rest.position()
        snap = self.state.snapshot(depth=1)
        self._sync(snap)
        self._rebase(self.position(snap))
        summary = {"open_orders": len(open_rows), "strays": len(strays), "new_fills": fills,
                   "pending": [o.clordid for o in journal.open_orders() if o.status == "pending"],
                   "position_rest": int((position or {}).get("currentQty") or 0),
                   "position_ws": self._base_pos}
        journal.record_event("reconcile", summary)
        logger.info("reconciled: %s", summary)
        self._next_dms = 0.0
        return summary
