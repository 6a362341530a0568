"""The simulator's REST API against BitMEX's official schema and behaviour: field
names and JSON types per swagger.json, both body encodings, error bodies, list
paging, bucketed trades without look-ahead, duplicate clOrdID and the rate-limit
budget with its headers and 429s."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import pytest
import requests

from sniper.model import parse_time
from sniper.sim import feed
from sniper.sim.rest_api import RestApi

START = 1542585600 + 2 * 86400 + 3 * 3600 + 17 * 60 + 30  # 2018-11-21T03:17:30Z, 2 days into the replay


@pytest.fixture(scope="module")
def sim():
    from conftest import start_sim

    handle = start_sim(start=START, rate_limit=0)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def swagger(shared_data_dir):
    return json.loads((shared_data_dir / "swagger.json").read_text())


@pytest.fixture(scope="module")
def shared_data_dir():
    from conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def call(sim, verb: str, path: str, body=None, form: bool = False, expect: int = 200):
    if body is None:
        data = ""
    else:
        data = urlencode(body) if form else json.dumps(body)
    headers = sim.headers(verb, path, data)
    if data:
        headers["content-type"] = "application/x-www-form-urlencoded" if form else "application/json"
    resp = requests.request(verb, sim.url + path, data=data or None, headers=headers, timeout=10)
    assert resp.status_code == expect, resp.text
    return resp.json()


JSON_TYPES = {"string": str, "boolean": bool, "number": (int, float), "array": list, "object": dict}


def assert_fits(swagger: dict, model: str, row: dict) -> None:
    """Every schema field the row carries has the schema's JSON type; required fields are present."""
    schema = swagger["definitions"][model]
    for name in schema.get("required", []):
        assert name in row, f"{model}.{name} missing"
    for name, spec in schema["properties"].items():
        value = row.get(name)
        if value is None or "type" not in spec:
            continue
        if spec["type"] == "integer":
            assert isinstance(value, int) and not isinstance(value, bool), f"{model}.{name}={value!r}"
        else:
            assert isinstance(value, JSON_TYPES[spec["type"]]), f"{model}.{name}={value!r}"
        if spec.get("format") == "date-time":
            assert value.endswith("Z") and len(value) == 24, f"{model}.{name}={value!r}"


def test_route_parameters_are_the_official_schemas(swagger):
    """Each route validates the parameters swagger.json gives it, with its type and format (a
    few it has no use for, such as targetAccountId, are left out and so ignored)."""
    routes = RestApi(None, None, clock=None, real_clock=None, faults=None, limiter=None, counters=None).routes
    for route in routes:
        official = {p["name"]: (p["type"], p.get("format"))
                    for p in swagger["paths"][route.path][route.method.lower()].get("parameters", [])}
        ours = {name: kind.swagger for name, kind in route.schema.items()}
        assert ours.items() <= official.items(), (route.method, route.path, set(ours.items()) - set(official.items()))
        assert set(official) - set(ours) <= {"targetAccountId", "targetAccountIds"}, (route.method, route.path)


def test_responses_fit_the_official_schema(sim, swagger):
    call(sim, "POST", "/api/v1/order", {"symbol": "XBTUSD", "side": "Buy", "orderQty": 5, "ordType": "Market"})
    call(sim, "POST", "/api/v1/order", {"symbol": "XBTUSD", "side": "Buy", "orderQty": 5, "price": 4000})
    checks = [
        ("/api/v1/instrument", "Instrument"), ("/api/v1/instrument/active", "Instrument"),
        ("/api/v1/instrument/activeAndIndices", "Instrument"),
        ("/api/v1/orderBook/L2?symbol=XBTUSD&depth=5", "OrderBookL2"),
        ("/api/v1/trade?symbol=XBTUSD&count=20&reverse=true", "Trade"),
        ("/api/v1/trade/bucketed?binSize=1m&symbol=XBTUSD&count=3&reverse=true", "TradeBin"),
        ("/api/v1/funding?symbol=XBTUSD&reverse=true", "Funding"), ("/api/v1/order", "Order"),
        ("/api/v1/position", "Position"), ("/api/v1/user/margin", "Margin"), ("/api/v1/user/wallet", "Wallet"),
        ("/api/v1/wallet/assets", "AssetsConfig"), ("/api/v1/execution/tradeHistory", "Execution"),
    ]
    for path, model in checks:
        body = call(sim, "GET", path)
        rows = body if isinstance(body, list) else [body]
        assert rows, path
        for row in rows:
            assert_fits(swagger, model, row)


def test_form_and_json_bodies_place_orders_and_duplicates_are_refused(sim):
    form = call(sim, "POST", "/api/v1/order", {"symbol": "XBTUSD", "side": "Sell", "orderQty": "7", "price": "9000",
                                               "clOrdID": "form-1", "execInst": "ParticipateDoNotInitiate"}, form=True)
    assert (form["orderQty"], form["price"], form["ordStatus"], form["clOrdID"]) == (7, 9000.0, "New", "form-1")
    dup = call(sim, "POST", "/api/v1/order", {"symbol": "XBTUSD", "side": "Sell", "orderQty": 1, "price": 9100,
                                              "clOrdID": "form-1"}, expect=400)
    assert dup == {"error": {"message": "Duplicate clOrdID", "name": "HTTPError"}}
    amended = call(sim, "PUT", "/api/v1/order", {"origClOrdID": "form-1", "orderQty": 9}, form=True)
    assert amended["orderQty"] == 9 and amended["leavesQty"] == 9
    (canceled,) = call(sim, "DELETE", "/api/v1/order", {"clOrdID": "form-1"}, form=True)
    assert canceled["ordStatus"] == "Canceled"
    open_only = "/api/v1/order?" + urlencode({"filter": json.dumps({"open": True})})
    assert "form-1" not in {o["clOrdID"] for o in call(sim, "GET", open_only)}


def test_validation_and_not_found_errors(sim):
    bad_qty = call(sim, "POST", "/api/v1/order", {"symbol": "XBTUSD", "side": "Buy", "orderQty": "ten"},
                   form=True, expect=400)
    assert bad_qty["error"]["name"] == "ValidationError"
    assert call(sim, "GET", "/api/v1/orderBook/L2", expect=400)["error"]["name"] == "ValidationError"
    assert call(sim, "GET", "/api/v1/trade?count=1001", expect=400)["error"]["name"] == "ValidationError"
    assert call(sim, "DELETE", "/api/v1/order", {"orderID": "no-such-order"}, expect=404) == {
        "error": {"message": "Not Found", "name": "HTTPError"}}
    assert call(sim, "GET", "/api/v1/nothing/here", expect=404)["error"]["message"] == "Not Found"


def test_cancel_all_and_cancel_all_after(sim):
    for price in (4100, 4200):
        call(sim, "POST", "/api/v1/order", {"symbol": "XBTUSD", "side": "Buy", "orderQty": 1, "price": price})
    reply = call(sim, "POST", "/api/v1/order/cancelAllAfter", {"timeout": 60000})
    assert set(reply) == {"now", "cancelTime"}
    assert call(sim, "POST", "/api/v1/order/cancelAllAfter", {"timeout": 0})["cancelTime"] == 0
    canceled = call(sim, "DELETE", "/api/v1/order/all", {"symbol": "XBTUSD"})
    assert len(canceled) >= 2 and {o["ordStatus"] for o in canceled} == {"Canceled"}


def test_leverage_and_isolate(sim):
    assert call(sim, "POST", "/api/v1/position/leverage", {"symbol": "XBTUSD", "leverage": 5})["leverage"] == 5
    assert call(sim, "POST", "/api/v1/position/isolate", {"symbol": "XBTUSD", "enabled": "false"},
                form=True)["crossMargin"] is True


def test_list_paging(sim):
    for i in range(24):
        sim.control("trade", {"side": "Buy" if i % 2 else "Sell", "qty": 3})
        sim.control("clock", {"advance": 0.25})
    trades = call(sim, "GET", "/api/v1/trade?symbol=XBTUSD&count=10&reverse=true")
    times = [t["timestamp"] for t in trades]
    assert len(trades) == 10 and times == sorted(times, reverse=True)
    older = call(sim, "GET", "/api/v1/trade?symbol=XBTUSD&count=10&start=10&reverse=true")
    assert older[0]["timestamp"] <= times[-1]
    window = call(sim, "GET", "/api/v1/trade?" + urlencode({"startTime": times[-1], "endTime": times[0],
                                                            "count": 1000}))
    assert {t["trdMatchID"] for t in trades} <= {t["trdMatchID"] for t in window}


def test_history_filter_and_columns(sim):
    for side in ("Buy", "Sell", "Buy"):
        sim.control("trade", {"side": side, "qty": 2})
        sim.control("clock", {"advance": 0.5})
    sells = call(sim, "GET", "/api/v1/trade?" + urlencode(
        {"symbol": "XBTUSD", "reverse": "true", "count": 5, "filter": json.dumps({"side": "Sell"})}))
    assert len(sells) == 5 and {t["side"] for t in sells} == {"Sell"}  # filtered before the count
    slim = call(sim, "GET", "/api/v1/trade?" + urlencode({"symbol": "xbtusd", "count": 2, "columns": '["price"]'}))
    assert [set(t) for t in slim] == [{"timestamp", "symbol", "price"}] * 2  # keys come back regardless
    bins = call(sim, "GET", "/api/v1/trade/bucketed?" + urlencode(
        {"binSize": "1h", "symbol": "XBT", "count": 3, "columns": "close",
         "filter": json.dumps({"timestamp": "2018-11-19T05:00:00.000Z"})}))
    assert bins == [{"timestamp": "2018-11-19T05:00:00.000Z", "symbol": "XBTUSD", "close": bins[0]["close"]}]
    funding = call(sim, "GET", "/api/v1/funding?" + urlencode(
        {"filter": json.dumps({"timestamp": "2018-11-19T12:00:00.000Z"})}))
    assert [f["timestamp"] for f in funding] == ["2018-11-19T12:00:00.000Z"]
    assert call(sim, "GET", "/api/v1/funding?symbol=ETHUSD") == []


def test_cancel_all_with_a_filter(sim):
    placed = [call(sim, "POST", "/api/v1/order", {"symbol": "XBTUSD", "side": side, "orderQty": 1, "price": price})
              for side, price in (("Buy", 4300), ("Buy", 4301), ("Sell", 9300))]
    canceled = call(sim, "DELETE", "/api/v1/order/all", {"filter": json.dumps({"side": "Buy"})})
    assert {o["orderID"] for o in canceled} >= {placed[0]["orderID"], placed[1]["orderID"]}
    assert {o["side"] for o in canceled} == {"Buy"}
    still_open = call(sim, "GET", "/api/v1/order?" + urlencode({"filter": json.dumps({"open": True})}))
    assert placed[2]["orderID"] in {o["orderID"] for o in still_open}
    assert all(o["side"] == "Sell" for o in still_open)
    call(sim, "DELETE", "/api/v1/order/all", {"symbol": "XBTUSD"})


def expected_bins(step: int, end: float) -> pd.DataFrame:
    bars = pd.DataFrame(feed.load_bars(feed.DEFAULT_BARS))
    bars["end"] = (bars["time"] // step + 1) * step
    grouped = bars.groupby("end").agg(open=("open", "first"), high=("high", "max"), low=("low", "min"),
                                      close=("close", "last"), volume=("volume", "sum"))
    return grouped[grouped.index <= end]


@pytest.mark.parametrize("bin_size,step", [("1m", 60), ("5m", 300), ("1h", 3600), ("1d", 86400)])
def test_bucketed_matches_the_bars_without_look_ahead(sim, bin_size, step):
    now = sim.state()["time"]
    rows = call(sim, "GET", f"/api/v1/trade/bucketed?binSize={bin_size}&symbol=XBTUSD&count=1000&reverse=true")
    want = expected_bins(step, now)
    assert len(rows) == min(1000, len(want))
    got = pd.DataFrame(rows)
    got["end"] = [int(parse_time(t)) for t in got["timestamp"]]
    got = got.set_index("end").sort_index()
    want = want.loc[got.index]
    assert got.index.max() <= now < got.index.max() + step
    for col in ("open", "high", "low", "close", "volume"):
        assert np.allclose(got[col], want[col]), col


def test_bucketed_paging_and_errors(sim):
    rows = call(sim, "GET", "/api/v1/trade/bucketed?binSize=1h&symbol=XBTUSD&count=3")  # from the oldest
    assert [r["timestamp"] for r in rows] == ["2018-08-20T01:00:00.000Z", "2018-08-20T02:00:00.000Z",
                                              "2018-08-20T03:00:00.000Z"]
    window = call(sim, "GET", "/api/v1/trade/bucketed?" + urlencode(
        {"binSize": "5m", "startTime": "2018-11-20T00:00:00Z", "endTime": "2018-11-20T00:20:00Z"}))
    assert [r["timestamp"][11:16] for r in window] == ["00:00", "00:05", "00:10", "00:15", "00:20"]
    assert call(sim, "GET", "/api/v1/trade/bucketed?binSize=3m", expect=400)["error"]["name"] == "ValidationError"
    assert call(sim, "GET", "/api/v1/trade/bucketed?binSize=1m&count=1001", expect=400)["error"]["name"] == (
        "ValidationError")
    for query, name in (("trade/bucketed?binSize=1m&startTime=garbage", "startTime"), ("trade?endTime=soon", "endTime"),
                        ("funding?startTime=x", "startTime")):  # a 400 body, not the framework's 500 page
        assert call(sim, "GET", f"/api/v1/{query}", expect=400)["error"] == {"message": f"Invalid {name}",
                                                                            "name": "ValidationError"}


def test_rate_limit_headers_and_429(sim_factory):
    sim = sim_factory(rate_limit=30)
    url = sim.url + "/api/v1/instrument"
    remaining = []
    for _ in range(30):
        resp = requests.get(url, timeout=5)
        assert resp.status_code == 200
        assert resp.headers["x-ratelimit-limit"] == "30"
        assert int(resp.headers["x-ratelimit-reset"]) >= int(time.time())
        remaining.append(int(resp.headers["x-ratelimit-remaining"]))
    assert remaining == list(range(29, -1, -1))
    limited = requests.get(url, timeout=5)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert limited.json()["error"]["name"] == "RateLimitError"
    assert limited.json()["error"]["message"].startswith("Rate limit exceeded, retry in")
    signed = requests.get(sim.url + "/api/v1/user/wallet", headers=sim.headers("GET", "/api/v1/user/wallet"))
    assert signed.status_code == 200, "each API key has a budget of its own"
    time.sleep(60 / 30 + 0.1)  # one request's worth of refill
    assert requests.get(url, timeout=5).status_code == 200
