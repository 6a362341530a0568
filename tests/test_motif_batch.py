"""The backtest batch entry sees only the past, the daemon's incremental index agrees with it,
and searches run with the GIL released."""

import math
import threading
import time

import numpy as np
import pytest

from sniper import motif
from sniper.motif import MotifIndex, _cpus, knn_batch, reference_knn


def walk(rng, n):
    return np.cumsum(rng.normal(size=n))


@pytest.fixture(scope="module")
def series():
    """Long enough for the batch to cross blocks of its pass over the series."""
    x = walk(np.random.default_rng(20), 40_000)
    x[[500, 2100, 33_000]] = np.nan
    return x


@pytest.mark.parametrize("metric", ["ed", "dtw"])
@pytest.mark.parametrize("horizon", [0, 25])
def test_batch_rows_are_brute_force_over_the_past(series, metric, horizon):
    m, k = 40, 4
    positions = [39, 60, 600, 1500, 2110, 17_000, 33_010, 39_999]  # 39/60: no room; 2110 and
    # 33_010: the query holds a NaN
    starts, dist = knn_batch(series, m, k, positions, horizon=horizon, metric=metric)
    assert starts.shape == dist.shape == (len(positions), k)
    gap = max(math.ceil(m / 4), horizon)
    for row, p in enumerate(positions):
        qs = p - m + 1
        query = series[qs:p + 1]
        if not np.isfinite(query).all() or qs - gap < 0:
            assert (starts[row] == -1).all() and np.isnan(dist[row]).all()
            continue
        # candidates start at most at qs - gap, so they end by qs - gap + m - 1 <= p - 1
        ref_starts, ref_dist = reference_knn(series[:qs - gap + m], query, k, metric=metric)
        n = len(ref_starts)
        np.testing.assert_array_equal(starts[row, :n], ref_starts)
        np.testing.assert_allclose(dist[row, :n], ref_dist, rtol=0, atol=1e-6)
        assert (starts[row, n:] == -1).all()


@pytest.mark.parametrize("metric", ["ed", "dtw"])
def test_batch_uses_no_future_data(series, metric):
    rng = np.random.default_rng(21)
    p = 21_800
    future = series.copy()
    future[p + 1:] = rng.normal(size=len(series) - p - 1) * 100.0
    a = knn_batch(series, 50, 5, [p], metric=metric, horizon=10)
    b = knn_batch(future, 50, 5, [p], metric=metric, horizon=10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert (a[0] >= 0).all() and (a[0] + 50 - 1 + 10 <= p).all()  # outcomes known at p


def test_threads_change_nothing_but_speed(series):
    head = MotifIndex(series[:3000])
    one = head.batch(30, 3, n_jobs=1)
    two = head.batch(30, 3, n_jobs=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    assert one[0].shape == (3000 - 29, 3)  # default: every position with a full query
    idx, positions = MotifIndex(series), np.arange(20_000, 40_000, 997)
    one = idx.batch(60, 4, positions, n_jobs=1, metric="dtw")
    two = idx.batch(60, 4, positions, n_jobs=2, metric="dtw")
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_recent_after_appends_matches_the_batch(series):
    """The daemon's way: grow the index bar by bar and ask about the latest window."""
    m, k = 30, 3
    clean = np.nan_to_num(series[:3000], nan=0.0)
    idx = MotifIndex(clean[:2000])
    for p in range(2000, 2050):
        idx.append(clean[p])
        for metric in ("ed", "dtw"):
            got = idx.recent(m, k, horizon=5, metric=metric)
            starts, dist = knn_batch(clean[:p + 1], m, k, [p], horizon=5, metric=metric)
            np.testing.assert_array_equal(got[0], starts[0])
            np.testing.assert_allclose(got[1], dist[0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("entry", ["knn", "batch"])
def test_search_releases_the_gil(entry):
    """While a long search runs in one thread, a plain Python loop in another keeps running.

    The loop notes the time about every millisecond. Had the kernel held the GIL, the loop
    would have stalled for the whole kernel call: one gap as long as the search itself.
    `batch` runs on one worker thread here, so the whole batch is a single kernel call."""
    rng = np.random.default_rng(22)
    idx = MotifIndex(walk(rng, 400_000))
    query = rng.normal(size=64)  # matches nothing well: little pruning, a long search
    idx.knn(query, 1, metric="dtw", window=1.0)  # stats and envelope built beforehand
    done = threading.Event()
    span = []

    def search():
        span.append(time.perf_counter())
        if entry == "knn":
            idx.knn(query, 20, metric="dtw", window=1.0)
        else:
            idx.batch(64, 20, [399_999, 399_000], metric="dtw", window=1.0, n_jobs=1)
        span.append(time.perf_counter())
        done.set()

    stamps = [time.perf_counter()]
    worker = threading.Thread(target=search)
    worker.start()
    while not done.is_set():
        now = time.perf_counter()
        if now - stamps[-1] > 1e-3:
            stamps.append(now)
    worker.join()
    start, end = span
    assert end - start > 0.1, "the search was too short to tell"
    seen = [start] + [t for t in stamps if start < t < end] + [end]
    longest = max(np.diff(seen))
    assert longest < 0.5 * (end - start), f"loop stalled {longest:.3f} s of a {end - start:.3f} s search"


@pytest.mark.skipif(_cpus() < 2, reason="needs two usable cores")
def test_batch_runs_kernels_on_every_core_at_once(series, monkeypatch):
    """By default the batch splits its positions over one thread per usable core, and the
    kernel calls of different threads overlap in time (they could not if a kernel held the
    GIL: each call would run alone from start to end)."""
    calls = []
    real = motif._motif.search_batch

    def spy(*args):
        t0 = time.perf_counter()
        real(*args)
        calls.append((threading.get_ident(), t0, time.perf_counter()))

    monkeypatch.setattr(motif._motif, "search_batch", spy)
    idx, positions = MotifIndex(series), np.arange(30_000, 40_000, 100)
    starts, _ = idx.batch(50, 5, positions, metric="dtw")
    monkeypatch.undo()
    np.testing.assert_array_equal(starts, idx.batch(50, 5, positions, metric="dtw", n_jobs=1)[0])
    assert len({c[0] for c in calls}) >= 2
    overlap = any(a[0] != b[0] and a[1] < b[2] and b[1] < a[2] for a in calls for b in calls)
    assert overlap, "no two kernel calls ran at the same time"
