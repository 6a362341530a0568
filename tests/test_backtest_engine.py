"""The backtest engine on hand-made bars: fees, funding, PnL and liquidation to the satoshi, worked
out by hand and equal to the simulator's exchange for the same fills; passive fills only through
their price; statistics, round trips, output files, determinism, step-forward windows and every
refused input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sniper import config
from sniper.backtest import report, stats
from sniper.backtest.engine import BacktestError, run, walk_forward
from sniper.backtest.fills import BarFills, backtest_risk
from sniper.clock import SimClock
from sniper.config import FundingBand, RiskConfig
from sniper.history import load_bars_csv, load_funding_csv
from sniper.model import BAR_DTYPE, BUY, IOC, SATOSHI, SELL, Target, inverse_pnl
from sniper.sim import feed
from sniper.sim.exchange import Exchange
from sniper.sim.margin import Contract

ROOT = Path(__file__).resolve().parents[1]
SIM = config.load(ROOT / "configs" / "sim.yaml")
T = 1_542_254_400  # 2018-11-15 04:00 UTC, a settlement
BUNDLED = load_bars_csv(feed.DEFAULT_BARS), load_funding_csv(feed.DEFAULT_FUNDING)


def cfg_with(name: str, *, risk: RiskConfig | None = None, **sections):
    """configs/sim.yaml with strategy `name`, its sub-sections replaced by keyword (trend=...)."""
    s = SIM.strategy
    strategy = dataclasses.replace(s, name=name, lookback_minutes=1440,
                                   **{k: dataclasses.replace(getattr(s, k), **v) for k, v in sections.items()})
    return dataclasses.replace(SIM, strategy=strategy, risk=risk or SIM.risk)


def bars_of(start: int, rows) -> np.ndarray:
    """Minute bars from `start`: each row a close, or (open, high, low, close)."""
    out = np.zeros(len(rows), dtype=BAR_DTYPE)
    out["time"] = start + 60 * np.arange(len(rows))
    for i, r in enumerate(rows):
        o, h, lo, c = (r, r, r, r) if np.isscalar(r) else r
        out[i] = (out["time"][i], o, h, lo, c, 1000)
    return out


# ------------------------------------------------------------------------------ by hand
def funding_leg():
    """Long 1,000 through the settlement at T (rate -0.3 %: shorts pay longs), entered at market 3
    minutes before, at 8,000; the leg ends a minute after T with the price at 10,000, and the exit
    (passive, OrFlat's flat) rests at 10,000.5 until a bar trades through it."""
    rows = [8000.0] * 30 + [(8000, 10000, 8000, 10000), 10000.0, (10000, 10000.5, 10000, 10000),
                            (10000, 10001, 10000, 10000)] + [10000.0] * 5
    bars = bars_of(T - 30 * 60, rows)
    funding = (np.array([T - 8 * 3600, T]), np.array([0.0001, -0.003]))
    cfg = cfg_with("funding", funding={"negative": (FundingBand(0.0025, 3, False),), "positive": ()})
    return cfg, bars, funding


def test_a_funding_leg_by_hand():
    cfg, bars, funding = funding_leg()
    r = run(cfg, bars, funding, slippage=0.0)
    fills = r.fills.to_dict("records")
    # entry: decided at the close of the 03:56 bar (03:57:01, in [T - 3 min, T + 1 min)): 1,000 long
    # (capped from 1 XBT x 8,000 x 3 by risk.max_position) at the close, taker 0.075 %:
    # value 1000 / 8000 * 1e8 = 12,500,000 XBt, fee 9,375
    assert (fills[0]["time"], fills[0]["qty"], fills[0]["price"], fills[0]["liquidity"]) == (T - 180, 1000, 8000.0,
                                                                                          "taker")
    assert round(fills[0]["fee_xbt"] * SATOSHI) == 9_375
    # settlement at T, mark 8,000 (the close of the bar ending at T): the long receives
    # 12,500,000 x 0.003 = 37,500
    paid = r.funding.set_index("time").loc[T]
    assert (paid["position"], round(paid["funding_xbt"] * SATOSHI)) == (1000, 37_500)
    # exit: a passive sell at 10,000 + one tick; the 04:02 bar only touches 10,000.5, the 04:03 bar
    # trades through it: value round(1000 / 10000.5 * 1e8) = 9,999,500, maker rebate 2,500 (2,499.875)
    assert len(fills) == 2
    assert (fills[1]["time"], fills[1]["qty"], fills[1]["price"], fills[1]["liquidity"]) == (T + 3 * 60 + 30, -1000,
                                                                                          10000.5, "maker")
    assert round(fills[1]["fee_xbt"] * SATOSHI) == -2_500
    # PnL: 12,500,000 - 9,999,500 = 2,500,500 = inverse_pnl(1000, 8000, 10000.5)
    assert round(inverse_pnl(1000, 8000, 10000.5) * SATOSHI) == 2_500_500
    end = 100_000_000 - 9_375 + 37_500 + 2_500 + 2_500_500
    assert round(r.equity["equity_xbt"].iloc[-1] * SATOSHI) == end == 102_531_125
    trade = r.trades.iloc[0]
    assert (trade["side"], trade["qty"], trade["entry_price"], trade["exit_price"]) == ("long", 1000, 8000, 10000.5)
    assert round(trade["pnl_xbt"] * SATOSHI) == end - 100_000_000
    s = r.stats
    assert round(s["fees_xbt"] * SATOSHI) == 9_375 - 2_500
    assert round(s["funding_received_xbt"] * SATOSHI) == 37_500 and s["funding_paid_xbt"] == 0
    assert (s["trades"], s["win_rate"], s["open_at_end"]) == (1, 1.0, 0)
    assert s["buy_hold_return"] == pytest.approx(10000 / 8000 - 1)


def exchange_at(price: float) -> Exchange:
    inst = feed.load_instrument() | {"tickSize": 0.5, "lotSize": 1}
    ex = Exchange(inst, SimClock(T - 600, 0.0), funding=[(T, 0.001)], maker_fee=-0.00025, taker_fee=0.00075)
    ex.add_account("k", "s", 0.05)
    ex.set_levels([(BUY, price - 0.5, 10**6), (SELL, price, 10**6)])
    return ex


def test_bar_fills_book_like_the_simulator_to_the_satoshi():
    """The same fills (taker, then maker), a settlement and a liquidation on the bars model and on
    the exchange: the same wallet, position cost, funding, liquidation price and bankruptcy close."""
    bars = bars_of(T - 300, [8000.0] * 5 + [(8000, 8001, 8000, 8000), (8000, 8000, 6000, 6500)])
    contract = Contract.of(feed.load_instrument() | {"tickSize": 0.5, "lotSize": 1})
    clock = SimClock(T - 300, 0.0)
    risk = backtest_risk(dataclasses.replace(SIM, risk=RiskConfig(max_position=10**6, max_leverage=100.0,
                                                                  daily_loss_limit_xbt=10.0)), clock)
    model = BarFills(bars, 1, len(bars), contract=contract, balance_xbt=0.05, risk=risk, clock=clock, slippage=0.0)
    ex = exchange_at(8000.0)
    acct = ex._accounts["k"]

    def same():
        assert (model.acct.qty, model.acct.cost, model.acct.wallet) == (acct.qty, acct.cost, acct.wallet)
        assert model._liq == ex._margins(acct).liq

    for i in range(0, 4):
        model.advance(i, ())
    model.pursue(Target(2000, "market"))  # at the close of bar 3: 8,000, taker
    ex.place_order("k", symbol="XBTUSD", side=BUY, orderQty=2000, price=8010, ordType="Limit", timeInForce=IOC)
    model.advance(4, ((float(T), 0.001),))  # the settlement at T, mark 8,000
    ex.set_mark_price(8000.0)
    ex.clock.advance(600)
    ex.advance()
    same()
    assert model.acct.funding_paid == acct.funding_paid == 25_000  # 25,000,000 x 0.001
    model.pursue(Target(1500, "passive"))  # a sell of 500 rests at 8,000.5; bar 5 trades through it
    model.advance(5, ())
    ex.place_order("k", symbol="XBTUSD", side=SELL, orderQty=500, price=8000.5, ordType="Limit",
                   execInst="ParticipateDoNotInitiate")
    ex.set_level(SELL, 8000.0, 0)
    ex.market_order(BUY, 500, 8001.0)
    same()
    assert model.ledger.fills[-1] == (T + 30, -500, 8000.5, -1_562, "maker")  # round(6,249,609 x -0.025 %)
    assert ex.executions("k")[-1]["execComm"] == -1_562
    assert model._liq == 6356.0
    model.advance(6, ())  # the bar's low (6,000) is through that liquidation price
    ex.set_mark_price(6000.0)
    assert model.acct.qty == acct.qty == 0
    assert model.acct.wallet == acct.wallet
    liquidation = model.ledger.fills[-1]
    assert liquidation[1:] == (-1500, ex.executions("k")[-1]["lastPx"], 0, "liquidation")


def test_statistics_and_round_trips_by_hand():
    # a long of 100 opened at 10,000, flipped at 12,500 to a short of 100 (one fill of -200, its fee
    # split half and half), covered at 10,000; one settlement paid 10 XBt while long
    fills = [(0.0, 100, 10000.0, 8, "taker"), (60.0, -200, 12500.0, 12, "taker"), (120.0, 100, 10000.0, 8, "taker")]
    trades = stats.round_trips(fills, [(30.0, 0.0001, 100, 10)], end_time=180.0, last_close=10000.0)
    long, short = trades.to_dict("records")
    assert (long["side"], long["entry_price"], long["exit_price"], long["qty"]) == ("long", 10000, 12500, 100)
    # 100 x (1/10000 - 1/12500) = 200,000 XBt, less fees 8 + 6 and funding 10
    assert round(long["pnl_xbt"] * SATOSHI) == 200_000 - 14 - 10
    assert long["return"] == pytest.approx(long["pnl_xbt"] / (100 / 10000))
    assert round(short["pnl_xbt"] * SATOSHI) == 200_000 - 6 - 8  # the short: 12,500 down to 10,000
    equity = pd.DataFrame({"time": [0, 86400, 2 * 86400, 3 * 86400], "equity_xbt": [1.0, 1.2, 0.9, 1.1],
                           "close": [100.0, 100.0, 100.0, 50.0], "position": [0, 1, 1, 0]})
    fills_df = pd.DataFrame(fills, columns=["time", "qty", "price", "fee", "liquidity"]).assign(
        fee_xbt=lambda f: f["fee"] / SATOSHI)
    s = stats.compute(equity, trades, fills_df, pd.DataFrame({"funding_xbt": [-10 / SATOSHI]}))
    assert s["total_return"] == pytest.approx(1.1 * 50 / 100 - 1)  # USD value: 1 XBT x 100 -> 1.1 x 50
    assert s["total_return_xbt"] == pytest.approx(0.1)
    assert s["max_drawdown"] == pytest.approx(55 / 120 - 1)  # the peak 120 USD, the end 55
    assert s["max_drawdown_xbt"] == pytest.approx(0.9 / 1.2 - 1)
    assert s["buy_hold_return"] == pytest.approx(-0.5)
    assert (s["trades"], s["win_rate"], s["exposure"]) == (2, 1.0, pytest.approx(2 / 3))
    assert s["funding_paid_xbt"] == pytest.approx(10 / SATOSHI) and s["funding_received_xbt"] == 0


# ------------------------------------------------------------------------------ runs
def test_results_write_the_report_inputs_and_repeat_exactly(tmp_path):
    cfg = cfg_with("trend", trend={"fast_period": 30, "slow_period": 10, "style": "market"})
    bars, funding = BUNDLED
    a = run(cfg, bars, funding, start=T - 6 * 3600, end=T + 3600)
    b = run(cfg, bars, funding, start=T - 6 * 3600, end=T + 3600)
    pd.testing.assert_frame_equal(a.fills, b.fills)
    pd.testing.assert_frame_equal(a.equity, b.equity)
    assert a.stats == b.stats and a.stats["trades"] > 3
    out = a.write(tmp_path / "run")
    for name, columns in report.INPUTS.items():
        if (out / name).exists():
            assert set(columns) <= set(pd.read_csv(out / name).columns), name
    assert {"trades.csv", "equity.csv", "stats.json", "funding.csv", "report.html"} <= {p.name for p in out.iterdir()}
    saved = json.loads((out / "stats.json").read_text())
    for key in ("total_return", "annual_return", "sharpe", "sortino", "max_drawdown", "trades", "win_rate",
                "fees_xbt", "funding_received_xbt", "funding_paid_xbt", "exposure", "buy_hold_return",
                "fill_model", "assumptions", "start", "end"):
        assert key in saved, key
    assert "Passive orders rest post-only" in saved["assumptions"] and "slippage" in saved["assumptions"]
    assert len(a.equity) == 7 * 60 + 1  # the start, then every traded bar's close


def test_walk_forward_tests_each_window_after_fitting_on_the_one_before():
    cfg = cfg_with("trend", trend={"fast_period": 30, "slow_period": 10, "style": "market"})
    bars, funding = BUNDLED
    seen = []

    def with_fast(base, fast):
        return dataclasses.replace(base, strategy=dataclasses.replace(
            base.strategy, trend=dataclasses.replace(base.strategy.trend, fast_period=fast)))

    def fit(base, b, f, train_start, train_end):
        seen.append((train_start, train_end))
        return with_fast(base, 25 + 10 * len(seen))

    start = T - 2 * 86400
    r = walk_forward(cfg, bars, funding, train_days=0.5, test_days=0.25, start=start, end=start + 86400, fit=fit)
    w = r.windows
    assert seen == [(start + k * 21600, start + 43200 + k * 21600) for k in range(2)]
    assert list(w["test_start"]) == [start + 43200, start + 64800] and list(w["test_end"]) == [start + 64800,
                                                                                              start + 86400]
    assert [json.loads(p) for p in w["params"]] == [{"strategy.trend.fast_period": 35},
                                                    {"strategy.trend.fast_period": 45}]
    times = r.equity["time"].to_numpy()
    assert times[0] == start + 43200 and times[-1] == start + 86400 and (np.diff(times) == 60).all()
    # the second window is the config it was fitted to, run from the equity the first one ended with
    # (its position settled at the boundary): the concatenation's tail, to the satoshi
    handover = float(r.equity["equity_xbt"].iloc[360])
    second = with_fast(cfg, 45)
    second = run(dataclasses.replace(second, sim=dataclasses.replace(second.sim, balance_xbt=handover)), bars,
                 funding, start=start + 64800, end=start + 86400)
    np.testing.assert_array_equal(r.equity["equity_xbt"].to_numpy()[360:], second.equity["equity_xbt"].to_numpy())
    assert r.stats["walk_forward"]["windows"] == 2


@pytest.mark.parametrize("kwargs, field, text", [
    ({"start": T + 400 * 86400}, "start", "outside the bars"),
    ({"end": 1_500_000_000}, "end", "outside the bars"),
    ({"start": T, "end": T}, "start", "empty range"),
    ({"start": int(BUNDLED[0]["time"][10])}, "start", "needs 1,424 bars of history"),
])
def test_bad_spans_are_refused_with_what_is_wrong(kwargs, field, text):
    with pytest.raises(BacktestError, match=text) as e:
        run(cfg_with("trend"), *BUNDLED, **kwargs)
    assert e.value.field == field


def test_missing_or_short_funding_history_is_refused():
    bars, (times, rates) = BUNDLED
    with pytest.raises(BacktestError, match="no funding history") as e:
        run(cfg_with("funding"), bars, (times[:0], rates[:0]))
    assert e.value.field == "funding"
    with pytest.raises(BacktestError, match="funding history ends at 2018-11-01 20:00"):
        run(cfg_with("funding"), bars, (times[times <= 1541102400], rates[times <= 1541102400]))
