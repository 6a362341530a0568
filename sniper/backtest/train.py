"""`sniper train`: search strategy parameters by backtesting every candidate.

A search varies the keys a space file names (sniper/backtest/space.py) over the config's
strategy, backtests each candidate on the in-sample period (sniper.backtest.engine: returns
net of fees and funding) and keeps the best by the objective:

    return   total return
    sharpe   the Sharpe ratio of the equity curve
    calmar   annual return / max drawdown, the drawdown floored at CALMAR_FLOOR so that a
             stretch without one (or without trades) does not divide by zero

Methods: `de`, SciPy's differential evolution over the space's box (integer and option
coordinates rounded; population and generations sized from the budget, see `de_shape`);
`random`, up to `budget` distinct uniform draws from the box; `grid`, every point. All three
hand their candidates to one map (`Evaluations`), which is SciPy's `workers=`, so every method
runs on the same pool: local processes by default, or a Dask cluster (`--dask`). The bars go to
each worker once (the pool's initializer, or a broadcast `client.scatter`), not with every task.

The output directory holds search.csv (one row per parameter set, appended and flushed as each
result arrives; the report's landscape), search.json (what the scores depend on), best.yaml
(the input config's text with the best values: a config `config.load` accepts), stats.json and
report.html, and the best parameters' backtests over the in-sample period (in_sample/) and the
held-out period (oos/). search.csv is the resume point: a re-run skips every parameter set it
holds, so with the same space and seed it picks up where it stopped (DE meets the same
candidates again, their scores come from the file). Ctrl-C stops the search, keeps search.csv
and writes best.yaml from what was scored; the exit status is then 130.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import differential_evolution
from tqdm import tqdm

from sniper import config, strategies
from sniper.backtest import UsageError, engine, space
from sniper.backtest.report import build_report
from sniper.backtest.study import _end, _iso, _when
from sniper.config import Config, TrainConfig

OBJECTIVES = ("return", "sharpe", "calmar")
METHODS = ("de", "random", "grid")
CALMAR_FLOOR = 0.01  # max drawdown assumed at least 1 % for calmar
INTERRUPTED = 130  # exit status after Ctrl-C, as a shell reports SIGINT
RANDOM_DRAWS = 50  # random search gives up finding new points after budget x this many draws
STATS = ("total_return", "annual_return", "sharpe", "sortino", "max_drawdown", "trades", "win_rate",
         "fees_xbt", "funding_received_xbt", "funding_paid_xbt", "exposure", "buy_hold_return")


def score(stats: dict, objective: str) -> float:
    """The objective of a backtest's stats, higher is better; NaN where the stats have none (the
    engine's None: no Sharpe ratio of an equity curve that never moves)."""
    def number(key: str) -> float:
        value = stats[key]
        return math.nan if value is None else float(value)

    if objective == "return":
        return number("total_return")
    if objective == "sharpe":
        return number("sharpe")
    return number("annual_return") / max(abs(number("max_drawdown")), CALMAR_FLOOR)


# ----------------------------------------------------------------------------- one evaluation, on a worker

_DATA: dict[str, tuple] = {}  # data key -> (bars, (funding times, rates)), one copy per worker process


def _install(key: str, data: tuple) -> None:
    """Hold the data in this worker. The engine's (hidden) progress bars get a thread lock:
    tqdm's default is a named semaphore, which a worker ended mid-backtest would leak."""
    if key not in _DATA:
        tqdm.set_lock(threading.RLock())
        _DATA[key] = data


def _pool_worker(key: str, data: tuple) -> None:
    """A local worker: Ctrl-C is the parent's to handle (it ends the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _install(key, data)


@dataclass(frozen=True)
class Trial:
    """Box point -> energy (minus the score, +inf when there is none): the function SciPy
    minimises and every method maps. Small and picklable; the bars are the worker's (_DATA)."""

    space: space.Space
    base: Config
    objective: str
    data: str  # key into _DATA
    start: int
    end: int

    def __call__(self, x) -> float:
        bars, funding = _DATA[self.data]
        try:
            cfg = self.space.apply(self.base, self.space.decode(x))
            s = score(engine.run(cfg, bars, funding, start=self.start, end=self.end).stats, self.objective)
        except space.Infeasible:
            return math.inf
        except engine.BacktestError as exc:
            if exc.field != "start":  # the same for every trial: the search stops on it
                raise
            return math.inf  # this trial's warm-up needs more history than there is before the start
        return -s if math.isfinite(s) else math.inf


def _indexed(task: tuple) -> tuple[int, float]:
    i, func, x = task
    return i, func(x)


def _dask_task(i: int, x, *, trial, data_key: str, data) -> tuple[int, float]:
    _install(data_key, data)
    return i, trial(x)


# ----------------------------------------------------------------------------- where evaluations run

class LocalPool:
    """Worker processes on this machine (forkserver: clean children, however many threads the
    parent runs), each given the data once by its initializer."""

    def __init__(self, workers: int, key: str, data: tuple) -> None:
        ctx = multiprocessing.get_context("forkserver")
        self._pool = ctx.Pool(workers, initializer=_pool_worker, initargs=(key, data))

    def imap(self, func: Callable, xs: list) -> Iterator[tuple[int, float]]:
        """(index, energy) of each point, as they finish."""
        yield from self._pool.imap_unordered(_indexed, [(i, func, x) for i, x in enumerate(xs)])

    def close(self, *, abort: bool = False) -> None:
        if abort:
            self._pool.terminate()
        else:
            self._pool.close()
        self._pool.join()


class DaskPool:
    """A Dask cluster: `local` starts a LocalCluster of worker processes on 127.0.0.1, a
    tcp://HOST:PORT address connects to a running scheduler. The data is scattered to every
    worker once and each task names it."""

    def __init__(self, address: str, workers: int | None, key: str, data: tuple) -> None:
        from distributed import Client, LocalCluster

        self._cluster = None
        try:
            if address == "local":
                # its worker processes inherit an ignored SIGINT: Ctrl-C is ours to handle, not theirs
                handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
                try:
                    self._cluster = LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
                                                 host="127.0.0.1", dashboard_address=None,
                                                 silence_logs=logging.ERROR)
                finally:
                    signal.signal(signal.SIGINT, handler)
                self._client = Client(self._cluster)
            else:
                self._client = Client(address, timeout=5)
        except OSError as exc:
            raise UsageError(f"--dask: cannot reach {address}: {exc}") from None
        self._key, self._data = key, self._client.scatter(data, broadcast=True)

    def imap(self, func: Callable, xs: list) -> Iterator[tuple[int, float]]:
        from distributed import as_completed

        futures = self._client.map(_dask_task, range(len(xs)), xs, trial=func, data_key=self._key, data=self._data,
                                   pure=False)
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            self._client.cancel(futures)

    def close(self, *, abort: bool = False) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


# ----------------------------------------------------------------------------- results

class Results:
    """search.csv: `trial`, `score`, one column per parameter (space.cell values); a row is
    appended and flushed per evaluation. Parameter sets are keyed by their cells."""

    def __init__(self, path: Path, sp: space.Space) -> None:
        self.path, self.space = path, sp
        self.scores: dict[tuple[str, ...], float] = {}
        header = ["trial", "score", *sp.names]
        raw = path.read_bytes() if path.exists() else b""
        if not raw.endswith(b"\n"):  # a kill cut the last row short: it goes, and runs again
            raw = raw[: raw.rfind(b"\n") + 1]
            if path.exists():
                os.truncate(path, len(raw))
        rows = list(csv.reader(raw.decode().splitlines()))
        if rows and rows[0] != header:
            raise UsageError(f"--out: {path} holds another space's results (columns {', '.join(rows[0])}); "
                             "use a new --out")
        for row in rows[1:]:
            self.scores[tuple(row[2:])] = float(row[1])
        self.resumed = len(self.scores)
        self._file = path.open("a", newline="")
        self._csv = csv.writer(self._file, lineterminator="\n")
        if not rows:
            self._csv.writerow(header)
            self._file.flush()

    def add(self, key: tuple[str, ...], energy: float) -> None:
        value = -energy if math.isfinite(energy) else math.nan
        self.scores[key] = value
        self._csv.writerow([len(self.scores), repr(value), *key])
        self._file.flush()

    def energy(self, key: tuple[str, ...]) -> float:
        value = self.scores[key]
        return -value if math.isfinite(value) else math.inf

    def best(self) -> tuple[tuple, float] | None:
        """(parameter values, score) of the best finite score, the first of equals; None without one."""
        scored = [(s, k) for k, s in self.scores.items() if math.isfinite(s)]
        if not scored:
            return None
        s, key = max(scored, key=lambda sk: sk[0])
        return tuple(p.parse(c) for p, c in zip(self.space.params, key, strict=True)), s

    def close(self) -> None:
        self._file.close()


class Evaluations:
    """The map every method evaluates through (SciPy's `workers=`): points already scored come
    from the results, each new parameter set runs once on the pool, and the progress bar counts
    every point with the best score so far beside it."""

    def __init__(self, sp: space.Space, pool, results: Results, bar: tqdm) -> None:
        self.space, self.pool, self.results, self.bar = sp, pool, results, bar

    def __call__(self, func: Callable, xs: Iterable) -> list[float]:
        xs = list(xs)
        keys = [tuple(map(space.cell, self.space.decode(x))) for x in xs]
        todo: dict[tuple[str, ...], int] = {}
        for i, key in enumerate(keys):
            if key not in self.results.scores:
                todo.setdefault(key, i)
        self.bar.update(len(xs) - len(todo))
        order = list(todo)
        try:
            for j, energy in self.pool.imap(func, [xs[todo[k]] for k in order]):
                self.results.add(order[j], energy)
                best = self.results.best()
                self.bar.set_postfix_str(f"best {best[1]:.4g}" if best else "no score yet", refresh=False)
                self.bar.update(1)
        except engine.BacktestError as exc:  # as a UsageError, which SciPy passes on as it is
            raise as_usage(exc) from None
        return [self.results.energy(k) for k in keys]


def de_shape(budget: int, dims: int) -> tuple[int, int, int]:
    """(SciPy popsize multiplier, population, generations after the first) that spend at most
    `budget` backtests: a population of 5 to 15 per parameter (SciPy's default is 15, at least 5
    members) and as many generations as the rest allows."""
    per = min(15, max(1, budget // (5 * dims)))
    members = max(5, per * dims)
    if budget < members:
        raise UsageError(f"--budget: differential evolution over {dims} parameters needs at least {members} "
                         f"backtests (one population), got {budget}")
    return per, members, budget // members - 1


def search(method: str, trial: Trial, evaluations: Evaluations, budget: int, seed: int) -> str:
    """Run the method to its end (every result lands in evaluations.results); how it ended."""
    sp = trial.space
    if method == "de":
        per, members, generations = de_shape(budget, len(sp.params))
        evaluations.bar.reset(total=members * (generations + 1))
        # tol=0: the budget is the stopping rule (SciPy's relative tolerance weighs the scores' spread
        # against their mean, which says nothing when the objective sits near zero); a population
        # whose scores are all equal still stops it
        result = differential_evolution(trial, sp.bounds, maxiter=generations, popsize=per, rng=seed, tol=0,
                                        polish=False, updating="deferred", workers=evaluations,
                                        integrality=sp.integrality, init="latinhypercube")
        return f"differential evolution: {result.message} ({result.nit} generations after the first)"
    if method == "grid":
        points = [sp.encode(values) for values in sp.grid()]
    else:
        points = random_points(sp, budget, seed)
    evaluations.bar.reset(total=len(points))
    evaluations(trial, points)
    return f"{method}: {len(points)} points"


def random_points(sp: space.Space, budget: int, seed: int) -> list[np.ndarray]:
    """Up to `budget` uniform draws from the box with distinct parameter values (fewer when the
    space has fewer), the same for the same seed."""
    rng = np.random.default_rng(seed)
    integral = sp.integrality
    lo, hi = (np.array(b, dtype=float) for b in zip(*sp.bounds, strict=True))
    lo, hi = np.where(integral, lo - 0.5, lo), np.where(integral, hi + 0.5, hi)
    points, seen = [], set()
    for _ in range(budget * RANDOM_DRAWS):
        x = rng.uniform(lo, hi)
        key = sp.decode(x)
        if key not in seen:
            seen.add(key)
            points.append(x)
            if len(points) == budget:
                break
    return points


# ----------------------------------------------------------------------------- the command

@dataclass(frozen=True)
class Plan:
    """A checked command line: everything the run needs, read and sliced."""

    cfg: Config
    text: str  # the config file as written, for best.yaml
    space: space.Space
    out: Path
    method: str
    objective: str
    budget: int
    seed: int
    bars: np.ndarray
    funding: tuple[np.ndarray, np.ndarray]
    in_sample: tuple[int, int]  # [start, end) epoch s of bar open times; walk-forward: the whole span
    oos: tuple[int, int] | None  # None for a walk-forward, whose every test window is out of sample
    dask: str | None
    workers: int | None
    walk_forward: tuple[float, float] | None = None  # (train days, test days)


def _start(args: argparse.Namespace, times: np.ndarray, warmup: int) -> int:
    """--from, by default the first bar after the strategy's warm-up (a history too short for
    one is refused)."""
    if warmup >= len(times):
        raise UsageError(f"--bars/--db: the strategy needs {warmup:,} bars of history, the history holds "
                         f"{len(times):,}")
    return args.start if args.start is not None else int(times[warmup])


def _periods(args: argparse.Namespace, times: np.ndarray, warmup: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """In-sample and held-out [start, end) from the options; by default the history after the
    config's warm-up, its first 80 % in sample and the rest held out, each period's end the
    other's start. Either period needs `warmup` bars before it."""
    first, last = int(times[0]), int(times[-1]) + 60
    start = _start(args, times, warmup)
    oos_end = args.oos_end if args.oos_end is not None else last
    end = args.end if args.end is not None else args.oos_start
    if end is None:
        end = start + (oos_end - start) * 4 // 5 // 60 * 60
    oos_start = args.oos_start if args.oos_start is not None else end
    if start >= end:
        raise UsageError(f"--from/--to: empty in-sample period: from {_iso(start)} up to {_iso(end)} "
                         "(a bare --to date includes its day)")
    if oos_start >= oos_end:
        raise UsageError(f"--oos-from/--oos-to: empty out-of-sample period: from {_iso(oos_start)} up to "
                         f"{_iso(oos_end)}")
    if oos_start < end and start < oos_end:
        raise UsageError(f"--oos-from: the out-of-sample period ({_iso(oos_start)} – {_iso(oos_end)}) overlaps "
                         f"the in-sample one ({_iso(start)} – {_iso(end)})")
    covered = f"the history holds {_iso(first)} – {_iso(last)}"
    for option, (a, b) in (("--from/--to", (start, end)), ("--oos-from/--oos-to", (oos_start, oos_end))):
        if not np.any((times >= a) & (times < b)):
            raise UsageError(f"{option}: no bars from {_iso(a)} up to {_iso(b)} ({covered})")
        before = int(np.searchsorted(times, a))
        if before < max(warmup, 1):
            raise UsageError(f"{option.split('/')[0]}: the strategy needs {max(warmup, 1):,} bars of history before "
                             f"{_iso(a)}, the history holds {before:,} ({covered})")
    return (start, end), (oos_start, oos_end)


def _span(args: argparse.Namespace, times: np.ndarray, warmup: int) -> tuple[int, int]:
    """A walk-forward's [start, end): --from (default: the first bar after the warm-up) up to
    --to (default: the history's end)."""
    start = _start(args, times, warmup)
    end = args.end if args.end is not None else int(times[-1]) + 60
    if start >= end:
        raise UsageError(f"--from/--to: empty span: from {_iso(start)} up to {_iso(end)} (a bare --to date "
                         "includes its day)")
    return start, end


def _dask_address(text: str) -> str:
    if text == "local" or re.fullmatch(r"tcp://[^\s/:]+:\d{1,5}", text):
        return text
    raise argparse.ArgumentTypeError(f"expected local or tcp://HOST:PORT, got {text!r}")


def plan(args: argparse.Namespace) -> Plan:
    from sniper.backtest import read_history

    if not args.config:
        raise UsageError("--config: needed: the config whose strategy the search varies")
    if args.dask and args.dask != "local" and args.workers:
        raise UsageError(f"--workers: a running cluster ({args.dask}) has its own workers; drop --workers")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a directory")
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        raise UsageError(f"--config: {exc}") from None
    try:
        sp = space.load(args.space, cfg)
    except config.ConfigError as exc:
        raise UsageError(f"--space: {exc}") from None
    defaults: TrainConfig = cfg.train
    method, budget = args.method or defaults.method, args.budget or defaults.budget
    if method == "de":
        de_shape(budget, len(sp.params))  # refuses a budget below one population
    if method == "grid":
        try:
            size = sp.size()
        except ValueError as exc:
            raise UsageError(f"--method: grid: {exc}") from None
        if size > budget:
            raise UsageError(f"--budget: the grid has {size:,} points, more than the budget of {budget:,}; raise "
                             "--budget (or train.budget) or list fewer values")
    bars, f_times, f_rates = read_history(args, funding=True)
    if not len(bars):
        raise UsageError("--bars/--db: the history holds no bars")
    warmup = strategies.build(cfg.strategy, taker_fee=cfg.sim.taker_fee).warmup
    if args.walk_forward:
        for option, value in (("--oos-from", args.oos_start), ("--oos-to", args.oos_end)):
            if value is not None:
                raise UsageError(f"{option}: not with --walk-forward, whose every test window is out of sample "
                                 "(--from/--to bound the whole span)")
        in_sample, oos = _span(args, bars["time"], warmup), None
    else:
        in_sample, oos = _periods(args, bars["time"], warmup)
    return Plan(cfg, Path(args.config).read_text(), sp, out, method, args.objective or defaults.objective,
                budget, defaults.seed if args.seed is None else args.seed,
                bars, (np.asarray(f_times, dtype=np.int64), np.asarray(f_rates, dtype=np.float64)),
                in_sample, oos, args.dask, args.workers, args.walk_forward)


def window_data(p: Plan, period: tuple[int, int]) -> tuple:
    """The data of a backtest of `period`: every bar before its end (the history any trial's
    warm-up and lookback may want; the engine slices its view) and every settlement."""
    return p.bars[: np.searchsorted(p.bars["time"], period[1])], p.funding


def fingerprint(p: Plan, data: tuple) -> dict:
    """What the scores depend on: the config (all but its train section), the objective, the
    in-sample period, the data and the space."""
    bars, (times, rates) = data
    digest = hashlib.sha256(bars.tobytes() + times.tobytes() + rates.tobytes()).hexdigest()[:16]
    base = dataclasses.replace(p.cfg, train=TrainConfig(), source="")
    return {"config": hashlib.sha256(repr(base).encode()).hexdigest()[:16], "objective": p.objective,
            "in_sample": [_iso(p.in_sample[0]), _iso(p.in_sample[1])], "data": digest,
            "space": p.space.describe()}


def _check_resume(out: Path, inputs: dict) -> None:
    """Refuse to mix scores of other inputs into search.csv."""
    meta, results = out / "search.json", out / "search.csv"
    if meta.is_file():
        before = json.loads(meta.read_text())
        for name, value in inputs.items():
            if before.get(name) != value:
                raise UsageError(f"--out: {out} holds a search with another {name} ({before.get(name)} there, "
                                 f"{value} now); use a new --out or remove it")
    elif results.exists():
        raise UsageError(f"--out: {results} is not from sniper train (no search.json beside it); use a new --out")
    else:
        meta.write_text(json.dumps(inputs, indent=1) + "\n")


def as_usage(exc: engine.BacktestError, *, oos: bool = False) -> UsageError:
    """The engine's refusal of a period or of the data, as the option it is about."""
    option = {"start": "--oos-from" if oos else "--from", "end": "--oos-to" if oos else "--to",
              "funding": "--funding"}.get(exc.field, "--bars")
    return UsageError(f"{option}: {exc}")


def _backtest(p: Plan, cfg: Config, period: tuple[int, int], label: str, out: Path) -> dict:
    """Backtest `cfg` over `period`, write it (with its report) into `out`; its summary."""
    bars, funding = window_data(p, period)
    print(f"sniper train: the best parameters {label}, {_iso(period[0])} – {_iso(period[1])}", file=sys.stderr)
    result = engine.run(cfg, bars, funding, start=period[0], end=period[1], progress=True)
    result.write(out)
    s = score(result.stats, p.objective)
    return {"from": _iso(period[0]), "to": _iso(period[1]), "score": s if math.isfinite(s) else None,
            **{k: result.stats[k] for k in STATS if k in result.stats}}


def write_best(p: Plan, cfg: Config, in_score: float, tried: int) -> Path:
    path = p.out / "best.yaml"
    path.write_text(f"# sniper train: the best of {tried} parameter sets by {p.objective} ({in_score:.4g} in sample "
                    f"{_iso(p.in_sample[0])} – {_iso(p.in_sample[1])}); {p.cfg.source} with the values of "
                    f"{p.space.source}\n" + space.render(p.text, cfg, p.space))
    return path


def open_pool(p: Plan, key: str, data: tuple) -> tuple[LocalPool | DaskPool, str]:
    """The pool every evaluation runs on, holding `data` under `key`; and what to call it."""
    if p.dask:
        return DaskPool(p.dask, p.workers, key, data), f"Dask {p.dask}"
    workers = p.workers or len(os.sched_getaffinity(0))
    return LocalPool(workers, key, data), f"{workers} local processes"


def prepare(p: Plan) -> dict:
    """Create p.out for a search of p.in_sample, refusing one that holds another search's
    results; what its scores depend on (search.json)."""
    p.out.mkdir(parents=True, exist_ok=True)
    inputs = fingerprint(p, window_data(p, p.in_sample))
    _check_resume(p.out, inputs)
    return inputs


def run_search(p: Plan, pool, key: str, where: str) -> tuple[Results, str | None]:
    """Search p.in_sample (`prepare`d) on `pool`, which holds the bars under `key`; search.csv
    in p.out. (The results, how the search ended: None after Ctrl-C.)"""
    trial = Trial(p.space, p.cfg, p.objective, key, *p.in_sample)
    results = Results(p.out / "search.csv", p.space)
    print(f"sniper train: {p.method} over {len(p.space.params)} parameters, objective {p.objective}, budget "
          f"{p.budget}, seed {p.seed}, in sample {_iso(p.in_sample[0])} – {_iso(p.in_sample[1])}, on {where}"
          + (f"; resuming: {results.resumed} parameter sets in {results.path}" if results.resumed else ""),
          file=sys.stderr)
    try:
        with tqdm(total=p.budget, desc=f"train {p.method}", unit="backtest", file=sys.stderr) as bar:
            return results, search(p.method, trial, Evaluations(p.space, pool, results, bar), p.budget, p.seed)
    except KeyboardInterrupt:
        return results, None
    finally:
        results.close()


def train(p: Plan) -> int:
    """Search, then write the best parameters and their backtests; the exit status."""
    key = prepare(p)["data"]
    began, pool, results, ended = time.monotonic(), None, None, None
    try:
        pool, where = open_pool(p, key, window_data(p, p.in_sample))
        results, ended = run_search(p, pool, key, where)
    except KeyboardInterrupt:
        pass
    finally:
        if pool is not None:
            pool.close(abort=ended is None)
    if results is None:
        print("sniper train: interrupted before the search began", file=sys.stderr)
        return INTERRUPTED
    interrupted = ended is None
    unscored = sum(not math.isfinite(v) for v in results.scores.values())
    stats = {"method": p.method, "objective": p.objective, "budget": p.budget, "seed": p.seed,
             "parameter_sets": len(results.scores), "resumed": results.resumed, "unscored": unscored,
             "ended": ended or "interrupted",
             "search_seconds": round(time.monotonic() - began, 1)}
    best = results.best()
    if best is None:
        print(f"sniper train: none of {len(results.scores)} parameter sets could be scored; see {results.path}",
              file=sys.stderr)
        return INTERRUPTED if interrupted else 1
    values, in_score = best
    cfg = p.space.apply(p.cfg, values)
    best_yaml = write_best(p, cfg, in_score, len(results.scores))
    stats["best"] = dict(zip(p.space.names, values, strict=True))
    stats["in_sample"] = {"score": in_score}
    try:
        if not interrupted:
            stats["in_sample"] = _backtest(p, cfg, p.in_sample, "in sample", p.out / "in_sample")
            stats["out_of_sample"] = _backtest(p, cfg, p.oos, "out of sample", p.out / "oos")
    except KeyboardInterrupt:
        interrupted = True
    except engine.BacktestError as exc:
        raise as_usage(exc, oos=True) from None
    stats["interrupted"] = interrupted
    (p.out / "stats.json").write_text(json.dumps(stats, indent=1, default=str) + "\n")
    report = build_report(p.out)
    oos = stats["out_of_sample"]["score"] if "out_of_sample" in stats else "missing"
    print(f"best {p.objective}: {in_score:.4g} in sample, "
          + ("none out of sample (no backtest: interrupted)" if oos == "missing" else
             "none out of sample (its equity never moved)" if oos is None else f"{oos:.4g} out of sample")
          + " with " + ", ".join(f"{k} = {v}" for k, v in stats["best"].items()))
    print(best_yaml)
    print(report)
    if interrupted:
        print(f"sniper train: interrupted; {len(results.scores)} parameter sets kept in {results.path}: the same "
              "command resumes the search", file=sys.stderr)
        return INTERRUPTED
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    p = plan(args)
    if p.walk_forward:
        from sniper.backtest.forward import train_forward

        return train_forward(p)
    return train(p)


def add_cli(sub) -> None:
    from sniper.backtest import add_history_args, handler, positive_int
    from sniper.backtest.cli import windows

    p = sub.add_parser(
        "train", help="search strategy hyperparameters by backtest",
        description="Search the strategy keys a space file names (differential evolution, random or grid) by "
                    "backtesting each candidate in sample, net of fees and funding; backtest the best out of "
                    "sample. Writes search.csv (resumable), best.yaml (a ready config), stats.json, in_sample/, "
                    "oos/ and report.html into --out. Defaults come from the config's train section.")
    p.add_argument("--space", required=True, metavar="FILE",
                   help="search space (YAML): strategy.KEY: {low: .., high: ..[, log: true]} | {choices: [..]} "
                        "| {values: [..]}")
    p.add_argument("--out", required=True, metavar="DIR", help="results directory (a re-run resumes it)")
    p.add_argument("--method", choices=METHODS, help="de (SciPy differential evolution), random or grid "
                                                     "(default: train.method)")
    p.add_argument("--budget", type=positive_int, metavar="N", help="backtests at the most (default: train.budget)")
    p.add_argument("--seed", type=_seed, metavar="S", help="random seed (default: train.seed)")
    p.add_argument("--objective", choices=OBJECTIVES, help="return, sharpe or calmar (default: train.objective)")
    p.add_argument("--from", dest="start", type=_when, metavar="DATE", help="in-sample start (UTC date or time; default: "
                                                                              "the history's start after the warm-up)")
    p.add_argument("--to", dest="end", type=_end, metavar="DATE",
                   help="in-sample end: the last day included, or the time it stops before (default: --oos-from, "
                        "else 80 %% of the history)")
    p.add_argument("--oos-from", dest="oos_start", type=_when, metavar="DATE",
                   help="out-of-sample start (default: the in-sample end)")
    p.add_argument("--oos-to", dest="oos_end", type=_end, metavar="DATE",
                   help="out-of-sample end (default: the history's end)")
    p.add_argument("--walk-forward", type=windows, metavar="TRAIN:TEST",
                   help="step forward: search on TRAIN days, backtest the best on the TEST days after them, roll "
                        "by TEST over the --from/--to span; the test windows concatenated are the result "
                        "(windows/ holds each search)")
    p.add_argument("--dask", type=_dask_address, metavar="ADDR",
                   help="run on a Dask cluster: tcp://HOST:PORT of its scheduler, or local (a LocalCluster on "
                        "127.0.0.1)")
    p.add_argument("--workers", type=positive_int, metavar="N",
                   help="local worker processes (default: every core), or with --dask local the cluster's (2)")
    add_history_args(p, funding=True)
    p.set_defaults(handler=handler(p, _cmd_train))


def _seed(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)
