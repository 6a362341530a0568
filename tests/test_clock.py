"""The simulated clock runs faster than real time and can be stepped."""

import time

import pytest

from sniper.clock import RealClock, SimClock


def test_real_clock_tracks_wall_time():
    clock = RealClock()
    assert abs(clock.now() - time.time()) < 1.0


def test_sim_clock_runs_at_speed():
    clock = SimClock(start=1_600_000_000, speed=3600.0)
    t0 = clock.now()
    time.sleep(0.05)
    elapsed = clock.now() - t0
    assert 0.04 * 3600 <= elapsed <= 2.0 * 3600  # an hour of simulated time in ~50 ms


def test_sim_clock_sleep_is_scaled():
    clock = SimClock(start=0, speed=1000.0)
    t0 = time.monotonic()
    clock.sleep(60)  # one simulated minute
    assert time.monotonic() - t0 < 1.0
    assert clock.now() >= 60


def test_frozen_clock_moves_only_by_advance():
    clock = SimClock(start=100.0, speed=0)
    time.sleep(0.01)
    assert clock.now() == 100.0
    clock.sleep(5)
    assert clock.now() == 105.0
    assert clock.advance(10) == 115.0
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_set_speed_has_no_jump():
    clock = SimClock(start=0, speed=0)
    clock.advance(50)
    clock.set_speed(10.0)
    assert 50 <= clock.now() < 60
    with pytest.raises(ValueError):
        clock.set_speed(-2)
