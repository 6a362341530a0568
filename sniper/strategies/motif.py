"""The regime switch: which logic holds the position at each bar.

On every new bar the last L closes are looked up among the earlier stretches of the whole
history (sniper.motif.MotifIndex, ED or DTW with band W, exclusion zone); the k nearest
neighbours' futures give the forecast: the mean of close[s+L-1+H] / close[s+L-1] - 1 over the
neighbour starts s. A neighbour's future must be known now: the matcher only returns starts
s <= (now - L + 1) - max(exclusion, H), so s + L - 1 + H <= now. Outcomes are always measured
on the raw closes (what a position would have earned), whatever the matching sees.

Control, in priority order:
  funding  inside the funding logic's window (FundingStrategy.in_window) it decides;
  motif    the short-term logic: a position of motif leverage in the forecast's direction,
           while the forecast is strong and has not faded or flipped since (see below);
  trend    otherwise the long-term logic.
Each bar returns the active logic's own Target, so a hand-over is one Target change (long
trend straight to a short motif position, funding exit straight back to trend), never a
flat bar in between.

The forecast is smoothed across bars by an EMA of period forecast_ema, truncated where its
weights fall below 1e-6 of the newest's (EMA_CUTOFF) and normalised over the weights in use
(pandas' adjust=True): a pure function of the last S raw forecasts, so a fresh strategy fed
the same bars computes exactly what the incremental one does. A bar is *strong* when
|forecast| > threshold and at least `agreement` of its neighbours moved the forecast's way.
The short-term logic holds control at bar t, in direction sign(forecast_t), while some strong
bar e with t - H < e <= t has the forecast above threshold, same sign, at every bar from e to
t: each strong bar holds control for H minutes, and a fading or flipping forecast ends it at
once. So a decision depends on the raw forecasts of the last S + H - 1 bars only; a (re)start
computes those (MotifIndex.batch, every core), later bars one search each.

Wavelet smoothing, causally. A DWT of the whole history would let every window see the closes
after it (the transform mixes them in). Instead the matched series is
    smooth[i] = last sample of waverec(wavedec(close[i-L+1 .. i]) with the finest
                (wavelet_level - wavelet_keep) detail levels zeroed)
the denoised value of the latest close as it could have been computed at bar i from the L
closes ending there (pywt, mode 'symmetric'; undefined, so never matched, for i < L - 1). The
round trip is linear, so this is one causal FIR filter: its taps are the round trip's
response at the last sample to a unit impulse at each of the L positions, computed once; a
new bar costs one dot product, and the query and every index window come from the same
causal series. wavelet_keep >= wavelet_level keeps every detail: the identity, no smoothing.

History and memory: the index holds every bar since the last (re)start. When the caller's view
slides (drops old bars), the strategy starts again from the view once it has dropped more than
an eighth of the view's length, so the search space stays within 9/8 of the lookback.

Backtests (`presearch`): deciding bar by bar searches once per bar, on one core. A backtester
that knows the views it will pass can have every search done ahead, on every core, by
MotifIndex.batch: `presearch` replays the restarts those views cause, builds each index as the
bar-by-bar path does (the restart's view at once, then one bar at a time, so every window's
statistics are the same numbers) and searches all its positions in one batch. Each decision
then takes its neighbours from memory: the same neighbours (the matcher's search of a position
reads only the windows before it), so the same decisions. A view that differs from the bars
presearched (other bars, another order) is searched as usual.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pywt
from numpy.lib.stride_tricks import sliding_window_view

from sniper.model import Target
from sniper.motif import MotifIndex

from .base import Account, BarCursor, Decision, Funding, contracts, reference_price

EMA_CUTOFF = 1e-6  # forecast EMA weights below this share of the newest's are dropped
TRIM_FRACTION = 8  # restart once the view has dropped more than 1/8 of its length


def causal_taps(wavelet: str, level: int, keep: int, length: int) -> np.ndarray:
    """FIR taps h (oldest first) with smooth[i] = h @ close[i-length+1 : i+1] (module docs)."""
    w = pywt.Wavelet(wavelet)
    deepest = pywt.dwt_max_level(length, w.dec_len)
    if level > deepest:
        raise ValueError(f"strategy.motif.wavelet_level: {level} is deeper than a {wavelet} DWT of "
                         f"{length} closes allows ({deepest})")
    coeffs = pywt.wavedec(np.eye(length), w, level=level, axis=-1)
    for j in range(1 + keep, level + 1):  # coeffs: approximation, then details coarsest first
        coeffs[j] = np.zeros_like(coeffs[j])
    return pywt.waverec(coeffs, w, axis=-1)[:, length - 1].copy()


def ema_weights(period: int) -> np.ndarray:
    """Truncated EMA weights, newest first: (1 - a)^j while above EMA_CUTOFF, a = 2/(period+1)."""
    decay = 1.0 - 2.0 / (period + 1)
    span = 1 if decay == 0.0 else math.ceil(math.log(EMA_CUTOFF) / math.log(decay))
    return decay ** np.arange(span)


def claim(smoothed, threshold: float, agreement: float) -> int | None:
    """Does the short-term logic hold control now? `smoothed`: (forecast, agreement) of the last
    H bars, newest first. The answer is how many bars back the latest strong bar of the current
    run lies (the run: bars with |forecast| > threshold on the newest forecast's side, back to
    the first that is not), or None: no strong bar in the run within the last H bars."""
    f = smoothed[0][0]
    for back, (fb, ab) in enumerate(smoothed):
        if not (abs(fb) > threshold and np.sign(fb) == np.sign(f)):
            return None
        if ab >= agreement:
            return back
    return None


def smoothed(closes: np.ndarray, taps: np.ndarray | None, start: int, stop: int) -> np.ndarray:
    """The matched series at positions [start, stop) of `closes`: the closes, or their causal
    smoothing by `taps` (NaN where fewer than len(taps) closes end at a position)."""
    if taps is None:
        return closes[start:stop]
    m = len(taps)
    out = np.full(stop - start, np.nan)
    first = max(start, m - 1)
    if first < stop:
        out[first - start:] = sliding_window_view(closes[first - m + 1: stop], m) @ taps
    return out


@dataclass
class _Ahead:
    """Neighbours searched ahead (`MotifStrategy.presearch`) for the index of one (re)start:
    the bars it holds from its origin (times, closes) and, for the positions first, first + 1,
    ..., the starts and distances a search there returns."""

    times: np.ndarray
    closes: np.ndarray
    first: int
    starts: np.ndarray
    dist: np.ndarray

    def holds(self, n0: int, rows: np.ndarray) -> bool:
        """Are `rows` the bars presearched at positions n0, n0 + 1, ...?"""
        n = n0 + len(rows)
        return (n <= len(self.times) and bool((self.times[n0:n] == rows["time"]).all())
                and bool((self.closes[n0:n] == rows["close"]).all()))

    def covers(self, positions: np.ndarray) -> bool:
        return self.first <= positions[0] and positions[-1] < self.first + len(self.starts)


class _Growing:
    """A float64 array that grows at the end (amortised O(1) appends)."""

    def __init__(self) -> None:
        self._a, self._n = np.empty(1024), 0

    def extend(self, values: np.ndarray) -> None:
        n = self._n + len(values)
        if n > len(self._a):
            a = np.empty(max(n, 2 * len(self._a)))
            a[: self._n] = self._a[: self._n]
            self._a = a
        self._a[self._n: n] = values
        self._n = n

    @property
    def values(self) -> np.ndarray:
        return self._a[: self._n]


class MotifStrategy:
    """The KNN regime switch over a long-term and a funding logic (module docs)."""

    name = "motif"

    def __init__(self, cfg, *, trend, funding, taker_fee: float) -> None:
        """cfg: a config.MotifConfig; trend: the long-term logic (a TrendStrategy); funding: the
        settlement logic (a FundingStrategy, with `in_window`)."""
        self.cfg, self.trend, self.funding, self.taker_fee = cfg, trend, funding, taker_fee
        self._exclusion = cfg.exclusion or math.ceil(cfg.window / 4)
        self._search = {"horizon": cfg.horizon, "exclusion": self._exclusion, "metric": cfg.metric,
                        "window": cfg.dtw_window if cfg.metric == "dtw" else None}
        self.warmup = max(trend.warmup, cfg.window + max(self._exclusion, cfg.horizon))
        self._taps = (None if cfg.wavelet is None else
                      causal_taps(cfg.wavelet, cfg.wavelet_level, cfg.wavelet_keep, cfg.window))
        self._weights = ema_weights(cfg.forecast_ema)
        self._ahead: dict[int, _Ahead] = {}  # origin bar time -> presearched neighbours
        self._epoch: _Ahead | None = None  # those of the index in use, while its bars match
        self._cursor = BarCursor()
        self._restart(np.empty(0, dtype=[("time", "i8"), ("close", "f8")]))

    # ---------------------------------------------------------------- history and forecasts
    def _restart(self, bars: np.ndarray) -> None:
        self._times, self._closes = _Growing(), _Growing()
        self._index = MotifIndex(np.empty(0))
        # per bar of the last S + H - 1: (raw forecast, neighbours' relative paths)
        self._recent: deque[tuple[float, np.ndarray]] = deque(maxlen=len(self._weights) + self.cfg.horizon - 1)
        self._latest: tuple[np.ndarray, np.ndarray] = (np.empty(0, dtype=np.intp), np.empty(0))
        origin = int(bars["time"][0]) if len(bars) else None
        self._epoch = self._ahead.pop(origin, None)
        self._ahead = {t: a for t, a in self._ahead.items() if origin is None or t > origin}
        self._extend(bars)

    def _extend(self, rows: np.ndarray) -> None:
        """Append bars; search for the new bars that decisions still depend on."""
        n0 = len(self._closes.values)
        if self._epoch is not None and not self._epoch.holds(n0, rows):
            self._epoch = None
        self._times.extend(rows["time"].astype(np.float64))
        self._closes.extend(rows["close"])
        n = len(self._closes.values)
        self._index.append(self._matched(n0, n))
        self._forecast(np.arange(max(n0, n - self._recent.maxlen), n))

    def _matched(self, start: int, stop: int) -> np.ndarray:
        """The matched series at positions [start, stop): the closes, or their causal smoothing."""
        return smoothed(self._closes.values, self._taps, start, stop)

    def _forecast(self, positions: np.ndarray) -> None:
        """Search the neighbours of each position (in order) and queue its forecast."""
        cfg, closes = self.cfg, self._closes.values
        valid = positions[positions >= cfg.window - 1]
        starts = np.full((len(positions), cfg.k), -1, dtype=np.intp)
        dist = np.full((len(positions), cfg.k), np.nan)
        if len(valid):
            epoch = self._epoch
            if epoch is not None and epoch.covers(valid):
                found = epoch.starts[valid - epoch.first], epoch.dist[valid - epoch.first]
            else:
                found = self._index.batch(cfg.window, cfg.k, valid, **self._search)
            starts[len(positions) - len(valid):], dist[len(positions) - len(valid):] = found
        for s, d in zip(starts, dist, strict=True):
            s = s[s >= 0]
            end = s + cfg.window - 1
            paths = closes[end + cfg.horizon] / closes[end] - 1.0
            self._recent.append((float(paths.mean()) if len(paths) else 0.0, paths))
            self._latest = (s, d[: len(s)])

    # ---------------------------------------------------------------- searching ahead
    def presearch(self, bars: np.ndarray, first: int, last: int, lookback: int, *,
                  progress: Callable[[int], None] | None = None) -> None:
        """Search ahead for the decisions on bars[max(0, e - lookback): e], e = first ... last - 1,
        made in that order on a fresh strategy (module docs); `progress(n)` is told of each n
        positions searched. Decisions on other views search as usual."""
        closes, times = bars["close"], bars["time"]
        for origin, restart, stop in self._epochs(first, last, lookback):
            x = np.ascontiguousarray(closes[origin: origin + stop], dtype=np.float64)
            index = MotifIndex(smoothed(x, self._taps, 0, restart))
            p0 = max(restart - self._recent.maxlen, self.cfg.window - 1)
            found = [self._batch(index, np.arange(p0, restart))]
            for p in range(restart, stop):  # one bar at a time, as `decide` appends them
                index.append(smoothed(x, self._taps, p, p + 1))
            found.append(self._batch(index, np.arange(max(restart, p0), stop)))
            if progress is not None:
                progress(stop - restart)
            self._ahead[int(times[origin])] = _Ahead(times[origin: origin + stop], x, p0,
                                                     *(np.concatenate(a) for a in zip(*found, strict=True)))

    def _batch(self, index: MotifIndex, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        positions = positions[positions >= self.cfg.window - 1]
        if not len(positions):
            return np.empty((0, self.cfg.k), dtype=np.intp), np.empty((0, self.cfg.k))
        return index.batch(self.cfg.window, self.cfg.k, positions, **self._search)

    def _epochs(self, first: int, last: int, lookback: int) -> list[tuple[int, int, int]]:
        """The indexes `decide` builds over those views: (origin bar, length at the (re)start,
        final length), replaying its restarts (the first call and each trim of the view)."""
        origin = max(0, first - lookback)
        epochs, n = [[origin, first - origin, first - origin]], first - origin
        for e in range(first + 1, last):
            n += 1
            view = e - max(0, e - lookback)
            epochs[-1][2] = n
            if n - view > view // TRIM_FRACTION:
                n = view
                epochs.append([e - view, view, view])
        return [tuple(e) for e in epochs]

    # ---------------------------------------------------------------- the switch
    def _smoothed(self, raw: np.ndarray, i: int) -> tuple[float, float]:
        """Smoothed forecast at record i and the share of its neighbours on that side."""
        w = self._weights
        window = raw[max(0, i - len(w) + 1): i + 1][::-1]
        f = float(window @ w[: len(window)] / w[: len(window)].sum())
        paths = self._recent[i][1]
        return f, float(np.mean(np.sign(paths) == np.sign(f))) if len(paths) and f else 0.0

    def _signal(self) -> dict:
        """Forecast, agreement and the short-term logic's claim at the latest bar."""
        raw = np.array([r for r, _ in self._recent])
        last = len(raw) - 1
        smoothed = [self._smoothed(raw, last - back) for back in range(min(self.cfg.horizon, len(raw)))]
        (f, agree), held = smoothed[0], claim(smoothed, self.cfg.threshold, self.cfg.agreement)
        starts, dist = self._latest
        times = self._times.values
        neighbours = [{"start": int(times[s]), "distance": float(d)} for s, d in zip(starts, dist, strict=True)]
        return {"forecast": f, "raw_forecast": float(raw[last]), "agreement": agree, "neighbours": neighbours,
                "direction": int(np.sign(f)) if held is not None else 0,
                "strong_at": int(times[len(times) - 1 - held]) if held is not None else None}

    def decide(self, bars: np.ndarray, funding: Funding, account: Account, now: float) -> Decision:
        rows, restart = self._cursor.advance(bars)
        if restart:
            self._restart(bars)
        else:
            self._extend(rows)
            if len(self._closes.values) - len(bars) > len(bars) // TRIM_FRACTION:
                self._restart(bars)
        # both logics see every bar, in control or not, so their state is current when it counts
        trend = self.trend.decide(bars, funding, account, now)
        settlement = self.funding.decide(bars, funding, account, now)
        seen = {**self._signal(), "trend": trend.seen} if len(bars) else {"trend": trend.seen}
        if self.funding.in_window(now, funding):
            return Decision(settlement.target, {**seen, "logic": "funding", "funding": settlement.seen,
                                                "reason": settlement.seen["reason"]})
        side = seen.get("direction", 0)
        if side:
            qty = side * contracts(account.margin_balance_xbt, reference_price(account, bars), self.cfg.leverage,
                                   self.taker_fee)
            reason = (f"motif: forecast {seen['forecast']:+.3%} over {self.cfg.horizon} min, "
                      f"{seen['agreement']:.0%} of neighbours agree")
            return Decision(Target(qty, self.cfg.style, reason), {**seen, "logic": "motif", "reason": reason})
        return Decision(trend.target, {**seen, "logic": "trend", "reason": trend.seen["reason"]})
