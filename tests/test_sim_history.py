"""The simulator's past. Right after it starts (by default at 2018-11-19 00:00, late in the
bundled 94 days), REST trade/bucketed serves every bundled bar completed before the
simulated now and /funding every settlement before it, as BitMEX serves its history;
nothing after now, ever. A looping replay continues both past the recording's end."""

from __future__ import annotations

import collections
import time
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import pytest
import requests

from sniper.clock import SimClock
from sniper.model import FUNDING_INTERVAL_S, iso, parse_time
from sniper.sim.buckets import Buckets
from sniper.sim.exchange import Exchange
from sniper.sim.feed import (
    DEFAULT_BARS,
    DEFAULT_FUNDING,
    Feed,
    default_start,
    instrument_for,
    load_bars,
    load_funding,
    load_instrument,
    replay_span,
)
from sniper.sim.funding import Funding

START = 1542585600  # 2018-11-19T00:00:00Z, the default start
OHLCV = ["open", "high", "low", "close", "volume"]


@pytest.fixture(scope="module")
def csv_bars() -> pd.DataFrame:
    return pd.read_csv(DEFAULT_BARS)  # `time` is the bar's open


@pytest.fixture(scope="module")
def csv_funding() -> pd.DataFrame:
    return pd.read_csv(DEFAULT_FUNDING)


@pytest.fixture(scope="module")
def sim():
    from conftest import start_sim

    handle = start_sim(rate_limit=0)  # paused at the default start
    yield handle
    handle.stop()


def get(sim, path: str, **query):
    resp = requests.get(f"{sim.url}/api/v1/{path}?{urlencode(query)}", timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def as_bars(rows: list[dict]) -> pd.DataFrame:
    """Served buckets as bars keyed by their open time (the timestamp is the bucket's end)."""
    got = pd.DataFrame(rows)
    return pd.DataFrame({"time": [int(parse_time(t)) - 60 for t in got["timestamp"]], **{c: got[c] for c in OHLCV}})


def same_bars(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert got["time"].tolist() == want["time"].tolist()
    for col in OHLCV:
        assert got[col].tolist() == want[col].tolist(), col


def test_the_default_replay_starts_late_in_the_bundled_data(sim, csv_bars):
    assert sim.state()["time"] == START == default_start(load_bars())
    assert START - csv_bars["time"].iloc[0] >= 90 * 86400  # 2018-08-20: 91 days of history before it
    assert csv_bars["time"].iloc[-1] + 60 == START + 3 * 86400  # and 3 days to replay


def test_bucketed_right_after_start_serves_the_bars_before_it(sim, csv_bars):
    rows = get(sim, "trade/bucketed", binSize="1m", symbol="XBTUSD", reverse="true")
    assert len(rows) == 100 and rows[0]["timestamp"] == "2018-11-19T00:00:00.000Z"  # stamped with its end
    same_bars(as_bars(rows), csv_bars[csv_bars["time"] < START].tail(100).iloc[::-1])  # newest first


def test_bucketed_pages_through_every_bundled_bar_before_now(sim, csv_bars):
    pages, start = [], 0
    while page := get(sim, "trade/bucketed", binSize="1m", count=1000, start=start):
        assert len(page) <= 1000
        pages += page
        start += len(page)
    got = as_bars(pages)
    same_bars(got, csv_bars[csv_bars["time"] + 60 <= START].reset_index(drop=True))
    assert len(got) == 91 * 1440
    assert got["open"].iloc[1:].tolist() == got["close"].iloc[:-1].tolist()  # open = prior close, as BitMEX
    window = get(sim, "trade/bucketed", binSize="1m", count=1000, startTime="2018-10-01T00:00:00Z",
                 endTime="2018-10-01T06:00:00Z")  # bucket ends, both inclusive
    opens = csv_bars["time"]
    same_bars(as_bars(window), csv_bars[(opens + 60 >= 1538352000) & (opens + 60 <= 1538373600)])
    newest = get(sim, "trade/bucketed", binSize="1m", count=5, start=10, reverse="true",
                 endTime="2018-10-01T06:00:00Z")
    assert [r["timestamp"][11:16] for r in newest] == ["05:50", "05:49", "05:48", "05:47", "05:46"]
    daily = get(sim, "trade/bucketed", binSize="1d", count=1000)
    assert len(daily) == 91 and daily[-1]["timestamp"] == "2018-11-19T00:00:00.000Z"
    first_day = csv_bars.iloc[:1440]
    assert (daily[0]["open"], daily[0]["high"], daily[0]["low"], daily[0]["close"], daily[0]["volume"]) == (
        first_day["open"].iloc[0], first_day["high"].max(), first_day["low"].min(), first_day["close"].iloc[-1],
        first_day["volume"].sum())


def test_funding_serves_every_settlement_before_now(sim, csv_funding):
    rows = get(sim, "funding", symbol="XBTUSD", count=1000)
    want = csv_funding[csv_funding["time"] <= START]
    assert [parse_time(r["timestamp"]) for r in rows] == want["time"].tolist()
    assert [r["fundingRate"] for r in rows] == want["funding_rate"].tolist()
    assert len(rows) == 3 * 92  # 2018-08-19 04:00 to 2018-11-18 20:00
    assert get(sim, "funding", reverse="true", count=1)[0]["timestamp"] == "2018-11-18T20:00:00.000Z"


def test_nothing_after_the_simulated_now(sim_factory, csv_bars):
    sim = sim_factory(rate_limit=0)
    far = iso(START + 30 * 86400)
    for bin_size in ("1m", "5m", "1h", "1d"):
        rows = get(sim, "trade/bucketed", binSize=bin_size, reverse="true", count=3, endTime=far)
        assert rows[0]["timestamp"] == iso(START), bin_size  # START is on every bin's grid
    assert get(sim, "trade/bucketed", binSize="1m", startTime=iso(START + 1)) == []
    assert get(sim, "funding", startTime=iso(START + 1), endTime=far) == []
    sim.control("clock", {"advance": 630, "feed": True})  # ten and a half minutes of replay
    rows = get(sim, "trade/bucketed", binSize="1m", count=20, startTime=iso(START + 60), endTime=far)
    same_bars(as_bars(rows), csv_bars[(csv_bars["time"] >= START) & (csv_bars["time"] < START + 600)])
    assert get(sim, "trade/bucketed", binSize="1h", reverse="true", count=1)[0]["timestamp"] == iso(START)
    assert get(sim, "funding", reverse="true", count=1)[0]["timestamp"] == "2018-11-18T20:00:00.000Z"
    # the trades the replay printed in those minutes rebuild the bars REST serves for them
    trades = get(sim, "trade", count=1000, startTime=iso(START), endTime=iso(START + 600))
    minutes = collections.defaultdict(list)
    for t in trades:
        minutes[int(parse_time(t["timestamp"])) // 60 * 60].append((t["price"], t["size"]))
    for r in rows:
        prices = [p for p, _ in minutes[int(parse_time(r["timestamp"])) - 60]]
        assert (max(prices), min(prices), prices[-1]) == (r["high"], r["low"], r["close"])
        assert sum(s for _, s in minutes[int(parse_time(r["timestamp"])) - 60]) == r["volume"]


def test_a_replay_started_past_the_recording_serves_the_looped_history(sim_factory, csv_bars, csv_funding):
    sim = sim_factory(start="2018-11-22T06:00:00Z", rate_limit=0)
    seam = get(sim, "trade/bucketed", binSize="1m", startTime="2018-11-21T23:59:00Z",
               endTime="2018-11-22T00:02:00Z")
    assert [r["timestamp"][11:16] for r in seam] == ["23:59", "00:00", "00:01", "00:02"]
    last, first = csv_bars.iloc[-1], csv_bars.iloc[0]
    assert seam[1]["close"] == last["close"]
    # the recording again, its first bar opening at the recording's last close
    assert (seam[2]["open"], seam[2]["high"], seam[2]["low"], seam[2]["close"], seam[2]["volume"]) == (
        last["close"], first["high"], first["low"], first["close"], first["volume"])
    rates = dict(zip(csv_funding["time"], csv_funding["funding_rate"], strict=True))
    (settled,) = get(sim, "funding", startTime="2018-11-22T00:00:00Z")
    origin = csv_bars["time"].iloc[0]
    assert settled["timestamp"] == "2018-11-22T04:00:00.000Z"
    assert settled["fundingRate"] == rates[origin + 4 * 3600] != rates[1542859200]  # not the recorded 11-22 rate
    inst = get(sim, "instrument", symbol="XBTUSD")[0]
    assert (inst["fundingTimestamp"], inst["fundingRate"]) == ("2018-11-22T12:00:00.000Z",
                                                              rates[origin + 12 * 3600])


def test_buckets_follow_the_looping_feed():
    """Bars rebuilt from the trades of two and a half replay cycles equal the served buckets,
    across the seam where the recording starts over from its last close."""
    bars = np.array([(600, 100.0, 101.0, 99.0, 100.5, 50), (660, 100.5, 102.0, 100.0, 101.0, 70),
                     (720, 101.0, 101.5, 97.0, 98.0, 40)], dtype=load_bars().dtype)
    ex = Exchange(load_instrument(), SimClock(600.0, speed=0))
    trades = []
    ex.subscribe(lambda table, action, rows, account: trades.extend(rows) if table == "trade" else None)
    feed = Feed(ex, bars, seed=3, l2_rate=0.0, loop=True, start=600)
    now = 600 + 2.5 * 180
    feed.step_until(now)
    minutes = collections.defaultdict(list)
    for t in trades:
        minutes[int(parse_time(t["timestamp"])) // 60 * 60].append((t["price"], t["size"]))
    buckets = Buckets(bars, "XBTUSD", period=replay_span(bars)[1])
    rows = buckets.query("1m", now, count=1000)
    assert [r["timestamp"] for r in rows] == [iso(t) for t in range(660, 1021, 60)]  # 7 complete minutes
    close = 100.0  # the first bar's recorded open
    for r in rows:
        got = minutes[int(parse_time(r["timestamp"])) - 60]
        prices = [p for p, _ in got]
        assert (r["open"], r["high"], r["low"], r["close"], r["volume"]) == (
            close, max(prices), min(prices), prices[-1], sum(s for _, s in got))
        close = r["close"]
    assert rows[3]["open"] == 98.0  # cycle 1 opens at the recording's last close
    (five,) = buckets.query("5m", now, start_time=900, end_time=900)  # minutes 600..899: the seam inside
    assert (five["high"], five["low"], five["close"], five["volume"]) == (102.0, 97.0, 101.0, 50 + 70 + 40 + 50 + 70)
    assert Buckets(bars, "XBTUSD").query("1m", now, reverse=True, count=1)[0]["timestamp"] == iso(780)  # no loop


def test_funding_repeats_with_the_replay():
    origin, period = 1534723200.0, 2 * 86400.0  # bars of 2018-08-20 and 08-21
    rates = [1e-4, 2e-4, 3e-4, 4e-4, 5e-4, 6e-4, 7e-4]  # the last one falls after the two days
    recorded = [(origin + 4 * 3600 + k * FUNDING_INTERVAL_S, rate) for k, rate in enumerate(rates)]
    now = origin + period + 86400  # 2018-08-23 00:00, a day into the second cycle
    f = Funding("XBTUSD", recorded, now, cycle=(origin, period))
    assert f.rate_at(origin + period + 4 * 3600) == 0.0001  # the first cycle's, not the recorded 0.0007
    rows = f.rows(now, count=1000)
    assert [parse_time(r["timestamp"]) - origin for r in rows] == [4 * 3600 + k * FUNDING_INTERVAL_S
                                                                    for k in range(9)]
    assert [r["fundingRate"] for r in rows] == rates[:6] + rates[:3]
    assert f.next == now + 4 * 3600 and f.rows(origin + period + 12 * 3600 - 1)[-1] == rows[6]  # not after now
    assert f.settle(f.next) == (0.0004, f.rows(now + 4 * 3600, reverse=True, count=1)[0])
    plain = Funding("XBTUSD", recorded, now)  # no cycle: the recording, then its last rate
    assert plain.rate_at(origin + period + 4 * 3600) == 0.0007 and plain.rate_at(now + 86400) == 0.0007


def test_loading_the_bundled_history_is_fast():
    began = time.perf_counter()
    bars, funding = load_bars(), load_funding()
    ex = Exchange(instrument_for(bars), SimClock(default_start(bars), speed=0), funding=funding,
                  funding_cycle=replay_span(bars))
    Buckets(bars, ex.symbol, period=replay_span(bars)[1])
    assert len(bars) == 135_360 and time.perf_counter() - began < 1.0  # about 0.1 s
