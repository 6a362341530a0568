"""Market feed: bar reproduction from the simulator's own trades, determinism, book
shape and update rate, account orders trading against the replay, funding on replay."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from sniper import history
from sniper.clock import SimClock
from sniper.model import BAR_DTYPE, parse_time
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
)


def make(bars, *, seed=1, l2_rate=0.0, loop=False, funding=(), accounts=(), **kw):
    clock = SimClock(float(bars["time"][0]), speed=0)
    ex = Exchange(load_instrument(), clock, funding=funding, seed=seed)
    for key in accounts:
        ex.add_account(key, "secret", 1.0)
    messages = []
    ex.subscribe(lambda *m: messages.append(m))
    return ex, Feed(ex, bars, seed=seed, l2_rate=l2_rate, loop=loop, **kw), messages


def replayed():
    """The bundled minutes a default replay plays (2018-11-19 on): the older ones are its history."""
    bars = load_bars()
    return bars[bars["time"] >= default_start(bars)]


def trades_of(messages):
    return [r for t, _, rows, _ in messages if t == "trade" for r in rows]


def test_feed_bars_are_the_model_bars_read_by_the_one_loader():
    bars = load_bars()
    assert bars.dtype == BAR_DTYPE and np.array_equal(bars, history.load_bars_csv(DEFAULT_BARS))
    times, rates = history.load_funding_csv(DEFAULT_FUNDING)
    assert load_funding() == list(zip(times.tolist(), rates.tolist(), strict=True))


def test_bundled_sample_is_small_real_and_tick_aligned():
    assert DEFAULT_BARS.stat().st_size < 2_000_000  # 94 days of minutes: 1.47 MB
    bars = load_bars()
    assert len(bars) >= 90 * 1440 and np.all(np.diff(bars["time"]) == 60)
    for col in ("open", "high", "low", "close"):
        assert np.all(bars[col] * 2 == np.round(bars[col] * 2))  # tickSize 0.5 in that era
    funding = load_funding()
    times = [t for t, _ in funding]
    assert times[0] <= bars["time"][0] and times[-1] >= bars["time"][-1]
    assert all(t % 28800 == 14400 for t in times)  # 04:00, 12:00, 20:00 UTC
    inst = load_instrument()
    assert (inst["tickSize"], inst["lotSize"], inst["symbol"]) == (0.5, 1, "XBTUSD")


def test_replay_reproduces_every_recorded_bar():
    """Bars rebuilt from the simulator's trade rows match high, low, close and volume
    (open is the previous close, as in BitMEX's bucketed data)."""
    bars = replayed()
    start = default_start(bars)
    ex, feed, messages = make(bars, start=start)
    for m in range(1, len(bars) + 1):
        feed.step_until(start + 60 * m - 1e-6)
    assert feed.step_until(start + 60 * len(bars) + 3600) == 0 and feed.finished
    buckets = collections.defaultdict(list)
    for r in trades_of(messages):
        buckets[int(parse_time(r["timestamp"]) // 60 * 60)].append((r["price"], r["size"]))
    assert set(buckets) <= set(bars["time"].tolist())
    mismatches = []
    for bar in bars:
        rows = buckets.get(int(bar["time"]), [])
        if bar["volume"] == 0:
            got = (bar["high"], bar["low"], bar["close"], 0) if not rows else None
        else:
            prices = [p for p, _ in rows]
            got = (max(prices), min(prices), prices[-1], sum(s for _, s in rows))
        if got != (bar["high"], bar["low"], bar["close"], bar["volume"]):
            mismatches.append((int(bar["time"]), got))
    assert not mismatches, mismatches[:5]


def test_deterministic_for_a_seed_whatever_the_step_size():
    bars = replayed()[:20]
    start = float(bars["time"][0])

    def run(seed, step):
        ex, feed, messages = make(bars, seed=seed, l2_rate=2.0, start=start)
        t = start
        while t < start + 20 * 60:
            t += step
            feed.step_until(t)
        return [(t, a, rows) for t, a, rows, _ in messages if t in ("trade", "orderBookL2")]

    fine = run(7, 0.5)
    assert fine == run(7, 60.0)
    assert fine != run(8, 60.0)


def test_book_has_levels_around_the_path_and_update_rate_reaches_1000_per_second():
    bars = replayed()[:2]
    ex, feed, messages = make(bars, l2_rate=1000.0, levels=40)
    start = float(bars["time"][0])
    feed.step_until(start)
    messages.clear()
    feed.step_until(start + 10)
    l2 = [m for m in messages if m[0] == "orderBookL2"]
    assert len(l2) >= 9_000  # ~1,000 size updates per simulated second, plus trade moves
    rows = ex.l2_rows()
    bids = [r for r in rows if r["side"] == "Buy"]
    asks = [r for r in rows if r["side"] == "Sell"]
    assert len(bids) >= 35 and len(asks) >= 35
    assert max(r["price"] for r in bids) < min(r["price"] for r in asks)
    assert min(r["price"] for r in asks) - max(r["price"] for r in bids) <= 1.0
    sizes = [r["size"] for r in rows]
    assert min(sizes) >= 1 and np.median(sizes) >= 1000  # realistic XBTUSD level sizes
    last = ex.last_price
    assert min(r["price"] for r in asks) - 0.5 <= last <= max(r["price"] for r in bids) + 0.5 or (
        abs(last - min(r["price"] for r in asks)) <= 0.5 or abs(last - max(r["price"] for r in bids)) <= 0.5
    )


def test_account_orders_trade_against_the_replay():
    """A resting bid at the minute's low is filled as the replay walks down through it."""
    bars = replayed()
    i = int(np.flatnonzero((bars["low"][1:] < bars["close"][:-1] - 5) & (bars["volume"][1:] > 0))[0]) + 1
    ex, feed, messages = make(bars, accounts=["k"])
    feed.step_until(float(bars["time"][i]) - 0.001)  # just before minute i
    bid = float(bars["low"][i]) + 1.0
    assert ex.best_ask() > bid
    order = ex.place_order("k", side="Buy", orderQty=10, price=bid)
    assert order["ordStatus"] == "New"
    feed.step_until(float(bars["time"][i]) + 60)
    row = ex.orders("k")[0]
    assert row["ordStatus"] == "Filled" and row["avgPx"] == bid
    assert ex.positions("k")[0]["currentQty"] == 10
    fill = [r for r in ex.executions("k") if r["execType"] == "Trade"][0]
    assert fill["lastLiquidityInd"] == "AddedLiquidity"


def test_funding_settles_during_replay_at_the_recorded_rate():
    bars = replayed()
    funding = load_funding(DEFAULT_FUNDING)
    ex, feed, messages = make(bars, funding=funding, accounts=["k"])
    start = float(bars["time"][0])
    settlement = start + 4 * 3600  # 2018-11-19T04:00Z
    rate = dict(funding)[settlement]
    assert rate == pytest.approx(-0.000223, abs=1e-6)
    feed.step_until(settlement - 30)
    ex.place_order("k", side="Buy", orderQty=1000, ordType="Market")
    before = ex.wallet("k")["amount"]
    feed.step_until(settlement + 30)
    paid = [r for r in ex.executions("k") if r["execType"] == "Funding"]
    assert len(paid) == 1 and paid[0]["timestamp"] == "2018-11-19T04:00:00.000Z"
    mark = paid[0]["lastPx"]
    # long 1000 at a negative rate receives |1000| / mark * 1e8 * 0.000223 XBt
    expected = round(round(1000 / mark * 1e8) * rate)
    assert paid[0]["execComm"] == expected < 0
    assert [r["fundingRate"] for t, _, rows, _ in messages if t == "funding" for r in rows] == [rate]
    fills = sum(r["execComm"] for r in ex.executions("k") if r["execType"] == "Trade" and
                parse_time(r["timestamp"]) > settlement - 30)
    assert ex.wallet("k")["amount"] == before - expected - fills


def test_loop_replays_again_shifted_in_time():
    bars = np.array(
        [(600, 100.0, 101.0, 99.0, 100.5, 50), (660, 100.5, 102.0, 100.0, 101.0, 70)], dtype=BAR_DTYPE
    )
    ex, feed, messages = make(bars, loop=True, start=600)
    feed.step_until(600 + 240)
    times = sorted({int(parse_time(r["timestamp"]) // 60 * 60) for r in trades_of(messages)})
    assert times == [600, 660, 720, 780] and feed.end is None
    assert sum(r["size"] for r in trades_of(messages)) == 240
    feed.step_until(600 + 299.9995)  # the whole of cycle 2's last minute
    assert 900 <= feed.next_event_time() <= 960

    _, once, _ = make(bars, start=600)
    once.step_until(720)
    assert once.finished and once.next_event_time() is None


def test_replay_can_start_inside_the_data():
    bars = replayed()[:30]
    begin = float(bars["time"][10]) + 15
    ex, feed, messages = make(bars, start=begin)
    assert feed.step_until(begin - 1) == 0 and not messages  # nothing before the start
    feed.step_until(float(bars["time"][12]))
    times = {int(parse_time(r["timestamp"]) // 60 * 60) for r in trades_of(messages)}
    assert times == {int(bars["time"][10]), int(bars["time"][11])}
    first_book = next(rows for t, _, rows, _ in messages if t == "orderBookL2")
    assert first_book[0]["timestamp"] == "2018-11-19T00:10:15.000Z"
    with pytest.raises(ValueError):
        Feed(ex, bars, start=float(bars["time"][0]) - 3600, loop=False)


def test_without_start_the_replay_begins_at_the_first_step():
    bars = replayed()[:30]
    ex, feed, messages = make(bars)
    begin = float(bars["time"][20]) + 30
    assert feed.step_until(begin) == 0  # the book is built; nothing else is due yet
    assert feed.start == begin and ex.best_bid() is not None
    feed.step_until(begin + 29)
    stamps = [parse_time(r["timestamp"]) for r in trades_of(messages)]
    assert stamps and all(begin <= t < begin + 30 for t in stamps)


def test_instrument_for_follows_the_bars_era():
    bars = replayed()[:10]
    assert (instrument_for(bars)["tickSize"], instrument_for(bars)["lotSize"]) == (0.5, 1)
    early = bars.copy()
    early["close"] += 0.01
    early["high"] += 0.01
    assert instrument_for(early)["tickSize"] == 0.01
    modern = bars.copy()
    modern["high"] += 0.1
    modern["volume"] = 100 * (modern["volume"] // 100)
    assert (instrument_for(modern)["tickSize"], instrument_for(modern)["lotSize"]) == (0.1, 100)
    assert default_start(bars) == bars["time"][0]


def test_load_bars_rejects_bad_files_naming_the_line_and_field(tmp_path):
    bad = tmp_path / "bars.csv"
    for text, match in (("time,open,high,low,close\n0,1,1,1,1\n", "missing column.*volume"),
                        ("time,open,high,low,close,volume\n60,1,1,1,1,1\n0,1,1,1,1,1\n",
                         "line 3 .*: time .*out of order"),
                        ("time,open,high,low,close,volume\n0,1,1,2,1,1\n", "line 2 .*: low 2 is above high 1"),
                        ("time,open,high,low,close,volume\n", "no bars")):
        bad.write_text(text)
        with pytest.raises(history.HistoryError, match=match):
            load_bars(bad)
    with pytest.raises(history.HistoryError, match="no bars"):
        Feed(Exchange(load_instrument(), SimClock(0.0, speed=0)), load_bars()[:0])


def test_replayed_liquidity_taken_by_an_account_is_restored():
    bars = replayed()[:5]
    start = default_start(bars)
    ex, feed, messages = make(bars, start=start, levels=20)
    ex.add_account("k", "secret", 1000.0)  # enough margin to sweep the whole ask side
    feed.step_until(start)
    asks = [r for r in ex.l2_rows() if r["side"] == "Sell"]
    assert len(asks) == 20
    row = ex.place_order("k", side="Buy", orderQty=sum(r["size"] for r in asks) + 10, ordType="Market")
    assert row["cumQty"] == sum(r["size"] for r in asks)
    assert ex.best_ask() is None
    assert feed.step_until(feed.next_event_time()) >= 1  # the very next replay event
    assert len([r for r in ex.l2_rows() if r["side"] == "Sell"]) >= 20
