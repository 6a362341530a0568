"""Clocks. Everything that needs the time takes a clock, so that funding-window
and timeout logic can be tested faster than real time.

`RealClock` is wall time; `OffsetClock` is wall time moved onto an exchange's
clock. `SimClock` starts at a chosen epoch and runs `speed` times faster than
real time; it can also be stepped by hand (`advance`), and `sleep` on it waits
only the scaled real time.
"""

from __future__ import annotations

import threading
import time


class RealClock:
    """Wall-clock time in seconds since the epoch (UTC)."""

    speed = 1.0

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class SimClock:
    """Simulated time: `start` epoch seconds, running at `speed` x real time.

    speed=0 freezes the clock; then only `advance` moves it. Thread-safe.
    """

    def __init__(self, start: float, speed: float = 1.0) -> None:
        if speed < 0:
            raise ValueError(f"SimClock speed must be >= 0, got {speed}")
        self._lock = threading.Lock()
        self._base_sim = float(start)
        self._base_real = time.monotonic()
        self._speed = float(speed)

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> float:
        with self._lock:
            return self._base_sim + (time.monotonic() - self._base_real) * self._speed

    def monotonic(self) -> float:
        return self.now()

    def set_speed(self, speed: float) -> None:
        """Change speed without a jump in simulated time."""
        if speed < 0:
            raise ValueError(f"SimClock speed must be >= 0, got {speed}")
        with self._lock:
            real = time.monotonic()
            self._base_sim += (real - self._base_real) * self._speed
            self._base_real = real
            self._speed = float(speed)

    def advance(self, seconds: float) -> float:
        """Jump simulated time forward by `seconds`; returns the new time."""
        if seconds < 0:
            raise ValueError("SimClock cannot go backwards")
        with self._lock:
            self._base_sim += seconds
            return self._base_sim + (time.monotonic() - self._base_real) * self._speed

    def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of simulated time (real time scaled by speed)."""
        if seconds <= 0:
            return
        if self._speed == 0:
            self.advance(seconds)
            return
        time.sleep(seconds / self._speed)


class OffsetClock(RealClock):
    """Wall time shifted onto an exchange's clock, for an exchange whose time is not ours (a
    simulator replaying 2018 behind --exchange-url). Strategies and bars run on the market's
    time; timeouts keep the real clock. `observe` moves the offset forward only, so the clock
    never runs backwards."""

    def __init__(self, offset: float = 0.0) -> None:
        self._offset = float(offset)
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time() + self._offset

    def observe(self, exchange_time: float) -> None:
        """The exchange said it is `exchange_time` now (a message timestamp): catch up if behind."""
        with self._lock:
            behind = exchange_time - self.now()
            if behind > 0:
                self._offset += behind
