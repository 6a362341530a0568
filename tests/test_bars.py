"""Live bars: the pure trade-to-bar fold, then LiveBars against a real simulator on 127.0.0.1
(websocket trades into a real State, REST trade/bucketed and funding, a real SQLite store):
backfill, each minute reconciled with the exchange (REST wins, mismatches logged), gaps
fetched from REST, stand-in bars while REST fails, idempotent restarts, funding kept current."""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
from test_history import T0, market  # noqa: F401 (market is a fixture)

from sniper.bars import BarBuilder, LiveBars
from sniper.clock import RealClock
from sniper.history import Store
from sniper.model import BAR_DTYPE, iso, parse_time
from sniper.rest import RestClient
from sniper.ws.client import WsClient
from sniper.ws.state import State

DAY = 1440
START = T0 + DAY * 60  # the simulated clock starts a day into the test market


# ------------------------------------------------------------------------------ BarBuilder (pure)
def trade(t: float, price: float, size: int, side: str = "Buy", symbol: str = "XBTUSD", n: int = 0) -> dict:
    return {"timestamp": iso(t), "symbol": symbol, "side": side, "size": size, "price": price,
            "trdMatchID": f"{t}-{n}"}


def test_trades_fold_into_bitmex_buckets():
    b = BarBuilder()
    b.restart(T0 - 1)  # every trade from T0 on is seen
    assert b.add([trade(T0 + 1, 100.0, 5), trade(T0 + 20, 104.5, 1), trade(T0 + 30, 99.0, 2),
                  trade(T0 + 59.999, 101.0, 3), trade(T0 + 61, 102.0, 7)]) == 5
    bar = b.bar(T0, prev_close=100.5)
    assert bar.dtype == BAR_DTYPE and bar.tolist() == [(T0, 100.5, 104.5, 99.0, 101.0, 11)]  # open = previous close
    assert b.bar(T0 + 120, prev_close=102.0).tolist() == [(T0 + 120, 102.0, 102.0, 102.0, 102.0, 0)]  # no trades: flat


def test_the_last_trade_closes_the_minute_and_another_symbol_does_not_count():
    b = BarBuilder()
    b.restart(T0 - 1)
    b.add([trade(T0 + 5, 100.0, 1, n=1), trade(T0 + 5, 101.0, 1, n=2),  # one stamp: the later arrival is last
           trade(T0 + 3, 90.0, 1), trade(T0 + 10, 500.0, 9, symbol="ETHUSD")])
    assert b.bar(T0, 100.0).tolist() == [(T0, 100.0, 101.0, 90.0, 101.0, 3)]


def test_only_minutes_after_a_restart_are_vouched_for_and_late_trades_are_counted():
    b = BarBuilder()
    assert b.bar(T0, 100.0) is None  # nothing seen yet
    b.restart(T0 + 30)  # trades before this may be missing
    b.add([trade(T0 + 40, 100.0, 1), trade(T0 + 70, 101.0, 1)])
    assert b.bar(T0, 100.0) is None and b.bar(T0 + 60, 100.0) is not None
    b.settle(T0 + 60)
    assert b.bar(T0 + 60, 100.0) is None  # settled: forgotten
    b.add([trade(T0 + 80, 99.0, 1), {"timestamp": "garbage", "price": 1, "size": 1}, {"price": 2}])
    assert (b.late, b.bad) == (1, 2)


def test_a_real_bitmex_trade_row_folds(shared_data):
    row = json.loads((shared_data / "bitmex-payloads" / "ws_trade.json").read_text())
    b = BarBuilder()
    b.restart(0)
    assert b.add([row]) == 1
    minute = int(parse_time(row["timestamp"]) // 60 * 60)
    assert b.bar(minute, 98570.0).tolist() == [(minute, 98570.0, 98570.9, 98570.9, 98570.9, 100)]


# ------------------------------------------------------------------------------ LiveBars on a simulator
@dataclass
class Rig:
    """A simulator replaying the test market, a websocket client feeding a State, a REST client
    and a store: the parts the daemon gives LiveBars."""

    sim: object
    market: object
    store: Store
    state: State
    rest: RestClient
    clients: list = field(default_factory=list)

    @property
    def clock(self):
        return self.sim.server.sim.clock  # the simulated exchange's clock: the market's time

    def now(self) -> float:
        return self.clock.now()

    def connect(self) -> None:
        client = WsClient(self.sim.ws_url, self.state, rng=random.Random(1), stale_after=None,
                          backoff_initial=0.1, backoff_max=0.5)
        client.start()
        self.clients.append(client)
        assert client.wait_ready(10), self.state.snapshot(0).reason

    def disconnect(self) -> None:
        self.clients.pop().stop()

    def live(self, lookback: int = 600, rest: RestClient | None = None) -> LiveBars:
        return LiveBars(self.store, rest or self.rest, self.state, self.clock, symbol="XBTUSD", lookback=lookback)

    def advance(self, seconds: float, feed: bool = True) -> None:
        """Move the market on (printing its trades when `feed`) and wait until the websocket
        has delivered the last trade printed."""
        self.sim.control("clock", {"advance": seconds, "feed": feed})
        if feed and self.clients:
            self.wait_trades()

    def wait_trades(self) -> None:
        exchange = self.sim.server.sim.exchange  # asked on its own loop: REST may be failing on purpose
        wanted = self.sim.server.call(lambda: exchange.trades(count=1, reverse=True))[0]["trdMatchID"]
        deadline = time.monotonic() + 10
        while not any(r.get("trdMatchID") == wanted for r in self.state.table_rows("trade")):
            assert time.monotonic() < deadline, "the websocket never delivered the last trade"
            time.sleep(0.01)

    def expected(self, first: int, last: int) -> np.ndarray:
        """The recorded bars with open times in [first, last]: the exchange's buckets."""
        bars = self.market.bars()
        return bars[(bars["time"] >= first) & (bars["time"] <= last)]


@pytest.fixture
def rig_factory(sim_factory, market, tmp_path):  # noqa: F811 (market is the fixture imported above)
    rigs: list[Rig] = []

    def make(start: int = START, websocket: bool = True) -> Rig:
        sim = sim_factory(in_process=True, data=str(market.bars_csv), funding=str(market.funding_csv), start=start,
                          rate_limit=0)
        rig = Rig(sim, market, Store(tmp_path / f"history-{len(rigs)}.sqlite"), State(),
                  RestClient(sim.url, None, RealClock()))
        rigs.append(rig)
        if websocket:
            rig.connect()
        return rig

    yield make
    for rig in rigs:
        for client in rig.clients:
            client.stop()
        rig.store.close()


def test_backfill_then_every_minute_is_the_exchanges_and_matches_the_websocket(rig_factory):
    rig = rig_factory()
    live = rig.live(lookback=600)
    assert live.backfill() == 600  # an empty store: the last `lookback` minutes
    assert np.array_equal(live.bars, rig.expected(START - 600 * 60, START - 60))
    assert np.array_equal(rig.store.bars(), live.bars)
    for k in range(4):
        rig.advance(60)
        assert live.update(rig.now()) == [START + 60 * k]
    assert np.array_equal(live.bars, rig.expected(START - 596 * 60, START + 180)) and len(live.bars) == 600
    assert np.array_equal(rig.store.bars(start=START), rig.expected(START, START + 180))
    # the first minute after start was not seen whole; the next three were, and agree
    assert (live.checked, live.mismatches, live.provisional) == (3, 0, 0)
    assert live.update(rig.now()) == []  # nothing new within the same minute


def test_a_websocket_bar_that_disagrees_is_logged_and_the_exchanges_wins(rig_factory, caplog):
    rig = rig_factory()
    live = rig.live()
    live.backfill()
    rig.advance(60)
    live.update(rig.now())
    rig.advance(30)
    rig.sim.control("trade", {"side": "Buy", "qty": 25_000})  # trades the exchange's record does not have
    rig.advance(30)
    with caplog.at_level(logging.WARNING, logger="sniper.bars"):
        assert live.update(rig.now()) == [START + 60]
    exchange = rig.expected(START + 60, START + 60)
    assert live.mismatches == 1 and np.array_equal(live.bars[-1:], exchange)
    assert np.array_equal(rig.store.bars(start=START + 60), exchange)
    [record] = [r for r in caplog.records if "built from websocket trades" in r.getMessage()]
    text = record.getMessage()
    assert text.startswith(f"bar {iso(START + 60)}: ") and "keeping the exchange's" in text
    assert f"the exchange's bucket is open {exchange['open'][0]:g} high {exchange['high'][0]:g}" in text
    built_volume = int(text.split("volume ")[1].split(",")[0])
    assert built_volume >= exchange["volume"][0] + 25_000  # the websocket saw the extra trades


def test_a_gap_while_the_websocket_is_down_is_fetched_from_rest(rig_factory):
    rig = rig_factory()
    live = rig.live()
    live.backfill()
    rig.advance(60)
    live.update(rig.now())
    rig.disconnect()
    rig.advance(600)
    assert live.update(rig.now()) == [START + 60 * k for k in range(1, 11)]
    assert np.array_equal(live.bars[-11:], rig.expected(START, START + 600))
    assert rig.store.info()["gaps"] == [] and rig.store.last_bar_time() == START + 600
    assert live.checked == 0  # nothing the websocket missed was taken for a bar
    rig.connect()
    assert live.update(rig.now()) == []  # a new session seen: trades count from the next minute
    for _ in range(2):
        rig.advance(60)
        live.update(rig.now())
    assert (live.checked, live.mismatches) == (1, 0)
    assert np.array_equal(live.bars[-2:], rig.expected(START + 660, START + 720))


def test_while_rest_fails_the_websockets_bar_stands_in_until_the_exchange_confirms(rig_factory):
    rig = rig_factory()
    live = rig.live(rest=RestClient(rig.sim.url, None, RealClock(), max_attempts=1))
    live.backfill()
    rig.advance(60)
    live.update(rig.now())
    rig.sim.control("fault", {"mode": "overload"})  # every REST call answers 503
    rig.advance(60)
    assert live.update(rig.now()) == [START + 60]
    assert live.provisional == 1 and rig.store.last_bar_time() == START  # never stored unconfirmed
    assert np.array_equal(live.bars[-1:], rig.expected(START + 60, START + 60))
    rig.sim.control("fault", method="DELETE")
    rig.advance(60)
    assert live.update(rig.now()) == [START + 120]  # the stand-in is not reported twice
    assert live.provisional == 0 and rig.store.last_bar_time() == START + 120
    assert (live.checked, live.mismatches) == (2, 0)
    assert np.array_equal(rig.store.bars(start=START), rig.expected(START, START + 120))


def test_a_restart_fetches_only_what_it_missed_and_a_second_one_nothing(rig_factory):
    rig = rig_factory()
    first = rig.live(lookback=300)
    assert first.backfill() == 300
    for _ in range(3):
        rig.advance(60)
        first.update(rig.now())
    rig.advance(300)  # the process is stopped for five minutes
    second = rig.live(lookback=300)
    assert second.backfill() == 5
    assert np.array_equal(second.bars, rig.expected(START - 292 * 60, START + 420))
    rows = rig.store.info()["rows"]
    assert rows == 308 and rig.store.info()["gaps"] == []
    third = rig.live(lookback=300)
    assert third.backfill() == 0 and second.backfill() == 0
    assert np.array_equal(third.bars, second.bars) and rig.store.info()["rows"] == rows
    assert second.update(rig.now()) == [] and third.update(rig.now()) == []


def test_the_window_holds_lookback_bars_read_only_across_a_long_backfill(rig_factory, market):  # noqa: F811
    rig = rig_factory(start=T0 + 3000 * 60, websocket=False)
    rig.store.append_bars(market.bars()[:100])
    live = rig.live(lookback=200)
    assert live.backfill() == 2900  # everything after the store's last bar
    assert np.array_equal(live.bars, market.bars()[2800:3000])
    assert np.array_equal(rig.store.bars(), market.bars()[:3000])
    with pytest.raises(ValueError):
        live.bars["close"][0] = 1.0
    assert live.bars.base is not None and live.bars.nbytes == 200 * BAR_DTYPE.itemsize


def test_funding_is_fetched_once_a_settlement_is_due(rig_factory, market):  # noqa: F811
    rig = rig_factory(websocket=False)
    live = rig.live()
    live.backfill()
    times, rates = live.funding_history
    settled = market.funding_until(START)
    assert times.tolist() == settled["time"].tolist() and rates.tolist() == settled["funding_rate"].tolist()
    assert times[-1] == START - 4 * 3600  # 20:00; the next settlement is 04:00
    rig.advance(120, feed=False)
    sent = rig.rest.stats["requests"]
    live.update(rig.now())
    assert rig.rest.stats["requests"] - sent == 1  # the bars only: no settlement is due
    rig.advance(4 * 3600, feed=False)
    live.update(rig.now())
    times, _ = live.funding_history
    assert times[-1] == START + 4 * 3600 and rig.store.last_funding()[0] == START + 4 * 3600
    assert np.array_equal(live.bars[-5:], rig.expected(START + 4 * 3600 - 180, START + 4 * 3600 + 60))
    assert not live.funding_history[0].flags.writeable

