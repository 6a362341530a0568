"""Fill models: how the engine's targets become fills, fees, funding payments and liquidations.

Two models behind one interface, so one engine loop (engine.py) drives both:

* `BarFills` (`bars`, the default, fast): orders fill against each bar's range under the
  assumptions in `BARS_ASSUMPTIONS`, with no order book;
* `BookFills` (`book`, high fidelity): the daemon's own executor, order manager, risk gate and
  journal over `LocalVenue` on the simulator's `Exchange`, moved by the simulator's `Feed`.

Both book every amount with the simulator's code, not a copy of it: BarFills keeps its account
in `sim.accounts.Account` (the exchange's own account state: `apply_fill`, `pay_funding`) and
prices fills, fees, funding, margins and liquidation with `sim.margin`, the functions the
exchange calls; BookFills *is* the exchange. Amounts are whole satoshis (XBt), as there.

The interface (`FillModel`): `advance(i, due)` plays bar i, pays the settlements in `due` and
returns the Account the strategy sees at the bar's close; `view` is the venue-like snapshot
the risk gate caps targets with; `pursue(target)` hands the capped target over; `ledger`
collects what happened (`Ledger`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sniper.clock import SimClock
from sniper.config import SIM_DEMO_KEY, SIM_DEMO_SECRET, Config
from sniper.journal import Journal
from sniper.loop import CLOSE_GRACE_S
from sniper.model import BUY, MINUTE, SATOSHI, SELL, Target, parse_time, side_sign
from sniper.orders.executor import Executor
from sniper.orders.local import LocalVenue
from sniper.orders.manager import goal, leg, to_tick
from sniper.risk import ProposedOrder, RiskGate
from sniper.sim import accounts, feed
from sniper.sim.exchange import Exchange
from sniper.sim.margin import (
    Contract,
    avg_entry_price,
    commission,
    contract_value,
    exec_cost,
    funding_payment,
    initial_margin_req,
    margins,
    open_exposure,
    unrealised_pnl,
)
from sniper.sim.rows import TEXT_LIQUIDATION
from sniper.strategies.base import Account

DEFAULT_SLIPPAGE = 0.00005  # 0.5 basis point: one 0.5 tick beyond the close at 2018 prices
CHASE_S = 1.0  # book: market seconds between executor cycles while an order works

MAKER, TAKER, LIQUIDATION = "maker", "taker", "liquidation"

BARS_ASSUMPTIONS = (
    "bars fill model: decisions at each bar's close; the touch around a close is taken as one tick "
    "either side of it. Market orders fill at once, in full, at the close moved by the slippage "
    "({slippage:.4%}) against us and rounded to the tick away from us, paying the taker fee "
    "({taker:+.4%}). Passive orders rest post-only one tick inside the close on our side and fill "
    "only when a later bar trades through their price (low < price for a buy, high > price for a sell), "
    "in full, queue-free, at their price, with the maker fee ({maker:+.4%}); an unfilled one follows the "
    "touch at every close. A move across zero is two legs (reduce to flat, then open), each at most the "
    "risk gate's order size; a passive second leg rests from the next close. Within a bar, resting "
    "orders fill before the liquidation check; a position is liquidated when the bar's low (long) or "
    "high (short) reaches its liquidation price, closed at its bankruptcy price without a fee, as the "
    "simulator does. Funding is paid at each settlement on the position then held, at the mark "
    "(the close of the bar ending at the settlement). The exchange's initial-margin check is not "
    "modelled (the risk gate's max_leverage, at most 100x, binds before it)."
)
BOOK_ASSUMPTIONS = (
    "book fill model: the simulator's exchange and feed in-process (seed {seed}): every bar is replayed "
    "as trades through its high, low and close around a synthetic L2 book; decisions at each close + "
    "{grace:g} s (the daemon's loop), executed by the daemon's executor, order manager and risk gate "
    "(dead man's switch off: nothing can die in a backtest), which follows the touch every {chase:g} s "
    "of market time while an order works. Fees maker {maker:+.4%} / taker {taker:+.4%}; funding, margin "
    "and liquidation are the exchange's."
)


@dataclass
class Ledger:
    """What happened to the account, in the exchange's units.

    fills: (time, signed contracts, price, fee XBt (< 0 a rebate), MAKER | TAKER | LIQUIDATION);
    funding: (settlement time, rate, position, XBt paid: > 0 paid, < 0 received);
    balance / position: the margin balance (XBt) and position at each played bar's close."""

    fills: list = field(default_factory=list)
    funding: list = field(default_factory=list)
    balance: list = field(default_factory=list)
    position: list = field(default_factory=list)


class FillModel(Protocol):
    name: str
    ledger: Ledger
    view: object  # what RiskGate.cap_target reads: mark_price, best_bid/ask, margin, position

    def advance(self, i: int, due: tuple) -> Account: ...

    def pursue(self, target: Target) -> None: ...


def backtest_risk(cfg: Config, clock, store=None) -> RiskGate:
    """The config's risk gate for a backtest: every limit as configured, but no kill-switch file
    (a live daemon's switch must not stop a backtest, nor a backtest depend on var/)."""
    return RiskGate(dataclasses.replace(cfg.risk, kill_switch_file=""), clock, store=store)


def instrument(bars: np.ndarray, first: int, cfg: Config) -> dict:
    """The instrument as trading starts: tick and lot from the last day of history before bar
    `first` (never from the bars traded: that would be look-ahead), fees from the config."""
    inst = feed.instrument_for(bars[max(0, first - 1440): first])
    return inst | {"makerFee": cfg.sim.maker_fee, "takerFee": cfg.sim.taker_fee}


# The bars model makes one Account per bar. It fills the instance's __dict__ directly: the frozen
# dataclass's generated __init__ spends one object.__setattr__ per field, a third of a bar's
# bookkeeping; the fields are the same, and unnamed ones keep the class defaults, as through it.
_new = object.__new__


@dataclass
class _View:
    """The venue-like snapshot the risk gate reads (cap_target, check) in the bars model."""

    mark_price: float | None = None
    best_bid: float | None = None
    best_ask: float | None = None
    margin: dict = field(default_factory=lambda: {"marginBalance": 0})
    position: dict = field(default_factory=lambda: {"currentQty": 0, "liquidationPrice": None})


@dataclass
class _Working:
    """The one resting passive order: side (+1 buy, -1 sell), contracts, price, reduce-only."""

    side: int
    qty: int
    price: float
    reduce_only: bool


class BarFills:
    """Orders filled against each bar's range (BARS_ASSUMPTIONS), on the exchange's account code.

    `bars[first - 1]` is the first bar played (its close is where trading starts)."""

    name = "bars"

    def __init__(self, bars: np.ndarray, first: int, last: int, *, contract: Contract, balance_xbt: float,
                 risk: RiskGate, clock: SimClock, slippage: float = DEFAULT_SLIPPAGE) -> None:
        if not 0.0 <= slippage < 1.0:
            raise ValueError(f"slippage must be a fraction in [0, 1), got {slippage!r}")
        span = bars[first - 1: last]
        self._offset = first - 1
        self._open = span["time"].astype(np.float64).tolist()
        self._low, self._high, self._close = (span[k].tolist() for k in ("low", "high", "close"))
        self.contract, self.risk, self.clock, self.slippage = contract, risk, clock, slippage
        self.tick, self.lot = contract.tick_size, contract.lot_size
        balance = int(round(balance_xbt * SATOSHI))
        self.acct = accounts.Account(key="backtest", secret="", number=0, deposited=balance, wallet=balance,
                                     leverage=1.0 / contract.init_margin)
        self.ledger = Ledger()
        self._balances, self._positions = self.ledger.balance.append, self.ledger.position.append
        self.view = _View()
        self.goal: Target | None = None  # the standing target, rounded to the lot
        self.working: _Working | None = None
        self._liq: float | None = None  # liquidation price of the position
        self._now = self._close_price = 0.0
        self._changed()

    # ------------------------------------------------------------------ one bar
    def advance(self, i: int, due: tuple) -> Account:
        j = i - self._offset
        low, high = self._low[j], self._high[j]
        if due or self.working is not None or low <= self._liq_long or high >= self._liq_short:
            self._play(j, due, low, high)  # else nothing happens inside the bar, the usual case
        acct, close = self.acct, self._close[j]
        self._now, self._close_price = self._open[j] + MINUTE, close
        qty = acct.qty
        balance = acct.wallet + unrealised_pnl(qty, acct.cost, close) if qty else acct.wallet
        bid, ask = close - self.tick, close + self.tick
        view = self.view
        view.mark_price, view.best_bid, view.best_ask = close, bid, ask
        view.margin["marginBalance"] = balance
        self._balances(balance)
        self._positions(qty)
        account = _new(Account)
        fields = account.__dict__
        fields.update(self._held)
        fields["margin_balance_xbt"], fields["mark"], fields["best_bid"], fields["best_ask"] = (
            balance / SATOSHI, close, bid, ask)
        return account

    def _play(self, j: int, due: tuple, low: float, high: float) -> None:
        """What happens inside bar j, in order: the settlements due before it opens (a gap in the
        data), the resting order's fill, the liquidation check, the settlements within it."""
        opened = self._open[j]
        for t, rate in due:
            if t <= opened:
                self._fund(t, rate, self._close[j - 1])
        if self.working is not None:
            self._fill_resting(opened + MINUTE / 2, low, high)
        if low <= self._liq_long or high >= self._liq_short:
            self._liquidate(opened + MINUTE / 2)
        for t, rate in due:
            if t > opened:
                self._fund(t, rate, self._close[j])

    def _fill_resting(self, when: float, low: float, high: float) -> None:
        w = self.working
        if (w.side > 0 and low < w.price) or (w.side < 0 and high > w.price):
            self.working = None
            self._fill(when, w.side * w.qty, w.price, self.contract.maker_fee, MAKER)

    def _fill(self, when: float, qty: int, price: float, rate: float, liquidity: str) -> None:
        fee = commission(contract_value(qty, price), rate)
        self.acct.apply_fill(qty, exec_cost(qty, price), fee, when)
        self.ledger.fills.append((when, qty, price, fee, liquidity))
        self._changed()

    def _liquidate(self, when: float) -> None:
        """As the exchange: cancel the orders, close the position at its bankruptcy price, no fee."""
        self.working = None
        m = self._margins(self._liq)
        self._fill(when, -self.acct.qty, m.bankrupt, 0.0, LIQUIDATION)

    def _fund(self, t: float, rate: float, mark: float) -> None:
        paid = funding_payment(self.acct.qty, mark, rate)
        self.acct.pay_funding(paid)
        self.ledger.funding.append((t, rate, self.acct.qty, paid))
        self._changed()

    def _margins(self, mark: float | None):
        a, c = self.acct, self.contract
        w = self.working
        orders = [] if w is None else [(BUY if w.side > 0 else SELL, w.qty, w.price, w.reduce_only)]
        return margins(a.qty, a.cost, a.wallet, mark, open_exposure(orders, a.qty), cross=a.cross,
                       imr=initial_margin_req(a.cross, a.leverage, c.init_margin), contract=c)

    def _changed(self) -> None:
        """Position, wallet or working order changed: the liquidation price, the gate's view and the
        Account fields that only change with them follow."""
        a, c = self.acct, self.contract
        self._liq = self._margins(None).liq if a.qty else None
        # the bar's low (long) or high (short) at which the position is liquidated; never when flat
        self._liq_long = self._liq if self._liq is not None and a.qty > 0 else -math.inf
        self._liq_short = self._liq if self._liq is not None and a.qty < 0 else math.inf
        self.view.position = {"currentQty": a.qty, "liquidationPrice": self._liq}
        self._held = {"position": a.qty, "avg_entry": avg_entry_price(a.qty, a.cost), "liquidation_price": self._liq,
                      "taker_fee": c.taker_fee, "maker_fee": c.maker_fee}

    # ------------------------------------------------------------------ the target
    def pursue(self, target: Target) -> None:
        """Move toward `target` from the close just played (the executor's plan, module docs)."""
        standing = self.goal
        if (self.working is None and standing is not None and target.qty == standing.qty
                and target.style == standing.style and standing.qty == self.acct.qty):
            return  # reached, and the same target again: nothing to do (the executor would idle)
        self.goal = goal(target, self.lot)
        acct, cap = self.acct, self.risk.order_cap
        close = self._close_price
        if self.goal.style == "market":
            self.working = None
            while True:
                qty, reduce = leg(acct.qty, self.goal.qty - acct.qty, cap, self.lot)
                side = 1 if self.goal.qty > acct.qty else -1
                price = to_tick(close * (1 + side * self.slippage), self.tick, side)
                if not qty or not self._allowed(side, qty, price, reduce):
                    return
                self._fill(self._now, side * qty, price, self.contract.taker_fee, TAKER)
        qty, reduce = leg(acct.qty, self.goal.qty - acct.qty, cap, self.lot)
        side = 1 if self.goal.qty > acct.qty else -1
        price = close - side * self.tick
        w = self.working
        if not qty:
            self.working = None
        elif w is not None and (w.side, w.reduce_only) == (side, reduce) and qty <= w.qty:
            self.working = _Working(side, qty, price, reduce)  # an amend: to the touch, or smaller
        elif self._allowed(side, qty, price, reduce):
            self.working = _Working(side, qty, price, reduce)
        else:
            self.working = None
        if self.working is not w:
            self._changed()

    def _allowed(self, side: int, qty: int, price: float, reduce: bool) -> bool:
        """The risk gate's verdict on a new order, on the simulated clock (daily loss, order rate)."""
        self.clock.advance(max(0.0, self._now - self.clock.now()))
        ok = self.risk.check(ProposedOrder(BUY if side > 0 else SELL, qty, price, reduce), self.view)
        if ok:
            self.risk.record_sent()
        return bool(ok)


class BookFills:
    """The daemon's order stack on the simulator's exchange, in-process and stepped.

    The exchange is built as the simulator server builds its own (`sim.server.Sim`): the
    instrument (tick and lot from the history, fees from the config), the funding history, the
    config's seed and balance; the feed replays the bars from bar `first - 1` with the same seed,
    so a minute plays as it does on a server started there."""

    name = "book"

    def __init__(self, cfg: Config, bars: np.ndarray, first: int, last: int,
                 funding: list[tuple[float, float]]) -> None:
        start = float(bars["time"][first - 1])
        self.clock = SimClock(start, 0.0)
        self.exchange = Exchange(instrument(bars, first, cfg), self.clock, maker_fee=cfg.sim.maker_fee,
                                 taker_fee=cfg.sim.taker_fee, funding=funding, seed=cfg.sim.seed)
        self.exchange.add_account(SIM_DEMO_KEY, SIM_DEMO_SECRET, cfg.sim.balance_xbt)
        self.feed = feed.Feed(self.exchange, bars[max(0, first - 2): last], seed=cfg.sim.seed, loop=False,
                              start=start)
        self.venue = LocalVenue(self.exchange, SIM_DEMO_KEY)
        self.journal = Journal(":memory:", self.clock)
        self.risk = backtest_risk(cfg, self.clock, self.journal)
        self.executor = Executor(self.venue, self.journal, self.risk, self.clock,
                                 dataclasses.replace(cfg.execution, dead_mans_switch_ms=0))
        self._close = (bars["time"][first - 1: last] + MINUTE).astype(np.float64).tolist()
        self._offset = first - 1
        self._fees = (cfg.sim.taker_fee, cfg.sim.maker_fee)
        self.ledger = Ledger()
        self.view = self.venue.snapshot()
        self.exchange.subscribe(self._on_rows)

    def _on_rows(self, table: str, action: str, rows: list, account: str | None) -> None:
        if table != "execution" or account != SIM_DEMO_KEY:
            return
        for row in rows:
            when = parse_time(row["transactTime"])
            if row["execType"] == "Trade":
                liquidity = (LIQUIDATION if row.get("text") == TEXT_LIQUIDATION else
                             MAKER if row["lastLiquidityInd"] == "AddedLiquidity" else TAKER)
                self.ledger.fills.append((when, side_sign(row["side"]) * row["lastQty"], row["lastPx"],
                                          row["execComm"], liquidity))
            elif row["execType"] == "Funding":
                self.ledger.funding.append((when, row["commission"], row["lastQty"], row["execComm"]))

    def advance(self, i: int, due: tuple) -> Account:
        """Play the market up to the decision moment after bar i's close (the exchange pays `due`
        itself); the executor follows the touch meanwhile while it has work."""
        until = self._close[i - self._offset] + CLOSE_GRACE_S
        while True:
            busy = self._busy()
            step = min(until, self.clock.now() + CHASE_S) if busy else until
            self.clock.advance(max(0.0, step - self.clock.now()))
            self.feed.step_until(step)
            if busy:
                self.executor.settle()
            if step >= until:
                break
        snap = self.view = self.venue.snapshot()
        pos, balance = snap.position or {}, (snap.margin or {}).get("marginBalance") or 0
        self.ledger.balance.append(balance)
        self.ledger.position.append(int(pos.get("currentQty") or 0))
        taker, maker = self._fees
        return Account(position=int(pos.get("currentQty") or 0), margin_balance_xbt=balance / SATOSHI,
                       mark=snap.mark_price, best_bid=snap.best_bid, best_ask=snap.best_ask,
                       avg_entry=pos.get("avgEntryPrice"), liquidation_price=pos.get("liquidationPrice"),
                       taker_fee=taker, maker_fee=maker)

    def _busy(self) -> bool:
        """Has the executor work left: an order working, or the position short of the target?"""
        target = self.executor.target
        if target is None:
            return False
        return bool(self.journal.open_orders()) or self.venue.position() != target.qty

    def pursue(self, target: Target) -> None:
        self.executor.set_target(target)
        self.executor.settle()

    def close(self) -> None:
        self.journal.close()


def model_for(fill: str, cfg: Config, bars: np.ndarray, first: int, last: int, funding: list[tuple[float, float]],
              *, slippage: float = DEFAULT_SLIPPAGE) -> tuple[FillModel, RiskGate, str]:
    """(the fill model named `fill`, the risk gate its targets are capped by, its assumptions)."""
    if fill == "book":
        model = BookFills(cfg, bars, first, last, funding)
        text = BOOK_ASSUMPTIONS.format(seed=cfg.sim.seed, grace=CLOSE_GRACE_S, chase=CHASE_S,
                                       maker=cfg.sim.maker_fee, taker=cfg.sim.taker_fee)
        return model, model.risk, text
    if fill != "bars":
        raise ValueError(f"fill must be 'bars' or 'book', got {fill!r}")
    clock = SimClock(float(bars["time"][first - 1]), 0.0)
    risk = backtest_risk(cfg, clock)
    contract = Contract.of(instrument(bars, first, cfg))
    model = BarFills(bars, first, last, contract=contract, balance_xbt=cfg.sim.balance_xbt, risk=risk, clock=clock,
                     slippage=slippage)
    text = BARS_ASSUMPTIONS.format(slippage=slippage, maker=cfg.sim.maker_fee, taker=cfg.sim.taker_fee)
    return model, risk, text

