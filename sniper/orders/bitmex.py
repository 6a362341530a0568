"""The BitMEX venue: writes and the exchange's records over REST (rest.py), the live view from
the websocket State (ws/).

Why the websocket and not REST is the live view: the position, our orders and the executions
arrive there in the exchange's own order, and a new session starts from a full image, so it
is the one consistent picture to plan from. REST replies come first, though: a write's reply
is newer than the websocket rows of that order until the websocket shows the change. So
`order(clOrdID)` holds back a row that predates the last reply for that order (folding it
into the journal would undo an amend) and shows it again once the websocket caught up, or
after `confirm_timeout_s` (a reply the websocket never matches, e.g. the order was changed
by hand meanwhile, must not hide the order forever). A row is compared by its figures read
with the checked readers of model.py: a websocket row that cannot be read shows nothing (it
is held back like an older one; the journal refuses it when it is shown), a reply that cannot
be read holds nothing back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

from sniper.model import TERMINAL_ORD_STATUSES, Unreadable, number, text, whole
from sniper.orders.venue import Refused, VenueError, contracts
from sniper.rest import AuthError, ExchangeError, NotFound, Rejected, RestClient


@contextlib.contextmanager
def _wire():
    """REST's typed errors as the port's: refused (certainly not applied) or unknown."""
    try:
        yield
    except (Rejected, AuthError, NotFound) as exc:
        raise Refused(str(exc)) from exc
    except ExchangeError as exc:
        raise VenueError(str(exc)) from exc


def _progress(row: Mapping) -> tuple | None:
    """How far along an order row shows its order: None when it ended, else its (price, orderQty,
    cumQty). Unreadable, naming the field, when the row is garbled."""
    if text(row.get("ordStatus"), "ordStatus") in TERMINAL_ORD_STATUSES:
        return None
    return (number(row.get("price"), "price"), whole(row.get("orderQty"), "orderQty"),
            whole(row.get("cumQty"), "cumQty") or 0)


def _shows(row: Mapping, reply: tuple | None) -> bool:
    """Does the websocket row show the order at least as far along as the REST reply's progress?"""
    try:
        seen = _progress(row)
    except Unreadable:
        return False
    return seen is None or reply is not None and seen[:2] == reply[:2] and seen[2] >= reply[2]


class BitmexVenue:
    """`rest` sends and reads; `state` is the websocket's State, kept current by its WsClient."""

    def __init__(self, rest: RestClient, state, clock, *, confirm_timeout_s: float = 5.0) -> None:
        self.rest, self.state, self.clock = rest, state, clock
        self.symbol = rest.symbol
        self.confirm_timeout_s = confirm_timeout_s
        # clOrdID -> (the progress of a reply the websocket has not shown yet, when)
        self._ahead: dict[str, tuple[tuple | None, float]] = {}
        self._cursor = 0  # private_seq up to which executions were handed out

    # ------------------------------------------------------------------ writes
    def place(self, request: dict) -> Mapping:
        with _wire():
            return self._replied(self.rest.place_order(**request))

    def amend(self, clordid: str, **changes) -> Mapping:
        with _wire():
            return self._replied(self.rest.amend_order(origClOrdID=clordid, **changes))

    def cancel(self, *, clordid: str | None = None, order_id: str | None = None, text: str = "") -> list[Mapping]:
        with _wire():
            rows = self.rest.cancel_order(clOrdID=clordid, orderID=order_id, text=text or None) or []
        for row in rows:
            self._replied(row)
        return rows

    def cancel_all(self, text: str) -> list[Mapping]:
        with _wire():
            return self.rest.cancel_all(text=text) or []

    def dead_mans_switch(self, timeout_ms: int) -> None:
        with _wire():
            self.rest.cancel_all_after(timeout_ms)

    def _replied(self, row: Mapping) -> Mapping:
        """Remember a reply so older websocket rows of its order are held back (see the module)."""
        try:
            clordid, progress = text(row.get("clOrdID"), "clOrdID"), _progress(row)
        except Unreadable:
            return row  # holds nothing back: the journal refuses it too
        if clordid:
            now = self.clock.monotonic()
            self._ahead.pop(clordid, None)  # re-inserted last: the dict stays in reply order
            self._ahead[clordid] = (progress, now)
            while self._ahead:  # forget replies too old to hold anything back
                oldest, (_, at) = next(iter(self._ahead.items()))
                if now - at <= self.confirm_timeout_s:
                    break
                del self._ahead[oldest]
        return row

    # ------------------------------------------------------------------ the exchange's records
    def open_orders(self) -> list[Mapping]:
        with _wire():
            return self.rest.orders(open_only=True)

    def lookup(self, clordid: str) -> Mapping | None:
        with _wire():
            return self.rest.order_by_clordid(clordid)

    def fills(self) -> list[Mapping]:
        with _wire():
            return self.rest.fills()

    def position(self) -> int:
        with _wire():
            return contracts(self.rest.position())

    # ------------------------------------------------------------------ the live view
    def snapshot(self):
        return self.state.snapshot(depth=1)

    def order(self, clordid: str) -> Mapping | None:
        row = self.state.order_by_clordid(clordid)
        if row is None:
            return None
        ahead = self._ahead.get(clordid)
        if ahead is None:
            return row
        reply, at = ahead
        if _shows(row, reply) or self.clock.monotonic() - at > self.confirm_timeout_s:
            del self._ahead[clordid]
            return row
        return None

    def new_executions(self) -> Sequence[Mapping]:
        cursor, self._cursor = self._cursor, self.state.private_seq
        return self.state.executions_since(cursor)

    def watermark(self, touch: bool = False) -> tuple:
        return self.state.private_seq, self.state.touch() if touch else None

    def wait(self, mark: tuple, timeout: float) -> bool:
        return self.state.wait_change(mark[0], mark[1], timeout)
