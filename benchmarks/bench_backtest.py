"""Backtest speed over one year of 1-minute bars (2018: 525,600), against baselines in the same run.

Data: the real XBTUSD minutes and funding in ../shared/data or $SNIPER_SHARED_DATA (2017 as history,
2018 traded).

1. trend (dual EMA 1054/370) through sniper's engine (`bars` fill model: taker fee 0.075 % on
   every fill, funding at every settlement from the history, liquidation checked every bar, the
   risk gate on every target), against backtesting.py (PyPI `backtesting`) running the same rule
   with the same fee on the same bars, timed in this process one after the other:
   a. the same rule: the trend strategy as it is, long/short leverage x equity re-sized at every
      bar (1x here, so that neither engine is ruined and both run the whole year); backtesting.py
      re-sizes its position every bar too (prices in micro-XBT so that whole units can follow);
   b. the signal alone: a fixed position flipped only when the slope turns (backtesting.py's
      natural form, fixed units; sniper's target capped by risk.max_position, 1,000 contracts),
      with the time the daemon's own per-bar calls take over the same views outside any engine:
      TrendStrategy.decide, then decide with the risk gate's cap_target (the position cap binds at
      every bar, so the gate builds a capped Target at every bar). While the two take longer than
      backtesting.py's whole loop, b stays under 1 however little the engine adds.
   Ratios are backtesting.py's time over sniper's. The floor: a >= 1.
2. motif, a decision every bar over the same year: ED (the floor: under 15 minutes on this
   machine), then the shipped DTW defaults on the first DAYS days of 2018, per decision and
   scaled to the year (the reference system needed 0.26 s a decision, 38 hours for the year).
   Both search ahead with MotifIndex.batch on every core (MotifStrategy.presearch).
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # backtesting.py's progress bar

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
from sniper import config  # noqa: E402
from sniper.backtest.engine import run  # noqa: E402
from sniper.config import RiskConfig  # noqa: E402
from sniper.history import load_bars_csv, load_funding_csv  # noqa: E402
from sniper.model import SATOSHI, parse_time  # noqa: E402
from sniper.motif import _cpus  # noqa: E402
from sniper.ta import talib  # noqa: E402

DATA = Path(os.environ.get("SNIPER_SHARED_DATA", ROOT.parent / "shared" / "data"))
YEAR = int(parse_time("2018-01-01T00:00:00Z")), int(parse_time("2019-01-01T00:00:00Z"))
FEE = 0.00075
MOTIF_CEILING_S = 15 * 60
WIDE = RiskConfig(max_position=10**9, max_leverage=10.0, max_order_qty=10**9, max_orders_per_minute=10**6,
                  daily_loss_limit_xbt=10.0**6, kill_switch_file="")


def configs():
    base = config.load(ROOT / "configs" / "sim.yaml")
    s = base.strategy
    trend = dataclasses.replace(s, name="trend", trend=dataclasses.replace(s.trend, leverage=1.0, style="market"))
    resized = dataclasses.replace(base, strategy=trend, risk=WIDE)
    signal = dataclasses.replace(base, strategy=trend, risk=dataclasses.replace(WIDE, max_position=1000))
    motif = dataclasses.replace(s, name="motif")
    ed = dataclasses.replace(base, strategy=dataclasses.replace(motif, motif=dataclasses.replace(s.motif, metric="ed")))
    dtw = dataclasses.replace(base, strategy=motif)
    return resized, signal, ed, dtw


def backtesting_py(bars: np.ndarray, resize: bool) -> tuple[float, int]:
    """backtesting.py's time and trade count for the dual EMA over bars[YEAR]."""
    from backtesting import Backtest, Strategy

    t = bars["time"]
    a, b = np.searchsorted(t, YEAR[0]), np.searchsorted(t, YEAR[1])
    frame = pd.DataFrame({k.capitalize(): bars[k][a:b] for k in ("open", "high", "low", "close", "volume")},
                         index=pd.to_datetime(t[a:b], unit="s"))
    if resize:
        frame[["Open", "High", "Low", "Close"]] /= 1e6  # micro-XBT: whole units follow equity closely

    class DualEma(Strategy):
        def init(self):
            self.slow = self.I(lambda c: talib.EMA(talib.EMA(c, 1054), 370), self.data.Close)

        def next(self):
            s = self.slow
            if s[-2] != s[-2]:
                return
            side = int(s[-1] > s[-2]) - int(s[-1] < s[-2])
            if resize:  # leverage 1 x equity, less the fee of getting there, as sniper's trend sizes
                want = int(side * self.equity * (1 - FEE) / self.data.Close[-1])
                have = self.position.size
                if want > have:
                    self.buy(size=want - have)
                elif want < have:
                    self.sell(size=have - want)
            elif side > 0 and not self.position.is_long:
                self.position.close()
                self.buy(size=10)
            elif side < 0 and not self.position.is_short:
                self.position.close()
                self.sell(size=10)

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(frame, DualEma, cash=10_000_000, commission=FEE, finalize_trades=True).run()
    return time.perf_counter() - t0, int(stats["# Trades"])


def daemon_calls(cfg, bars) -> tuple[float, float]:
    """Seconds of the daemon's own per-bar calls over the year's views, outside any engine, with one
    fixed Account and venue view (1 XBT at 10,000): the trend strategy's decide() alone, then
    decide() and the risk gate's cap_target on its target. A backtest makes both at every bar."""
    from sniper import strategies
    from sniper.backtest.fills import _View, backtest_risk
    from sniper.clock import SimClock

    account, funding = strategies.Account(margin_balance_xbt=1.0, mark=10_000.0), strategies.Funding(None, None)
    view = _View(mark_price=10_000.0, best_bid=9_999.5, best_ask=10_000.5, margin={"marginBalance": SATOSHI})
    cap = backtest_risk(cfg, SimClock(0.0, 0.0)).cap_target
    first, last = np.searchsorted(bars["time"], YEAR[0]), np.searchsorted(bars["time"], YEAR[1])
    lookback = cfg.strategy.lookback_minutes
    took = []
    for gated in (False, True):
        decide = strategies.build(cfg.strategy, taker_fee=FEE).decide
        t0 = time.perf_counter()
        for i in range(first - 1, last - 1):
            d = decide(bars[max(0, i + 1 - lookback): i + 1], funding, account, 0.0)
            if gated:
                cap(d.target, view)
        took.append(time.perf_counter() - t0)
    return tuple(took)


def sniper_run(cfg, bars, funding, start=YEAR[0], end=YEAR[1]):
    """(wall seconds, the result, CPU seconds of this process: every thread's, load-independent)."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = run(cfg, bars, funding, start=start, end=end, slippage=0.0)
    return time.perf_counter() - t0, result, time.process_time() - c0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=7.0, help="DTW sample: the first DAYS days of 2018")
    ap.add_argument("--skip-motif", action="store_true", help="the trend comparisons only")
    ap.add_argument("--skip-trend", action="store_true", help="the motif timings only")
    args = ap.parse_args(argv)
    if not (DATA / "xbtusd_1m.csv.gz").exists():
        print(f"skipped: {DATA} is absent (set SNIPER_SHARED_DATA)")
        return 0
    bars = load_bars_csv(DATA / "xbtusd_1m.csv.gz")
    funding = load_funding_csv(DATA / "xbtusd_funding.csv")
    resized, signal, ed, dtw = configs()
    traded = int(((bars["time"] >= YEAR[0]) & (bars["time"] < YEAR[1])).sum())
    print(f"backtest: {traded:,} bars of 2018 (real XBTUSD), 2017 as history; {_cpus()} usable cores")

    ok = True
    trend = () if args.skip_trend else (("a. same rule, re-sized every bar", resized, True),
                                         ("b. the signal alone, fixed size", signal, False))
    if trend:
        print("1. trend, sniper (bars model, fees, funding, liquidation, risk gate) vs backtesting.py, same run:")
    for label, cfg, resize in trend:
        ours, result, _ = sniper_run(cfg, bars, funding)
        theirs, trades = backtesting_py(bars, resize)
        s = result.stats
        ratio = theirs / ours
        print(f"  {label:<34} sniper {ours:7.2f} s ({s['fills']:,} fills, {s['trades']} trades, "
              f"{s['liquidations']} liquidations, fees {s['fees_xbt']:.4f} XBT, funding "
              f"{s['funding_received_xbt'] - s['funding_paid_xbt']:+.4f} XBT)")
        print(f"  {'':<34} backtesting.py {theirs:7.2f} s ({trades:,} trades)   ratio {ratio:6.2f}x")
        if resize:
            ok &= ratio >= 1.0
            print(f"  floor: ratio >= 1 for the same rule: {'met' if ratio >= 1 else 'NOT MET'}")
        else:
            alone, gated = daemon_calls(cfg, bars)
            print(f"  {'':<34} of sniper's time, the daemon's own calls on the same views: the trend strategy's "
                  f"decide() {alone:.2f} s, with the risk gate's cap_target {gated:.2f} s ({gated / theirs:.2f}x "
                  "backtesting.py's whole run)")
    if args.skip_motif:
        return 0 if ok else 1

    print("2. motif, a decision every bar (search ahead on every core):")
    took, result, cpu = sniper_run(ed, bars, funding)
    decisions = len(result.decisions)
    motif = int((result.decisions["logic"] == "motif").sum())
    print(f"  ED, the year:  {took:7.1f} s for {decisions:,} decisions ({took / decisions * 1e3:.2f} ms each; "
          f"the motif logic in control at {motif:,}); return {result.stats['total_return']:+.2%}; "
          f"CPU {cpu:.0f} s over all threads ({os.getloadavg()[0]:.1f} load average at the end)")
    good = took < MOTIF_CEILING_S
    ok &= good
    print(f"  ceiling: under {MOTIF_CEILING_S / 60:.0f} min: {'met' if good else 'NOT MET'}")
    end = YEAR[0] + int(args.days * 86400)
    took, result, cpu = sniper_run(dtw, bars, funding, end=end)
    each = took / len(result.decisions)
    print(f"  DTW defaults (band {dtw.strategy.motif.dtw_window}), first {args.days:g} days: {took:7.1f} s for "
          f"{len(result.decisions):,} decisions ({each * 1e3:.2f} ms each), the year at that rate "
          f"{each * traded / 3600:.1f} h (reference: 0.26 s a decision, 38 h; {0.26 / each:.0f}x); CPU {cpu:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
