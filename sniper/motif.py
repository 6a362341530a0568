"""KNN motif search: which stretches of a series look most like a query, and how far away they are.

The strategy loop asks this every minute, so the heavy lifting is in the Cython kernels of
`sniper._motif` (GIL released, early abandoning, exact); this module defines what they compute,
keeps the per-series precomputation (`MotifIndex`) and holds a plain NumPy brute force
(`reference_knn`) that the tests hold the kernels to.

Semantics, shared by the kernels and the reference:

- A *window* is series[s:s+m] for a start s, m = len(query). Windows holding a NaN or an
  infinity are skipped.
- Each window and the query are z-normalised: (w - mean) / std, population std. A window is
  *flat* when std <= FLAT_RTOL * |mean| (1e-12: variation of a few thousand ulps at most, i.e.
  rounding noise; a constant window has std exactly 0). It normalises to all zeros, so two flat
  sides are at distance 0 and exactly one flat side at sqrt(m), for either metric.
- metric="ed": Euclidean distance between the normalised vectors. metric="dtw": square root of
  the smallest sum of squared differences along a warping path that stays within |i - j| <= r
  (Sakoe-Chiba band). `window` gives r as a fraction of m (a float, default 0.1, floor(window*m))
  or as a count (an int).
- Ranking is greedy: take the window with the smallest distance (ties: the smaller start), drop
  every window starting fewer than `exclusion` positions from it (|s - s*| < exclusion, so two
  starts exactly `exclusion` apart are both allowed), repeat until k are taken or none remain.
  `exclusion` defaults to ceil(m / 4); 0 behaves as 1 (any two distinct starts).
- Results: (starts, distances), sorted by distance then start; fewer than k when the series
  does not hold k such windows. Inputs are never modified.
- Exact: the brute force's windows and distances (to rounding). Lower bounds prune only with
  a slack of 1e-9 relative, 1e-12 absolute on squared distances, so only windows that tie
  with the k-th best to within rounding can come out in either order. Supported values are
  below about 1e150 in magnitude (squared deviations must fit in a double).

Entry points: `knn` (one-off), `MotifIndex` (the daemon's: `append` bars, `recent` for the
latest window, `knn` for any query, `batch` for backtests, no look-ahead), `knn_batch`, and
`reference_knn`.
"""

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from sniper import _motif

FLAT_RTOL = _motif.FLAT_RTOL
DEFAULT_DTW_WINDOW = 0.1

__all__ = ["FLAT_RTOL", "MotifIndex", "knn", "knn_batch", "reference_knn"]


def _series(values) -> np.ndarray:
    x = np.array(values, dtype=np.float64)  # always a copy: the caller's array is never touched
    if x.ndim != 1:
        raise ValueError(f"a series must be 1-D, got shape {x.shape}")
    return x


def _query(values) -> np.ndarray:
    q = _series(values)
    if len(q) == 0 or not np.isfinite(q).all():
        raise ValueError("the query must be non-empty and finite")
    return q


def _exclusion(exclusion, m: int) -> int:
    if exclusion is None:
        return math.ceil(m / 4) or 1
    if isinstance(exclusion, bool) or int(exclusion) != exclusion or exclusion < 0:
        raise ValueError(f"exclusion must be a non-negative integer, got {exclusion!r}")
    return max(int(exclusion), 1)


def _band(metric: str, window, m: int) -> int:
    """Sakoe-Chiba half-width for DTW; -1 stands for the Euclidean metric."""
    if metric == "ed":
        if window is not None:
            raise ValueError("window applies to metric='dtw' only")
        return -1
    if metric != "dtw":
        raise ValueError(f"metric must be 'ed' or 'dtw', got {metric!r}")
    if window is None:
        window = DEFAULT_DTW_WINDOW
    if isinstance(window, (int, np.integer)) and not isinstance(window, bool) and window >= 0:
        r = int(window)
    elif isinstance(window, (float, np.floating)) and 0.0 <= window <= 1.0:
        r = math.floor(window * m + 1e-9)
    else:
        raise ValueError(f"window must be a fraction in [0, 1] or a count >= 0, got {window!r}")
    return min(r, max(m - 1, 0))


def _count(k) -> int:
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    return int(k)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _magnitude(x: np.ndarray) -> float:
    finite = np.abs(x[np.isfinite(x)])
    return float(finite.max()) if len(finite) else 0.0


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.empty(0, dtype=np.intp), np.empty(0)


class MotifIndex:
    """A series plus everything its searches reuse, kept current by `append`.

    Per window length m it keeps each window's mean (as its first value plus a remainder, so
    large price offsets cost no digits), 1/std and flat/missing status (rolling sums
    restarted every 64 windows, exact recomputation wherever cancellation could bite),
    and per DTW band the series' running max/min envelope. `append` extends these for the new
    windows only, so the daemon pays O(new bars) per minute, not O(history).

    Thread-safe: searches and appends take an internal lock (searches run with the GIL released,
    so other threads keep working meanwhile).
    """

    def __init__(self, series):
        self._x = _series(series)
        self._n = len(self._x)
        self._big = _magnitude(self._x)
        # m -> per window: rem (window i's mean is x[i] + rem[i]), 1/std (0: flat, NaN: holds a
        # NaN); per position: PAA segment means as float32 offsets from x[t]
        self._stats: dict[int, tuple[np.ndarray, ...]] = {}
        self._env: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._n

    @property
    def values(self) -> np.ndarray:
        """The series so far (a read-only view)."""
        v = self._x[: self._n]
        v.flags.writeable = False
        return v

    def append(self, values) -> None:
        """Add bars at the end; only windows that include them are (re)computed."""
        v = np.atleast_1d(np.asarray(values, dtype=np.float64))
        if v.ndim != 1:
            raise ValueError(f"append takes a 1-D array, got shape {v.shape}")
        with self._lock:
            n0, n = self._n, self._n + len(v)
            if n > len(self._x):
                self._grow(max(n, 2 * len(self._x)))
            self._x[n0:n] = v
            self._n = n
            self._big = max(self._big, _magnitude(v))
            x = self._x[:n]
            for m in self._stats:
                self._extend_stats(m, n0)
            for r, (up, lo) in self._env.items():
                _motif.envelope(x, r, max(n0 - r, 0), up[:n], lo[:n])

    def _grow(self, cap: int) -> None:
        def grown(a):
            b = np.empty(cap, dtype=a.dtype)
            b[: len(a)] = a
            return b

        self._x = grown(self._x)
        self._stats = {m: tuple(grown(a) for a in s) for m, s in self._stats.items()}
        self._env = {r: tuple(grown(a) for a in e) for r, e in self._env.items()}

    def _extend_stats(self, m: int, n0: int) -> None:
        """Compute the stats of windows of m points that were incomplete with n0 values."""
        x, n = self._x[: self._n], self._n
        rem, isg, sm = self._stats[m]
        w = max(n - m + 1, 0)
        _motif.rolling_stats(x, m, max(n0 - m + 1, 0), rem[:w], isg[:w])
        seg = _motif.paa_segment(m)
        if seg and n >= seg:
            _motif.segment_means(x, seg, max(n0 - seg + 1, 0), sm[: n - seg + 1])

    def _view(self, m: int, r: int) -> "_motif.Series":
        """The kernels' view for window length m and band r (-1: ED); computes what is missing.
        Call with the lock held and m <= len(self)."""
        n, cap = self._n, len(self._x)
        if m not in self._stats:
            self._stats[m] = (np.empty(cap), np.empty(cap), np.empty(cap, dtype=np.float32))
            self._extend_stats(m, 0)
        env = None
        if r >= 0:
            if r not in self._env:
                self._env[r] = (np.empty(cap), np.empty(cap))
                _motif.envelope(self._x[:n], r, 0, *(a[:n] for a in self._env[r]))
            env = tuple(a[:n] for a in self._env[r])
        w, seg = n - m + 1, _motif.paa_segment(m)
        rem, isg, sm = self._stats[m]
        # float32 segment offsets cannot hold spans of 1e38; no PAA bound for such series
        stats = (rem[:w], isg[:w], sm[: n - seg + 1] if self._big < 1e30 else None)
        return _motif.Series(self._x[:n], m, stats, r, env)

    def knn(self, query, k: int, *, exclusion=None, metric: str = "ed", window=None):
        """The k best non-overlapping matches of `query` anywhere in the series (module docs)."""
        q = _query(query)
        k = _count(k)
        m = len(q)
        e, r = _exclusion(exclusion, m), _band(metric, window, m)
        with self._lock:
            if k == 0 or m > self._n:
                return _empty()
            return _motif.search_query(self._view(m, r), q, min(k, self._n - m + 1), e)

    def batch(self, m: int, k: int, positions=None, *, horizon: int = 0, exclusion=None,
              metric: str = "ed", window=None, n_jobs: int | None = None):
        """For each position p, the k best matches of the m points ending at p among *earlier*
        windows only: starts s <= (p - m + 1) - max(exclusion, horizon). So no match overlaps
        the query's own exclusion zone, and with horizon=h the h bars after each match are
        known at p: nothing from the future is used. Positions default to every p >= m - 1.

        Returns (starts, distances) of shape (len(positions), k), padded with -1 / NaN. Runs
        positions in chunks on `n_jobs` threads (default: every usable core).
        """
        k = _count(k)
        if isinstance(m, bool) or int(m) != m or m < 1:
            raise ValueError(f"m must be a positive integer, got {m!r}")
        m = int(m)
        e, r = _exclusion(exclusion, m), _band(metric, window, m)
        if int(horizon) != horizon or horizon < 0:
            raise ValueError(f"horizon must be a non-negative integer, got {horizon!r}")
        with self._lock:
            pos = np.arange(m - 1, self._n) if positions is None else np.array(positions, dtype=np.intp)
            if pos.ndim != 1:
                raise ValueError("positions must be 1-D")
            starts = np.full((len(pos), k), -1, dtype=np.intp)
            dist = np.full((len(pos), k), np.nan)
            if k == 0 or len(pos) == 0:
                return starts, dist
            if pos.min() < m - 1 or pos.max() >= self._n:
                raise IndexError(f"positions must lie in [{m - 1}, {self._n - 1}]")
            view = self._view(m, r)

            def run(sl: slice) -> None:
                _motif.search_batch(view, pos[sl], e, max(e, int(horizon)), starts[sl], dist[sl])

            jobs = max(1, min(n_jobs or _cpus(), len(pos)))
            step = max(1, math.ceil(len(pos) / (8 * jobs)))
            chunks = [slice(i, i + step) for i in range(0, len(pos), step)]
            if jobs == 1:
                for sl in chunks:
                    run(sl)
            else:
                with ThreadPoolExecutor(jobs) as pool:
                    list(pool.map(run, chunks))
        return starts, dist

    def recent(self, m: int, k: int, *, horizon: int = 0, exclusion=None, metric: str = "ed",
               window=None):
        """The daemon's question: the best earlier matches of the last m points (see `batch`)."""
        starts, dist = self.batch(m, k, [len(self) - 1], horizon=horizon, exclusion=exclusion,
                                  metric=metric, window=window)
        keep = starts[0] >= 0
        return starts[0][keep], dist[0][keep]


def knn(series, query, k: int, *, exclusion=None, metric: str = "ed", window=None):
    """The k best non-overlapping matches of `query` in `series`: (starts, distances).

    One-off convenience; build a `MotifIndex` to search the same series repeatedly.
    """
    return MotifIndex(series).knn(query, k, exclusion=exclusion, metric=metric, window=window)


def knn_batch(series, m: int, k: int, positions=None, **options):
    """`MotifIndex(series).batch(m, k, positions, **options)`: the backtest entry, no look-ahead."""
    return MotifIndex(series).batch(m, k, positions, **options)


# ---------------------------------------------------------------------------------------------
# brute-force reference: every window normalised explicitly, repeated arg-min with exclusion

def _znorm_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows z-normalised explicitly, through d = w - w[:, :1] so that offsets cost no digits."""
    d = w - w[:, :1]
    rem = d.mean(axis=1)
    sd = d.std(axis=1)
    flat = sd <= FLAT_RTOL * np.abs(w[:, 0] + rem)
    z = (d - rem[:, None]) / np.where(flat, 1.0, sd)[:, None]
    z[flat] = 0.0
    return z, flat


def _dtw_sq_rows(z: np.ndarray, q: np.ndarray, r: int) -> np.ndarray:
    """Squared banded DTW between q and every row of z (row-by-row dynamic programme)."""
    n, m = z.shape
    prev = np.full((n, m + 1), np.inf)
    prev[:, 0] = 0.0
    for i in range(m):
        cur = np.full((n, m + 1), np.inf)
        for j in range(max(0, i - r), min(m - 1, i + r) + 1):
            best = np.minimum(np.minimum(prev[:, j], prev[:, j + 1]), cur[:, j])
            cur[:, j + 1] = (q[i] - z[:, j]) ** 2 + best
        prev = cur
    return prev[:, m]


def reference_knn(series, query, k: int, *, exclusion=None, metric: str = "ed", window=None):
    """Brute force with the same semantics as `knn` (O(n*m) for ED, O(n*m*r) for DTW)."""
    x = np.asarray(series, dtype=np.float64)
    q = _query(query)
    m = len(q)
    e, r = _exclusion(exclusion, m), _band(metric, window, m)
    if m > len(x) or _count(k) == 0:
        return _empty()
    with np.errstate(invalid="ignore"):
        w = sliding_window_view(x, m)
        valid = np.isfinite(w).all(axis=1)
        z, flat = _znorm_rows(w)
        qz, qflat = _znorm_rows(q[None, :])
        d2 = ((z - qz) ** 2).sum(axis=1) if r < 0 else _dtw_sq_rows(z, qz[0], r)
    d2 = np.where(flat, 0.0, float(m)) if qflat[0] else np.where(flat, float(m), d2)
    d = np.sqrt(np.where(valid, d2, np.inf))
    left = d.copy()
    starts: list[int] = []
    while len(starts) < k:
        s = int(np.argmin(left))
        if not np.isfinite(left[s]):
            break
        starts.append(s)
        left[max(0, s - e + 1): s + e] = np.inf
    idx = np.array(starts, dtype=np.intp)
    return idx, d[idx]
