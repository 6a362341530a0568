"""Motif search speed: sniper's exact k-NN against what a user could pick instead.

Data: a 568,000-point random walk, m = 100, query = a stretch of the series plus noise.
Timed, interleaved run by run, medians reported (one process, one thread each):
- sniper, `MotifIndex.knn` (per-series statistics and envelopes precomputed, as the daemon
  holds them) and one-shot `knn` (everything from scratch), ED and DTW with a 10 % band;
- stumpy.mass with the series' mean/std/finite/constant flags precomputed (its fairest use),
  then the same greedy top-k with exclusion; and stumpy.mass from scratch, against one-shot knn;
- a NumPy FFT distance profile with the series' FFT and statistics precomputed, same top-k;
- DTW brute force with aeon's numba dtw, timed on every 100th window and scaled up.
The ED baselines must return the same starts as sniper; the run fails otherwise.
Also timed: the no-look-ahead batch entry on 1 thread and on every core.
The header names the instruction set the kernels were built for (setup.py: x86-64-v3 where
supported, x86-64 baseline with SNIPER_PORTABLE=1); the floors apply to the default build.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # single thread for everyone, and no idle BLAS spinners

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import stumpy  # noqa: E402
from aeon.distances import dtw_distance, dtw_pairwise_distance  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from sniper import _motif  # noqa: E402
from sniper.motif import MotifIndex, _cpus, knn  # noqa: E402

N, M, STRETCH, NOISE = 568_000, 100, 300_000, 0.5
KS = (1, 10)
EXCLUSION = math.ceil(M / 4)
FLOORS = {"ED k=10 ms": 6.0, "ED k=10 vs stumpy": 5.0, "DTW k=10 ms": 60.0}


def topk(profile: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy top-k with exclusion on a full distance profile (repeated arg-min)."""
    d = profile.copy()
    starts = []
    for _ in range(k):
        s = int(np.argmin(d))
        starts.append(s)
        d[max(0, s - EXCLUSION + 1): s + EXCLUSION] = np.inf
    return np.array(starts), profile[starts]


class FftProfile:
    """z-normalised distance profile from an FFT sliding dot product; series side precomputed."""

    def __init__(self, x: np.ndarray, m: int):
        self.n, self.m = len(x), m
        self.size = 1 << (len(x) + m).bit_length()
        self.fx = np.fft.rfft(x, self.size)
        w = np.lib.stride_tricks.sliding_window_view(x, m)
        self.mu, self.sd = w.mean(axis=1), w.std(axis=1)

    def __call__(self, q: np.ndarray) -> np.ndarray:
        qt = np.fft.irfft(self.fx * np.fft.rfft(q[::-1], self.size), self.size)[self.m - 1:self.n]
        corr = (qt - self.m * q.mean() * self.mu) / (self.m * q.std() * self.sd)
        return np.sqrt(np.maximum(2 * self.m * (1 - corr), 0.0))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="interleaved runs (>= 11)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(2024)
    x = np.cumsum(rng.normal(size=N))
    q = x[STRETCH:STRETCH + M] + rng.normal(scale=NOISE, size=M)

    index = MotifIndex(x)
    mean_t, sd_t = stumpy.core.compute_mean_std(x, M)
    finite_t = stumpy.core.rolling_isfinite(x, M)
    const_t = stumpy.core.rolling_isconstant(x, M)
    fft = FftProfile(x, M)

    def stumpy_topk(k):
        return topk(stumpy.mass(q, x, M_T=mean_t, Σ_T=sd_t, T_subseq_isfinite=finite_t,
                                T_subseq_isconstant=const_t), k)

    methods = {}
    for k in KS:
        methods[f"sniper ED, MotifIndex, k={k}"] = lambda k=k: index.knn(q, k)
        methods[f"sniper ED, one-shot knn, k={k}"] = lambda k=k: knn(x, q, k)
        methods[f"stumpy.mass + top-k, k={k}"] = lambda k=k: stumpy_topk(k)
        methods[f"stumpy.mass one-shot + top-k, k={k}"] = lambda k=k: topk(stumpy.mass(q, x), k)
        methods[f"numpy FFT + top-k, k={k}"] = lambda k=k: topk(fft(q), k)
        methods[f"sniper DTW 10%, MotifIndex, k={k}"] = lambda k=k: index.knn(q, k, metric="dtw", window=0.1)

    # aeon's DTW on a sample of z-normalised windows; its window = the same 10 % band
    sample = np.lib.stride_tricks.sliding_window_view(x, M)[::100]
    sample = (sample - sample.mean(axis=1, keepdims=True)) / sample.std(axis=1, keepdims=True)
    qz = (q - q.mean()) / q.std()
    methods["aeon DTW brute force, every 100th window"] = (
        lambda: dtw_pairwise_distance(sample, qz[None, :], window=0.1))

    results = {name: fn() for name, fn in methods.items()}  # warm-up: numba JIT, caches
    for k in KS:
        ours = results[f"sniper ED, MotifIndex, k={k}"]
        for other in (f"sniper ED, one-shot knn, k={k}", f"stumpy.mass + top-k, k={k}",
                      f"stumpy.mass one-shot + top-k, k={k}", f"numpy FFT + top-k, k={k}"):
            if not np.array_equal(ours[0], results[other][0]):
                print(f"MISMATCH k={k}: sniper {ours[0]} vs {other} {results[other][0]}")
                return 1
    # same DTW (band, squared costs): aeon's distance of sniper's best DTW match
    (best,), (best_d,) = index.knn(q, 1, metric="dtw", window=0.1)
    w = x[best:best + M]
    aeon_d = math.sqrt(dtw_distance(qz, (w - w.mean()) / w.std(), window=0.1))

    times = {name: [] for name in methods}
    for _ in range(max(args.runs, 11)):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    ms = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
    ms["aeon DTW brute force, all windows (x100)"] = ms.pop("aeon DTW brute force, every 100th window") * 100

    print(f"motif search: n={N:,} random walk, m={M}, query = series[{STRETCH}:{STRETCH + M}] + "
          f"N(0, {NOISE}), exclusion={EXCLUSION}; medians of {max(args.runs, 11)} interleaved runs, "
          f"one thread")
    print(f"kernels built for {_motif.ISA} (SNIPER_PORTABLE=1 at build time: x86-64 baseline)")
    for name, v in ms.items():
        print(f"  {name:<45} {v:10.2f} ms")
    print("ratios (baseline time / sniper time, same run):")
    ratios = {}
    for k in KS:
        ours = ms[f"sniper ED, MotifIndex, k={k}"]
        for base in ("stumpy.mass + top-k", "numpy FFT + top-k"):
            ratios[f"ED k={k}: {base}"] = ms[f"{base}, k={k}"] / ours
        ratios[f"ED k={k}: stumpy.mass one-shot vs one-shot knn"] = (
            ms[f"stumpy.mass one-shot + top-k, k={k}"] / ms[f"sniper ED, one-shot knn, k={k}"])
        dtw = ms[f"sniper DTW 10%, MotifIndex, k={k}"]
        ratios[f"DTW k={k}: aeon brute force (x100)"] = ms["aeon DTW brute force, all windows (x100)"] / dtw
        ratios[f"DTW k={k}: stumpy.mass (ED) + top-k"] = ms[f"stumpy.mass + top-k, k={k}"] / dtw
    for name, v in ratios.items():
        print(f"  {name:<50} {v:8.1f}x")
    print(f"  (DTW 1-NN: start {best}, sniper distance {best_d:.6f}, aeon's for that window {aeon_d:.6f})")
    checks = {
        "ED k=10 ms": (ms["sniper ED, MotifIndex, k=10"], "<="),
        "ED k=10 vs stumpy": (ratios["ED k=10: stumpy.mass + top-k"], ">="),
        "DTW k=10 ms": (ms["sniper DTW 10%, MotifIndex, k=10"], "<="),
    }
    positions = np.arange(N - 400, N)
    batch = {}
    for _ in range(3):
        for jobs in (1, _cpus()):
            t0 = time.perf_counter()
            index.batch(M, 10, positions, n_jobs=jobs)
            batch.setdefault(jobs, []).append(time.perf_counter() - t0)
    one, many = (statistics.median(batch[j]) for j in (1, _cpus()))
    print(f"batch, ED k=10, {len(positions)} positions at the end: 1 thread {one * 1e3:.0f} ms, "
          f"{_cpus()} threads {many * 1e3:.0f} ms ({one / many:.2f}x)")
    ok = True
    print(f"floors ({_motif.ISA} build):")
    for name, (value, op) in checks.items():
        good = value <= FLOORS[name] if op == "<=" else value >= FLOORS[name]
        ok &= good
        print(f"  {name:<20} {value:8.2f} {op} {FLOORS[name]:<6} {'met' if good else 'NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
