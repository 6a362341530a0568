"""The BitMEX venue: writes and the exchange's records over REST (rest.py), the live view from
the websocket State (ws/).

Why the websocket and not REST is the live view: the position, our orders and the executions
arrive there in the exchange's own order, and a new session starts from a full image, so it
is the one consistent picture to plan from. REST replies come first, though: a write's reply
is newer than the websocket rows of that order until the websocket shows the change. So
`order(clOrdID)` holds back a row that predates the last reply for that order (folding it
into the journal would undo an amend) and shows it again once the websocket caught up, or
after `confirm_timeout_s` (a reply the websocket never matches, e.g. the order was changed
by hand meanwhile, must not hide the order forever).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

from sniper.model import TERMINAL_ORD_STATUSES
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


def _terminal(row: Mapping) -> bool:
    return row.get("ordStatus") in TERMINAL_ORD_STATUSES


def _shows(row: Mapping, reply: Mapping) -> bool:
    """Does the websocket row show the order at least as far along as the REST reply?"""
    if _terminal(row):
        return True
    return (not _terminal(reply) and (row.get("price"), row.get("orderQty")) == (reply.get("price"), reply.get("orderQty"))
            and int(row.get("cumQty") or 0) >= int(reply.get("cumQty") or 0))


class BitmexVenue:
    """`rest` sends and reads; `state` is the websocket's State, kept current by its WsClient."""

    def __init__(self, rest: RestClient, state, clock, *, confirm_timeout_s: float = 5.0) -> None:
        self.rest, self.state, self.clock = rest, state, clock
        self.symbol = rest.symbol
        self.confirm_timeout_s = confirm_timeout_s
        self._ahead: dict[str, tuple[Mapping, float]] = {}  # clOrdID -> (reply the websocket has not shown, when)
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
        clordid = row.get("clOrdID")
        if clordid:
            now = self.clock.monotonic()
            self._ahead.pop(clordid, None)  # re-inserted last: the dict stays in reply order
            self._ahead[clordid] = (row, now)
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
