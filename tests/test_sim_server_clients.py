"""Third-party BitMEX clients, unmodified, against the simulator: if ccxt's BitMEX
adapter and BitMEX's own websocket client work, the protocol is BitMEX's and not
merely what our own clients expect."""

from __future__ import annotations

import logging
import time

import pytest

START = "2018-11-20T12:00:30Z"


@pytest.fixture(scope="module")
def sim():
    from conftest import start_sim

    handle = start_sim(start=START, rate_limit=0)
    handle.control("feed", {"paused": False, "speed": 20})
    time.sleep(0.5)  # a few seconds of market: trades and quotes exist
    handle.control("feed", {"paused": True})
    yield handle
    handle.stop()


def test_ccxt_bitmex_adapter(sim):
    ccxt = pytest.importorskip("ccxt")
    ex = ccxt.bitmex({"apiKey": sim.key, "secret": sim.secret, "enableRateLimit": False, "timeout": 10_000})
    ex.urls["api"] = {"public": sim.url, "private": sim.url}
    markets = ex.load_markets()
    symbol = "BTC/USD:BTC"
    assert markets[symbol]["id"] == "XBTUSD" and markets[symbol]["inverse"] is True
    book = ex.fetch_order_book(symbol, 5)
    assert len(book["bids"]) == 5 and book["bids"][0][0] < book["asks"][0][0]
    assert ex.fetch_trades(symbol, limit=5)
    candles = ex.fetch_ohlcv(symbol, "1h", limit=3)
    assert len(candles) == 3 and all(c[2] >= c[3] for c in candles)
    assert ex.fetch_balance()["BTC"]["total"] == pytest.approx(1.0)
    order = ex.create_order(symbol, "limit", "buy", 10, 4000)
    assert order["status"] == "open" and order["price"] == 4000
    assert [o["id"] for o in ex.fetch_open_orders(symbol)] == [order["id"]]
    assert ex.cancel_order(order["id"], symbol)["status"] == "canceled"
    filled = ex.create_order(symbol, "market", "sell", 10)
    assert filled["info"]["cumQty"] == 10 and filled["status"] == "closed"
    (position,) = ex.fetch_positions([symbol])
    assert position["info"]["currentQty"] == -10 and position["side"] == "short"


def test_bitmex_official_websocket_client(sim):
    bitmex_websocket = pytest.importorskip("bitmex_websocket")
    logging.getLogger("bitmex_websocket").setLevel(logging.ERROR)
    client = bitmex_websocket.BitMEXWebsocket(endpoint=sim.ws_url, symbol="XBTUSD", api_key=sim.key,
                                              api_secret=sim.secret)
    try:
        assert client.get_instrument()["symbol"] == "XBTUSD"
        ticker = client.get_ticker()
        assert ticker["buy"] <= ticker["sell"] and ticker["last"] > 0
        assert client.funds()["walletBalance"] > 0
        assert len(client.market_depth()) > 50
        assert client.recent_trades()
        sim.control("trade", {"side": "Sell", "qty": 100})
        deadline = time.monotonic() + 5
        while client.recent_trades()[-1]["side"] != "Sell" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.recent_trades()[-1]["side"] == "Sell"
    finally:
        client.exit()
