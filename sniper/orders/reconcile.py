"""Making the journal agree with the exchange: one `reconcile` for start-up and every new
session, the light `sync` of every cycle, and the `PositionAudit` that says when the position
can be trusted.

`reconcile` asks the exchange's records (REST on BitMEX) because after a crash or a dropped
connection the live view may have missed anything: it folds the exchange's open orders, our
recent orders and fills into the journal, voids an order acknowledged once but unknown now,
cancels or adopts strays, then syncs with the live view. Pending orders stay pending: the
executor completes each by re-sending the same clOrdID, which the exchange turns into a
lookup if the first attempt landed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sniper.journal import Journal
from sniper.model import TERMINAL_ORD_STATUSES, Unreadable, text
from sniper.orders.venue import Snapshot, Venue, VenueError, position_of

logger = logging.getLogger(__name__)


def reconcile(venue: Venue, journal: Journal, *, strays: str) -> dict:
    """Fold the exchange's records into the journal, handle strays, sync with the live view.
    Returns (and journals as a `reconcile` event) what it found; `position_ws` is the live
    view's position, the baseline the position audit starts from."""
    open_rows = venue.open_orders()
    known = {o.clordid for o in journal.orders()}
    stray_rows = [r for r in open_rows if not _ours(r, known)]
    for row in open_rows:
        if _ours(row, known):
            journal.update_from_exchange(row)
    listed = {r["clOrdID"] for r in open_rows if _ours(r, known)}
    for rec in journal.open_orders():
        if rec.clordid in listed:
            continue
        row = venue.lookup(rec.clordid)
        if row is not None:
            journal.update_from_exchange(row)
        elif rec.status == "live":
            logger.error("order %s was acknowledged but the exchange no longer knows it", rec.clordid)
            journal.void_order(rec.clordid, "unknown to the exchange at reconciliation")
    # an execution whose clOrdID is garbled goes to the journal, which refuses it naming the field
    fills = sum(journal.record_fill(r) for r in venue.fills() if _ours(r, known) is not False)
    if stray_rows:
        handle_strays(venue, journal, stray_rows, strays)
    position = venue.position()
    snap = venue.snapshot()
    sync(venue, journal, snap, strays=strays)
    summary = {"open_orders": len(open_rows), "strays": len(stray_rows), "new_fills": fills,
               "pending": [o.clordid for o in journal.open_orders() if o.status == "pending"],
               "position_rest": position, "position_ws": position_of(snap)}
    journal.record_event("reconcile", summary)
    logger.info("reconciled: %s", summary)
    return summary


def _ours(row: Mapping, known: set[str]) -> bool | None:
    """Is a REST row one of the `known` orders? None when its clOrdID is no text (a garbled row:
    a list would fail as a set member): neither ours nor another's can be assumed. An order
    row of that kind goes the strays' way, where it is refused (`handle_strays`)."""
    clordid = row.get("clOrdID")
    return clordid in known if isinstance(clordid, str | None) else None


def sync(venue: Venue, journal: Journal, snap: Snapshot, *, strays: str) -> None:
    """Every cycle: fold the live view's rows of our open orders and its new executions into
    the journal; cancel or adopt strays; track again an order journaled void that works."""
    for order in journal.open_orders():
        row = venue.order(order.clordid)
        if row is not None:
            journal.update_from_exchange(dict(row))
    record_fills(venue, journal)
    stray_rows = []
    for row in snap.orders:
        rec = journal.order(row.get("clOrdID") or "")
        if rec is None:
            stray_rows.append(dict(row))
        elif rec.status == "void" and _working(rec.clordid, row):
            # journaled as never created, yet working: track it again, or it would be
            # neither ours nor a stray and the planner would place a second order beside it
            logger.error("order %s was journaled void but works at the exchange: tracking it again", rec.clordid)
            journal.update_from_exchange(dict(row))
    if stray_rows:
        handle_strays(venue, journal, stray_rows, strays)


def _working(clordid: str, row: Mapping) -> bool:
    """Does the live view's row show the order as working? An unreadable ordStatus raises
    VenueError: the order may be working (the live view keeps such a row open), so nothing may
    be planned beside it until the exchange's next row."""
    try:
        return text(row.get("ordStatus"), "ordStatus") not in TERMINAL_ORD_STATUSES
    except Unreadable as exc:
        raise VenueError(f"order {clordid}, journaled void, shows with an {exc}: nothing is planned until the "
                         "exchange's next row") from None


def record_fills(venue: Venue, journal: Journal) -> None:
    """Journal the executions the live view delivered since the last call."""
    for row in venue.new_executions():
        journal.record_fill(dict(row))  # idempotent by execID, so overlaps are harmless


def handle_strays(venue: Venue, journal: Journal, rows: list[dict], policy: str) -> None:
    """Working orders we did not place: adopt them (journaled under intent 0, then managed like
    ours) or cancel them, as `policy` says. A row that cannot be read is refused whole (one
    warning naming it and the field, nothing journaled or sent) and handled once a good one shows."""
    for row in rows:
        try:
            if policy == "adopt":
                rec = journal.adopt_order(row)
                logger.warning("adopted stray order %s %s %s @ %s", rec.clordid, row.get("side"), row.get("leavesQty"),
                               row.get("price"))
            else:
                _cancel_stray(venue, journal, row)
        except Unreadable as exc:
            # refused whole, in the journal's one warning however many cycles show the row
            what = f"stray order {row.get('orderID')!s:.40}"
            if row.get("clOrdID"):
                what += f" ({row['clOrdID']!s:.40})"
            journal.refuse(what, exc)


def _cancel_stray(venue: Venue, journal: Journal, row: Mapping) -> None:
    """Cancel one stray by its orderID. A row whose orderID or clOrdID cannot be read raises
    Unreadable before anything is journaled or sent: a garbled clOrdID may be one of ours."""
    order_id, clordid = text(row.get("orderID"), "orderID"), text(row.get("clOrdID"), "clOrdID")
    if not order_id:
        raise Unreadable("missing orderID")
    logger.warning("canceling stray order %s (%s %s @ %s)", order_id, row.get("side"), row.get("leavesQty"),
                   row.get("price"))
    journal.record_event("cancel_stray", {"orderID": order_id, "clOrdID": clordid})
    try:
        venue.cancel(order_id=order_id, text="sniper: stray")
    except VenueError as exc:
        logger.warning("cancel of stray %s failed: %s", order_id, exc)


class PositionAudit:
    """Does the live view's position equal the baseline plus our orders' fills since? The
    executor plans only when it does, so a fill can never be missing from both the position
    and the working orders when a quantity is computed. A mismatch that outlives `patience_s`
    is a position change we did not make (liquidation, a manual trade): it is logged,
    journaled and accepted."""

    def __init__(self, journal: Journal, clock, patience_s: float) -> None:
        self._journal, self._clock, self._patience_s = journal, clock, patience_s
        self._base_pos = 0
        self._base_cum: dict[str, int] = {}  # clOrdID -> its cumQty when tracking began
        self._mismatch_since: float | None = None

    def rebase(self, position: int) -> None:
        """Trust `position` with the open orders' fills so far."""
        self._base_pos = position
        self._base_cum = {o.clordid: o.cum_qty for o in self._journal.open_orders()}
        self._mismatch_since = None

    def track(self, clordid: str) -> None:
        """An order about to be sent: its fills from now on move the position."""
        self._base_cum.setdefault(clordid, 0)

    def consistent(self, position: int) -> bool:
        """True (and re-based) when `position` is explained by our fills."""
        fills = 0
        for clordid, base in self._base_cum.items():
            rec = self._journal.order(clordid)
            if rec is not None:
                fills += rec.sign * (rec.cum_qty - base)
        if position - self._base_pos != fills:
            now = self._clock.monotonic()
            if self._mismatch_since is None:
                self._mismatch_since = now
                return False
            if now - self._mismatch_since < self._patience_s:
                return False
            logger.warning("position %d differs from baseline %d + our fills %d: accepting the exchange's",
                           position, self._base_pos, fills)
            self._journal.record_event("position_drift", {"position": position, "expected": self._base_pos + fills})
        self.rebase(position)
        return True
