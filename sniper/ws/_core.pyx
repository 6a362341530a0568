# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""C core of the websocket state: the L2 book, the state lock, snapshots and
the orderBookL2 hot path of `State.apply_message`.

Only what must run in about a microsecond per frame lives here; the keyed
tables, logging and session logic are plain Python in tables.py/state.py.

Book layout (why it is fast and small):
- a pool of `Level` records (price, size, id, side), 32 bytes each, reused
  through a free list;
- an open-addressing hash (linear probing, backward-shift deletion) from
  (id, side) to pool slot, 4 bytes a bucket: update/delete by id is O(1);
- per side, an array of (key, slot) sorted ascending by key, where key is
  the price for bids and minus the price for asks, so the best level of both
  sides is the *last* element. Top N is the last N entries, no scan. Inserts
  and deletes move only the entries between the row and the touch, and the
  position is found by galloping from the touch, so the common case (activity
  near the best prices) costs a few entries whatever the depth of the book.
Prices are kept as the exchange's doubles; nothing depends on the tick size
or on legacy ids encoding the price.
"""

from cpython.dict cimport PyDict_GetItem
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsDouble, PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.pythread cimport (
    NOWAIT_LOCK,
    WAIT_LOCK,
    PyThread_acquire_lock,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_release_lock,
    PyThread_type_lock,
)
from cpython.ref cimport PyObject
from libc.math cimport isfinite
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport qsort
from libc.string cimport memmove, memset

import orjson

cdef object _loads = orjson.loads


cdef extern from "Python.h":
    bint PyLong_CheckExact(object o)
    bint PyFloat_CheckExact(object o)
    bint PyDict_CheckExact(object o)
    bint PyList_CheckExact(object o)


cdef extern from "<time.h>" nogil:
    ctypedef int clockid_t
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(clockid_t clk, timespec* ts)
    clockid_t CLOCK_MONOTONIC


cdef inline int64_t _now_ns() noexcept nogil:
    """Monotonic nanoseconds, for measuring lock waits only."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


class BookError(Exception):
    """The stream and the book disagree (unknown id, crossed book, bad row...):
    the book is invalid until the next partial."""


cdef enum:
    BID = 0
    ASK = 1
    A_PARTIAL = 0
    A_INSERT = 1
    A_UPDATE = 2
    A_DELETE = 3
    R_OK = 0
    R_SKIP = 1
    R_FAIL = 2

cdef str K_ID = "id"
cdef str K_SIDE = "side"
cdef str K_SIZE = "size"
cdef str K_PRICE = "price"
cdef str K_SYMBOL = "symbol"
cdef str K_TABLE = "table"
cdef str K_ACTION = "action"
cdef str K_DATA = "data"
cdef str S_BUY = "Buy"
cdef str S_SELL = "Sell"
cdef str T_L2 = "orderBookL2"
cdef dict _ACTIONS = {"partial": A_PARTIAL, "insert": A_INSERT, "update": A_UPDATE, "delete": A_DELETE}
cdef tuple _SIDE_NAMES = ("Buy", "Sell")


cdef struct Level:
    double price
    int64_t size
    int64_t id
    int32_t side
    int32_t next_free


cdef struct Entry:
    double key      # price for bids, -price for asks: ascending, best last
    int32_t slot
    int32_t pad


cdef int _cmp_entry(const void* a, const void* b) noexcept nogil:
    cdef double x = (<const Entry*>a).key, y = (<const Entry*>b).key
    return (x > y) - (x < y)


cdef inline uint64_t _mix(int64_t id, int32_t side) noexcept nogil:
    return (<uint64_t>id * 2u + <uint64_t>side) * <uint64_t>0x9E3779B97F4A7C15


cdef class L2Book:
    """Full-depth orderBookL2 for one symbol, with BitMEX's
    partial/insert/update/delete semantics keyed by (symbol, id, side).

    Any inconsistency (unknown id, duplicate id or price, a row missing a
    key, a crossed book) invalidates the book and raises `BookError` from
    `apply`; it is never patched up. An invalid book answers no levels and
    accepts nothing but a new partial.
    """

    cdef Level* lv
    cdef int32_t lv_cap, lv_top, free_head, count
    cdef int32_t* htab
    cdef uint64_t hmask
    cdef int hshift
    cdef Entry* ent[2]
    cdef int32_t n[2]
    cdef int32_t cap[2]
    cdef readonly str symbol
    cdef readonly bint valid
    cdef readonly object error
    cdef readonly int64_t rows_applied

    def __cinit__(self, str symbol="XBTUSD"):
        self.symbol = symbol
        self.free_head = -1
        self.hshift = 64 - 4
        self.hmask = 15
        self.htab = <int32_t*>PyMem_Malloc(16 * sizeof(int32_t))
        if self.htab == NULL:
            raise MemoryError()
        memset(self.htab, 0xFF, 16 * sizeof(int32_t))

    def __dealloc__(self):
        PyMem_Free(self.lv)
        PyMem_Free(self.htab)
        PyMem_Free(self.ent[0])
        PyMem_Free(self.ent[1])

    # ---- hash (id, side) -> slot ------------------------------------------
    cdef inline int32_t _find(self, int64_t id, int32_t side) noexcept:
        cdef uint64_t i = _mix(id, side) >> self.hshift
        cdef int32_t s
        while True:
            s = self.htab[i]
            if s < 0:
                return -1
            if self.lv[s].id == id and self.lv[s].side == side:
                return s
            i = (i + 1) & self.hmask

    cdef inline void _hput_nogrow(self, int32_t slot) noexcept:
        cdef uint64_t i = _mix(self.lv[slot].id, self.lv[slot].side) >> self.hshift
        while self.htab[i] >= 0:
            i = (i + 1) & self.hmask
        self.htab[i] = slot

    cdef int _hresize(self, int bits) except -1:
        cdef uint64_t size = (<uint64_t>1) << bits
        cdef int32_t* t = <int32_t*>PyMem_Malloc(size * sizeof(int32_t))
        cdef int32_t side, i
        if t == NULL:
            raise MemoryError()
        PyMem_Free(self.htab)
        self.htab = t
        memset(t, 0xFF, size * sizeof(int32_t))
        self.hshift = 64 - bits
        self.hmask = size - 1
        for side in range(2):
            for i in range(self.n[side]):
                self._hput_nogrow(self.ent[side][i].slot)
        return 0

    cdef inline int _hreserve(self, int64_t count) except -1:
        """Keep the load factor at or below 1/2."""
        cdef int bits = 64 - self.hshift
        if count * 2 <= <int64_t>(self.hmask + 1):
            return 0
        while count * 2 > ((<int64_t>1) << bits):
            bits += 1
        return self._hresize(bits)

    cdef void _hdel(self, int32_t slot) noexcept:
        cdef uint64_t i = _mix(self.lv[slot].id, self.lv[slot].side) >> self.hshift
        cdef uint64_t j, home
        cdef int32_t s
        while self.htab[i] != slot:
            i = (i + 1) & self.hmask
        j = i
        while True:
            j = (j + 1) & self.hmask
            s = self.htab[j]
            if s < 0:
                break
            home = _mix(self.lv[s].id, self.lv[s].side) >> self.hshift
            if ((j - home) & self.hmask) >= ((j - i) & self.hmask):
                self.htab[i] = s
                i = j
        self.htab[i] = -1

    # ---- pool ---------------------------------------------------------------
    cdef int32_t _alloc(self) except -1:
        cdef int32_t s, new_cap
        cdef Level* p
        if self.free_head >= 0:
            s = self.free_head
            self.free_head = self.lv[s].next_free
            return s
        if self.lv_top == self.lv_cap:
            new_cap = self.lv_cap * 2 if self.lv_cap else 64
            p = <Level*>PyMem_Realloc(self.lv, new_cap * sizeof(Level))
            if p == NULL:
                raise MemoryError()
            self.lv = p
            self.lv_cap = new_cap
        s = self.lv_top
        self.lv_top += 1
        return s

    cdef inline void _free(self, int32_t s) noexcept:
        self.lv[s].next_free = self.free_head
        self.free_head = s

    # ---- sorted sides -------------------------------------------------------
    cdef inline int32_t _upper(self, int32_t side, double key) noexcept:
        """Smallest index whose key is > `key`, galloping from the touch."""
        cdef Entry* a = self.ent[side]
        cdef int32_t hi = self.n[side], lo = hi - 1, step = 1, mid
        while lo >= 0 and a[lo].key > key:
            hi = lo
            lo -= step
            step <<= 1
        if lo < -1:
            lo = -1
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if a[mid].key > key:
                hi = mid
            else:
                lo = mid
        return hi

    cdef int _reserve_side(self, int32_t side, int32_t need) except -1:
        cdef int32_t c = self.cap[side]
        cdef Entry* p
        if need <= c:
            return 0
        c = c * 2 if c else 64
        while c < need:
            c *= 2
        p = <Entry*>PyMem_Realloc(self.ent[side], c * sizeof(Entry))
        if p == NULL:
            raise MemoryError()
        self.ent[side] = p
        self.cap[side] = c
        return 0

    cdef int _ent_insert(self, int32_t side, double key, int32_t slot) except -1:
        """Returns R_FAIL when a level already sits at `key` on this side."""
        cdef int32_t i = self._upper(side, key)
        cdef Entry* a
        if i > 0 and self.ent[side][i - 1].key == key:
            return R_FAIL
        self._reserve_side(side, self.n[side] + 1)
        a = self.ent[side]
        memmove(&a[i + 1], &a[i], (self.n[side] - i) * sizeof(Entry))
        a[i].key = key
        a[i].slot = slot
        self.n[side] += 1
        return R_OK

    cdef int _ent_remove(self, int32_t side, double key, int32_t slot) noexcept:
        cdef int32_t i = self._upper(side, key) - 1
        cdef Entry* a = self.ent[side]
        if i < 0 or a[i].key != key or a[i].slot != slot:
            return R_FAIL
        memmove(&a[i], &a[i + 1], (self.n[side] - i - 1) * sizeof(Entry))
        self.n[side] -= 1
        return R_OK

    # ---- rows ---------------------------------------------------------------
    cdef int _fail(self, str why, object row) except -1:
        self.valid = False
        self.error = why if row is None else f"{why}: {repr(row)[:200]}"
        return R_FAIL

    cdef int _row(self, object row, int action) except -1:
        cdef PyObject* o
        cdef int overflow = 0
        cdef int64_t id, size = 0
        cdef int32_t side, s
        cdef double price = 0.0, key
        cdef bint has_size, has_price
        if not PyDict_CheckExact(row):
            return self._fail("row is not an object", row)
        o = PyDict_GetItem(row, K_SYMBOL)
        if o == NULL:
            return self._fail("row without symbol", row)
        if <object>o != self.symbol:
            return R_SKIP if isinstance(<object>o, str) else self._fail("bad symbol", row)
        o = PyDict_GetItem(row, K_ID)
        if o == NULL or not PyLong_CheckExact(<object>o):
            return self._fail("row without an integer id", row)
        id = PyLong_AsLongLongAndOverflow(<object>o, &overflow)
        if overflow:
            return self._fail("id out of range", row)
        o = PyDict_GetItem(row, K_SIDE)
        if o == NULL:
            return self._fail("row without side", row)
        if <object>o == S_BUY:
            side = BID
        elif <object>o == S_SELL:
            side = ASK
        else:
            return self._fail("bad side", row)
        if action == A_DELETE:
            s = self._find(id, side)
            if s < 0:
                return self._fail("delete of unknown id", row)
            key = self.lv[s].price if side == BID else -self.lv[s].price
            if self._ent_remove(side, key, s) != R_OK:
                return self._fail("book index out of step", row)
            self._hdel(s)
            self._free(s)
            self.count -= 1
            return R_OK
        o = PyDict_GetItem(row, K_SIZE)
        has_size = o != NULL
        if has_size:
            if not PyLong_CheckExact(<object>o):
                return self._fail("size is not an integer", row)
            size = PyLong_AsLongLongAndOverflow(<object>o, &overflow)
            if overflow or size <= 0:
                return self._fail("size must be a positive integer", row)
        o = PyDict_GetItem(row, K_PRICE)
        has_price = o != NULL
        if has_price:
            if PyFloat_CheckExact(<object>o):
                price = PyFloat_AS_DOUBLE(<object>o)
            elif PyLong_CheckExact(<object>o):
                price = PyLong_AsDouble(<object>o)
            else:
                return self._fail("price is not a number", row)
            if not isfinite(price):
                return self._fail("price is not finite", row)
        if action == A_UPDATE:
            s = self._find(id, side)
            if s < 0:
                return self._fail("update of unknown id", row)
            if has_size:
                self.lv[s].size = size
            if has_price and price != self.lv[s].price:
                key = self.lv[s].price if side == BID else -self.lv[s].price
                if self._ent_remove(side, key, s) != R_OK:
                    return self._fail("book index out of step", row)
                self.lv[s].price = price
                if self._ent_insert(side, price if side == BID else -price, s) != R_OK:
                    return self._fail("two levels at one price", row)
            return R_OK
        # insert, or a row of a partial (sorted later)
        if not (has_size and has_price):
            return self._fail("insert without size or price", row)
        if self._find(id, side) >= 0:
            return self._fail("insert of an existing id", row)
        self._hreserve(<int64_t>self.count + 1)
        s = self._alloc()
        self.lv[s].price = price
        self.lv[s].size = size
        self.lv[s].id = id
        self.lv[s].side = side
        key = price if side == BID else -price
        if action == A_PARTIAL:
            self._reserve_side(side, self.n[side] + 1)
            self.ent[side][self.n[side]].key = key
            self.ent[side][self.n[side]].slot = s
            self.n[side] += 1
        elif self._ent_insert(side, key, s) != R_OK:
            self._free(s)
            return self._fail("two levels at one price", row)
        self._hput_nogrow(s)
        self.count += 1
        return R_OK

    cdef void _clear(self) noexcept:
        self.n[0] = self.n[1] = 0
        self.count = 0
        self.lv_top = 0
        self.free_head = -1
        memset(self.htab, 0xFF, (self.hmask + 1) * sizeof(int32_t))

    cdef inline bint _crossed(self) noexcept:
        return (self.n[BID] > 0 and self.n[ASK] > 0
                and self.ent[BID][self.n[BID] - 1].key >= -self.ent[ASK][self.n[ASK] - 1].key)

    cdef int _apply(self, int action, list rows) except -1:
        """Apply one message's rows; R_OK or R_FAIL (then `error` says why)."""
        cdef int32_t side, i
        cdef object row
        if action == A_PARTIAL:
            self._clear()
            self.valid = True
            self.error = None
            self._hreserve(len(rows))
        elif not self.valid:
            return self._fail("book has no partial", None)
        for row in rows:
            if self._row(row, action) == R_FAIL:
                return R_FAIL
        self.rows_applied += len(rows)
        if action == A_PARTIAL:
            for side in range(2):
                if self.n[side] > 1:
                    qsort(self.ent[side], self.n[side], sizeof(Entry), _cmp_entry)
                for i in range(1, self.n[side]):
                    if self.ent[side][i].key == self.ent[side][i - 1].key:
                        return self._fail("two levels at one price in the partial", None)
        if self._crossed():
            return self._fail(
                f"crossed book: bid {self.ent[BID][self.n[BID] - 1].key} >= ask {-self.ent[ASK][self.n[ASK] - 1].key}",
                None)
        return R_OK

    # ---- Python API -------------------------------------------------------
    def apply(self, str action, list rows):
        """Apply one orderBookL2 message (`action`, `data`); raises BookError
        (and leaves the book invalid) when the stream is inconsistent."""
        code = _ACTIONS.get(action)
        if code is None:
            raise ValueError(f"unknown orderBookL2 action {action!r}")
        if self._apply(code, rows) != R_OK:
            raise BookError(self.error)

    def invalidate(self, str why):
        """Drop the book until the next partial (for example on disconnect)."""
        self._fail(why, None)

    cdef int32_t _copy(self, int32_t side, int32_t depth, double* px, int64_t* sz) noexcept:
        cdef int32_t n = self.n[side] if self.valid else 0
        cdef int32_t i
        cdef Entry* a = self.ent[side]
        if depth > n:
            depth = n
        for i in range(depth):
            px[i] = self.lv[a[n - 1 - i].slot].price
            sz[i] = self.lv[a[n - 1 - i].slot].size
        return depth

    cdef list _levels(self, int32_t side, object depth):
        cdef int32_t n = self.n[side] if self.valid else 0
        cdef int32_t d = n if depth is None or depth >= n else max(<int32_t>depth, 0)
        cdef int32_t i, s
        cdef list out = []
        for i in range(d):
            s = self.ent[side][n - 1 - i].slot
            out.append((self.lv[s].price, self.lv[s].size))
        return out

    def bids(self, depth=25):
        """[(price, size)] best first; depth None = the whole side."""
        return self._levels(BID, depth)

    def asks(self, depth=25):
        return self._levels(ASK, depth)

    cdef inline double _top_key(self, int32_t side) noexcept:
        """The best level's sort key on one side, 0 when empty (no price is 0): cheap to compare."""
        return self.ent[side][self.n[side] - 1].key if self.n[side] else 0.0

    @property
    def best_bid(self):
        if not self.valid or self.n[BID] == 0:
            return None
        return self.ent[BID][self.n[BID] - 1].key

    @property
    def best_ask(self):
        if not self.valid or self.n[ASK] == 0:
            return None
        return -self.ent[ASK][self.n[ASK] - 1].key

    def __len__(self):
        return self.count if self.valid else 0

    def size_within(self, str side, double distance):
        """Total size on `side` ("Buy"/"Sell") priced within `distance` of that
        side's best price; walks only the levels inside the distance."""
        cdef int32_t sd = BID if side == S_BUY else ASK
        cdef int32_t i
        cdef int64_t total = 0
        cdef double limit
        cdef Entry* a = self.ent[sd]
        if side not in _SIDE_NAMES:
            raise ValueError(f"side must be Buy or Sell, not {side!r}")
        if not self.valid or self.n[sd] == 0:
            return 0
        limit = a[self.n[sd] - 1].key - distance
        i = self.n[sd] - 1
        while i >= 0 and a[i].key >= limit:
            total += self.lv[a[i].slot].size
            i -= 1
        return total

    def level_of(self, id, str side):
        """(price, size) of the level with this id, or None."""
        cdef int32_t s = self._find(id, BID if side == S_BUY else ASK) if self.valid else -1
        return None if s < 0 else (self.lv[s].price, self.lv[s].size)

    @property
    def nbytes(self):
        """Bytes allocated for the book's C structures."""
        return (self.lv_cap * sizeof(Level) + (self.hmask + 1) * sizeof(int32_t)
                + (self.cap[0] + self.cap[1]) * sizeof(Entry))

    def check(self):
        """Full consistency check (tests): sorted strictly by price, every level
        indexed exactly once, positive sizes, not crossed. Raises BookError."""
        cdef int32_t side, i, s, live = 0
        cdef uint64_t b
        if not self.valid:
            return
        for side in range(2):
            for i in range(self.n[side]):
                s = self.ent[side][i].slot
                if s < 0 or s >= self.lv_top or self.lv[s].side != side:
                    raise BookError(f"entry {i} of side {side} points at a bad slot {s}")
                if self.ent[side][i].key != (self.lv[s].price if side == BID else -self.lv[s].price):
                    raise BookError(f"entry {i} of side {side} has a stale price")
                if i and self.ent[side][i].key <= self.ent[side][i - 1].key:
                    raise BookError(f"side {side} is not strictly sorted at {i}")
                if self.lv[s].size <= 0:
                    raise BookError(f"level {self.lv[s].id} has size {self.lv[s].size}")
                if self._find(self.lv[s].id, side) != s:
                    raise BookError(f"level {self.lv[s].id} is not found by id")
        for b in range(self.hmask + 1):
            live += self.htab[b] >= 0
        if live != self.count or self.count != self.n[0] + self.n[1]:
            raise BookError(f"{live} indexed, {self.count} counted, {self.n[0] + self.n[1]} sorted")
        if self._crossed():
            raise BookError("crossed")


cdef class StateLock:
    """The state's one lock, usable from C without Python overhead and as a
    `with` block from Python. A contended acquire releases the GIL while it
    waits (so the holder can finish) and is timed; uncontended acquires cost
    a few nanoseconds and are only counted."""

    cdef PyThread_type_lock _lock
    cdef readonly int64_t acquisitions, contended, wait_ns_total, wait_ns_max
    cdef int64_t hist[40]

    def __cinit__(self):
        self._lock = PyThread_allocate_lock()
        if self._lock == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self._lock != NULL:
            PyThread_free_lock(self._lock)

    cdef inline void acquire_(self) noexcept:
        self.acquisitions += 1
        if not PyThread_acquire_lock(self._lock, NOWAIT_LOCK):
            self._wait()

    cdef void _wait(self) noexcept:
        cdef int64_t t0 = _now_ns(), dt
        cdef int b = 0
        with nogil:
            PyThread_acquire_lock(self._lock, WAIT_LOCK)
        dt = _now_ns() - t0
        self.contended += 1
        self.wait_ns_total += dt
        if dt > self.wait_ns_max:
            self.wait_ns_max = dt
        while b < 39 and ((<int64_t>1) << b) < dt:
            b += 1
        self.hist[b] += 1

    cdef inline void release_(self) noexcept:
        PyThread_release_lock(self._lock)

    def __enter__(self):
        self.acquire_()
        return self

    def __exit__(self, *exc):
        self.release_()
        return False

    def wait_quantile(self, double q):
        """Upper bound (ns, power of two) of the q-quantile of all acquisitions'
        wait, uncontended ones counting as zero."""
        cdef int64_t target = <int64_t>(q * self.acquisitions), seen = self.acquisitions - self.contended
        cdef int b
        if seen >= target:
            return 0
        for b in range(40):
            seen += self.hist[b]
            if seen >= target:
                return (<int64_t>1) << b
        return self.wait_ns_max

    def stats(self):
        return {"acquisitions": self.acquisitions, "contended": self.contended,
                "wait_ns_total": self.wait_ns_total, "wait_ns_max": self.wait_ns_max,
                "wait_ns_p99": self.wait_quantile(0.99), "wait_ns_p999": self.wait_quantile(0.999)}


cdef class Snapshot:
    """An immutable view of the state at one instant. Built by
    `State.snapshot`; the Mappings in it are read-only and never change."""

    cdef readonly bint ready
    cdef readonly object reason
    cdef readonly list bids, asks
    cdef readonly object best_bid, best_ask
    cdef readonly object last_trade, instrument, funding_rate, funding_timestamp, mark_price
    cdef readonly object position, margin, wallet, orders
    cdef readonly double data_age
    cdef readonly int64_t reconnects, seq, private_seq

    def __repr__(self):
        return (f"Snapshot(ready={self.ready}, reason={self.reason!r}, bid={self.best_bid}, "
                f"ask={self.best_ask}, levels={len(self.bids)}/{len(self.asks)}, seq={self.seq}, "
                f"orders={len(self.orders)}, age={self.data_age:.3f}s)")


cdef class StateCore:
    """The part of State that runs per frame. `State` (state.py) subclasses
    it and handles every message the hot path does not: partials, the other
    tables, errors, bad input (`_apply_slow`, `_book_failed`)."""

    cdef readonly L2Book book
    cdef readonly StateLock lock
    cdef readonly str symbol
    cdef object _mono
    # Published by state.py under the lock; each is an immutable object
    # replaced, never mutated, so snapshots share them for free.
    cdef public object instrument, last_trade, position, margin, wallet, orders
    cdef public object funding_rate, funding_timestamp, mark_price, reason
    cdef public bint tables_ready, connected
    cdef public int64_t seq, private_seq, reconnects
    cdef public int touch_waiters  # threads in State.wait_change watching the touch
    cdef public double last_rx

    def __cinit__(self, str symbol="XBTUSD", clock=None, *args, **kwargs):
        self.symbol = symbol
        self.book = L2Book(symbol)
        self.lock = StateLock()
        if clock is None:
            from sniper.clock import RealClock
            clock = RealClock()
        self._mono = clock.monotonic
        self.last_rx = float("-inf")
        self.orders = ()
        self.reason = "not connected"

    def apply_message(self, raw):
        """Apply one raw websocket frame (str or bytes). Never raises on bad
        input; orderBookL2 insert/update/delete take the fast path here."""
        cdef double t = self._mono()
        cdef PyObject* o
        cdef int action, rc
        cdef double bid0, ask0
        cdef bint moved
        try:
            msg = _loads(raw)
        except (ValueError, TypeError):
            self._apply_slow(None, raw, t)
            return
        if PyDict_CheckExact(msg):
            o = PyDict_GetItem(msg, K_TABLE)
            if o != NULL and <object>o == T_L2 and self.book.valid:
                action = -1
                o = PyDict_GetItem(msg, K_ACTION)
                if o != NULL:
                    o = PyDict_GetItem(_ACTIONS, <object>o)
                    if o != NULL:
                        action = <object>o
                o = PyDict_GetItem(msg, K_DATA)
                if action > A_PARTIAL and o != NULL and PyList_CheckExact(<object>o):
                    data = <list>o
                    self.lock.acquire_()
                    try:
                        bid0 = self.book._top_key(BID)
                        ask0 = self.book._top_key(ASK)
                        rc = self.book._apply(action, data)
                        self.seq += 1
                        self.last_rx = t
                        moved = not (bid0 == self.book._top_key(BID) and ask0 == self.book._top_key(ASK))
                    finally:
                        self.lock.release_()
                    if rc != R_OK:
                        self._book_failed(raw)
                    elif moved and self.touch_waiters:
                        self._wake_waiters()
                    return
        self._apply_slow(msg, raw, t)

    def snapshot(self, depth=25):
        """An immutable Snapshot: the top `depth` levels a side (None = all)
        and every published field, copied under the lock in one short section."""
        cdef Snapshot snap = Snapshot.__new__(Snapshot)
        cdef int32_t d, nb, na, i
        cdef double* px
        cdef int64_t* sz
        cdef list bids, asks
        self.lock.acquire_()
        try:
            d = self.book.count if depth is None or depth >= self.book.count else max(<int32_t>depth, 0)
            px = <double*>PyMem_Malloc((2 * d + 1) * sizeof(double))
            sz = <int64_t*>PyMem_Malloc((2 * d + 1) * sizeof(int64_t))
            if px == NULL or sz == NULL:
                PyMem_Free(px)
                PyMem_Free(sz)
                raise MemoryError()
            nb = self.book._copy(BID, d, px, sz)
            na = self.book._copy(ASK, d, px + d, sz + d)
            snap.ready = self.connected and self.tables_ready and self.book.valid
            snap.reason = None if snap.ready else (self.reason or self.book.error or "book has no partial")
            snap.last_trade = self.last_trade
            snap.instrument = self.instrument
            snap.funding_rate = self.funding_rate
            snap.funding_timestamp = self.funding_timestamp
            snap.mark_price = self.mark_price
            snap.position = self.position
            snap.margin = self.margin
            snap.wallet = self.wallet
            snap.orders = self.orders
            snap.reconnects = self.reconnects
            snap.seq = self.seq
            snap.private_seq = self.private_seq
            snap.data_age = self.last_rx
        finally:
            self.lock.release_()
        try:
            bids = [None] * nb
            for i in range(nb):
                bids[i] = (px[i], sz[i])
            asks = [None] * na
            for i in range(na):
                asks[i] = (px[d + i], sz[d + i])
        finally:
            PyMem_Free(px)
            PyMem_Free(sz)
        snap.bids = bids
        snap.asks = asks
        snap.best_bid = bids[0][0] if nb else None
        snap.best_ask = asks[0][0] if na else None
        snap.data_age = self._mono() - snap.data_age
        return snap

    def _install_book(self, L2Book book):
        """Swap in a book built outside the lock (a partial); caller holds the lock."""
        self.book = book

    def _apply_slow(self, msg, raw, double t):
        raise NotImplementedError

    def _book_failed(self, raw):
        raise NotImplementedError

    def _wake_waiters(self):
        raise NotImplementedError
