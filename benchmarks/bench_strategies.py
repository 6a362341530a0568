"""Strategy decision time per bar over a year of 1-minute history, against from-scratch baselines.

Data: the last 525,600 + BARS minutes of the real XBTUSD bars in ../shared/data (a seeded
random walk of the same length when that file is absent; the header says which). Each strategy
from `strategies.build` (the shipped defaults: trend 1054/370, motif DTW L=62 band 0.135 k=4
H=18 EMA 38) starts on a year's view, then decides BARS new bars one at a time on a sliding
one-year view, as the daemon's loop does; the start-up is timed apart. One thread per bar (the
start-up's batch search uses every core).

Baselines, timed in the same run on the same views:
- trend: talib.EMA(talib.EMA(closes, 1054), 370) over the whole year, recomputed per bar;
- motif: a from-scratch `knn` per bar: the same DTW query (the last L closes, same k, band
  and exclusion) over the same admissible windows, with the per-series precomputation redone;
  and, to show what the strategy adds, the bare search on a MotifIndex kept current.
Ratios are baseline time / strategy time. The run fails when the motif decision's mean or
90th percentile exceeds 50 ms.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import talib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
from sniper import _motif  # noqa: E402
from sniper.config import MotifConfig, StrategyConfig  # noqa: E402
from sniper.model import BAR_DTYPE, next_funding_time  # noqa: E402
from sniper.motif import MotifIndex, knn  # noqa: E402
from sniper.strategies import Account, Funding, build  # noqa: E402

YEAR = 525_600
REAL = ROOT.parent / "shared" / "data" / "xbtusd_1m.csv.gz"
FEE = 0.00075
CEILING_MS = 50.0
ACCOUNT = Account(margin_balance_xbt=1.0, mark=0.0)  # sized at the last close


def history(n: int) -> tuple[np.ndarray, str]:
    """The last n real minutes, or a random walk with a real-looking volatility."""
    bars = np.zeros(n, dtype=BAR_DTYPE)
    if REAL.exists():
        df = pd.read_csv(REAL).iloc[-n:]
        for name in BAR_DTYPE.names:
            bars[name] = df[name].to_numpy()
        return bars, f"real XBTUSD minutes ending {pd.to_datetime(bars['time'][-1], unit='s')} UTC"
    rng = np.random.default_rng(2024)
    closes = 8_000 * np.exp(np.cumsum(rng.normal(0, 8e-4, n)))
    bars["time"] = 1_546_300_800 + 60 * np.arange(n)
    for name in ("open", "high", "low", "close"):
        bars[name] = closes
    return bars, "a seeded random walk (../shared/data not found)"


def funding_at(now: float) -> Funding:
    t = next_funding_time(now)
    return Funding(next_time=t, rate=0.0001, past_times=(t - 28_800,), past_rates=(0.0001,))


def per_bar(fn, bars: np.ndarray, ends: range) -> list[float]:
    """Milliseconds of fn(view, now) for each sliding one-year view ending at an index in ends."""
    out = []
    for end in ends:
        view = bars[end - YEAR: end]
        now = float(view["time"][-1]) + 60
        t0 = time.perf_counter()
        fn(view, now)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def summary(ms: list[float]) -> str:
    q = np.percentile(ms, [50, 90])
    return f"mean {statistics.fmean(ms):8.3f}  median {q[0]:8.3f}  p90 {q[1]:8.3f}  max {max(ms):8.3f} ms"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=300, help="bars decided after the start-up")
    args = ap.parse_args(argv)
    bars, source = history(YEAR + args.bars)
    ends = range(YEAR + 1, YEAR + args.bars + 1)
    print(f"strategies: {YEAR:,}-bar sliding view, {args.bars} bars decided one by one, one thread per "
          f"bar; data: {source}; motif kernels built for {_motif.ISA}")

    results, startup = {}, {}
    wavelet = dataclasses.replace(StrategyConfig(), motif=dataclasses.replace(MotifConfig(), wavelet="db4"))
    configs = {n: dataclasses.replace(StrategyConfig(), name=n) for n in ("flat", "trend", "funding", "motif")}
    configs["motif + db4 wavelet"] = wavelet
    for label, cfg in configs.items():
        s = build(cfg, taker_fee=FEE)
        first = bars[:YEAR]
        t0 = time.perf_counter()
        s.decide(first, funding_at(float(first["time"][-1]) + 60), ACCOUNT, float(first["time"][-1]) + 60)
        startup[label] = time.perf_counter() - t0
        results[label] = per_bar(lambda v, now, s=s: s.decide(v, funding_at(now), ACCOUNT, now), bars, ends)

    m = MotifConfig()
    gap = max(math.ceil(m.window / 4), m.horizon)

    def knn_from_scratch(view, now):
        x = view["close"]
        query = x[-m.window:]
        stop = len(x) - m.window + 1 - gap + 1  # admissible starts: s < stop
        knn(x[: stop + m.window - 1], query, m.k, metric="dtw", window=m.dtw_window)

    def talib_from_scratch(view, now):
        talib.EMA(talib.EMA(view["close"], 1054), 370)

    index = MotifIndex(bars["close"][:YEAR])
    index.recent(m.window, m.k, horizon=m.horizon, metric="dtw", window=m.dtw_window)

    def search_only(view, now):
        index.append(view["close"][-1:])
        index.recent(m.window, m.k, horizon=m.horizon, metric="dtw", window=m.dtw_window)

    baselines = {"trend": ("talib EMA(EMA) from scratch", per_bar(talib_from_scratch, bars, ends)),
                 "motif": ("knn DTW from scratch", per_bar(knn_from_scratch, bars, ends))}
    search = per_bar(search_only, bars, ends)

    print("per-bar decision (after the start-up):")
    for label, ms in results.items():
        print(f"  {label:<20} {summary(ms)}   start-up {startup[label]:6.2f} s")
    print("baselines, per bar:")
    for name, ms in baselines.values():
        print(f"  {name:<30} {summary(ms)}")
    print("ratios (baseline mean / strategy mean, same run):")
    for label, (name, ms) in baselines.items():
        print(f"  {label}: {name:<30} {statistics.fmean(ms) / statistics.fmean(results[label]):10.1f}x")
    print("the motif decision's own search alone (MotifIndex.append + recent, index kept current):")
    print(f"  {'search only':<30} {summary(search)}")
    ok = True
    for label in ("motif", "motif + db4 wavelet"):
        ms = results[label]
        worst = max(statistics.fmean(ms), float(np.percentile(ms, 90)))
        good = worst <= CEILING_MS
        ok &= good
        print(f"ceiling: {label} mean and p90 <= {CEILING_MS:.0f} ms: {worst:.1f} ms "
              f"{'met' if good else 'NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
