"""The Cython motif matcher agrees with the NumPy brute force, and its edge cases behave as
sniper/motif.py documents them."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sniper.motif import MotifIndex, knn, knn_batch, reference_knn

SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def walk(rng, n, scale=1.0):
    return np.cumsum(rng.normal(scale=scale, size=n))


@st.composite
def problems(draw, metric):
    """A random series with the awkward features mixed in, a query, and search parameters.

    Data are continuous random values, so two different windows never tie except where the
    semantics fix the distance exactly (flat windows: 0 or sqrt(m)); m >= 3 for the same
    reason (every non-flat window of 2 points normalises to (-1, 1) or (1, -1))."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 260))
    m = draw(st.integers(3, 32))
    x = walk(rng, n) if draw(st.booleans()) else rng.normal(size=n)
    if draw(st.booleans()) and n > 2:  # one flat stretch
        a = int(rng.integers(0, n))
        x[a:a + int(rng.integers(1, 2 * m))] = x[a]
    if draw(st.booleans()):
        x[rng.integers(0, n, size=int(rng.integers(1, 4)))] = np.nan
    offset = draw(st.sampled_from([0.0, 1e4, -3e5]))
    x = x * 10.0 ** draw(st.integers(-3, 3)) + offset
    if offset == 0.0 and draw(st.booleans()):  # float32 far from 0 would repeat values: ties
        x = x.astype(np.float32)
    source = draw(st.sampled_from(["series", "random", "flat"]))
    if source == "series" and n >= m:
        s = int(rng.integers(0, n - m + 1))
        q = x[s:s + m] + rng.normal(scale=draw(st.sampled_from([0.0, 0.01, 0.5])), size=m)
        if not np.isfinite(q).all():
            q = rng.normal(size=m)
    elif source == "flat":
        q = np.full(m, 3.25)
    else:
        q = walk(rng, m)
    k = draw(st.integers(1, 8))
    exclusion = draw(st.none() | st.integers(0, 2 * m))
    window = None
    if metric == "dtw":
        window = draw(st.none() | st.floats(0.0, 1.0) | st.integers(0, m))
    return x, q, k, exclusion, window


def assert_same(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-6)


@SETTINGS
@given(problems("ed"))
def test_euclidean_matches_brute_force(case):
    x, q, k, exclusion, _ = case
    assert_same(knn(x, q, k, exclusion=exclusion), reference_knn(x, q, k, exclusion=exclusion))


@SETTINGS
@given(problems("dtw"))
def test_dtw_matches_brute_force(case):
    x, q, k, exclusion, window = case
    got = knn(x, q, k, exclusion=exclusion, metric="dtw", window=window)
    assert_same(got, reference_knn(x, q, k, exclusion=exclusion, metric="dtw", window=window))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(40, 160), st.integers(1, 12), st.sampled_from(["ed", "dtw"]))
def test_long_windows_match_brute_force(seed, m, k, metric):
    """Windows long enough for several PAA segments per window and wide DTW bands."""
    rng = np.random.default_rng(seed)
    x = walk(rng, int(rng.integers(m, 2000)))
    x[rng.integers(0, len(x), size=2)] = np.nan
    s = int(rng.integers(0, len(x) - m + 1))
    q = np.nan_to_num(x[s:s + m], nan=0.0) + rng.normal(scale=0.5, size=m)
    assert_same(knn(x, q, k, metric=metric), reference_knn(x, q, k, metric=metric))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 90), min_size=1, max_size=6))
def test_appending_equals_indexing_the_whole_series(seed, cuts):
    rng = np.random.default_rng(seed)
    x = walk(rng, 400)
    x[[int(rng.integers(0, 140)), int(rng.integers(180, 400))]] = np.nan
    q = x[150:170] + rng.normal(scale=0.1, size=20)
    idx = MotifIndex(x[:30])
    idx.knn(q, 3)  # cache stats (m=20) and the DTW envelope before appending
    idx.knn(q, 3, metric="dtw")
    at = 30
    for c in cuts:
        idx.append(x[at:at + c])
        at += c
    idx.append(x[at:])
    assert len(idx) == len(x)
    np.testing.assert_array_equal(idx.values, x)
    for metric in ("ed", "dtw"):
        assert_same(idx.knn(q, 5, metric=metric), reference_knn(x, q, 5, metric=metric))


def test_long_series_and_large_k_match_brute_force():
    """Many candidates: the pool compacts and grows, and k-th best bounds tighten late."""
    rng = np.random.default_rng(12)
    x = walk(rng, 20000)
    q = x[7000:7064] + rng.normal(scale=0.3, size=64)
    for k in (1, 60):
        assert_same(knn(x, q, k), reference_knn(x, q, k))
        assert_same(knn(x[:4000], q, k, metric="dtw"), reference_knn(x[:4000], q, k, metric="dtw"))
    q = x[9000:9150] + rng.normal(scale=0.3, size=150)  # segments of 7 cover 147 of 150 points
    for metric in ("ed", "dtw"):
        assert_same(knn(x[:3000], q, 8, metric=metric), reference_knn(x[:3000], q, 8, metric=metric))
    # every window flat and tied at 0: all are candidates, the smallest starts win
    starts, dist = knn(np.full(10000, 3.0), np.full(50, 1.0), 5, exclusion=13)
    assert starts.tolist() == [0, 13, 26, 39, 52] and dist.tolist() == [0.0] * 5


def test_exclusion_allows_starts_exactly_exclusion_apart():
    rng = np.random.default_rng(3)
    period, m = 17, 30
    x = np.tile(rng.normal(size=period), 20)  # windows a multiple of 17 apart are identical
    q = x[:m]
    perfect = np.arange(0, len(x) - m + 1, period)
    starts, dist = knn(x, q, len(perfect), exclusion=period)
    assert sorted(starts) == list(perfect)
    assert dist.max() < 1e-6
    starts, _ = knn(x, q, len(perfect), exclusion=period + 1)
    assert np.diff(np.sort(starts)).min() >= period + 1


@pytest.mark.parametrize("metric", ["ed", "dtw"])
@pytest.mark.parametrize("m", [30, 33])
def test_default_exclusion_is_a_quarter_of_m_rounded_up(m, metric):
    """Copies of the query every `period` points: with the default exclusion ceil(m/4), copies
    exactly that far apart are all returned, copies one point closer cannot all be."""
    rng = np.random.default_rng(15)
    e = math.ceil(m / 4)  # 8 and 9: m / 4 is not an integer
    for period in (e, e - 1):
        x = np.tile(rng.normal(size=period), 200 // period)
        copies = np.arange(0, len(x) - m + 1, period)
        starts, dist = knn(x, x[:m], len(copies), metric=metric)
        assert_same((starts, dist), knn(x, x[:m], len(copies), exclusion=e, metric=metric))
        gaps = np.diff(np.sort(starts))
        if period == e:
            assert sorted(starts) == list(copies) and dist.max() < 1e-6
        else:
            assert gaps.min() >= e  # never two copies period = e - 1 apart
            starts, _ = knn(x, x[:m], len(copies), exclusion=e - 1, metric=metric)
            assert sorted(starts) == list(copies)  # a smaller exclusion admits them all


def test_results_are_sorted_and_separated():
    rng = np.random.default_rng(4)
    x = walk(rng, 5000)
    for metric in ("ed", "dtw"):
        starts, dist = knn(x, x[100:164], 20, exclusion=40, metric=metric)
        assert len(starts) == 20
        assert np.all(np.diff(dist) >= 0)
        assert np.abs(starts[:, None] - starts[None, :])[~np.eye(20, dtype=bool)].min() >= 40
        assert starts[0] == 100 and dist[0] < 1e-6


@pytest.mark.parametrize("metric", ["ed", "dtw"])
def test_flat_windows(metric):
    rng = np.random.default_rng(5)
    m = 10
    x = walk(rng, 200)
    x[50:80] = 7.0  # starts 50..70 are flat windows
    flat = set(range(50, 71))
    starts, dist = knn(x, rng.normal(size=m), 1000, exclusion=1, metric=metric)
    assert len(starts) == len(x) - m + 1
    by_start = dict(zip(starts.tolist(), dist.tolist(), strict=True))
    assert all(by_start[s] == math.sqrt(m) for s in flat)  # exactly one side flat: sqrt(m)
    # a flat query: flat windows at 0, every other window at exactly sqrt(m), ties by start
    starts, dist = knn(x, np.full(m, -2.5), 1000, exclusion=1, metric=metric)
    assert starts.tolist() == sorted(flat) + sorted(set(range(len(x) - m + 1)) - flat)
    assert dist.tolist() == [0.0] * len(flat) + [math.sqrt(m)] * (len(x) - m + 1 - len(flat))


def test_windows_with_nan_are_skipped():
    rng = np.random.default_rng(6)
    x = walk(rng, 300)
    x[[40, 200]] = np.nan
    x[120] = np.inf
    m = 25
    starts, _ = knn(x, x[60:85], 1000, exclusion=1)
    bad = {s for s in range(len(x) - m + 1) if not np.isfinite(x[s:s + m]).all()}
    assert set(starts.tolist()) == set(range(len(x) - m + 1)) - bad


def test_query_longer_than_series_and_too_large_k():
    x = np.arange(10.0) ** 2
    q = [1.0, 3.0, 2.0, 5.0]
    for metric in ("ed", "dtw"):
        starts, dist = knn(x, np.arange(11.0), 3, metric=metric)
        assert starts.shape == (0,) and dist.shape == (0,)
        starts, dist = knn(x, q, 50, exclusion=3, metric=metric)
        assert 2 <= len(starts) <= 3  # 7 windows, at least 3 apart
        assert_same((starts, dist), reference_knn(x, q, 50, exclusion=3, metric=metric))


@pytest.mark.parametrize("m", [1, 2])
def test_degenerate_lengths_give_valid_rankings(m):
    """Every window of 1 point is flat; of 2 points, (-1, 1) or (1, -1): ties everywhere, so
    which tied start wins is up to rounding. Check the ranking is valid instead."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=50)
    q = rng.normal(size=m)
    profile = dict(zip(*(a.tolist() for a in reference_knn(x, q, 100, exclusion=1)), strict=True))
    starts, dist = knn(x, q, 10, exclusion=3)
    assert len(starts) >= 5
    np.testing.assert_allclose(dist, [profile[s] for s in starts], atol=1e-9)
    assert np.all(np.diff(dist) >= -1e-12)
    assert np.diff(np.sort(starts)).min() >= 3


def test_float32_input_is_the_same_as_its_float64_values():
    rng = np.random.default_rng(8)
    x32 = walk(rng, 3000).astype(np.float32)
    q32 = (x32[700:760] + 0.05).astype(np.float32)
    for metric in ("ed", "dtw"):
        assert_same(knn(x32, q32, 5, metric=metric),
                    knn(x32.astype(np.float64), q32.astype(np.float64), 5, metric=metric))


def test_large_offset_and_tiny_variance_keep_their_digits():
    """Prices near 1e6 moving by ~1e-5: x = 2**20 + y exactly, so the result on x must equal the
    brute force on y. The naive one-pass variance E[x^2] - E[x]^2 is useless on such data."""
    rng = np.random.default_rng(9)
    y = np.round(walk(rng, 20000, scale=2.0**-16) * 2.0**30) * 2.0**-30
    x = 2.0**20 + y
    np.testing.assert_array_equal(x - 2.0**20, y)  # exactly representable
    m = 64
    w = x[1000:1000 + m]
    naive = np.mean(w * w) - np.mean(w) ** 2
    assert abs(naive - np.var(w)) > 0.5 * np.var(w)  # the data defeat the textbook formula
    q = y[5000:5000 + m] + np.round(rng.normal(scale=2.0**-18, size=m) * 2.0**30) * 2.0**-30
    for metric in ("ed", "dtw"):
        assert_same(knn(x, q + 2.0**20, 5, metric=metric), reference_knn(y, q, 5, metric=metric))


@pytest.mark.parametrize("metric", ["ed", "dtw"])
def test_an_exact_copy_is_at_distance_zero_at_any_offset(metric):
    """One spike then a flat run, 3e5 away from zero: a std of 6e-5 with a mean whose last
    digit alone (ulp 6e-11) is 1e-6 std. Normalising with a rounded mean would put the copy
    at sqrt(m) * 1e-6 instead of 0."""
    rng = np.random.default_rng(13)
    pattern = np.r_[-300000.0018307, np.full(24, -300000.00153937)]
    x = np.r_[-300000.0 + rng.normal(scale=1e-3, size=40), pattern, -300000.0 + rng.normal(scale=1e-3, size=40)]
    starts, dist = knn(x, pattern, 1, metric=metric)
    assert starts.tolist() == [40] and dist[0] < 1e-9


def test_huge_magnitudes_match_brute_force():
    """Spans beyond float32 (the PAA bound's segment offsets) switch that bound off."""
    rng = np.random.default_rng(14)
    x = walk(rng, 3000) * 1e39
    q = x[100:164] + rng.normal(scale=1e38, size=64)
    for metric in ("ed", "dtw"):
        assert_same(knn(x, q, 5, metric=metric), reference_knn(x, q, 5, metric=metric))


def layouts(a: np.ndarray) -> dict[str, np.ndarray]:
    """The same values as float64, float32, a strided view, a reversed view."""
    spaced = np.full(2 * len(a), -1.0)
    spaced[::2] = a
    return {"float64": a.copy(), "float32": a.astype(np.float32), "strided": spaced[::2],
            "reversed": a[::-1].copy()[::-1]}


@pytest.mark.parametrize("layout", ["float64", "float32", "strided", "reversed"])
def test_inputs_are_not_modified(layout):
    """Series, query and appended values, in every layout: bit for bit as they were, and read
    only throughout (so any write in place would raise instead of passing unnoticed)."""
    rng = np.random.default_rng(10)
    base = walk(rng, 1000)
    base[[3, 700]] = np.nan
    x = layouts(base)[layout]
    q = layouts(base[10:60] + 0.01)[layout]
    more = layouts(walk(rng, 40))[layout]
    arrays = [x, q, more]
    if layout == "strided":
        arrays.append(x.base)  # the gaps between the strided values too
    before = [a.copy() for a in arrays]
    for a in arrays:
        a.flags.writeable = False
    assert x.flags.c_contiguous == (layout not in ("strided", "reversed"))
    idx = MotifIndex(x)
    for metric in ("ed", "dtw"):
        knn(x, q, 5, metric=metric)
        idx.knn(q, 5, metric=metric)
        reference_knn(x, q, 5, metric=metric)
    idx.append(more)
    idx.knn(q, 5)
    knn_batch(x, 50, 3, [500, 900])
    for a, b in zip(arrays, before, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    # and the results are those of the float64 values
    assert_same(knn(x, q, 5), reference_knn(np.asarray(x, dtype=np.float64), q, 5))


def test_the_index_keeps_its_own_copy():
    rng = np.random.default_rng(16)
    x = walk(rng, 100)
    idx = MotifIndex(x)
    x[:] = 0.0
    assert not np.all(idx.values == 0.0)
    with pytest.raises(ValueError):
        idx.values[0] = 1.0  # callers get a read-only view


def test_repeated_queries_reuse_the_index_and_appends_extend_it(monkeypatch):
    """The daemon's minute: statistics and envelopes are built once per window length and band;
    later queries compute none, and an append computes only the windows that reach the new
    bars (and the envelope positions within the band of them)."""
    from sniper import motif

    calls = []
    for name in ("rolling_stats", "segment_means", "envelope"):
        real = getattr(motif._motif, name)

        def spy(*args, _real=real, _name=name):
            calls.append((_name, args[2], len(args[-1])))  # (kernel, first index, end)
            return _real(*args)

        monkeypatch.setattr(motif._motif, name, spy)
    rng = np.random.default_rng(17)
    x = walk(rng, 5000)
    idx = MotifIndex(x[:4000])
    m, r = 100, 10
    q = x[4200:4300] + rng.normal(scale=0.1, size=m)
    idx.knn(q, 5)
    idx.knn(q, 5, metric="dtw")
    assert {c[0] for c in calls} == {"rolling_stats", "segment_means", "envelope"}
    calls.clear()
    for _ in range(3):
        for metric in ("ed", "dtw"):
            idx.knn(q, 5, metric=metric)
            idx.recent(m, 3, metric=metric)
    assert calls == []  # nothing recomputed
    idx.append(x[4000:4007])
    seg = motif._motif.paa_segment(m)
    assert sorted(calls) == sorted([
        ("rolling_stats", 4000 - m + 1, 4007 - m + 1),  # only windows that reach the new bars
        ("segment_means", 4000 - seg + 1, 4007 - seg + 1),
        ("envelope", 4000 - r, 4007),
    ])
    for metric in ("ed", "dtw"):
        assert_same(idx.knn(q, 5, metric=metric), reference_knn(x[:4007], q, 5, metric=metric))


def test_bad_arguments_are_rejected():
    x = np.arange(100.0)
    with pytest.raises(ValueError):
        knn(x, [1.0, np.nan, 2.0], 1)
    with pytest.raises(ValueError):
        knn(x, [], 1)
    with pytest.raises(ValueError):
        knn(x, [1.0, 2.0, 0.0], 1, metric="cosine")
    with pytest.raises(ValueError):
        knn(x, [1.0, 2.0, 0.0], 1, window=0.1)  # a band is meaningless for ED
    with pytest.raises(ValueError):
        knn(x, [1.0, 2.0, 0.0], 1, metric="dtw", window=1.5)
    with pytest.raises(ValueError):
        knn(x, [1.0, 2.0, 0.0], -1)
    with pytest.raises(ValueError):
        knn(x, [1.0, 2.0, 0.0], 1, exclusion=-2)
    with pytest.raises(IndexError):
        knn_batch(x, 10, 1, [5])
    assert knn(x, [1.0, 2.0, 0.0], 0)[0].shape == (0,)


def test_dtw_window_forms():
    rng = np.random.default_rng(11)
    x = walk(rng, 400)
    q = walk(rng, 40)
    # floor(0.25 * 40) = 10: the fraction and the count name the same band
    assert_same(knn(x, q, 4, metric="dtw", window=0.25), knn(x, q, 4, metric="dtw", window=10))
    # band 0 is plain Euclidean distance; a wider band can only bring windows closer
    assert_same(knn(x, q, 4, metric="dtw", window=0), knn(x, q, 4))
    assert knn(x, q, 1, metric="dtw", window=1.0)[1][0] <= knn(x, q, 1, metric="dtw", window=2)[1][0]
