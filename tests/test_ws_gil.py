"""The matcher runs with the GIL released: while one thread repeats the daemon's full-history
motif search (a year of real 1-minute closes, DTW), the websocket thread's work (a real State
applying the recorded orderBookL2 stream) keeps going at most of the rate it has alone.

Why the measure can tell: a kernel that held the GIL would stop the websocket thread for the
whole of each call and hand it back only between calls, for one switch interval; the control
test runs the same measure with a C routine that holds the GIL (a list sort) and shows the
rate falling far below the bar. Note that NumPy's own loops release the GIL too, so even the
NumPy brute force `reference_knn` passes this measure: it is no stand-in for a GIL holder.

Needs two cores: on one, any second busy thread halves the rate, GIL or not. Load from other
processes cannot fake a failure: with the apply and search threads plus n busy processes
fairly sharing two cores the ratio stays at or above (n + 1) / (n + 2) >= 2/3.
"""

from __future__ import annotations

import gzip
import os
import threading
import time

import numpy as np
import pytest
from conftest import SHARED_DATA

from sniper.motif import MotifIndex
from sniper.ws.state import State, configure_switch_interval

STREAM = SHARED_DATA / "streams" / "l2_modern.ndjson.gz"
BARS = SHARED_DATA / "xbtusd_1m.csv.gz"
YEAR = 525_600  # one-minute closes in a year
MIN_FRACTION = 0.5  # of the rate alone that the websocket thread keeps while the search runs
PHASE_S = 1.5  # each measured stretch

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                                reason="needs two cores: on one any second busy thread halves the rate")


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    if not STREAM.exists():
        pytest.skip(f"recorded stream {STREAM} is missing")
    with gzip.open(STREAM, "rb") as f:
        return f.read().splitlines()


@pytest.fixture(scope="module")
def year() -> MotifIndex:
    """The last year of real closes, indexed and searched once (the stats are built)."""
    if not BARS.exists():
        pytest.skip(f"bar history {BARS} is missing")
    with gzip.open(BARS, "rb") as f:
        lines = f.read().splitlines()[-YEAR:]
    index = MotifIndex(np.loadtxt(lines, delimiter=",", usecols=4))
    assert len(index) == YEAR
    recent(index)
    return index


def recent(index: MotifIndex) -> tuple[list, list]:
    """The daemon's question: the best earlier matches of the last 62 minutes, DTW."""
    starts, dist = index.recent(62, 4, horizon=18, metric="dtw", window=0.135)
    return starts.tolist(), dist.tolist()


class Feed:
    """The websocket thread without its socket: a State in a session, applying the recorded
    frames as fast as it can (the partial again after the last frame)."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.state = State()
        self.state.begin_session(("orderBookL2",))
        self.applied = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ws-feed")

    def _run(self) -> None:
        apply = self.state.apply_message
        while not self._stop.is_set():
            for raw in self.frames:
                apply(raw)
                self.applied += 1
                if self._stop.is_set():
                    return

    def rate(self, seconds: float) -> float:
        """Messages applied per second over the next `seconds`."""
        n0, t0 = self.applied, time.perf_counter()
        time.sleep(seconds)
        return (self.applied - n0) / (time.perf_counter() - t0)

    def __enter__(self) -> Feed:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def rates_around(frames: list[bytes], search) -> tuple[float, float, list]:
    """(rate alone, rate while `search` runs over and over on another thread, its results).
    The rate alone is the mean of a stretch before and one after, so a change of machine load
    during the test is shared out evenly; the GIL switch interval is the daemon's."""
    previous = configure_switch_interval()
    results: list = []
    stop = threading.Event()

    def searching() -> None:
        while not stop.is_set():
            results.append(search())

    try:
        with Feed(frames) as feed:
            feed.rate(0.2)  # warm up
            before = feed.rate(PHASE_S)
            searcher = threading.Thread(target=searching, name="search")
            searcher.start()
            try:
                during = feed.rate(PHASE_S)
            finally:
                stop.set()
                searcher.join()
            after = feed.rate(PHASE_S)
        state = feed.state
        assert state.ready and state.book.valid and not state.errors, state.errors
    finally:
        configure_switch_interval(previous)
    return (before + after) / 2, during, results


def test_the_websocket_thread_keeps_its_rate_while_a_full_history_search_runs(frames, year):
    expected = recent(year)
    alone, during, results = rates_around(frames, lambda: recent(year))
    print(f"apply rate alone {alone:,.0f} msg/s, during {len(results)} searches {during:,.0f} msg/s "
          f"({during / alone:.0%})")
    assert len(results) >= 10  # the search really ran throughout
    assert all(r == expected for r in results)  # and answered as it does alone
    assert alone > 100_000
    assert during >= MIN_FRACTION * alone, (alone, during)


def test_the_measure_fails_a_search_that_holds_the_gil(frames, year):
    """The control: a C routine that never releases the GIL (sorting the year's closes as
    Python floats, in shuffled order) on the searching thread, as the kernel would be without
    its nogil sections, and the websocket thread's rate falls below the bar."""
    values = year.values.tolist()
    np.random.default_rng(1).shuffle(values)
    alone, during, results = rates_around(frames, lambda: sorted(values))
    print(f"apply rate alone {alone:,.0f} msg/s, during {len(results)} GIL-holding sorts {during:,.0f} msg/s "
          f"({during / alone:.0%})")
    assert len(results) >= 3
    assert during < MIN_FRACTION * alone, (alone, during)
