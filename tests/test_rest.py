"""RestClient against the simulator on 127.0.0.1: signing, typed errors, retries only where
safe, duplicate-clOrdID lookup after a lost reply, Retry-After and rate-limit pacing."""

from __future__ import annotations

import logging
import socket
import time
import traceback

import pytest
from drivers.sessions import FlakyLink

from sniper.auth import Credentials
from sniper.clock import RealClock
from sniper.rest import AuthError, ExchangeError, NotFound, Overloaded, RateLimited, Rejected, RestClient

BOOK = {"clear": True, "levels": [{"side": "Buy", "price": 9990, "size": 1000},
                                  {"side": "Sell", "price": 10010, "size": 1000}]}


class RecordingClock(RealClock):
    """Real time, but every sleep is recorded and shortened by `scale` (0 = not slept at all)."""

    def __init__(self, scale: float = 1.0) -> None:
        self.sleeps: list[float] = []
        self.scale = scale

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().sleep(seconds * self.scale)


def client(sim, clock=None, secret=None, **opts) -> RestClient:
    opts.setdefault("backoff_base", 0.02)
    opts.setdefault("backoff_cap", 0.1)
    return RestClient(sim.url, Credentials(sim.key, secret or sim.secret), clock or RecordingClock(), **opts)


def orders_placed(sim) -> int:
    return sim.state()["orders_placed"]


def test_signed_reads_and_typed_results(sim_server):
    rest = client(sim_server)
    assert rest.instrument()["symbol"] == "XBTUSD"
    assert rest.margin()["marginBalance"] == 100_000_000
    assert rest.position() is None  # no position row before the first trade
    assert rest.orders(open_only=True, filter={"side": "Buy"}) == []  # query string is signed too
    assert rest.ratelimit["limit"] == 120 and rest.stats["retries"] == 0


def test_typed_errors_are_not_retried(sim_server):
    sim_server.control("book", BOOK)
    rest = client(sim_server)
    with pytest.raises(Rejected, match="Invalid price tickSize") as exc:
        rest.place_order(side="Buy", orderQty=10, price=9990.3, clOrdID="t-1")
    assert exc.value.status == 400
    with pytest.raises(NotFound):
        rest.cancel_order(clOrdID="never-placed")
    with pytest.raises(AuthError) as exc:
        client(sim_server, secret="wrong-secret-xyz").position()
    assert exc.value.status == 401 and "signature" in exc.value.message.lower()
    assert rest.stats["retries"] == 0


def test_503_storm_reads_retry_until_it_passes(sim_server):
    sim_server.control("fault", {"mode": "overload", "seconds": 0.3})
    clock = RecordingClock()
    rest = client(sim_server, clock)
    assert rest.instrument()["symbol"] == "XBTUSD"
    assert rest.stats["retries"] >= 2 and all(0 < s <= 0.1 for s in clock.sleeps)


def test_503_storm_longer_than_the_budget_raises_overloaded(sim_server):
    sim_server.control("fault", {"mode": "overload", "seconds": 30})
    rest = client(sim_server, RecordingClock(scale=0), max_attempts=4)
    with pytest.raises(Overloaded):
        rest.position()
    assert rest.stats["requests"] == 4


def test_write_without_clordid_is_never_retried(sim_server):
    sim_server.control("book", BOOK)
    sim_server.control("fault", {"mode": "overload", "seconds": 30, "after_commit": True})
    rest = client(sim_server, RecordingClock(scale=0))
    with pytest.raises(Overloaded):
        rest.place_order(side="Buy", orderQty=10, price=9980)
    assert rest.stats["requests"] == 1 and orders_placed(sim_server) == 1


def test_lost_reply_then_duplicate_clordid_returns_the_one_order(sim_server):
    """503 after the server applied the order: the retry gets 'Duplicate clOrdID' and the
    client looks the first order up instead of failing or placing another."""
    sim_server.control("book", BOOK)
    sim_server.control("fault", {"mode": "overload", "seconds": 0.15, "after_commit": True})
    rest = client(sim_server)
    row = rest.place_order(side="Buy", orderQty=10, price=9980, clOrdID="lost-1")
    assert row["clOrdID"] == "lost-1" and row["ordStatus"] == "New"
    assert rest.stats["retries"] >= 1
    assert orders_placed(sim_server) == 1
    assert [o["clOrdID"] for o in rest.orders()] == ["lost-1"]


def test_duplicate_clordid_the_lookup_cannot_see_yet_is_unknown_not_rejected(sim_server):
    """The reply is lost, the retry hears 'Duplicate clOrdID', but the read that looks the order
    up lags and shows nothing. That is not a refusal (a caller would take the order for never
    created and place another): it is an unknown outcome, and asking again finds the order."""
    sim_server.control("book", BOOK)
    link = FlakyLink()
    rest = client(sim_server, session=link)
    link.lose_replies(1)
    link.lag_reads(1)
    with pytest.raises(ExchangeError) as exc:
        rest.place_order(side="Buy", orderQty=10, price=9980, clOrdID="lag-1")
    assert not isinstance(exc.value, Rejected) and "outcome unknown" in str(exc.value)
    assert (link.lost, link.hidden, rest.stats["retries"]) == (1, 1, 1)
    row = rest.place_order(side="Buy", orderQty=10, price=9980, clOrdID="lag-1")
    assert row["clOrdID"] == "lag-1" and row["ordStatus"] == "New"
    assert orders_placed(sim_server) == 1


def test_timeout_after_the_server_accepted(sim_server):
    sim_server.control("book", BOOK)
    sim_server.control("fault", {"mode": "timeout", "delay_ms": 400, "seconds": 0.25, "after_commit": True})
    rest = client(sim_server, read_timeout=0.15)
    row = rest.place_order(side="Sell", orderQty=20, price=10020, clOrdID="slow-1")
    assert row["clOrdID"] == "slow-1"
    assert orders_placed(sim_server) == 1 and len(rest.orders()) == 1


def test_amend_and_cancel_are_retried_safely(sim_server):
    sim_server.control("book", BOOK)
    rest = client(sim_server)
    rest.place_order(side="Buy", orderQty=10, price=9980, clOrdID="am-1")
    sim_server.control("fault", {"mode": "overload", "seconds": 0.15, "after_commit": True})
    row = rest.amend_order(origClOrdID="am-1", price=9985, orderQty=30)
    assert (row["price"], row["orderQty"], row["leavesQty"]) == (9985, 30, 30)
    sim_server.control("fault", {"mode": "overload", "seconds": 0.15, "after_commit": True})
    rows = rest.cancel_order(clOrdID="am-1")
    assert rows[0]["ordStatus"] == "Canceled"
    assert rest.stats["retries"] >= 2


def test_429_waits_for_retry_after(sim_server):
    sim_server.control("fault", {"mode": "ratelimit", "seconds": 0.5})
    clock = RecordingClock()
    rest = client(sim_server, clock)
    started = time.monotonic()
    assert rest.position() is None
    assert clock.sleeps[0] >= 1.0  # the server said Retry-After: 1
    assert time.monotonic() - started >= 1.0


def test_a_long_retry_after_fails_fast_and_holds_requests_back(sim_server):
    """Retry-After beyond the retry budget: the client raises at once instead of sleeping it out
    (the executor's thread must stay responsive), and sends nothing until it has passed."""
    sim_server.control("fault", {"mode": "ratelimit", "seconds": 1.2})  # Retry-After: 2
    rest = client(sim_server, max_elapsed=0.5)
    started = time.monotonic()
    with pytest.raises(RateLimited) as exc:
        rest.position()
    assert exc.value.retry_after == 2 and time.monotonic() - started < 0.3
    seen = sim_server.state()["counters"]["rest_requests"]
    with pytest.raises(RateLimited, match="not sent"):
        rest.place_order(side="Buy", orderQty=10, price=9980, clOrdID="held-1")
    assert sim_server.state()["counters"]["rest_requests"] == seen  # held back, never on the wire
    time.sleep(max(0.0, started + 2.05 - time.monotonic()))
    assert rest.position() is None and rest.stats["requests"] == 2  # the held-back one was not counted


def test_slows_down_before_the_rate_limit(sim_factory):
    """With 20 requests a minute, the client spaces requests at the refill rate (3 s) once
    fewer than 20 % remain, so it never sees a 429 (the sleeps are recorded, not slept)."""
    sim = sim_factory(rate_limit=20)
    clock = RecordingClock(scale=0)
    rest = client(sim, clock, max_attempts=1)  # a 429 would raise
    for _ in range(20):
        rest.instrument()
    assert rest.ratelimit["remaining"] == 0
    paced = [s for s in clock.sleeps if s > 0]
    assert len(paced) == 3 and all(2.0 < s <= 3.5 for s in paced), paced


def test_secrets_never_show_in_errors_or_logs(sim_server, caplog):
    """Whatever fails (bad signature, refusal, 404, 503, no answer), neither the API secret nor
    a request signature appears in the error, its chained causes, the client's repr or the log."""
    sim_server.control("book", BOOK)
    wrong = "wrong-secret-" + "z" * 20
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # nothing listens here once the socket closes
    good = client(sim_server, RecordingClock(scale=0), max_attempts=2)
    bad = client(sim_server, RecordingClock(scale=0), secret=wrong, max_attempts=2)
    gone = RestClient(f"http://127.0.0.1:{dead_port}", Credentials(sim_server.key, sim_server.secret),
                      RecordingClock(scale=0), max_attempts=2)
    failures = [
        lambda: bad.position(),
        lambda: bad.place_order(side="Buy", orderQty=10, price=9980, clOrdID="sec-1"),
        lambda: good.place_order(side="Buy", orderQty=10, price=9990.3, clOrdID="sec-2"),
        lambda: good.cancel_order(clOrdID="never-placed"),
        lambda: gone.place_order(side="Buy", orderQty=10, price=9980, clOrdID="sec-3"),
    ]
    errors = []
    with caplog.at_level(logging.DEBUG):
        for call in failures:
            with pytest.raises(ExchangeError) as exc:
                call()
            errors.append(exc.value)
        sim_server.control("fault", {"mode": "overload", "seconds": 30})
        with pytest.raises(Overloaded) as exc:
            good.amend_order(origClOrdID="sec-2", price=9985)
        errors.append(exc.value)
    assert [type(e).__name__ for e in errors] == ["AuthError", "AuthError", "Rejected", "NotFound", "Timeout",
                                                  "Overloaded"]
    texts = [caplog.text, repr(good.credentials), str(good.credentials)]
    texts += [repr(c) + repr(vars(c)) for c in (good, bad, gone)]
    texts += ["".join(traceback.format_exception(e)) + repr(e) + str(e) for e in errors]
    for text in texts:
        for secret in (sim_server.secret, wrong):
            assert secret not in text
        assert "api-signature" not in text.lower()
