"""The same executor and order manager over the two venues, for one target sequence and one
market script: over the simulator server on 127.0.0.1 (BitmexVenue: REST, websocket) and over
the same exchange model in this process (LocalVenue). Both must send the same requests and
leave the same orders, fills and position: what a backtest does is what the daemon does."""

from __future__ import annotations

from drivers.rig import LocalRig, Rig, exchange_view, local_exchange, wait_for

from sniper.model import BUY, OPEN_ORD_STATUSES, SELL, Target, side_sign
from sniper.orders.venue import position_of

TOUCH = 1  # market-maker contracts ahead of our passive orders at the touch
SCRIPT = [
    ("book", True, [(BUY, 9990, TOUCH), (SELL, 10010, TOUCH), (BUY, 9900, 100_000), (SELL, 10100, 100_000)]),
    ("target", Target(300, "passive", "up")),
    ("book", False, [(BUY, 9995, TOUCH)]),  # the touch moves up: the order follows it
    ("fill", 100),
    ("target", Target(200, "passive", "smaller")),  # 100 done: amended down to 100 more
    ("book", False, [(BUY, 9995, TOUCH)]),
    ("fill", 100),
    ("target", Target(-100, "market", "reverse")),  # IOC legs through a thin touch: reduce, then open
    ("target", Target(150, "market", "back")),
    ("book", False, [(SELL, 10050, TOUCH)]),
    ("target", Target(0, "passive", "flat")),  # a post-only reducing leg at the new ask
    ("fill", 150),
    ("target", Target(100, "passive", "long again")),
    ("target", Target(-50, "market", "changed mind")),  # cancel the resting buy, sell at market
]


class Server:
    """The script against a simulator server; the executor is stepped from this thread once the
    websocket shows what the exchange has, so each cycle plans from a settled view."""

    def __init__(self, sim, journal_path: str) -> None:
        self.sim = sim
        self.rig = Rig(sim.url, sim.key, sim.secret, journal_path).start(executor=False)

    def book(self, clear: bool, levels) -> None:
        self.sim.control("book", {"clear": clear, "levels": [{"side": s, "price": p, "size": n} for s, p, n in levels]})

    def trade(self, side: str, qty: int, price: float) -> None:
        self.sim.control("trade", {"side": side, "qty": qty, "price": price})

    def orders(self) -> list[dict]:
        return exchange_view(self.rig.rest)[2]

    def fills(self) -> list[dict]:
        return self.rig.rest.fills(count=500)

    def _synced(self) -> bool:
        snap = self.rig.state.snapshot(depth=1)
        market = self.sim.state()
        position, open_orders, _ = exchange_view(self.rig.rest)
        shown = sorted((o["clOrdID"], o["cumQty"], o["leavesQty"], o["price"]) for o in snap.orders)
        told = sorted((o["clOrdID"], o["cumQty"], o["leavesQty"], o["price"]) for o in open_orders)
        return (snap.ready and (snap.best_bid, snap.best_ask) == (market["best_bid"], market["best_ask"])
                and position_of(snap) == position and shown == told)

    def settle(self) -> None:
        for _ in range(20):
            wait_for(self._synced, what="the websocket showing the exchange")
            if self.rig.executor.settle() == "idle" and self._synced():
                return
        raise AssertionError(f"never settled: {self.rig.executor.last_status}")


class InProcess:
    """The script against the exchange model in this process, built as the server builds it."""

    def __init__(self, journal_path: str) -> None:
        self.exchange, clock = local_exchange()
        self.rig = LocalRig(self.exchange, clock, journal_path)

    def book(self, clear: bool, levels) -> None:
        if clear:
            self.exchange.clear_market_levels()
        self.exchange.set_levels(levels)

    def trade(self, side: str, qty: int, price: float) -> None:
        self.exchange.market_order(side, qty, price)

    def orders(self) -> list[dict]:
        return self.exchange.orders(self.rig.venue.key)

    def fills(self) -> list[dict]:
        return self.rig.venue.fills()

    def settle(self) -> None:
        assert self.rig.executor.settle() == "idle", self.rig.executor.last_status


def run(side) -> dict:
    """Play SCRIPT on one side; what it sent and what the exchange holds after, clOrdIDs
    without the journal's random token."""
    for op, *args in SCRIPT:
        if op == "book":
            side.book(*args)
        elif op == "fill":  # an outside taker trades through the touch and `qty` of our order
            [order] = [o for o in side.orders() if o["ordStatus"] in OPEN_ORD_STATUSES]
            taker = SELL if order["side"] == BUY else BUY
            side.trade(taker, TOUCH + args[0], order["price"])
        else:
            side.rig.executor.set_target(args[0])
        side.settle()

    def ours(clordid: str) -> str:
        return clordid.split("-", 1)[1]

    journal = side.rig.journal
    return {
        "requests": [(e["kind"], ours(e["clordid"]), e["data"]) for e in journal.events()
                     if e["kind"] in ("request", "amend", "cancel")],
        "orders": sorted((ours(o["clOrdID"]), o["side"], o["orderQty"], o["price"], o["execInst"],
                          o["timeInForce"], o["ordStatus"], o["cumQty"]) for o in side.orders()),
        "fills": sorted((ours(f["clOrdID"]), f["side"], f["lastQty"], f["lastPx"]) for f in side.fills()),
        "position": side.rig.executor.position(),
        "intents": [tuple(r) for r in journal._query("SELECT qty, style, reason, source FROM intents ORDER BY id")],
    }


def test_the_same_targets_make_the_same_orders_over_the_server_and_in_process(sim_factory, tmp_path):
    server = Server(sim_factory(rate_limit=0), str(tmp_path / "server.sqlite"))
    try:
        over_the_wire = run(server)
    finally:
        server.rig.stop()
    in_process = run(InProcess(str(tmp_path / "local.sqlite")))
    for part in over_the_wire:
        assert in_process[part] == over_the_wire[part], part
    # the script exercised every kind of request, and every fill is accounted for
    kinds = {kind for kind, _, _ in in_process["requests"]}
    assert kinds == {"request", "amend", "cancel"}, kinds
    assert sum(side_sign(s) * q for _, s, q, _ in in_process["fills"]) == in_process["position"] == -50
    assert len(in_process["orders"]) >= 10
