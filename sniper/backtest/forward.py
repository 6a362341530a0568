"""`sniper train --walk-forward TRAIN:TEST`: step-forward training, the out-of-sample record a
search alone cannot give.

engine.walk_forward rolls the windows; this module is its `fit`: on every train window the same
search `sniper train` runs (train.run_search: the method, budget, seed and objective of the
command line, on one pool opened for the whole run), the best parameters backtested on the test
window after it. Only test windows are concatenated into the result, so every figure in
stats.json, equity.csv and the report is out of sample; windows.csv says, per window, what the
search picked and its in-sample score beside the test return.

Layout of --out: the concatenated backtest (trades.csv, equity.csv, stats.json with a `search`
section, funding.csv, fills.csv, windows.csv, report.html), windows/NN-DATE/ per train window
(its search.csv, search.json and best.yaml: resumable one by one, so the same command after a
Ctrl-C skips every window already searched and every scored parameter set of the one it
stopped in), and best.yaml: the last window's pick, the parameters to trade from here on.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time

import numpy as np

from sniper.backtest import engine, train
from sniper.backtest.study import _iso
from sniper.config import Config


class _Interrupted(Exception):
    """Ctrl-C inside a window's search, carried out of engine.walk_forward."""


def train_forward(p: train.Plan) -> int:
    """Search every train window, test its best on the next; write the results; the exit status."""
    train_days, test_days = p.walk_forward
    p.out.mkdir(parents=True, exist_ok=True)
    data = train.window_data(p, p.in_sample)  # every bar up to the span's end: each window's trials slice their own
    key = train.fingerprint(p, data)["data"]
    picks: list[dict] = []  # per train window: its plan, score, parameter sets scored, the config picked
    began, pool, done = time.monotonic(), None, False

    def fit(cfg: Config, bars: np.ndarray, funding: tuple, start: int, end: int) -> Config:
        window = dataclasses.replace(p, in_sample=(start, end), out=p.out / "windows" /
                                     f"{len(picks) + 1:02d}-{_iso(start)[:10]}")
        train.prepare(window)
        results, ended = train.run_search(window, pool, key, where)
        if ended is None:
            raise _Interrupted
        best = results.best()
        pick = {"plan": window, "score": None, "searched": len(results.scores), "config": cfg}
        if best is not None:  # else nothing scored on this window: its test runs the config as given
            pick["config"] = p.space.apply(cfg, best[0])
            pick["score"] = best[1]
            train.write_best(window, pick["config"], best[1], len(results.scores))
        picks.append(pick)
        return pick["config"]

    try:
        pool, where = train.open_pool(p, key, data)
        result = engine.walk_forward(p.cfg, *data, train_days=train_days, test_days=test_days,
                                     start=p.in_sample[0], end=p.in_sample[1], fit=fit)
        done = True
    except (KeyboardInterrupt, _Interrupted):
        print(f"sniper train: interrupted in window {len(picks) + 1}; the searches so far are kept in "
              f"{p.out / 'windows'}: the same command resumes", file=sys.stderr)
        return train.INTERRUPTED
    except engine.BacktestError as exc:
        raise train.as_usage(exc) from None
    finally:
        if pool is not None:
            pool.close(abort=not done)
    result.windows["train_score"] = [x["score"] for x in picks]
    result.windows["parameter_sets"] = [x["searched"] for x in picks]
    result.stats["search"] = {"method": p.method, "objective": p.objective, "budget": p.budget, "seed": p.seed,
                              "seconds": round(time.monotonic() - began, 1)}
    result.write(p.out)
    scored = [x for x in picks if x["score"] is not None]
    if scored:  # the latest window's pick: what to trade from here on
        last = scored[-1]
        print(train.write_best(dataclasses.replace(last["plan"], out=p.out), last["config"], last["score"],
                          last["searched"]))
    s = result.stats
    mean = sum(x["score"] for x in scored) / len(scored) if scored else math.nan
    print(f"sniper train --walk-forward {train_days:g}:{test_days:g}: {len(picks)} windows, out of sample "
          f"{s['start']} - {s['end']}: return {s['total_return']:+.2%} (buy-and-hold {s['buy_hold_return']:+.2%}), "
          f"max drawdown {s['max_drawdown']:.2%}, {s['trades']} trades; in sample, mean {p.objective} {mean:.4g}")
    print(p.out / "report.html")
    return 0
