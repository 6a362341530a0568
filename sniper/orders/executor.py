"""The executor: moves the position to the strategy's Target through a venue, and nothing more.

It runs the parts: the order manager decides (manager.py, pure), the risk gate steers and
checks (risk.py), the journal records (journal.py), the venue sends and shows (venue.py), the
reconciliation keeps journal and exchange agreeing (reconcile.py). Why it cannot double-order:
  * one thread owns all order traffic, and the manager keeps at most ONE working order;
  * a new order is planned only when the journal has no order in an unknown state (`pending`),
    the live view shows every order the exchange acknowledged, and the position audit agrees
    with the fills of our orders, so a fill can never be missing from both the position and
    the working orders when the quantity is computed;
  * every order is journaled with a deterministic clOrdID before it is sent, and an order
    whose reply was lost is *completed* by re-sending the same request (same clOrdID), never
    replaced: the exchange's clOrdID uniqueness turns the retry into a lookup if it landed.

Targets and intents: one decision journals one intent, already rounded to the lot. A Target
the strategy sets is journaled (source 'strategy') when the executor adopts it, unless it is
the standing target already. While the kill switch is on, the gate steers: nothing, or a
flatten at market, journaled once per kill (source 'risk'). The standing target is always the
latest decision: a flatten supersedes the strategy's earlier Target, so once the kill is
cleared the executor pursues the strategy's NEXT Target (one set during the kill counts) and
never resumes a stale flatten or what the flatten undid; a restart reads the same from the
journal.

`step()` is one cycle: sync -> steer -> check -> plan -> journal -> send -> confirm on the live
view. Two ways to run it:
  * threaded (`start`/`stop`, the daemon over BitmexVenue): repeats `step`, waking on a new
    target, a private websocket change, a move of the touch while a passive order works, or
    the cycle;
  * stepped (`settle`, a backtest over LocalVenue): runs cycles until one has nothing to do.
    The venue's confirmation is immediate and its waits return at once, so each call is
    synchronous and deterministic: the caller steps the market, sets a target, settles.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from sniper.config import ExecutionConfig
from sniper.journal import RISK, STRATEGY, Intent, Journal, JournalUnwritable, OrderRecord
from sniper.model import Target, iso
from sniper.orders.manager import Action, Amend, Market, Place, goal, order_style, plan
from sniper.orders.reconcile import PositionAudit, reconcile, record_fills, sync
from sniper.orders.venue import Refused, Venue, VenueError, position_of
from sniper.risk import ProposedOrder, RiskGate, Steering

logger = logging.getLogger(__name__)

ERROR_BACKOFF_S, ERROR_BACKOFF_CAP_S = 0.05, 2.0  # after a failed cycle
WAIT_SLICE_S = 0.02  # longest wait before re-checking for a new target
MISMATCH_WAIT_S = 0.05  # how long a cycle waits for the position to catch up with our fills
BUSY = ("acted", "reconciled")  # a cycle that did something: the next one follows at once
BACK_OFF = ("error", "rejected", "journal-unwritable")  # a cycle after which the thread waits, doubling


@dataclass
class _Kill:
    """One trip of the kill switch, until it clears."""

    canceled_at: float | None = None  # when cancel-all last succeeded
    flatten: Intent | None = None  # the gate's flatten, journaled once


class Executor:
    """Drives the position to the latest Target over `venue`. `step()` is one cycle; `start()`
    runs cycles on a thread until `stop()`; `settle()` runs them inline (see the module)."""

    def __init__(self, venue: Venue, journal: Journal, risk: RiskGate, clock,
                 config: ExecutionConfig | None = None) -> None:
        self.venue, self.journal, self.risk, self.clock = venue, journal, risk, clock
        self.config = config or ExecutionConfig()
        self._lock = threading.Lock()  # guards _wanted, the one field other threads write
        self._wanted: Target | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._intent: Intent | None = journal.last_intent()  # the latest decision
        self._session: int | None = None  # the live view's `reconnects` when we last reconciled
        self._next_dms = 0.0
        self._killed: _Kill | None = None
        self._audit = PositionAudit(journal, clock, self.config.confirm_timeout_s)
        self.last_status = "new"
        self.last_error: dict | None = None  # the latest failed cycle: {"at": ISO time, "error": text}, for /health
        self.journal_error: str | None = None  # set while the journal cannot be written: nothing is sent

    # ------------------------------------------------------------------ public
    @property
    def target(self) -> Target | None:
        """The standing target: a newer one waiting to be adopted, else the latest decision if
        it is the strategy's (after a flatten on kill there is none until the strategy sets one)."""
        with self._lock:
            if self._wanted is not None:
                return self._wanted
        return self._decided()

    def _decided(self) -> Target | None:
        """The latest decision as a target, if it is the strategy's (what a cycle pursues: a
        target set meanwhile by another thread waits for the next cycle's adoption)."""
        intent = self._intent
        if intent is None or intent.source != STRATEGY:
            return None
        return Target(intent.qty, intent.style, intent.reason)

    def set_target(self, target: Target) -> None:
        """Thread-safe; the next cycle adopts it (journals it as an intent if it is new)."""
        with self._lock:
            self._wanted = target

    def start(self) -> None:
        resumed = self._decided()
        if resumed is not None and self._wanted is None:  # say why orders go out before the strategy's first word
            logger.info("resuming the journal's last target %+d (%s, intent %d) until the strategy decides",
                        resumed.qty, resumed.style, self._intent.id)
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
                self.venue.cancel_all(text="sniper stopping")
                self.journal.record_event("cancel_all", {"why": "stop"})
            except VenueError as exc:
                logger.error("cancel on exit failed (%s); the dead man's switch will cancel", exc)
            except JournalUnwritable as exc:  # the cancel went out; only its record is lost
                logger.error("%s: the cancel on exit is not journaled", exc)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def position(self, snap=None) -> int:
        return position_of(snap or self.venue.snapshot())

    def settle(self, max_cycles: int = 16) -> str:
        """Run cycles until one did nothing more to do (idle, killed, refused, waiting...) and
        return its status: the whole reaction to a new target or a market step when the venue
        confirms at once (LocalVenue). Errors propagate: a stepped run has no thread to keep alive."""
        for _ in range(max_cycles):
            self.last_status = self.step()
            if self.last_status not in BUSY:
                break
        return self.last_status

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._check_journal()
                self.last_status = self.step()
            except JournalUnwritable as exc:
                self._journal_failed(exc)
            except VenueError as exc:
                logger.warning("executor cycle failed: %s", exc)
                self._failed("error", str(exc))
            except Exception as exc:
                logger.exception("executor cycle crashed; continuing")
                self._failed("error", repr(exc))
            if self.last_status in BACK_OFF:
                # an exchange in trouble (503 storm, down) or refusing our orders (e.g. not enough
                # balance) is not hammered: back off, doubling while it goes on, capped
                failures += 1
                self._stop.wait(min(ERROR_BACKOFF_CAP_S, ERROR_BACKOFF_S * 2 ** (failures - 1)))
                continue
            failures = 0
            if self.last_status not in BUSY:
                self._wait_for_change(self.config.cycle_seconds)

    def _journal_failed(self, exc: JournalUnwritable) -> None:
        """Stop trading on a journal that cannot be written, saying so in one line (not once a cycle)."""
        if self.journal_error is None:
            logger.error("%s: trading stopped (no order is sent unjournaled) until it can be written", exc)
        self.journal_error = str(exc)
        self._failed("journal-unwritable", str(exc))

    def _failed(self, status: str, error: str) -> None:
        self.last_status = status
        self._note_error(error)

    def _note_error(self, error: str) -> None:
        self.last_error = {"at": iso(self.clock.now()), "error": error}

    def _check_journal(self) -> None:
        """While the journal is unwritable, probe it before each cycle; resume once a write commits."""
        if self.journal_error is None:
            return
        self.journal.check_writable()
        logger.warning("journal writable again: trading resumes")
        self.journal_error = None
        self._session = None  # whatever happened meanwhile was not journaled: reconcile first

    def _wait_for_change(self, timeout: float) -> None:
        """Sleep until a new target, a private change, a move of the touch (only while a passive
        order works: it must follow) or `timeout`. Waits in slices so a new target or stop() is
        seen within WAIT_SLICE_S."""
        deadline = self.clock.monotonic() + timeout
        chasing = any(o.status == "live" and order_style(o) == "passive" for o in self.journal.open_orders())
        mark = self.venue.watermark(touch=chasing)
        while not self._stop.is_set() and self._wanted is None:
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0 or self.venue.wait(mark, min(remaining, WAIT_SLICE_S)):
                return

    # ------------------------------------------------------------------ one cycle
    def step(self) -> str:
        """One cycle. Returns what happened: not-ready, reconciled, killed, waiting, acted,
        refused (by the risk gate), rejected (by the exchange), error (outcome unknown) or idle."""
        snap = self.venue.snapshot()
        if not snap.ready:
            return "not-ready"
        if self._session != snap.reconnects:
            self._reconcile()
            self._session = snap.reconnects
            return "reconciled"
        mkt = Market.of(snap)
        self._refresh_dead_mans_switch()
        self._adopt_target(mkt.lot)
        sync(self.venue, self.journal, snap, strays=self.config.stray_orders)
        steering = self.risk.steer(self._decided())
        intent = self._intent
        if steering.kill:
            intent = self._on_kill(steering, snap)
            if intent is None:
                return "killed"
        else:
            self._killed = None
        opened = self.journal.open_orders()
        pending = [o for o in opened if o.status == "pending"]
        if pending:
            return self._resend(pending[0])
        unseen = [o for o in opened if self.venue.order(o.clordid) is None]
        if unseen:
            if not self._confirm(unseen[0].clordid):
                self._session = None  # the live view lost track: ask the exchange's records first
            return "waiting"
        position = position_of(snap)
        if not self._audit.consistent(position):
            self.venue.wait(self.venue.watermark(), MISMATCH_WAIT_S)
            return "waiting"
        if steering.target is None:
            return "idle"
        actions = plan(steering.target, position, opened, mkt, max_order_qty=self.risk.order_cap,
                       reprice_ticks=self.config.reprice_ticks, band=self.config.market_band)
        outcome = "idle"
        for action in actions:
            outcome = self._do(action, snap, opened, intent)
        return outcome

    # ------------------------------------------------------------------ cycle parts
    def _reconcile(self) -> None:
        summary = reconcile(self.venue, self.journal, strays=self.config.stray_orders)
        self._audit.rebase(summary["position_ws"])
        self._next_dms = 0.0

    def _adopt_target(self, lot: int) -> None:
        """Journal a newly set target, rounded to the lot, as the strategy's intent (unless it
        is the standing target already: only a change of qty or style is a new decision)."""
        with self._lock:
            wanted, self._wanted = self._wanted, None
        if wanted is None:
            return
        wanted = goal(wanted, lot)
        cur = self._intent
        if cur is not None and cur.source == STRATEGY and (cur.qty, cur.style) == (wanted.qty, wanted.style):
            return
        try:
            self._intent = self.journal.record_intent(wanted.qty, wanted.style, wanted.reason)
        except JournalUnwritable:
            with self._lock:  # not journaled, so not adopted: pursue it once the journal takes it
                if self._wanted is None:
                    self._wanted = wanted
            raise
        logger.info("new target %+d (%s): %s [intent %d]", wanted.qty, wanted.style, wanted.reason, self._intent.id)

    def _on_kill(self, steering: Steering, snap) -> Intent | None:
        """Cancel everything when tripped, and again (at most once per confirm_timeout_s) while
        orders still show. Returns the intent to pursue: the gate's flatten (journaled once per
        kill, superseding the strategy's target) or None."""
        kill = self._killed
        if kill is None:
            logger.error("kill switch (%s): canceling all orders", steering.kill)
            self.journal.record_event("kill", {"reason": steering.kill})
            kill = self._killed = _Kill()
        now = self.clock.monotonic()
        live = snap.orders or any(o.status == "live" for o in self.journal.open_orders())
        if kill.canceled_at is None or (live and now - kill.canceled_at >= self.config.confirm_timeout_s):
            try:
                for row in self.venue.cancel_all(text="sniper: kill switch"):
                    self.journal.update_from_exchange(row)
                kill.canceled_at = now
            except VenueError as exc:
                logger.error("kill switch cancel failed: %s", exc)
        if steering.target is None:
            return None
        if kill.flatten is None:
            flat = steering.target
            kill.flatten = self._intent = self.journal.record_intent(flat.qty, flat.style, flat.reason, RISK)
        return kill.flatten

    def _refresh_dead_mans_switch(self) -> None:
        ms = self.config.dead_mans_switch_ms
        now = self.clock.monotonic()
        if ms <= 0 or now < self._next_dms:
            return
        try:
            self.venue.dead_mans_switch(ms)
            self._next_dms = now + self.config.dead_mans_refresh_s
        except VenueError as exc:
            logger.warning("dead man's switch refresh failed: %s", exc)
            self._note_error(f"dead man's switch refresh failed: {exc}")

    # ------------------------------------------------------------------ actions
    def _do(self, action: Action, snap, opened: list[OrderRecord], intent: Intent) -> str:
        if isinstance(action, Place):
            return self._place(action, snap, opened, intent)
        if isinstance(action, Amend):
            return self._amend(action, snap, opened)
        return self._cancel(action.clordid, action.why)

    def _place(self, action: Place, snap, opened: list[OrderRecord], intent: Intent) -> str:
        working = sum(o.sign * o.leaves_qty for o in opened)
        if not self.risk.check(ProposedOrder(action.side, action.qty, action.price, action.reduce_only), snap,
                               working):
            return "refused"
        rec = self.journal.new_order(intent.id, action.side, action.qty, action.price, action.ord_type,
                                     action.exec_inst, action.time_in_force)
        self.risk.record_sent()
        logger.info("place %s %s %d @ %s %s (%s)", rec.clordid, action.side, action.qty, action.price,
                    action.exec_inst or action.time_in_force, action.why)
        return self._send_new(rec)

    def _resend(self, rec: OrderRecord) -> str:
        """Complete an order whose outcome is unknown by sending the same request again."""
        logger.info("resolving %s (outcome unknown) by re-sending it", rec.clordid)
        return self._send_new(rec)

    def _send_new(self, rec: OrderRecord) -> str:
        """Send a journaled order: "acted"; "rejected" when the exchange refused it (the thread
        backs off: the same refusal, e.g. insufficient balance, would come again); "error"
        when the outcome is still unknown (the order stays pending)."""
        self._audit.track(rec.clordid)
        try:
            reply = self.venue.place(rec.request(self.venue.symbol))
        except Refused as exc:
            logger.warning("order %s refused by the exchange: %s", rec.clordid, exc)
            self.journal.void_order(rec.clordid, str(exc))
            return "rejected"
        except VenueError as exc:
            logger.warning("order %s outcome unknown (%s): will re-send the same clOrdID", rec.clordid, exc)
            return "error"  # the client's retry budget is spent: back off before asking again
        self.journal.update_from_exchange(reply)
        self._confirm(rec.clordid)
        return "acted"

    def _amend(self, action: Amend, snap, opened: list[OrderRecord]) -> str:
        order = self.journal.order(action.clordid)
        if action.order_qty is not None and action.leaves > order.leaves_qty:
            working = sum(o.sign * o.leaves_qty for o in opened if o.clordid != order.clordid)
            if not self.risk.check(ProposedOrder(order.side, action.leaves, action.price or order.price,
                                                 order.reduce_only), snap, working):
                return "refused"
        params = {k: v for k, v in (("price", action.price), ("orderQty", action.order_qty)) if v is not None}
        self.journal.record_request("amend", action.clordid, params | {"why": action.why})
        logger.debug("amend %s %s (%s)", action.clordid, params, action.why)
        try:
            reply = self.venue.amend(action.clordid, **params)
        except Refused as exc:
            # typically filled or canceled meanwhile: the live view will tell. "rejected" makes the
            # thread pause briefly, so a refusal that persists cannot become a tight loop
            logger.info("amend %s refused: %s", action.clordid, exc)
            self._confirm(action.clordid)
            return "rejected"
        self.journal.update_from_exchange(reply)
        self._confirm(action.clordid)
        return "acted"

    def _cancel(self, clordid: str, why: str) -> str:
        self.journal.record_request("cancel", clordid, {"why": why})
        logger.info("cancel %s (%s)", clordid, why)
        try:
            rows = self.venue.cancel(clordid=clordid, text=f"sniper: {why}")
        except Refused as exc:
            # typically ended meanwhile: the live view will tell. "rejected", as for an amend: the
            # live view still shows it working, so at once the same cancel would be refused again
            logger.info("cancel %s refused: %s", clordid, exc)
            self._confirm(clordid)
            return "rejected"
        for row in rows:
            self.journal.update_from_exchange(row)
        self._confirm(clordid)
        return "acted"

    # ------------------------------------------------------------------ confirmation
    def _confirm(self, clordid: str) -> bool:
        """Wait (up to confirm_timeout_s) for the live view to show the order as far as the
        exchange's reply did, then journal its row and the executions that came with it (they
        arrive before the row: the journal never holds a filled order without its fills)."""
        deadline = self.clock.monotonic() + self.config.confirm_timeout_s
        changed = True
        while True:
            mark = self.venue.watermark()
            row = self.venue.order(clordid)
            if row is not None:
                self.journal.update_from_exchange(dict(row))
                record_fills(self.venue, self.journal)
                return True
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0 or not changed or self._stop.is_set():  # a wait that saw no change timed out
                logger.warning("order %s not confirmed by the live view within %.1f s", clordid,
                               self.config.confirm_timeout_s)
                return False
            changed = self.venue.wait(mark, remaining)
