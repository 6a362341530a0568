"""Random operation sequences keep the exchange's books straight: the orderBookL2
stream replays to the book, the book never crosses, levels add up, positions and
wallets agree with the executions."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sniper.clock import SimClock
from sniper.sim.exchange import Exchange, ExchangeError
from sniper.sim.feed import load_instrument

KEYS = ("a", "b")
prices = st.integers(19_996, 20_005).map(lambda t: t * 0.5)  # 9998 .. 10002.5: queues form
sides = st.sampled_from(["Buy", "Sell"])
qtys = st.integers(1, 300)

ops = st.one_of(
    st.tuples(st.just("level"), sides, prices, st.integers(0, 500)),
    st.tuples(st.just("taker"), sides, qtys, st.one_of(st.none(), prices)),
    st.tuples(st.just("limit"), st.sampled_from(KEYS), sides, qtys, prices,
              st.sampled_from(["", "ParticipateDoNotInitiate", "ReduceOnly"]),
              st.sampled_from(["GoodTillCancel", "ImmediateOrCancel", "FillOrKill"])),
    st.tuples(st.just("market"), st.sampled_from(KEYS), sides, qtys),
    st.tuples(st.just("amend"), st.sampled_from(KEYS), st.integers(0, 5), st.one_of(st.none(), prices),
              st.one_of(st.none(), st.integers(0, 300))),
    st.tuples(st.just("cancel"), st.sampled_from(KEYS), st.integers(0, 5)),
    st.tuples(st.just("mark"), prices),
)


class Mirror:
    """A client-side copy of the book built only from orderBookL2 messages."""

    def __init__(self) -> None:
        self.book: dict[int, tuple] = {}

    def __call__(self, table, action, rows, account) -> None:
        if table != "orderBookL2":
            return
        for r in rows:
            if action == "delete":
                del self.book[r["id"]]
            else:
                assert (r["id"] in self.book) == (action == "update")
                self.book[r["id"]] = (r["side"], r["price"], r["size"])


def apply(ex: Exchange, op: tuple) -> None:
    kind = op[0]
    try:
        if kind == "level":
            ex.set_level(op[1], op[2], op[3])
        elif kind == "taker":
            ex.market_order(op[1], op[2], op[3])
        elif kind == "limit":
            _, key, side, qty, price, inst, tif = op
            if inst == "ParticipateDoNotInitiate":
                tif = "GoodTillCancel"
            ex.place_order(key, side=side, orderQty=qty, price=price, execInst=inst, timeInForce=tif)
        elif kind == "market":
            ex.place_order(op[1], side=op[2], orderQty=op[3], ordType="Market")
        elif kind in ("amend", "cancel"):
            open_orders = ex.orders(op[1], open_only=True)
            if not open_orders:
                return
            oid = open_orders[op[2] % len(open_orders)]["orderID"]
            if kind == "cancel":
                ex.cancel_orders(op[1], orderID=oid)
            else:
                ex.amend_order(op[1], orderID=oid, price=op[3], leavesQty=op[4])
        else:
            ex.set_mark_price(op[1])
    except ExchangeError as e:
        assert e.status == 400, e.message  # margin or parameter rejections only


def check(ex: Exchange, mirror: Mirror) -> None:
    rows = ex.l2_rows()
    assert mirror.book == {r["id"]: (r["side"], r["price"], r["size"]) for r in rows}
    if ex.best_bid() is not None and ex.best_ask() is not None:
        assert ex.best_bid() < ex.best_ask()
    for side in ("Buy", "Sell"):
        for tick, level in ex.book.levels[side].items():
            assert level.size > 0 or level.orders
            assert level.user == sum(o.leaves for o in level.orders)
            assert all(o.is_open and o.resting and o.tick == tick and o.side == side for o in level.orders)
            assert all(0 <= o.ahead <= level.mm for o in level.orders)
    for key in KEYS:
        acct = ex._accounts[key]
        assert all(o.is_open and o.resting for o in acct.open.values())
        fills = [r for r in ex.executions(key) if r["execType"] == "Trade"]
        assert acct.qty == sum(r["lastQty"] if r["side"] == "Buy" else -r["lastQty"] for r in fills)
        assert acct.wallet == acct.deposited + acct.realised_gross - sum(r["execComm"] for r in fills)
        assert (acct.qty == 0) == (acct.cost == 0)
        for row in ex.orders(key):
            assert row["cumQty"] + row["leavesQty"] <= row["orderQty"]
            assert (row["leavesQty"] > 0) == (row["ordStatus"] in ("New", "PartiallyFilled"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=40))
def test_random_operations_keep_the_books_consistent(operations):
    ex = Exchange(load_instrument(), SimClock(1542585600.0, speed=0))
    for key in KEYS:
        ex.add_account(key, "s", 0.5)
    mirror = Mirror()
    ex.subscribe(mirror)
    ex.set_levels([("Sell", 10000.5 + 0.5 * i, 50) for i in range(6)] + [("Buy", 10000 - 0.5 * i, 50) for i in range(6)])
    for op in operations:
        apply(ex, op)
        check(ex, mirror)
