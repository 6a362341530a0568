"""The venue port: everything the executor asks of an exchange, and nothing else.

Two implementations: `BitmexVenue` (bitmex.py: REST writes and reads, the websocket State as
the live view) for the daemon, and `LocalVenue` (local.py: a `sim.exchange.Exchange` in this
process, synchronous) for backtests and parity tests. The executor, the reconciliation and
the order manager see only this protocol, so the same order logic runs on both.

Three kinds of calls:
  * writes: `place`, `amend`, `cancel`, `cancel_all`, `dead_mans_switch`. Each returns the
    exchange's reply rows, raises `Refused` when the exchange refused the request itself (it
    certainly changed nothing) and `VenueError` when the outcome is unknown (the request may
    or may not have landed: ask again with the same clOrdID, never place another);
  * the exchange's own records, read at reconciliation: `open_orders`, `lookup`, `fills`,
    `position`;
  * the live view, read every cycle: `snapshot`, `order`, `new_executions`, and the wait
    primitives `watermark`/`wait`. A write counts as done once `order(clOrdID)` shows it:
    at once on a LocalVenue, when the websocket catches up on BitMEX.

Rows are BitMEX's (orderBookL2 aside): order rows with clOrdID/orderID/ordStatus/cumQty/
leavesQty/orderQty/price, execution rows with execID/execType/lastQty/lastPx, the position
row's currentQty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from sniper.model import Unreadable, whole
from sniper.model import number as model_number


class VenueError(Exception):
    """The venue could not answer; for a write, its outcome is unknown."""


class Refused(VenueError):
    """The exchange refused the request itself: it certainly changed nothing."""


class Snapshot(Protocol):
    """The live view at one instant (the websocket State's snapshot has these fields)."""

    ready: bool  # complete and current: nothing is decided on less
    reconnects: int  # changes when a new session starts: reconcile before trading on it
    best_bid: float | None
    best_ask: float | None
    mark_price: float | None
    instrument: Mapping | None  # tickSize, lotSize
    position: Mapping | None  # currentQty, liquidationPrice, markPrice
    margin: Mapping | None  # marginBalance
    orders: Sequence[Mapping]  # the account's working orders


def position_of(snap: Snapshot) -> int:
    """Signed contracts held, per the snapshot (see `contracts`)."""
    return contracts(snap.position)


def mark_of(snap: Snapshot) -> float | None:
    """The mark price, per the snapshot (see `number`)."""
    return number(snap.mark_price, "instrument markPrice")


def balance_of(snap: Snapshot) -> float | None:
    """The margin balance in XBt, per the snapshot (see `number`)."""
    return number((snap.margin or {}).get("marginBalance"), "margin marginBalance")


def contracts(row: Mapping | None) -> int:
    """A position row's currentQty, 0 without a row. A currentQty that is no whole number (a
    garbled row) raises VenueError: a position that cannot be read is unknown, and nothing may be
    planned on it."""
    return _read(whole, (row or {}).get("currentQty"), "position row: currentQty") or 0


def number(value, what: str) -> float | int | None:
    """A figure of the live view (a price, a balance in XBt, a rate) as `model.number` reads it,
    raising VenueError naming `what` (e.g. "margin marginBalance") when it is garbled: no order
    may rest on it."""
    return _read(model_number, value, what)


def _read(reader, value, what: str):
    """`reader`'s figure, its Unreadable raised as the port's VenueError."""
    try:
        return reader(value, what)
    except Unreadable as exc:
        raise VenueError(str(exc)) from None


class Venue(Protocol):
    symbol: str

    # ------------------------------------------------------------------ writes
    def place(self, request: dict) -> Mapping:
        """POST an order (`request` as `OrderRecord.request` builds it, clOrdID included)."""

    def amend(self, clordid: str, **changes) -> Mapping:
        """Change price and/or orderQty (absolute values: repeating an amend changes nothing)."""

    def cancel(self, *, clordid: str | None = None, order_id: str | None = None, text: str = "") -> list[Mapping]:
        """Cancel one order, ours by clOrdID or anyone's by orderID."""

    def cancel_all(self, text: str) -> list[Mapping]:
        """Cancel every working order of the account on this symbol."""

    def dead_mans_switch(self, timeout_ms: int) -> None:
        """Arm (or re-arm) the exchange's cancel-all-after `timeout_ms`; 0 disarms it."""

    # ------------------------------------------------------------------ the exchange's records
    def open_orders(self) -> list[Mapping]:
        """Every working order of the account, ours or not."""

    def lookup(self, clordid: str) -> Mapping | None:
        """The exchange's row for one clOrdID, open or closed; None if it never had it."""

    def fills(self) -> list[Mapping]:
        """The account's recent trade executions."""

    def position(self) -> int:
        """Signed contracts held."""

    # ------------------------------------------------------------------ the live view
    def snapshot(self) -> Snapshot:
        """The live view now."""

    def order(self, clordid: str) -> Mapping | None:
        """The live view's row for this order once it shows the order at least as far along as
        the last reply this venue returned for it; None until then (and for unknown orders)."""

    def new_executions(self) -> Sequence[Mapping]:
        """Executions the live view received since the previous call, oldest first."""

    def watermark(self, touch: bool = False):
        """A token for `wait`: the live view's account data now, and the touch when `touch`."""

    def wait(self, mark, timeout: float) -> bool:
        """Block until account data (or, if the mark holds it, the touch) changed since `mark`,
        at most `timeout` seconds; True when something changed."""
