"""Fault injection and rate limiting for the simulator.

The daemon's whole point is surviving a misbehaving exchange, so the simulator
must misbehave on demand: tests switch faults on and off through the control
endpoint while clients are connected. Durations are real (monotonic) time, not
simulated time: a stall of 2 s is 2 s of silence on the wire at any replay speed.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass

from sniper.clock import RealClock

# drop: close every websocket now (and refuse new ones for `seconds`, if given);
# stall: websockets stay open but silent, pings unanswered; delay: hold each ws message delay_ms;
# overload: REST 503; ratelimit: REST 429; reject: a share of new orders rejected (400);
# timeout: REST replies held back delay_ms (a client with a shorter timeout loses the reply).
MODES = ("drop", "stall", "delay", "overload", "ratelimit", "reject", "timeout")
REFILL_S = 60.0  # an empty rate-limit budget is full again after this long


@dataclass(frozen=True)
class Fault:
    mode: str
    until: float  # time.monotonic() deadline; math.inf = until cleared
    delay_ms: int = 0
    share: float = 1.0
    after_commit: bool = False  # overload/timeout: apply the request first, then fail/hold the reply

    def remaining(self) -> float:
        return max(0.0, self.until - time.monotonic())


class Faults:
    """The set of faults in force; each mode expires on its own deadline."""

    def __init__(self, seed: int = 0) -> None:
        self._active: dict[str, Fault] = {}
        self._rng = random.Random(seed)

    def set(self, mode: str, seconds: float | None = None, delay_ms: int = 0, share: float = 1.0,
            after_commit: bool = False) -> Fault:
        """Switch `mode` on (replacing an earlier setting of the same mode). The values are of
        their types and ranges (the control endpoint's schema checks them: seconds >= 0,
        delay_ms >= 0, share in [0, 1]); what is left to refuse here, with ValueError, is an
        unknown mode and a delay or timeout of no length."""
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {', '.join(MODES)}")
        if mode in ("delay", "timeout") and delay_ms == 0:
            raise ValueError(f"mode {mode!r} needs delay_ms > 0")
        until = math.inf if seconds is None else time.monotonic() + seconds
        fault = Fault(mode, until, delay_ms, float(share), bool(after_commit))
        self._active[mode] = fault
        return fault

    def clear(self) -> None:
        self._active.clear()

    def get(self, mode: str) -> Fault | None:
        """The fault for `mode` if it is still in force."""
        fault = self._active.get(mode)
        if fault is not None and fault.remaining() <= 0:
            del self._active[mode]
            return None
        return fault

    def reject_order(self) -> bool:
        """Decide (seeded, so runs repeat) whether this new order is rejected."""
        fault = self.get("reject")
        return fault is not None and self._rng.random() < fault.share

    def describe(self) -> dict:
        out = {}
        for mode in list(self._active):
            fault = self.get(mode)
            if fault is not None:
                row = asdict(fault)
                del row["until"]
                row["remaining"] = None if math.isinf(fault.until) else round(fault.remaining(), 3)
                out[mode] = row
        return out


@dataclass(frozen=True)
class Allowance:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # epoch seconds at which the budget is full again
    retry_after: int  # seconds until one request is allowed (0 if allowed)

    def headers(self) -> dict:
        return {"x-ratelimit-limit": str(self.limit), "x-ratelimit-remaining": str(self.remaining),
                "x-ratelimit-reset": str(self.reset)}


class RateLimiter:
    """BitMEX-style budget: `per_minute` requests per key, refilled continuously
    (a token bucket of that size), reported in the x-ratelimit-* headers.

    A budget that has refilled is the same as one never used, so it is forgotten: at most
    once per refill period the full ones are swept away, and memory follows the keys seen in
    the last minute or so rather than every key ever seen (`budgets` counts them).
    `clock` gives both wall time (the reset header) and monotonic time (refills)."""

    def __init__(self, per_minute: int, clock=None) -> None:
        if per_minute < 1:
            raise ValueError("rate limit must be >= 1 request per minute")
        self.limit = int(per_minute)
        self._rate = self.limit / 60.0
        self._clock = clock or RealClock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at monotonic)
        self._swept = self._clock.monotonic()

    @property
    def budgets(self) -> int:
        """How many keys' budgets are tracked (the ones not yet refilled, give or take a minute)."""
        return len(self._buckets)

    def take(self, key: str) -> Allowance:
        now = self._clock.monotonic()
        if now - self._swept >= REFILL_S:
            self._sweep(now)
        tokens, at = self._buckets.get(key, (float(self.limit), now))
        tokens = min(float(self.limit), tokens + (now - at) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        wall = self._clock.now()
        reset = int(math.ceil(wall + (self.limit - tokens) / self._rate))
        retry = 0 if allowed else max(1, int(math.ceil((1.0 - tokens) / self._rate)))
        return Allowance(allowed, self.limit, int(tokens), reset, retry)

    def _sweep(self, now: float) -> None:
        self._buckets = {key: (tokens, at) for key, (tokens, at) in self._buckets.items()
                         if tokens + (now - at) * self._rate < self.limit}
        self._swept = now
