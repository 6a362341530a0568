"""What a backtest's ledger says: its round trips (trades.csv) and its statistics (stats.json).

Kept apart from the engine so that a run, a walk-forward's concatenated windows and the trainer
score results the same way, from the same records.

Returns are of the account's value in USD (margin balance in XBT x the XBTUSD close), the value
the report's equity figure draws; buy-and-hold is holding the starting XBT over the same span,
so both are measured in the same unit. The XBT figures (`*_xbt`) say what the account itself
gained. Sharpe and Sortino are annualised from daily returns (UTC days; hourly ones for spans
under MIN_DAYS days), with no risk-free rate. Exposure is the share of traded bars that closed
with a position held; fees are net of maker rebates (> 0 paid); `trades` and `win_rate` count
closed round trips (a position still open at the end is in trades.csv, marked `open`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sniper.model import SATOSHI, iso
from sniper.sim.margin import exec_cost, position_after_fill, unrealised_pnl

YEAR_S = 365.25 * 86400
MIN_DAYS = 5  # daily returns from this many days on, hourly before
TRADE_COLUMNS = ("entry_time", "exit_time", "side", "qty", "entry_price", "exit_price", "pnl_xbt", "return",
                 "fees_xbt", "funding_xbt", "open", "liquidated")


class _Trade:
    """One round trip while it is built: a position on one side, from flat (or a flip) back."""

    def __init__(self, when: float, side: int) -> None:
        self.entry_time, self.side = when, side
        self.qty = 0  # the largest position held
        self.opened = [0, 0.0]  # contracts opened, sum of contracts / price (harmonic mean)
        self.closed = [0, 0.0]
        self.realised = self.fees = self.funding = 0
        self.liquidated = False

    def row(self, exit_time: float, extra: int = 0, exit_price: float | None = None, is_open: bool = False) -> dict:
        entry = self.opened[0] / self.opened[1]
        exit_ = exit_price if exit_price is not None else self.closed[0] / self.closed[1]
        pnl = (self.realised + extra - self.fees - self.funding) / SATOSHI
        return {"entry_time": self.entry_time, "exit_time": exit_time, "side": "long" if self.side > 0 else "short",
                "qty": self.qty, "entry_price": entry, "exit_price": exit_, "pnl_xbt": pnl,
                "return": pnl / (self.qty / entry), "fees_xbt": self.fees / SATOSHI,
                "funding_xbt": -self.funding / SATOSHI, "open": is_open, "liquidated": self.liquidated}


def round_trips(fills, funding, *, end_time: float, last_close: float) -> pd.DataFrame:
    """trades.csv from the ledger (fills: time, qty, price, fee, liquidity; funding: time, rate,
    position, paid), replaying the exchange's position arithmetic. A trade opens when the position
    leaves flat or flips and closes when it is flat again or flips; a flipping fill's fee is split
    pro rata between the two trades. Its pnl is net of fees and of the funding paid while open. A
    position still open at `end_time` is one more row (`open`), marked at `last_close` without an
    exit fee."""
    rows, qty, cost, trade = [], 0, 0, None
    settlements = iter(sorted(funding, key=lambda f: f[0]))
    pending = next(settlements, None)

    def pay_until(t: float) -> None:
        nonlocal pending
        while pending is not None and pending[0] <= t:
            if trade is not None:
                trade.funding += pending[3]
            pending = next(settlements, None)

    for when, q, price, fee, liquidity in fills:
        pay_until(when)
        change = position_after_fill(qty, cost, q, exec_cost(q, price))
        closing = min(abs(q), abs(qty)) if qty and (qty > 0) != (q > 0) else 0
        if closing:
            share = closing / abs(q)
            trade.realised += change.realised
            trade.fees += int(round(fee * share))
            trade.closed[0] += closing
            trade.closed[1] += closing / price
            trade.liquidated |= liquidity == "liquidation"
            if closing == abs(qty):
                rows.append(trade.row(when))
                trade = None
            fee -= int(round(fee * share))
        if abs(q) > closing:
            if trade is None:
                trade = _Trade(when, 1 if q > 0 else -1)
            opening = abs(q) - closing
            trade.fees += fee
            trade.opened[0] += opening
            trade.opened[1] += opening / price
        qty, cost = change.qty, change.cost
        if trade is not None:
            trade.qty = max(trade.qty, abs(qty))
    pay_until(end_time)
    if trade is not None:
        rows.append(trade.row(end_time, unrealised_pnl(qty, cost, last_close), last_close, is_open=True))
    return pd.DataFrame(rows, columns=list(TRADE_COLUMNS))


def _drawdown(values: np.ndarray) -> float:
    peak = np.maximum.accumulate(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, values / peak - 1.0, 0.0)
    return float(dd.min()) if len(dd) else 0.0


def _periodic(time: np.ndarray, value: np.ndarray, days: float) -> tuple[np.ndarray, float, str]:
    """Returns per UTC day (per hour for short spans), the periods per year, and which."""
    period, name = (86400, "daily") if days >= MIN_DAYS else (3600, "hourly")
    series = pd.Series(value, index=pd.to_datetime(time, unit="s"))
    ends = series.resample(f"{period}s", label="right", closed="right").last().dropna()
    points = np.concatenate([[value[0]], ends.to_numpy()])
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = points[1:] / points[:-1] - 1.0
    return returns[np.isfinite(returns)], YEAR_S / period, name


def _ratio(returns: np.ndarray, per_year: float, downside: bool) -> float | None:
    if len(returns) < 2:
        return None
    spread = np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)) if downside else returns.std(ddof=1)
    return float(returns.mean() / spread * math.sqrt(per_year)) if spread > 0 else None


def _annual(total: float, seconds: float) -> float | None:
    """Compounded to a year; None for no span, or where that overflows (a big move in minutes)."""
    if total <= -1.0:
        return -1.0
    growth = math.log1p(total) * YEAR_S / seconds if seconds > 0 else math.inf
    return math.expm1(growth) if growth < 700 else None


def compute(equity: pd.DataFrame, trades: pd.DataFrame, fills: pd.DataFrame, funding: pd.DataFrame) -> dict:
    """stats.json's figures from equity.csv (time, equity_xbt, close, position), trades.csv,
    the fills (fee_xbt, liquidity) and funding.csv (funding_xbt, > 0 received)."""
    t = equity["time"].to_numpy(dtype=np.float64)
    xbt = equity["equity_xbt"].to_numpy(dtype=np.float64)
    close = equity["close"].to_numpy(dtype=np.float64)
    usd = xbt * close
    seconds = float(t[-1] - t[0])

    def growth(v: np.ndarray) -> float:
        return float(v[-1] / v[0] - 1.0) if v[0] > 0 else 0.0

    total, hold = growth(usd), growth(close)
    returns, per_year, basis = _periodic(t, usd, seconds / 86400)
    closed = trades[~trades["open"].astype(bool)] if len(trades) else trades
    received = funding["funding_xbt"].clip(lower=0).sum() if len(funding) else 0.0
    paid = (-funding["funding_xbt"]).clip(lower=0).sum() if len(funding) else 0.0
    return {
        "start": iso(t[0]), "end": iso(t[-1]), "days": seconds / 86400, "bars": len(t) - 1,
        "start_equity_xbt": float(xbt[0]), "end_equity_xbt": float(xbt[-1]),
        "total_return": total, "annual_return": _annual(total, seconds),
        "total_return_xbt": growth(xbt), "sharpe": _ratio(returns, per_year, False),
        "sortino": _ratio(returns, per_year, True), "ratio_basis": basis,
        "max_drawdown": _drawdown(usd), "max_drawdown_xbt": _drawdown(xbt),
        "trades": len(closed), "win_rate": float((closed["pnl_xbt"] > 0).mean()) if len(closed) else None,
        "open_at_end": int(equity["position"].iloc[-1]),
        "fills": len(fills), "volume_contracts": int(fills["qty"].abs().sum()) if len(fills) else 0,
        "liquidations": int((fills["liquidity"] == "liquidation").sum()) if len(fills) else 0,
        "fees_xbt": float(fills["fee_xbt"].sum()) if len(fills) else 0.0,
        "funding_received_xbt": float(received), "funding_paid_xbt": float(paid),
        "exposure": float((equity["position"].to_numpy()[1:] != 0).mean()) if len(t) > 1 else 0.0,
        "buy_hold_return": hold, "buy_hold_annual_return": _annual(hold, seconds),
        "buy_hold_max_drawdown": _drawdown(close),
    }
