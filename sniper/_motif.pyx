# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Kernels of the motif matcher; sniper/motif.py is the public face and defines the semantics.

Every kernel runs without the GIL. Per series and window length m, `window_stats` describes the
window starting at i by its mean (x[i] + rem[i]) and isg[i]: 1/std, or 0 when the window is
flat, or NaN when it holds a NaN/inf (missing); `segment_means` and `envelope` feed the PAA and
LB_Keogh lower bounds. Distances are handled squared internally.
"""

from libc.math cimport INFINITY, NAN, fabs, isfinite, sqrt
from libc.stdlib cimport free, malloc, qsort, realloc

import numpy as np

cdef enum:
    GROUP = 32    # neighbouring windows evaluated together, one SIMD lane each
    CHUNK = 2    # query points between two early-abandon checks of a group
    BLOCK = 64   # windows between two exact restarts of the rolling sums
    QUERIES = 8  # batch queries that share each pass over the series
    SPAN = 16384     # windows per block of that pass (its data stays in L2)

cdef inline double bound_limit(double limit) noexcept nogil:
    """What a lower bound must exceed to prune: the k-th best plus a slack (1e-9 relative,
    1e-12 absolute, on squared distances), so that rounding in a bound, which is computed
    differently from the distance it bounds, never drops a window that ties the k-th."""
    return limit * (1.0 + 1e-9) + 1e-12

ctypedef fused real:
    float
    double

cdef extern from *:
    """
    #if defined(__AVX2__) && defined(__FMA__)
    #define SNIPER_MOTIF_ISA "x86-64-v3 (AVX2, FMA)"
    #elif defined(__x86_64__)
    #define SNIPER_MOTIF_ISA "x86-64 baseline (SSE2)"
    #else
    #define SNIPER_MOTIF_ISA "compiler default"
    #endif
    """
    const char* SNIPER_MOTIF_ISA

# the instruction set the kernels were compiled for (setup.py picks it; benchmarks report it)
ISA = SNIPER_MOTIF_ISA.decode()

FLAT_RTOL = 1e-12
cdef double _FLAT_RTOL = FLAT_RTOL


cdef struct Cand:
    double v            # squared distance (or a sort key)
    Py_ssize_t p        # window start (or an index)


cdef int cand_cmp(const void* a, const void* b) noexcept nogil:
    cdef const Cand* x = <const Cand*> a
    cdef const Cand* y = <const Cand*> b
    if x.v < y.v:
        return -1
    if x.v > y.v:
        return 1
    return (x.p > y.p) - (x.p < y.p)


# ---------------------------------------------------------------------------------------------
# per-series precomputation

cdef inline void set_stats(Py_ssize_t i, double b, double r, double var, double* rem,
                           double* isg) noexcept nogil:
    """Window i: mean b + r (b = its first value), variance var."""
    cdef double sd = sqrt(var) if var > 0 else 0.0
    rem[i] = r
    isg[i] = 0.0 if sd <= _FLAT_RTOL * fabs(b + r) else 1.0 / sd


cdef void exact_stats(const double* w, Py_ssize_t m, double* rem, double* var) noexcept nogil:
    """Mean (as w[0] + rem) and variance by two passes over w - w[0]: accurate at any offset,
    and exactly 0 variance when w is constant."""
    cdef Py_ssize_t j
    cdef double s = 0.0, v = 0.0, y
    for j in range(m):
        s += w[j] - w[0]
    s /= m
    for j in range(m):
        y = w[j] - w[0] - s
        v += y * y
    rem[0] = s
    var[0] = v / m


cdef struct Sums:
    double s1, s2, big  # sum of y, of y*y, and the largest y*y carried
    Py_ssize_t bad      # non-finite values inside the window


cdef inline void sums_add(Sums* a, double y) noexcept nogil:
    if isfinite(y):
        a.s1 += y
        a.s2 += y * y
        a.big = y * y if y * y > a.big else a.big
    else:
        a.bad += 1


cdef inline void sums_drop(Sums* a, double y) noexcept nogil:
    if isfinite(y):
        a.s1 -= y
        a.s2 -= y * y
    else:
        a.bad -= 1


cdef void window_stats(const double* x, Py_ssize_t m, Py_ssize_t i0, Py_ssize_t i1,
                       double* rem, double* isg) noexcept nogil:
    """Mean and 1/std of windows i0..i1-1.

    The mean of window i is kept as x[i] + rem[i]: x - x[i] is exact for prices, so
    z-normalising as ((x - x[i]) - rem[i]) * isg[i] keeps every digit even when the offset
    dwarfs the variation (DTW, unlike ED, is first-order sensitive to the mean).

    Rolling sums of y = x - c, where c is a value of the block (this removes any price offset),
    restarted every BLOCK windows so rounding cannot drift. A window whose variance is small next
    to the largest y*y the sums have carried may have lost digits to cancellation: it is
    recomputed by `exact_stats`, which also makes constant windows come out exactly flat.
    """
    cdef Py_ssize_t b, bend, i, j
    cdef double c, mean, var
    cdef Sums acc
    b = i0
    while b < i1:
        bend = b + BLOCK if b + BLOCK < i1 else i1
        c = 0.0
        for j in range(b, bend + m - 1):
            if isfinite(x[j]):
                c = x[j]
                break
        acc.s1 = acc.s2 = acc.big = 0.0
        acc.bad = 0
        for j in range(b, b + m):
            sums_add(&acc, x[j] - c)
        for i in range(b, bend):
            if i > b:
                sums_drop(&acc, x[i - 1] - c)
                sums_add(&acc, x[i + m - 1] - c)
            if acc.bad:
                rem[i] = 0.0
                isg[i] = NAN
                continue
            mean = acc.s1 / m
            var = acc.s2 / m - mean * mean
            if var <= acc.big * (m + BLOCK) * 1e-7:
                exact_stats(x + i, m, &mean, &var)
            else:
                mean += c - x[i]
            set_stats(i, x[i], mean, var, rem, isg)
        b = bend


cdef void sliding_max(const double* v, Py_ssize_t n, Py_ssize_t w, double* out, double* g,
                      double* h) noexcept nogil:
    """out[t] = max(v[t:t+w]) for t < n-w+1 in O(n) for any w (van Herk / Gil-Werman)."""
    cdef Py_ssize_t b, e, j
    b = 0
    while b < n:
        e = b + w if b + w < n else n
        g[b] = v[b]
        for j in range(b + 1, e):
            g[j] = g[j - 1] if g[j - 1] > v[j] else v[j]
        h[e - 1] = v[e - 1]
        for j in range(e - 2, b - 1, -1):
            h[j] = h[j + 1] if h[j + 1] > v[j] else v[j]
        b = e
    for j in range(n - w + 1):
        out[j] = h[j] if h[j] > g[j + w - 1] else g[j + w - 1]


cdef void envelope_fill(const double* x, Py_ssize_t n, Py_ssize_t r, Py_ssize_t t0, Py_ssize_t t1,
                        double* up, double* lo, double* scratch) noexcept nogil:
    """up[t-t0], lo[t-t0] = max, min of the finite x[t-r..t+r] for t0 <= t < t1.

    Positions outside 0..n-1 and non-finite values are ignored. scratch: 3*(t1-t0+2r) doubles.
    """
    cdef Py_ssize_t L = t1 - t0 + 2 * r
    cdef Py_ssize_t u, idx
    cdef double* v = scratch
    cdef double* g = scratch + L
    cdef double* h = scratch + 2 * L
    for u in range(L):
        idx = t0 - r + u
        v[u] = x[idx] if 0 <= idx < n and isfinite(x[idx]) else -INFINITY
    sliding_max(v, L, 2 * r + 1, up, g, h)
    for u in range(L):
        v[u] = -v[u] if v[u] != -INFINITY else -INFINITY
    sliding_max(v, L, 2 * r + 1, lo, g, h)
    for u in range(t1 - t0):
        lo[u] = -lo[u]


# ---------------------------------------------------------------------------------------------
# exact top-k pool with exclusion

cdef struct Pool:
    Py_ssize_t k
    Py_ssize_t sep          # 2*exclusion - 1: members of `spread` are at least this far apart
    Cand* spread            # <= k admitted windows, pairwise >= sep apart
    Py_ssize_t nspread
    double limit            # max of `spread` once it holds k, else inf: never below the final k-th
    Cand* cand              # every admitted window (v <= limit when admitted)
    Py_ssize_t ncand
    Py_ssize_t cap


cdef int pool_init(Pool* P, Py_ssize_t k, Py_ssize_t exclusion) noexcept nogil:
    P.k = k
    P.sep = 2 * exclusion - 1
    P.nspread = 0
    P.limit = INFINITY
    P.ncand = 0
    P.cap = 64 + 4 * k
    P.spread = <Cand*> malloc(k * sizeof(Cand))
    P.cand = <Cand*> malloc(P.cap * sizeof(Cand))
    return 0 if P.spread != NULL and P.cand != NULL else -1


cdef void pool_free(Pool* P) noexcept nogil:
    free(P.spread)
    free(P.cand)
    P.spread = NULL
    P.cand = NULL


cdef void pool_reset(Pool* P) noexcept nogil:
    P.nspread = 0
    P.ncand = 0
    P.limit = INFINITY


cdef void pool_compact(Pool* P) noexcept nogil:
    cdef Py_ssize_t i, j = 0
    for i in range(P.ncand):
        if P.cand[i].v <= P.limit:
            P.cand[j] = P.cand[i]
            j += 1
    P.ncand = j


cdef int pool_offer(Pool* P, Py_ssize_t p, double v) noexcept nogil:
    """Admit window p with squared distance v <= limit. Windows must come in increasing p.

    Why `limit` is safe: greedy selection (best remaining, then exclude its zone) only ever
    looks at windows no worse than its k-th pick. Any k windows pairwise >= 2*exclusion-1 apart
    bound that pick, since one zone can remove at most one of them; so the max of such a set is
    a valid early-abandon threshold, and everything at or under it is kept as a candidate.
    """
    cdef Py_ssize_t i, last = -1, worst
    cdef Cand* c
    if P.ncand == P.cap:
        pool_compact(P)
        if 2 * P.ncand > P.cap:
            c = <Cand*> realloc(P.cand, 2 * P.cap * sizeof(Cand))
            if c == NULL:
                return -1
            P.cand = c
            P.cap *= 2
    P.cand[P.ncand].v = v
    P.cand[P.ncand].p = p
    P.ncand += 1
    for i in range(P.nspread):
        if last < 0 or P.spread[i].p > P.spread[last].p:
            last = i
    if last >= 0 and p - P.spread[last].p < P.sep:
        # at most one member can be that close; keep the better of the two
        if v >= P.spread[last].v:
            return 0
        P.spread[last].v = v
        P.spread[last].p = p
    elif P.nspread < P.k:
        P.spread[P.nspread].v = v
        P.spread[P.nspread].p = p
        P.nspread += 1
    else:
        worst = 0
        for i in range(1, P.nspread):
            if P.spread[i].v > P.spread[worst].v:
                worst = i
        if v >= P.spread[worst].v:
            return 0
        P.spread[worst].v = v
        P.spread[worst].p = p
    if P.nspread == P.k:
        P.limit = P.spread[0].v
        for i in range(1, P.nspread):
            if P.spread[i].v > P.limit:
                P.limit = P.spread[i].v
    return 0


cdef Py_ssize_t pool_finish(Pool* P, Py_ssize_t exclusion, Py_ssize_t* starts,
                            double* dist) noexcept nogil:
    """Greedy: best remaining (distance, then start), exclude |s - start| < exclusion, repeat."""
    cdef Py_ssize_t i, j, n = 0
    cdef bint free_
    pool_compact(P)
    qsort(P.cand, P.ncand, sizeof(Cand), cand_cmp)
    for i in range(P.ncand):
        if n == P.k:
            break
        free_ = True
        for j in range(n):
            if -exclusion < P.cand[i].p - starts[j] < exclusion:
                free_ = False
                break
        if free_:
            starts[n] = P.cand[i].p
            dist[n] = sqrt(P.cand[i].v)
            n += 1
    return n


# ---------------------------------------------------------------------------------------------
# per-query work

cdef inline Py_ssize_t segment_length(Py_ssize_t m) noexcept nogil:
    """Segment length of the PAA lower bound for windows of m points (0: too short for one).

    About 20 segments: for price-like series most of a distance lies in the slow components,
    which segment means keep, so the bound prunes most windows after a handful of terms."""
    cdef Py_ssize_t L = m // 20 if m // 20 > 4 else 4
    return L if m // L >= 2 else 0


cdef struct Work:
    Py_ssize_t m, r             # r < 0: Euclidean, else DTW with a Sakoe-Chiba band of r
    Py_ssize_t seg, nseg        # PAA segment length (0: none) and count
    bint flat                   # the query is flat
    double* z                   # z-normalised query
    Py_ssize_t* order           # query indices by decreasing |z| (UCR reordering)
    Cand* keys
    double* zo                  # z[order]
    double* U                   # DTW: query envelope over the band, and reordered copies
    double* L
    double* uo
    double* lo
    Py_ssize_t* porder          # PAA: segment offsets by decreasing |segment mean of z|,
    double* pz                  # and the segment means of z, U and L in that order
    double* pu
    double* pl
    double* xt                  # padded copies of the last, partial group
    double* uxt
    double* lxt
    double* rt
    double* isgt
    float* smt
    Py_ssize_t nb               # DTW batch: windows queued, their starts, and lane-interleaved
    Py_ssize_t* bpos            # ([point][lane]) z-normalised points, cumulative EQ and EC
    double* bs                  # bounds, and the two DP rows
    double* bq
    double* bc
    double* prev
    double* cur
    double* scratch


cdef int work_init(Work* W, Py_ssize_t m, Py_ssize_t r) noexcept nogil:
    cdef Py_ssize_t pad = GROUP + m, rr = r if r > 0 else 0
    cdef Py_ssize_t batch = (m + 1) * GROUP if r >= 0 else 0
    W.m = m
    W.r = r
    W.nb = 0
    W.seg = segment_length(m)
    W.nseg = m // W.seg if W.seg else 0
    W.order = <Py_ssize_t*> malloc(m * sizeof(Py_ssize_t))
    W.porder = <Py_ssize_t*> malloc((W.nseg + 1) * sizeof(Py_ssize_t))
    W.keys = <Cand*> malloc(m * sizeof(Cand))
    W.smt = <float*> malloc((GROUP + m) * sizeof(float))
    W.bpos = <Py_ssize_t*> malloc(GROUP * sizeof(Py_ssize_t))
    W.z = <double*> malloc((6 * m + 3 * W.nseg + 3 * pad + 2 * GROUP + 5 * batch
                            + 3 * (m + 2 * rr)) * sizeof(double))
    if (W.order == NULL or W.porder == NULL or W.keys == NULL or W.smt == NULL
            or W.bpos == NULL or W.z == NULL):
        work_free(W)
        return -1
    W.zo = W.z + m
    W.U = W.zo + m
    W.L = W.U + m
    W.uo = W.L + m
    W.lo = W.uo + m
    W.pz = W.lo + m
    W.pu = W.pz + W.nseg
    W.pl = W.pu + W.nseg
    W.xt = W.pl + W.nseg
    W.uxt = W.xt + pad
    W.lxt = W.uxt + pad
    W.rt = W.lxt + pad
    W.isgt = W.rt + GROUP
    W.bs = W.isgt + GROUP
    W.bq = W.bs + batch
    W.bc = W.bq + batch
    W.prev = W.bc + batch
    W.cur = W.prev + batch
    W.scratch = W.cur + batch
    return 0


cdef void work_free(Work* W) noexcept nogil:
    free(W.z)
    free(W.order)
    free(W.porder)
    free(W.keys)
    free(W.smt)
    free(W.bpos)
    W.z = NULL
    W.order = NULL
    W.porder = NULL
    W.keys = NULL
    W.smt = NULL
    W.bpos = NULL


cdef inline double segment_mean(const double* v, Py_ssize_t L) noexcept nogil:
    cdef double t = 0.0
    cdef Py_ssize_t j
    for j in range(L):
        t += v[j]
    return t / L


cdef void prepare_query(Work* W, const double* q) noexcept nogil:
    """z-normalise the query, order it by |z|, build its DTW envelope and segment means."""
    cdef Py_ssize_t i, j, m = W.m, L = W.seg
    cdef double rem, var, y, isd
    exact_stats(q, m, &rem, &var)
    y = sqrt(var)
    W.flat = y <= _FLAT_RTOL * fabs(q[0] + rem)
    isd = 0.0 if W.flat else 1.0 / y
    for j in range(m):
        W.z[j] = ((q[j] - q[0]) - rem) * isd
        W.keys[j].v = -fabs(W.z[j])
        W.keys[j].p = j
    qsort(W.keys, m, sizeof(Cand), cand_cmp)
    for j in range(m):
        W.order[j] = W.keys[j].p
        W.zo[j] = W.z[W.order[j]]
    if W.r >= 0:
        envelope_fill(W.z, m, W.r, 0, m, W.U, W.L, W.scratch)
        for j in range(m):
            W.uo[j] = W.U[W.order[j]]
            W.lo[j] = W.L[W.order[j]]
    for i in range(W.nseg):
        W.keys[i].v = -fabs(segment_mean(W.z + i * L, L))
        W.keys[i].p = i
    qsort(W.keys, W.nseg, sizeof(Cand), cand_cmp)
    for i in range(W.nseg):
        j = W.keys[i].p * L
        W.porder[i] = j
        W.pz[i] = segment_mean(W.z + j, L)
        if W.r >= 0:
            W.pu[i] = segment_mean(W.U + j, L)
            W.pl[i] = segment_mean(W.L + j, L)


# ---------------------------------------------------------------------------------------------
# distance kernels

cdef inline double sq(double a) noexcept nogil:
    return a * a


cdef inline double excess(double s, double lo, double hi) noexcept nogil:
    """How far s lies outside [lo, hi] (lo <= hi), written so that it vectorises."""
    return (s - hi if s - hi > 0.0 else 0.0) + (lo - s if lo - s > 0.0 else 0.0)


cdef enum Bound:
    EUCLID = 0      # (s - q)^2: the squared Euclidean distance itself
    KEOGH_EQ = 1    # s against the query's band envelope
    KEOGH_EC = 2    # the query against the data's band envelope
    PAA = 3         # a segment mean against the query's segment mean
    PAA_KEOGH = 4   # a segment mean against the query envelope's segment means


cdef inline double term(Bound kind, double xh, double xl, double b, double r, double s, double u,
                        double l) noexcept nogil:
    """One point's contribution (before squaring) to a `group_bound` sum; see there."""
    cdef double sh
    if kind == EUCLID:
        return ((xh - b) - r) * s - u
    if kind == PAA or kind == PAA_KEOGH:
        sh = ((xh - b) + (xl - r)) * s
        return sh - u if kind == PAA else excess(sh, l, u)
    sh = ((xh - b) - r) * s
    if kind == KEOGH_EQ:
        return excess(sh, l, u)
    return excess(u, ((xl - b) - r) * s, sh)


cdef inline bint group_bound(const double* xhi, const real* xlo, const double* base,
                             const double* rem, const double* isg, const Py_ssize_t* order,
                             const double* up, const double* lo, Py_ssize_t m, double limit,
                             double* acc, Bound kind) noexcept nogil:
    """acc[w] += sum over j of squared excess of window g+w at point j, for GROUP windows;
    False (acc untouched) when no lane can end up within `limit`.

    Window w's point j is z-normalised from xhi[w + j] (and xlo[w + j] for the data envelope);
    the excess is its distance to the query point (EUCLID) or to the query band [lo_j, up_j]
    (KEOGH_EQ); for KEOGH_EC, [xlo, xhi] is the data's envelope and up = lo = the query. For
    PAA and PAA_KEOGH the "points" are segments: xhi[t] + xlo[t] is the mean of the segment
    starting at t, the query side holds segment means.
    Points go in `order` (largest |query| first, so sums grow fast) and the group stops once
    every lane exceeds `limit` (NaN lanes count as exceeded). The lanes are neighbouring
    windows, so for one query point all loads are contiguous and the w-loop becomes SIMD.
    GROUP is large enough that the compiler keeps the w-loop (rather than unrolling it and
    vectorising along j, which needs gathers). Finishing the last few live lanes one by one
    was tried: scalar code with a branch per point is slower than carrying the dead lanes.
    """
    cdef double a[GROUP]
    cdef Py_ssize_t j, o, w
    cdef Py_ssize_t alive     # lane-sized, so that the count vectorises without packing
    cdef bint pair = kind != EUCLID and kind != KEOGH_EQ     # reads xlo too
    for w in range(GROUP):
        a[w] = acc[w]
    for j in range(m):
        o = order[j]
        for w in range(GROUP):
            a[w] += sq(term(kind, xhi[o + w], xlo[o + w] if pair else 0.0, base[w], rem[w],
                            isg[w], up[j], lo[j]))
        if j % CHUNK == CHUNK - 1 or j == m - 1:
            # this early exit also keeps the compiler from vectorising along j
            alive = 0
            for w in range(GROUP):
                alive += a[w] <= limit   # NaN lanes compare false: exceeded
            if alive == 0:
                return False    # acc is left as it was: the caller skips the group
    for w in range(GROUP):
        acc[w] = a[w]
    return True


cdef inline double min3(double a, double b, double c) noexcept nogil:
    if b < a:
        a = b
    return c if c < a else a


cdef inline void group_kim(const double* xg, const double* rem, const double* isg,
                           const double* z, Py_ssize_t m, double limit, double* acc) noexcept nogil:
    """LB_Kim for a group: NaN out the lanes it prunes.

    Every warping path crosses both corner cells and, for m >= 6, one cell of each of the next
    two L-shaped frontiers at either end (frontiers at the two ends are then disjoint)."""
    cdef Py_ssize_t w
    cdef double s0, s1, s2, e0, e1, e2, d
    cdef const double* xe = xg + m - 1
    for w in range(GROUP):
        s0 = ((xg[w] - xg[w]) - rem[w]) * isg[w]
        e0 = ((xe[w] - xg[w]) - rem[w]) * isg[w]
        d = sq(z[0] - s0)
        if m >= 2:
            d += sq(z[m - 1] - e0)
        if m >= 6:
            s1 = ((xg[w + 1] - xg[w]) - rem[w]) * isg[w]
            s2 = ((xg[w + 2] - xg[w]) - rem[w]) * isg[w]
            e1 = ((xe[w - 1] - xg[w]) - rem[w]) * isg[w]
            e2 = ((xe[w - 2] - xg[w]) - rem[w]) * isg[w]
            d += min3(sq(z[0] - s1), sq(z[1] - s0), sq(z[1] - s1))
            d += min3(sq(z[m - 1] - e1), sq(z[m - 2] - e0), sq(z[m - 2] - e1))
            d += min3(min3(sq(z[0] - s2), sq(z[1] - s2), sq(z[2] - s2)), sq(z[2] - s0),
                      sq(z[2] - s1))
            d += min3(min3(sq(z[m - 1] - e2), sq(z[m - 2] - e2), sq(z[m - 3] - e2)),
                      sq(z[m - 3] - e0), sq(z[m - 3] - e1))
        if d > limit:
            acc[w] = NAN


cdef void dtw_enqueue(Work* W, const double* x, double rem, double isg, const double* ux,
                      const double* lx, Py_ssize_t i) noexcept nogil:
    """Put window i, which survived every lower bound, in the next lane of the DTW batch: its
    z-normalised points and its per-point LB_Keogh terms (EQ by window point, EC by query
    point), which `dtw_flush` sums from the end."""
    cdef Py_ssize_t m = W.m, j, w = W.nb
    cdef double s, hu, hl, base = x[0]
    for j in range(m):
        s = ((x[j] - base) - rem) * isg
        hu = ((ux[j] - base) - rem) * isg
        hl = ((lx[j] - base) - rem) * isg
        W.bs[j * GROUP + w] = s
        W.bq[j * GROUP + w] = sq(excess(s, W.L[j], W.U[j]))
        W.bc[j * GROUP + w] = sq(excess(W.z[j], hl, hu))
    W.bq[m * GROUP + w] = 0.0
    W.bc[m * GROUP + w] = 0.0
    W.bpos[w] = i
    W.nb = w + 1


cdef int dtw_flush(Work* W, Pool* P) noexcept nogil:
    """Banded DTW of the batched windows, one lane each (SIMD across windows: a single DTW is
    a chain of dependent cells). The LB_Keogh terms summed from the end bound what the rows
    not yet computed must still add: EC terms of query points i+1.., EQ terms of window
    points i+r+1... A lane is done once its best cell in a row plus that bound exceeds the
    k-th best; the batch stops when every lane is. Lanes that finish within the k-th best
    are offered, in window order."""
    cdef Py_ssize_t m = W.m, r = W.r, n = W.nb, i, j, w, lo_, hi, alive
    cdef double lim = bound_limit(P.limit), c, v, zi, rq, rc
    cdef double* prev = W.prev
    cdef double* cur = W.cur
    cdef double* tmp
    cdef double left[GROUP]
    cdef double best[GROUP]
    if n == 0:
        return 0
    W.nb = 0
    for j in range(m - 1, -1, -1):
        for w in range(GROUP):
            W.bq[j * GROUP + w] += W.bq[(j + 1) * GROUP + w]
            W.bc[j * GROUP + w] += W.bc[(j + 1) * GROUP + w]
    for j in range((m + 1) * GROUP):
        prev[j] = INFINITY
        cur[j] = INFINITY
    for w in range(n):
        prev[w] = 0.0     # D(-1, -1); column j is stored at j + 1. Unused lanes stay at inf.
    for i in range(m):
        lo_ = i - r if i > r else 0
        hi = i + r if i + r < m - 1 else m - 1
        zi = W.z[i]
        for w in range(GROUP):
            cur[lo_ * GROUP + w] = INFINITY
            left[w] = INFINITY
            best[w] = INFINITY
        for j in range(lo_, hi + 1):
            for w in range(GROUP):
                c = sq(zi - W.bs[j * GROUP + w])
                v = min(c + min(prev[j * GROUP + w], prev[(j + 1) * GROUP + w]), c + left[w])
                cur[(j + 1) * GROUP + w] = v
                left[w] = v
                best[w] = v if v < best[w] else best[w]
        if i + 1 < m:
            alive = 0
            for w in range(GROUP):
                rq = W.bq[(i + r + 1) * GROUP + w] if i + r + 1 < m else 0.0
                rc = W.bc[(i + 1) * GROUP + w]
                alive += best[w] + (rq if rq > rc else rc) <= lim
            if alive == 0:
                return 0
        tmp = prev
        prev = cur
        cur = tmp
    for w in range(n):
        v = prev[m * GROUP + w]
        if v <= P.limit and pool_offer(P, W.bpos[w], v) < 0:
            return -1
    return 0


cdef inline const real* padded(const real* src, Py_ssize_t have, real* buf, Py_ssize_t size,
                               real fill) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(size):
        buf[j] = src[j] if j < have else fill
    return buf


cdef inline bint keep_alive(double* acc, double limit) noexcept nogil:
    """Restart the lanes still under `limit` at 0 for the next bound, the others at NaN."""
    cdef Py_ssize_t w
    cdef bint any_ = False
    for w in range(GROUP):
        if acc[w] <= limit:
            acc[w] = 0.0
            any_ = True
        else:
            acc[w] = NAN
    return any_


cdef int search(Work* W, Pool* P, const double* x, const double* rem, const double* isg,
                const float* sm, const double* ux, const double* lx, Py_ssize_t start,
                Py_ssize_t stop) noexcept nogil:
    """Offer to P every window start in [start, stop) that can still matter; W holds a
    prepared query. x must hold stop + m - 1 values; x[t] + sm[t] is the mean of
    x[t:t+W.seg] (sm NULL: no PAA bound). Returns -1 when out of memory.

    Windows go by groups of GROUP neighbours through a cascade of lower bounds, each pruning
    lanes for the next: for ED the PAA bound (segment means), then the distance itself; for
    DTW LB_Kim, PAA of LB_Keogh, LB_Keogh EQ, LB_Keogh EC, then DTW for the survivors.
    Bounds prune only beyond `bound_limit`.
    """
    cdef Py_ssize_t m = W.m, g, w, i, nw
    cdef double acc[GROUP]
    cdef double fm = <double> m, lb, plim, delta
    cdef const double* xg
    cdef const float* smg = NULL
    cdef const double* uxg = NULL
    cdef const double* lxg = NULL
    cdef const double* rg
    cdef const double* sg
    cdef bint dtw = W.r >= 0, paa = W.seg and sm != NULL, alive, flats
    if W.flat:
        # z-normalised flat windows are all zeros: 0 to each other, sqrt(m) to anything else
        for i in range(start, stop):
            if isg[i] == isg[i] and (0.0 if isg[i] == 0.0 else fm) <= P.limit:
                if pool_offer(P, i, 0.0 if isg[i] == 0.0 else fm) < 0:
                    return -1
        return 0
    # sm is float32: a segment mean's offset from x[t] lies within its window's range, at most
    # 2 sqrt(m-1) std (Samuelson), so rounding moves each normalised segment mean by <= delta
    delta = 2.0 * sqrt(m - 1.0) * 2.0 ** -24
    g = start
    while g < stop:
        nw = stop - g if stop - g < GROUP else GROUP
        if nw == GROUP:
            xg = x + g
            rg = rem + g
            sg = isg + g
            if paa:
                smg = sm + g
            if dtw:
                uxg = ux + g
                lxg = lx + g
        else:   # the last, partial group: copies padded with missing windows
            xg = padded(x + g, nw + m - 1, W.xt, GROUP + m - 1, 0.0)
            rg = padded(rem + g, nw, W.rt, GROUP, 0.0)
            sg = padded(isg + g, nw, W.isgt, GROUP, NAN)
            if paa:
                smg = padded(sm + g, nw + m - W.seg, W.smt, GROUP + m - W.seg, <float> 0.0)
            if dtw:
                uxg = padded(ux + g, nw + m - 1, W.uxt, GROUP + m - 1, 0.0)
                lxg = padded(lx + g, nw + m - 1, W.lxt, GROUP + m - 1, 0.0)
        flats = False
        for w in range(GROUP):
            acc[w] = 0.0 if sg[w] > 0.0 else NAN      # flat (0) and missing (NaN) lanes are dead
            flats |= sg[w] == 0.0
        lb = bound_limit(P.limit)
        alive = True
        if dtw:
            group_kim(xg, rg, sg, W.z, m, lb, acc)
            alive = keep_alive(acc, lb)
        if alive and paa:
            # each segment's term is at most 1/seg of its points' share of the full sum; the
            # float32 error moves the bound by at most 2 delta sqrt(m lb) + m delta^2
            plim = (lb + 2.0 * delta * sqrt(m * lb) + m * delta * delta) / W.seg
            alive = (group_bound(xg, smg, xg, rg, sg, W.porder, W.pu if dtw else W.pz,
                                 W.pl if dtw else W.pz, W.nseg, plim, acc,
                                 PAA_KEOGH if dtw else PAA)
                     and keep_alive(acc, plim))
        if alive and not dtw:
            alive = group_bound(xg, xg, xg, rg, sg, W.order, W.zo, W.zo, m, P.limit, acc, EUCLID)
        elif alive:
            alive = (group_bound(xg, xg, xg, rg, sg, W.order, W.uo, W.lo, m, lb, acc, KEOGH_EQ)
                     and keep_alive(acc, lb)
                     and group_bound(uxg, lxg, xg, rg, sg, W.order, W.zo, W.zo, m, lb, acc,
                                     KEOGH_EC))
        if not (alive or flats):
            g += nw
            continue
        for w in range(nw):
            i = g + w
            if sg[w] == 0.0:
                # offers must come in window order: first the batched DTW windows before it
                if fm <= P.limit and (dtw_flush(W, P) < 0 or pool_offer(P, i, fm) < 0):
                    return -1
            elif alive and acc[w] <= (lb if dtw else P.limit):
                if not dtw:
                    if pool_offer(P, i, acc[w]) < 0:
                        return -1
                else:
                    dtw_enqueue(W, x + i, rem[i], isg[i], ux + i, lx + i, i)
                    if W.nb == GROUP and dtw_flush(W, P) < 0:
                        return -1
        g += nw
    return dtw_flush(W, P)


# ---------------------------------------------------------------------------------------------
# Python entry points (thin: check shapes, release the GIL, call the kernels)

def rolling_stats(const double[::1] x, Py_ssize_t m, Py_ssize_t i0, double[::1] rem,
                  double[::1] isg):
    """Fill rem/isg of windows i0..len(rem)-1 of length m (the mean of window i is
    x[i] + rem[i]; isg is 1/std, 0 when flat, NaN when missing)."""
    cdef Py_ssize_t i1 = rem.shape[0]
    if i1 > x.shape[0] - m + 1 or isg.shape[0] != i1 or i0 < 0 or m < 1:
        raise ValueError("inconsistent stats buffers")
    if i0 < i1:
        with nogil:
            window_stats(&x[0], m, i0, i1, &rem[0], &isg[0])


def segment_means(const double[::1] x, Py_ssize_t L, Py_ssize_t i0, float[::1] out):
    """Fill out[i0:] with mean(x[t:t+L]) - x[t], for the PAA bound: kept apart from x[t], the
    segment mean loses no digits to a price offset, and float32 halves the memory it streams
    (the kernels widen the bound for its rounding)."""
    cdef Py_ssize_t i1 = out.shape[0], t, j
    cdef double a
    if i1 > x.shape[0] - L + 1 or i0 < 0 or L < 1:
        raise ValueError("inconsistent segment buffer")
    with nogil:
        for t in range(i0, i1):
            a = 0.0
            for j in range(1, L):
                a += x[t + j] - x[t]
            out[t] = a / L


def paa_segment(Py_ssize_t m):
    """Segment length the kernels use for windows of m points (0: no PAA bound)."""
    return segment_length(m)


def envelope(const double[::1] x, Py_ssize_t r, Py_ssize_t t0, double[::1] up, double[::1] lo):
    """Fill up/lo[t0:] with the max/min of the finite x within +-r of each position."""
    cdef Py_ssize_t n = x.shape[0]
    if up.shape[0] != n or lo.shape[0] != n or not 0 <= t0 <= n or r < 0:
        raise ValueError("inconsistent envelope buffers")
    if t0 == n:
        return
    cdef double[::1] scratch = np.empty(3 * (n - t0 + 2 * r))
    with nogil:
        envelope_fill(&x[0], n, r, t0, n, &up[t0], &lo[t0], &scratch[0])


cdef class Series:
    """Read-only views of a series and its precomputation, checked once for consistency."""
    cdef const double[::1] x, rem, isg, ux, lx
    cdef const float[::1] sm
    cdef Py_ssize_t m, r
    cdef bint paa

    def __init__(self, x, Py_ssize_t m, stats, Py_ssize_t r, envelope):
        """stats: (rem, isg, sm) of `rolling_stats` and `segment_means`, sm None for no PAA
        bound; envelope: (up, lo) of `envelope` for DTW (r >= 0)."""
        self.x = x
        self.rem, self.isg, sm = stats
        self.paa = sm is not None and segment_length(m) > 0
        if self.paa:
            self.sm = sm
        self.m = m
        self.r = r
        n = self.x.shape[0] - m + 1
        if m < 1 or n < 1 or not self.rem.shape[0] == self.isg.shape[0] == n:
            raise ValueError("stats do not match the series")
        if self.paa and self.sm.shape[0] != self.x.shape[0] - segment_length(m) + 1:
            raise ValueError("segment means do not match the series")
        if r >= 0:
            self.ux, self.lx = envelope
            if self.ux.shape[0] != self.x.shape[0] or self.lx.shape[0] != self.x.shape[0]:
                raise ValueError("DTW needs the series envelope")

    cdef int scan(self, Work* W, Pool* P, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
        return search(W, P, &self.x[0], &self.rem[0], &self.isg[0],
                      &self.sm[0] if self.paa else NULL, &self.ux[0] if self.r >= 0 else NULL,
                      &self.lx[0] if self.r >= 0 else NULL, start, stop)


cdef int setup(Work* W, Pool* P, Py_ssize_t m, Py_ssize_t r, Py_ssize_t k,
               Py_ssize_t exclusion) noexcept nogil:
    if work_init(W, m, r) < 0:
        return -1
    if pool_init(P, k, exclusion) < 0:
        work_free(W)
        pool_free(P)
        return -1
    return 0


def search_query(Series S, const double[::1] query, Py_ssize_t k, Py_ssize_t exclusion):
    """The k best windows of S for `query` (Euclidean, or DTW when S.r >= 0): (starts, dist)."""
    cdef Py_ssize_t n = 0, rc
    cdef Work W
    cdef Pool P
    if query.shape[0] != S.m or k < 1 or exclusion < 1:
        raise ValueError("bad query, k or exclusion")
    starts = np.empty(k, dtype=np.intp)
    dist = np.empty(k)
    cdef Py_ssize_t[::1] s_ = starts
    cdef double[::1] d_ = dist
    with nogil:
        rc = setup(&W, &P, S.m, S.r, k, exclusion)
        if rc == 0:
            prepare_query(&W, &query[0])
            rc = S.scan(&W, &P, 0, S.rem.shape[0])
            if rc == 0:
                n = pool_finish(&P, exclusion, &s_[0], &d_[0])
            work_free(&W)
            pool_free(&P)
    if rc < 0:
        raise MemoryError()
    return starts[:n], dist[:n]


def search_batch(Series S, const Py_ssize_t[::1] positions, Py_ssize_t exclusion,
                 Py_ssize_t gap, Py_ssize_t[:, ::1] out_starts, double[:, ::1] out_dist):
    """Row t: the best earlier windows for the query of m points ending at positions[t], among
    starts <= query start - gap. Unfilled slots keep their contents (the caller pre-fills).

    Queries go QUERIES at a time through the series in blocks of SPAN windows, so that each
    block is read from memory once for all of them rather than once per query."""
    cdef Py_ssize_t k = out_starts.shape[1], m = S.m, n = positions.shape[0]
    cdef Py_ssize_t t, c, q, nq, b, qs, rc = 0, ready = 0, far
    cdef Work W[QUERIES]
    cdef Pool P[QUERIES]
    cdef Py_ssize_t stop[QUERIES]
    if (out_starts.shape[0] != n or out_dist.shape[0] != n or out_dist.shape[1] != k or k < 1
            or exclusion < 1 or gap < exclusion):
        raise ValueError("bad output shape, k, exclusion or gap")
    for t in range(n):
        if not m - 1 <= positions[t] < S.x.shape[0]:
            raise IndexError(f"position {positions[t]} has no full window of {m} points")
    with nogil:
        while ready < QUERIES and rc == 0:
            rc = setup(&W[ready], &P[ready], m, S.r, k, exclusion)
            ready += rc == 0
        c = 0
        while c < n and rc == 0:
            nq = n - c if n - c < QUERIES else QUERIES
            far = 0
            for q in range(nq):
                qs = positions[c + q] - m + 1
                stop[q] = qs - gap + 1 if S.isg[qs] == S.isg[qs] else 0    # NaN: no query
                if stop[q] > 0:
                    prepare_query(&W[q], &S.x[qs])
                    pool_reset(&P[q])
                    far = stop[q] if stop[q] > far else far
            b = 0
            while b < far and rc == 0:
                for q in range(nq):
                    if b < stop[q] and rc == 0:
                        rc = S.scan(&W[q], &P[q], b, stop[q] if stop[q] < b + SPAN else b + SPAN)
                b += SPAN
            for q in range(nq):
                if stop[q] > 0 and rc == 0:
                    pool_finish(&P[q], exclusion, &out_starts[c + q, 0], &out_dist[c + q, 0])
            c += nq
        for q in range(ready):
            work_free(&W[q])
            pool_free(&P[q])
    if rc < 0:
        raise MemoryError()
