"""The backtest engine: the daemon's strategies, bar by bar over history, through a fill model.

One loop for both fill models (fills.py): at each bar's close the model plays the bar (fills,
liquidation, the funding settlements due), the strategy decides on the bars up to that close
(a sliding view of `strategy.lookback_minutes`, as the daemon's), the risk gate caps the
target and the model pursues it. Nothing after a close reaches a decision made at it: the view
ends there, the funding it sees is what was announced and settled by then, the instrument is
read from the history before the start, and the motif strategy's searches done ahead over the
whole span (`presearch`) each read only the windows before their bar (tests/test_backtest_lookahead
replaces every bar after t with noise). Bars before `start` are history (warm-up, the motif
search space) and never traded; the run ends at the close of the last bar before `end`, an
open position marked there.

Deterministic: the same config, bars and funding give the same result (the book model's feed
and exchange are seeded by `sim.seed`).

`walk_forward` rolls train/test windows and concatenates the test windows' results: out of
sample, each test window run with the parameters a `fit` picked on the train window before it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from sniper import strategies
from sniper.backtest import report as report_mod
from sniper.backtest import stats
from sniper.backtest.fills import DEFAULT_SLIPPAGE, Ledger, model_for
from sniper.config import Config
from sniper.history import HistoryError, check_bars
from sniper.loop import CLOSE_GRACE_S
from sniper.model import BAR_DTYPE, FUNDING_INTERVAL_S, MINUTE, SATOSHI, iso, next_funding_time
from sniper.sim.funding import Funding as Schedule
from sniper.strategies import Funding

PROGRESS_EVERY = 10_000  # bars between progress-bar updates


class BacktestError(ValueError):
    """Unusable inputs for a run; `field` names which (start, end, bars, funding)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class BacktestResult:
    """One run's records (report.py's file formats) and statistics."""

    trades: pd.DataFrame  # trades.csv
    equity: pd.DataFrame  # equity.csv, plus the position held
    stats: dict  # stats.json
    forecasts: pd.DataFrame | None = None  # forecasts.csv (strategies that forecast)
    funding: pd.DataFrame | None = None  # funding.csv: every settlement of the span
    fills: pd.DataFrame | None = None  # fills.csv: time, qty (signed), price, fee_xbt, liquidity
    decisions: pd.DataFrame | None = None  # every decision: time, qty, style, logic (not written)
    windows: pd.DataFrame | None = None  # walk-forward: one row per window (windows.csv)

    def write(self, out_dir, *, report: bool = True) -> Path:
        """Write the CSVs and stats.json into `out_dir` (created), and report.html unless told not to."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in (("trades", self.trades), ("equity", self.equity), ("forecasts", self.forecasts),
                            ("funding", self.funding), ("fills", self.fills), ("windows", self.windows)):
            if frame is not None:
                frame.to_csv(out / f"{name}.csv", index=False)
        (out / "stats.json").write_text(json.dumps(_jsonable(self.stats), indent=2, allow_nan=False) + "\n")
        if report:
            report_mod.build_report(out)
        return out


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# ------------------------------------------------------------------------------ inputs
def _when(t: float) -> str:
    return iso(t)[:16].replace("T", " ")


def _span(bars: np.ndarray, start: int | None, end: int | None, warmup: int) -> tuple[int, int]:
    """(first traded bar, one past the last): bars[first:last] are traded, bars[:first] history."""
    times = bars["time"]
    lo, hi = int(times[0]), int(times[-1])
    covered = f"the history holds {_when(lo)} to {_when(hi + MINUTE)}"
    if start is not None and not lo < start <= hi:
        raise BacktestError("start", f"start {_when(start)} is outside the bars: {covered}, and the first "
                                     "bar is history only")
    if end is not None and not lo < end <= hi + MINUTE:
        raise BacktestError("end", f"end {_when(end)} is outside the bars: {covered}")
    if start is not None and end is not None and start >= end:
        raise BacktestError("start", f"empty range: start {_when(start)} is not before end {_when(end)}")
    first = max(warmup, 1) if start is None else int(np.searchsorted(times, start))
    last = len(bars) if end is None else int(np.searchsorted(times, end))
    if first < 1 or first < warmup:
        raise BacktestError("start", f"the strategy needs {warmup:,} bars of history before its first traded "
                                     f"bar, {first:,} come before {_when(times[min(first, len(times) - 1)])} "
                                     f"({covered})")
    if first >= last:
        raise BacktestError("start" if start is not None else "bars",
                            f"empty range: no bar to trade from {_when(times[min(first, len(times) - 1)])} "
                            f"up to {_when(end if end is not None else hi + MINUTE)} ({covered})")
    return first, last


def _history(funding, bars: np.ndarray, first: int, last: int) -> list[tuple[float, float]]:
    """The funding history as (time, rate) pairs; it must reach the span's last settlement."""
    times, rates = (np.asarray(a) for a in funding)
    if len(times) != len(rates):
        raise BacktestError("funding", f"{len(times)} funding times but {len(rates)} rates")
    if not len(times):
        raise BacktestError("funding", "no funding history: the backtest pays funding at every settlement")
    needed = next_funding_time(float(bars["time"][last - 1] + MINUTE)) - FUNDING_INTERVAL_S  # the span's last
    if float(times.max()) < needed and needed > float(bars["time"][first - 1]):
        raise BacktestError("funding", f"the funding history ends at {_when(float(times.max()))}, before the "
                                       f"settlement of {_when(needed)} the backtest reaches")
    return sorted(zip(times.astype(float).tolist(), rates.astype(float).tolist(), strict=True))


class _Settlements:
    """The funding schedule as the strategy sees it: the simulator's rates (sim.funding), what
    is announced for the next settlement and every settlement up to now."""

    def __init__(self, history: list[tuple[float, float]], now: float) -> None:
        self.schedule = Schedule("XBTUSD", history, now)
        past = [(t, r) for t, r in history if t <= now]
        self._times = np.empty(len(past) + len(history) + 4, dtype=np.float64)
        self._rates = np.empty_like(self._times)
        self._n = len(past)
        if past:
            self._times[: self._n], self._rates[: self._n] = zip(*past, strict=True)
        self.settled: list[tuple[float, float]] = []  # the span's settlements
        self.view = self._view()

    @property
    def next(self) -> float:
        return self.schedule.next

    def settle_until(self, t: float) -> tuple:
        """Settle everything due by `t`: ((time, rate), ...)."""
        due = []
        while self.schedule.next <= t:
            when = self.schedule.next
            rate, _ = self.schedule.settle(when)
            due.append((when, rate))
            if self._n == len(self._times):
                self._times, self._rates = np.resize(self._times, 2 * self._n), np.resize(self._rates, 2 * self._n)
            self._times[self._n], self._rates[self._n] = when, rate
            self._n += 1
        self.settled += due
        self.view = self._view()
        return tuple(due)

    def _view(self) -> Funding:
        nxt = self.schedule.next
        times, rates = self._times[: self._n], self._rates[: self._n]
        times.flags.writeable = rates.flags.writeable = False
        return Funding(next_time=nxt, rate=self.schedule.rate_at(nxt), past_times=times, past_rates=rates)


# ------------------------------------------------------------------------------ the run
def run(cfg: Config, bars: np.ndarray, funding: tuple[np.ndarray, np.ndarray], *, start: int | None = None,
        end: int | None = None, fill: str = "bars", progress: bool = False,
        slippage: float = DEFAULT_SLIPPAGE) -> BacktestResult:
    """Backtest `cfg.strategy` over `bars` (BAR_DTYPE, open times) with the funding history
    (times, rates). start/end: epoch seconds of bar open times, end exclusive; None: from the
    strategy's warm-up / to the last bar. fill: "bars" or "book" (fills.py). slippage: the bars
    model's market-order slippage, a fraction of the price."""
    if not isinstance(bars, np.ndarray) or bars.dtype != BAR_DTYPE or not len(bars):
        raise BacktestError("bars", f"expected a non-empty BAR_DTYPE array, got {getattr(bars, 'dtype', type(bars))}"
                                    f" of {len(bars) if hasattr(bars, '__len__') else '?'} rows")
    strategy = strategies.build(cfg.strategy, taker_fee=cfg.sim.taker_fee,
                                min_liquidation_distance=cfg.risk.min_liquidation_distance)
    lookback = cfg.strategy.lookback_minutes
    first, last = _span(bars, start, end, strategy.warmup)
    try:  # the bars the run reads: the span and the lookback before it (a trainer's long array once)
        check_bars(bars[max(0, first - 1 - lookback): last])
    except HistoryError as exc:
        raise BacktestError("bars", str(exc)) from None
    history = _history(funding, bars, first, last)
    model, risk, assumptions = model_for(fill, cfg, bars, first, last, history, slippage=slippage)
    settlements = _Settlements(history, float(bars["time"][first - 1]))
    if hasattr(strategy, "presearch"):  # the motif strategy's searches, ahead and on every core
        with tqdm(total=last - first, desc=f"search {strategy.name}", unit=" bars", unit_scale=True,
                  disable=not progress, mininterval=0.5) as searched:
            strategy.presearch(bars, first, last, lookback, progress=searched.update)
    closes_at = (bars["time"][first - 1: last] + MINUTE).astype(np.float64).tolist()
    decisions, forecasts = [], []
    forecasting = strategy.name == "motif"
    advance, pursue, decide, cap, record = model.advance, model.pursue, strategy.decide, risk.cap_target, decisions.append
    bar = tqdm(total=last - first, desc=f"backtest {strategy.name}", unit=" bars", unit_scale=True,
               disable=not progress, mininterval=0.5)
    funding_now, next_settlement, none, grace = settlements.view, settlements.next, (), CLOSE_GRACE_S
    final = last - 1
    for i, close_at in enumerate(closes_at, first - 1):
        if next_settlement <= close_at:
            account = advance(i, settlements.settle_until(close_at))
            funding_now, next_settlement = settlements.view, settlements.next
        else:
            account = advance(i, none)
        if i == final:
            break
        d = decide(bars[i + 1 - lookback if i >= lookback else 0: i + 1], funding_now, account, close_at + grace)
        target, seen = d.target, d.seen
        if target is None:
            record((close_at, None, None, seen.get("logic")))
        else:
            record((close_at, target.qty, target.style, seen.get("logic")))
            pursue(cap(target, model.view))
        if forecasting:
            forecasts.append((close_at, seen.get("forecast"), seen.get("raw_forecast")))
        if progress and not (i - first + 2) % PROGRESS_EVERY:
            bar.update(PROGRESS_EVERY)
    bar.update(bar.total - bar.n)
    bar.close()
    if hasattr(model, "close"):
        model.close()
    return _result(cfg, bars, first, last, model.ledger, settlements.settled, decisions,
                   forecasts if forecasting else None, fill, assumptions)


def _result(cfg: Config, bars: np.ndarray, first: int, last: int, ledger: Ledger, settled: list, decisions: list,
            forecasts: list | None, fill: str, assumptions: str) -> BacktestResult:
    span = bars[first - 1: last]
    equity = pd.DataFrame({"time": span["time"] + MINUTE, "equity_xbt": np.asarray(ledger.balance) / SATOSHI,
                           "close": span["close"], "position": np.asarray(ledger.position, dtype=np.int64)})
    fills = pd.DataFrame(ledger.fills, columns=["time", "qty", "price", "fee", "liquidity"])
    fills["fee_xbt"] = fills.pop("fee") / SATOSHI
    paid = {t: (q, p) for t, _, q, p in ledger.funding}
    funding = pd.DataFrame(
        [(t, r, *paid.get(t, (0, 0))) for t, r in settled], columns=["time", "rate", "position", "paid"])
    funding["funding_xbt"] = -funding.pop("paid") / SATOSHI
    trades = stats.round_trips(ledger.fills, ledger.funding, end_time=float(equity["time"].iloc[-1]),
                               last_close=float(span["close"][-1]))
    summary = {"strategy": cfg.strategy.name, "fill_model": fill, "assumptions": assumptions,
               **stats.compute(equity, trades, fills, funding),
               "fees": {"maker": cfg.sim.maker_fee, "taker": cfg.sim.taker_fee}, "seed": cfg.sim.seed}
    return BacktestResult(trades, equity, summary, _forecasts(forecasts, bars, first, last, cfg), funding, fills,
                          pd.DataFrame(decisions, columns=["time", "qty", "style", "logic"]))


def _forecasts(forecasts: list | None, bars: np.ndarray, first: int, last: int, cfg: Config) -> pd.DataFrame | None:
    """forecasts.csv: each decision's forecast and the move it forecast (close H bars on over the
    close it was made at), where the run's bars hold it."""
    if forecasts is None:
        return None
    frame = pd.DataFrame(forecasts, columns=["time", "predicted", "raw_predicted"]).dropna()
    h = cfg.strategy.motif.horizon
    close = bars["close"][:last]
    at = np.searchsorted(bars["time"], frame["time"].to_numpy() - MINUTE)
    ok = at + h < len(close)
    frame = frame[ok].copy()
    frame["actual"] = close[at[ok] + h] / close[at[ok]] - 1.0
    return frame


# ------------------------------------------------------------------------------ walk-forward
Fit = Callable[[Config, np.ndarray, tuple, int, int], Config]


def _changes(base, picked, prefix: str = "strategy") -> dict:
    """The config keys whose values `picked` changes from `base` (dotted), for windows.csv."""
    a, b = dataclasses.asdict(base), dataclasses.asdict(picked)
    out = {}

    def walk(x, y, path):
        if isinstance(x, dict):
            for k in x:
                walk(x[k], y[k], f"{path}.{k}")
        elif x != y:
            out[path] = y

    walk(a, b, prefix)
    return out


def walk_forward(cfg: Config, bars: np.ndarray, funding: tuple[np.ndarray, np.ndarray], *, train_days: float,
                 test_days: float, start: int | None = None, end: int | None = None, fit: Fit | None = None,
                 fill: str = "bars", progress: bool = False, slippage: float = DEFAULT_SLIPPAGE) -> BacktestResult:
    """Step forward: train on [s, s + train), test on [s + train, s + train + test), roll by the test
    length until `end`; the test windows' results concatenated. `fit(cfg, bars, funding,
    train_start, train_end)` returns the config to test with (the parameters it picked on the train
    window, which it may backtest with `run`); None tests the config's own parameters. Each test
    window starts flat with the equity the previous one ended with. start: the first train window's
    (default: after the strategy's warm-up); end: exclusive, default the last bar."""
    if not (train_days > 0 and test_days > 0):
        raise BacktestError("start", f"train and test windows must be longer than 0 days, got {train_days} "
                                     f"and {test_days}")
    times = bars["time"]
    warmup = strategies.build(cfg.strategy, taker_fee=cfg.sim.taker_fee).warmup
    if len(times) <= warmup:
        raise BacktestError("bars", f"the strategy needs {warmup:,} bars of history, the bars hold {len(times):,}")
    s = int(times[warmup]) if start is None else int(start)
    stop = int(times[-1]) + MINUTE if end is None else int(end)
    train, test = int(train_days * 86400), int(test_days * 86400)
    if s + train >= stop:
        raise BacktestError("end", f"empty range: the first test window would start at {_when(s + train)}, "
                                   f"not before the end {_when(stop)}")
    parts, windows, balance = [], [], cfg.sim.balance_xbt
    while s + train < stop:
        test_start, test_end = s + train, min(s + train + test, stop)
        picked = fit(cfg, bars, funding, s, test_start) if fit is not None else cfg
        picked = dataclasses.replace(picked, sim=dataclasses.replace(picked.sim, balance_xbt=balance))
        part = run(picked, bars, funding, start=test_start, end=test_end, fill=fill, progress=progress,
                   slippage=slippage)
        parts.append(part)
        balance = float(part.equity["equity_xbt"].iloc[-1])
        windows.append({"train_start": s, "train_end": test_start, "test_start": test_start, "test_end": test_end,
                        "return": part.stats["total_return"], "return_xbt": part.stats["total_return_xbt"],
                        "trades": part.stats["trades"], "params": json.dumps(_changes(cfg.strategy, picked.strategy))})
        s += test
    return _concatenated(cfg, parts, pd.DataFrame(windows), fill, train_days, test_days)


def _concatenated(cfg: Config, parts: list[BacktestResult], windows: pd.DataFrame, fill: str, train_days: float,
                  test_days: float) -> BacktestResult:
    """One result from consecutive test windows (each window's first equity row is the previous one's last)."""
    equity = pd.concat([p.equity if k == 0 else p.equity.iloc[1:] for k, p in enumerate(parts)], ignore_index=True)

    def joined(name: str) -> pd.DataFrame | None:
        frames = [getattr(p, name) for p in parts if getattr(p, name) is not None]
        return pd.concat(frames, ignore_index=True) if frames else None

    for p in parts[:-1]:  # a window's open position is settled at its end (the next starts flat)
        p.trades["open"] = False
    trades, fills, funding = joined("trades"), joined("fills"), joined("funding")
    summary = {"strategy": cfg.strategy.name, "fill_model": fill,
               "assumptions": parts[0].stats["assumptions"] + " Walk-forward: each test window starts flat "
               "with the equity the previous one ended with; a position open at a window's end is marked "
               "at its last close.",
               **stats.compute(equity, trades, fills, funding),
               "walk_forward": {"windows": len(parts), "train_days": train_days, "test_days": test_days},
               "fees": parts[0].stats["fees"], "seed": cfg.sim.seed}
    return BacktestResult(trades, equity, summary, joined("forecasts"), funding, fills, joined("decisions"),
                          windows)
