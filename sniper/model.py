"""The vocabulary every layer shares: what a strategy asks for, what a bar is, BitMEX's words
for order states and instructions, and the units. Defined once here; nothing redefines them.

Time convention for the whole code base: a bar's `time` is the epoch second at which its
minute OPENS (UTC). BitMEX's REST `trade/bucketed` and the reference DB.sqlite stamp the
bucket's END (`open time + 60`); the edges that read or write those (history.py, bars.py,
sim/buckets.py) convert, nothing else does.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

# ------------------------------------------------------------------------------ units
SATOSHI = 100_000_000  # XBt per XBT (int: the exchange counts in whole satoshis)
MINUTE = 60  # seconds in a bar
FUNDING_HOURS = (4, 12, 20)  # UTC hours of the 8-hourly funding settlement
FUNDING_INTERVAL_S = 8 * 3600

# ------------------------------------------------------------------------------ bars
BAR_DTYPE = np.dtype(
    [("time", "i8"), ("open", "f8"), ("high", "f8"), ("low", "f8"), ("close", "f8"), ("volume", "i8")]
)
BAR_FIELDS = BAR_DTYPE.names


def empty_bars(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=BAR_DTYPE)


# ------------------------------------------------------------------------------ BitMEX enumerations
BUY, SELL = "Buy", "Sell"
SIDES = (BUY, SELL)

GTC, IOC, FOK = "GoodTillCancel", "ImmediateOrCancel", "FillOrKill"
TIMES_IN_FORCE = (GTC, IOC, FOK)

POST_ONLY = "ParticipateDoNotInitiate"
REDUCE_ONLY = "ReduceOnly"
CLOSE = "Close"
EXEC_INSTS = frozenset({POST_ONLY, REDUCE_ONLY, CLOSE, "MarkPrice", "LastPrice", "IndexPrice", "Fixed"})

NEW, PARTIALLY_FILLED, FILLED = "New", "PartiallyFilled", "Filled"
CANCELED, REJECTED, EXPIRED, STOPPED, DONE_FOR_DAY = "Canceled", "Rejected", "Expired", "Stopped", "DoneForDay"
OPEN_ORD_STATUSES = frozenset({NEW, PARTIALLY_FILLED})  # the order still works at the exchange
TERMINAL_ORD_STATUSES = frozenset({FILLED, CANCELED, REJECTED, EXPIRED, STOPPED, DONE_FOR_DAY})


def side_sign(side: str) -> int:
    return 1 if side == BUY else -1


def has_inst(exec_inst: str | None, inst: str) -> bool:
    """Is `inst` one of the comma-separated instructions of `exec_inst`?"""
    return inst in (exec_inst or "").split(",")


def inverse_pnl(qty: int, entry: float, exit_price: float) -> float:
    """XBT gained by `qty` signed contracts (1 USD each) bought at `entry`, closed at `exit_price`."""
    return qty * (1.0 / entry - 1.0 / exit_price)


def bankruptcy_price(entry: float, leverage: float, long: bool) -> float:
    """Where a position opened at `entry` with margin notional/leverage has lost all of it
    (inverse contract: the loss is qty * (1/P - 1/entry) for a long). inf for a short at <= 1x."""
    if long:
        return entry * leverage / (leverage + 1.0)
    return entry * leverage / (leverage - 1.0) if leverage > 1.0 else math.inf


def iso(t: float) -> str:
    """Epoch seconds -> BitMEX timestamp text ('2018-11-19T00:00:00.000Z'), truncated to the
    millisecond so a time never lands in the next second or minute."""
    ms = math.floor(t * 1000 + 1e-6)
    d = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_time(value) -> float | None:
    """Epoch seconds from an epoch number or ISO-8601 text (BitMEX timestamps, query values);
    None for None or ''. Raises ValueError naming the text it cannot read."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        d = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text[:64]!r} (expected epoch seconds or ISO-8601)") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


def next_funding_time(t: float) -> float:
    """The first settlement strictly after epoch second `t`."""
    day = math.floor(t / 86400) * 86400
    for h in FUNDING_HOURS + (24 + FUNDING_HOURS[0],):
        if day + h * 3600 > t:
            return float(day + h * 3600)
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------ reading exchange rows
INT64 = 2**63  # BitMEX's integers are 64-bit: a bigger one is garbled (and SQLite would refuse it)


class Unreadable(ValueError):
    """A field of an exchange row that is not what BitMEX sends (text for a figure, a fraction
    of a contract, NaN, a bool): unknown, never guessed at. The message names the field."""


def number(value, what: str) -> float | int | None:
    """A figure of an exchange row (a price, a balance in XBt, a rate): None when absent, else a
    finite number. Anything else (text, a bool, NaN, inf, an integer beyond BitMEX's 64 bits)
    raises Unreadable naming `what` (e.g. "margin marginBalance"): a garbled figure is unknown,
    not 0, and nothing may rest on it."""
    if value is None:
        return None
    kind = type(value)  # the usual JSON figure first: the abstract-class checks cost a microsecond
    if kind is int and -INT64 <= value < INT64 or kind is float and math.isfinite(value):
        return value
    if isinstance(value, numbers.Integral):  # (isfinite overflows on a huge int)
        if not isinstance(value, bool) and -INT64 <= value < INT64:
            return value
    elif isinstance(value, numbers.Real) and math.isfinite(value):
        return value
    raise Unreadable(f"unreadable {what} {value!r:.40}")


def whole(value, what: str, least: int | None = None) -> int | None:
    """A count of contracts: None when absent, else a whole number within 64 bits, at least
    `least` if given. A float (1.9, and 1.0 too: BitMEX sends counts as integers), text or a
    bool raises Unreadable naming `what` (int() would turn 1.9 into 1, or fail with a ValueError
    nobody expects)."""
    if value is None:
        return None
    if ((type(value) is int or isinstance(value, numbers.Integral) and not isinstance(value, bool))
            and -INT64 <= value < INT64 and (least is None or value >= least)):
        return int(value)
    raise Unreadable(f"unreadable {what} {value!r:.40}")


def text(value, what: str) -> str | None:
    """A word of an exchange row (an id, a status): None when absent, else text; anything else
    raises Unreadable naming `what` (a list would fail as a dict key or an SQL parameter)."""
    if value is None or isinstance(value, str):
        return value
    raise Unreadable(f"unreadable {what} {value!r:.40}")


# ------------------------------------------------------------------------------ what strategies ask for
STYLES = ("passive", "market")


@dataclass(frozen=True)
class Target:
    """What the strategy wants: signed contracts, how to get there (post-only at the touch,
    or crossing the spread), and why."""

    qty: int
    style: str = "passive"
    reason: str = ""

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"Target style must be one of {STYLES}, got {self.style!r}")
        if int(self.qty) != self.qty:
            raise ValueError(f"Target qty must be whole contracts, got {self.qty!r}")
