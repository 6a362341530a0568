"""The vocabulary every layer shares: what a strategy asks for, what a bar is, BitMEX's words
for order states and instructions, and the units. Defined once here; nothing redefines them.

Time convention for the whole code base: a bar's `time` is the epoch second at which its
minute OPENS (UTC). BitMEX's REST `trade/bucketed` and the reference DB.sqlite stamp the
bucket's END (`open time + 60`); the edges that read or write those (history.py, bars.py,
sim/buckets.py) convert, nothing else does.
"""

from __future__ import annotations

import math
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
