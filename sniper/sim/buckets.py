"""`GET /trade/bucketed` over the recorded 1-minute bars.

The recorded bars are the simulated market's past (the feed replays them), so a
bucket is served once its END time has passed on the simulated clock: no
look-ahead. Timestamps are bucket ends, and a bucket's open is the previous
close, both as BitMEX does. Fields the bars do not record are derived:
`trades` counts the traded minutes, `vwap` and `turnover` use each minute's
typical price (h+l+c)/3.
"""

from __future__ import annotations

import math

import numpy as np

from sniper.model import iso

BIN_SECONDS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
MAX_COUNT = 1000


class Buckets:
    """Aggregates 1-minute bars (bar open times, ascending) into BitMEX trade bins."""

    def __init__(self, bars, symbol: str) -> None:
        self.symbol = symbol
        self.time = np.asarray(bars["time"], dtype=np.int64)
        self.open = np.asarray(bars["open"], dtype=np.float64)
        self.high = np.asarray(bars["high"], dtype=np.float64)
        self.low = np.asarray(bars["low"], dtype=np.float64)
        self.close = np.asarray(bars["close"], dtype=np.float64)
        self.volume = np.asarray(bars["volume"], dtype=np.int64)
        typical = (self.high + self.low + self.close) / 3.0
        self._pv = self.volume * typical
        self._turnover = np.rint(self.volume * 1e8 / typical).astype(np.int64)

    def query(self, bin_size: str, now: float, *, count: int = 100, start: int = 0, reverse: bool = False,
              start_time: float | None = None, end_time: float | None = None) -> list[dict]:
        """Completed buckets (end <= now) within [start_time, end_time], BitMEX paging rules."""
        step = BIN_SECONDS[bin_size]
        if len(self.time) == 0:
            return []
        first = int(self.time[0]) // step + 1  # bucket k covers [(k-1)*step, k*step)
        last = min(int(math.floor(now)) // step, (int(self.time[-1]) + 60 + step - 1) // step)
        if start_time is not None:
            first = max(first, int(math.ceil(start_time / step)))
        if end_time is not None:
            last = min(last, int(math.floor(end_time)) // step)
        if last < first:
            return []
        if reverse:
            hi = last - start
            ks = np.arange(hi, max(first, hi - count + 1) - 1, -1, dtype=np.int64)
        else:
            lo = first + start
            ks = np.arange(lo, min(last, lo + count - 1) + 1, dtype=np.int64)
        if len(ks) == 0:
            return []
        lo_idx = np.searchsorted(self.time, (ks - 1) * step, "left")
        hi_idx = np.searchsorted(self.time, ks * step, "left")
        return [self._row(int(k) * step, int(a), int(b)) for k, a, b in zip(ks, lo_idx, hi_idx, strict=True)
                if b > a]

    def _row(self, end: int, a: int, b: int) -> dict:
        volume = int(self.volume[a:b].sum())
        turnover = int(self._turnover[a:b].sum())
        return {
            "timestamp": iso(end),
            "symbol": self.symbol,
            "open": float(self.open[a]),
            "high": float(self.high[a:b].max()),
            "low": float(self.low[a:b].min()),
            "close": float(self.close[b - 1]),
            "trades": int(np.count_nonzero(self.volume[a:b])),
            "volume": volume,
            "vwap": round(float(self._pv[a:b].sum()) / volume, 4) if volume else None,
            "lastSize": None,
            "turnover": turnover,
            "homeNotional": turnover / 1e8,
            "foreignNotional": float(volume),
        }
