"""One trading account's state at the simulated exchange: its orders (open and recently
closed), its position, its wallet and execution history, and how fills and funding
payments change them."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from sniper.model import SELL
from sniper.sim.margin import position_after_fill

RECENT_ORDERS = 10_000  # closed orders kept per account (clOrdID uniqueness, GET /order)
RECENT_EXECUTIONS = 10_000


@dataclass(slots=True, eq=False)
class Account:
    key: str
    secret: str
    number: int
    deposited: int
    wallet: int
    orders: dict = field(default_factory=dict)  # orderID -> Order (open and recent)
    open: dict = field(default_factory=dict)  # orderID -> Order, open only
    by_clid: dict = field(default_factory=dict)  # clOrdID -> Order (same set)
    closed: deque = field(default_factory=deque)  # closed orders, oldest first
    executions: deque = field(default_factory=lambda: deque(maxlen=RECENT_EXECUTIONS))
    # position
    qty: int = 0
    cost: int = 0  # signed XBt cost of the open position (long < 0)
    cross: bool = True
    leverage: float = 100.0  # isolated leverage (shown as 1/initMargin while cross)
    touched: bool = False  # a position row exists (BitMEX lists positions ever opened)
    announced: bool = False  # the position row was inserted for ws subscribers
    realised_gross: int = 0
    comm: int = 0  # commissions paid since the position opened (maker rebates negative)
    funding_paid: int = 0
    exec_buy_qty: int = 0
    exec_sell_qty: int = 0
    exec_buy_cost: int = 0
    exec_sell_cost: int = 0
    exec_comm: int = 0
    opening_time: float = 0.0
    cancel_at: float | None = None  # cancelAllAfter deadline
    wallet_sent: int | None = None  # wallet amount in the last emitted wallet row
    created: float = 0.0

    @property
    def realised_pnl(self) -> int:
        """realisedPnl: gross PnL less commissions and funding paid."""
        return self.realised_gross - self.comm - self.funding_paid

    def reducible(self, side: str) -> int:
        """Contracts an order on `side` could trade that would reduce the position."""
        return max(0, self.qty) if side == SELL else max(0, -self.qty)

    def apply_fill(self, qty: int, cost: int, comm: int, now: float) -> None:
        """Position and wallet after a fill of `qty` signed contracts costing `cost` XBt
        with commission `comm`: realised PnL and the commission settle into the wallet."""
        change = position_after_fill(self.qty, self.cost, qty, cost)
        if change.opened:
            self.opening_time = now
        self.qty, self.cost = change.qty, change.cost
        self.realised_gross += change.realised
        self.wallet += change.realised - comm
        self.comm += comm
        self.exec_comm += comm
        if qty > 0:
            self.exec_buy_qty += qty
            self.exec_buy_cost += cost
        else:
            self.exec_sell_qty -= qty
            self.exec_sell_cost += cost
        self.touched = True

    def pay_funding(self, paid: int) -> None:
        """A settlement's payment (> 0 paid by the account, < 0 received)."""
        self.wallet -= paid
        self.funding_paid += paid

    def retire(self, order) -> None:
        """Keep a closed order for a while (GET /order, clOrdID uniqueness), then forget it."""
        self.closed.append(order)
        while len(self.closed) > RECENT_ORDERS:
            old = self.closed.popleft()
            self.orders.pop(old.id, None)
            if self.by_clid.get(old.clid) is old:
                del self.by_clid[old.clid]
