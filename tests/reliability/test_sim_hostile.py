"""The simulator against a hostile (or merely careless) client, one test per class of input
that used to crash it: each must end in a BitMEX-shaped 4xx, the connection kept where BitMEX
keeps it, nothing stored from the refused request, and the server answering normally after.

Every simulator here is a real `python -m sniper sim` on 127.0.0.1, paused, one per test (a
test that breaks one leaves the others a clean exchange), without a rate limit unless the
test is about it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from urllib.parse import urlencode

import pytest
import requests

from sniper import auth
from sniper.clock import SimClock
from sniper.sim import process
from sniper.sim.faults import RateLimiter
from sniper.sim.rest_api import RestApi

API = "/api/v1"
FAR_BID = 1000.0  # an order price nowhere near the 2018 market: it rests until canceled


@pytest.fixture
def sim(sim_factory):
    return sim_factory(rate_limit=0)


def routes(*, taking: str | None = None) -> list[tuple[str, str, bool]]:
    """(verb, path, private) of every REST route the simulator serves (that declares `taking`)."""
    table = RestApi(None, None, clock=None, real_clock=None, faults=None, limiter=None, counters=None).routes
    return [(r.method, API + r.path, r.private) for r in table if taking is None or taking in r.schema]


def send(sim, verb: str, path: str, *, body: str | bytes = "", sign: bool = True, **headers) -> requests.Response:
    """One request, signed as the first account (a body that is not text is signed as empty)."""
    if sign:
        headers = {**sim.headers(verb, path, body if isinstance(body, str) else ""), **headers}
    return sim.session.request(verb, sim.url + path, data=body or None, headers=headers, timeout=10)


def validation_error(resp: requests.Response) -> str:
    """The message of a BitMEX ValidationError answer (asserting that is what `resp` is)."""
    assert resp.status_code == 400, (resp.request.method, resp.request.url, resp.status_code, resp.text)
    error = resp.json()["error"]
    assert set(error) == {"message", "name"} and error["name"] == "ValidationError", error
    return error["message"]


def answers_normally(sim) -> None:
    resp = sim.session.get(sim.url + API + "/instrument", timeout=10)
    assert resp.status_code == 200 and resp.json()[0]["symbol"] == "XBTUSD", resp.text


def account(sim) -> dict:
    return sim.state()["accounts"][sim.key]


def test_a_body_that_is_not_utf8_is_a_400_on_every_endpoint(sim):
    before = account(sim)
    for verb, path, _private in routes():
        resp = send(sim, verb, path, body=b"\xff\xfe{\"symbol\": \"XBTUSD\"}", **{"content-type": "application/json"})
        assert validation_error(resp) == "Request body must be UTF-8 text"
    assert account(sim) == before
    answers_normally(sim)


def test_a_request_line_that_is_not_utf8_is_a_401_under_the_pure_python_http_parser():
    """aiohttp's C parser refuses such a line itself (400); its pure-Python one, used without the
    C extension, hands the bytes on as lone surrogates, which the signature check must refuse."""
    env = {**os.environ, "AIOHTTP_NO_EXTENSIONS": "1"}
    proc = subprocess.Popen(process.command(rate_limit=0), cwd=process.ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        host, port = process.first_line(proc, 60).removeprefix("http://").split(":")
        signed = auth.headers(auth.Credentials("sim-demo-key", "sim-demo-secret-0123456789"), "GET",
                              API + "/position?filter=x", "", time.time())
        head = "".join(f"{k}: {v}\r\n" for k, v in signed.items())
        raw = (b"GET " + API.encode() + b"/position?filter=\xff HTTP/1.1\r\nHost: " + host.encode()
               + b"\r\nConnection: close\r\n" + head.encode() + b"\r\n")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(raw)
            reply = b"".join(iter(lambda: conn.recv(65536), b""))
        status, _, rest = reply.partition(b"\r\n")
        assert status == b"HTTP/1.1 401 Unauthorized", reply
        assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {"error": {"message": "Signature not valid.",
                                                                       "name": "HTTPError"}}
    finally:
        proc.terminate()
        proc.wait(10)


QUERY_VALUES = {  # query-string values of the wrong shape for a parameter, on every route taking it
    "columns": ["[[1]]", '[{"a": 1}]', "[1, 2]", '["a", null]'],
    "startTime": ["garbage", "2018-13-45", "1e300", "-1e300", "nan", "inf", "99999-01-01"],
    "endTime": ["2018-13-45", "1e400", "nan"],
    "count": ["1e10", "-1", "1.5", "[]"],
    "filter": ["[1]", "{", '"text"'],
}
BODY_VALUES = [("symbol", ["XBTUSD"]), ("symbol", {"XBTUSD": 1}), ("symbol", 5), ("columns", [[1]]),
               ("orderID", [1, 2]), ("side", ["Buy"]), ("orderQty", "ten"), ("price", [5000]), ("text", {"a": "b"})]


def test_parameters_of_the_wrong_shape_are_400s_naming_them_and_change_nothing(sim):
    before = account(sim)
    for name, values in QUERY_VALUES.items():
        for verb, path, _private in routes(taking=name):
            for value in values:
                query = f"{path}?{urlencode({name: value})}"
                assert validation_error(send(sim, verb, query)) == f"Invalid {name}", (query, value)
    for name, value in BODY_VALUES:  # a JSON body carries lists and objects where text belongs
        for verb, path, _private in routes(taking=name):
            body = json.dumps({"symbol": "XBTUSD", "side": "Buy", "orderQty": 1, "price": FAR_BID, name: value})
            resp = send(sim, verb, path, body=body, **{"content-type": "application/json"})
            assert validation_error(resp) == f"Invalid {name}", (verb, path, value)
    assert account(sim) == before
    answers_normally(sim)


def test_cancel_all_after_with_a_huge_timeout_is_refused_and_the_armed_switch_still_fires(sim):
    order = send(sim, "POST", API + "/order", body=json.dumps({"symbol": "XBTUSD", "side": "Buy", "orderQty": 1,
                                                               "price": FAR_BID}),
                 **{"content-type": "application/json"}).json()
    armed = send(sim, "POST", API + "/order/cancelAllAfter", body=json.dumps({"timeout": 60_000}),
                 **{"content-type": "application/json"})
    assert armed.status_code == 200, armed.text
    deadline = account(sim)["cancelAt"]
    assert deadline is not None
    for timeout in (1e20, 2**63, 1.7e308):
        body = json.dumps({"timeout": timeout})
        resp = send(sim, "POST", API + "/order/cancelAllAfter", body=body, **{"content-type": "application/json"})
        assert validation_error(resp) == "Invalid timeout"
    ws = sim.ws(auth=True)
    for timeout in (1e20, 2**63):
        ws.send({"op": "cancelAllAfter", "args": timeout})
        reply = ws.until(lambda m: isinstance(m, dict) and m.get("request", {}).get("op") == "cancelAllAfter")
        assert (reply["status"], reply["error"]) == (400, "Invalid timeout")
        ws.barrier()  # the connection is still there: 'ping' answered
    assert account(sim)["cancelAt"] == deadline  # the refusals left the switch armed as it was
    sim.control("clock", {"advance": 61})
    (row,) = [o for o in send(sim, "GET", API + "/order").json() if o["orderID"] == order["orderID"]]
    assert (row["ordStatus"], row["text"]) == ("Canceled", "Canceled: Cancel-all-after timer expired")
    answers_normally(sim)


WS_AUTH_ARGS = [  # authKeyExpires arguments of the wrong type (KEY etc.: the right value there)
    ([["sim-demo-key"], "EXPIRES", "SIGNATURE"], 401, "Invalid API Key."),
    ([{"key": 1}, "EXPIRES", "SIGNATURE"], 401, "Invalid API Key."),
    ([None, "EXPIRES", "SIGNATURE"], 401, "Missing API key."),
    (["KEY", "EXPIRES", 12345], 401, "Signature not valid."),
    (["KEY", "EXPIRES", ["SIGNATURE"]], 401, "Signature not valid."),
    (["KEY", "EXPIRES", "sïgnature"], 401, "Signature not valid."),
    (["KEY", {"at": 1}, "SIGNATURE"], 401, "Signature not valid."),
    (["KEY", 1.5e308, "SIGNATURE"], 401, "Signature not valid."),
    (["KEY", "EXPIRES"], 400, "authKeyExpires takes [apiKey, expires, signature]."),
]


def test_ws_auth_with_arguments_of_the_wrong_type_is_answered_on_a_kept_connection(sim):
    ws = sim.ws()
    for args, status, error in WS_AUTH_ARGS:
        good = auth.ws_auth_message(auth.Credentials(sim.key, sim.secret), time.time())["args"]
        fill = {"KEY": good[0], "EXPIRES": good[1], "SIGNATURE": good[2]}
        ws.send({"op": "authKeyExpires", "args": [fill.get(a, a) if isinstance(a, str) else a for a in args]})
        reply = ws.until(lambda m: isinstance(m, dict) and m.get("request", {}).get("op") == "authKeyExpires")
        assert (reply["status"], reply["error"]) == (status, error), args
    assert ws.authenticate(sim.key, sim.secret)["success"] is True  # the same connection carries on


def test_forged_requests_spend_the_peer_budget_not_the_named_account(sim_factory):
    sim = sim_factory(rate_limit=30)
    forged = {"api-key": sim.key, "api-expires": str(int(time.time()) + 60), "api-signature": "0" * 64}
    codes = {send(sim, "GET", API + "/user/wallet", sign=False, **forged).status_code for _ in range(40)}
    assert codes == {401, 429}  # refused, and after 30 the peer address is out of budget
    real = send(sim, "GET", API + "/user/wallet")
    assert real.status_code == 200, real.text
    assert real.headers["x-ratelimit-remaining"] == "29"  # the account's own budget is untouched
    for i in range(200):  # every distinct header value used to get a budget of its own, forever
        send(sim, "GET", API + "/instrument", sign=False, **{"api-key": f"nobody-{i}"})
    assert sim.state()["rate_limit_budgets"] == 2  # this peer address and the verified account


def test_refilled_budgets_are_forgotten():
    clock = SimClock(1_600_000_000.0, speed=0)
    limiter = RateLimiter(120, clock)
    tracemalloc.start()
    try:
        for i in range(20_000):
            limiter.take(f"key-{i:05d}")
        full = tracemalloc.get_traced_memory()[0]
        clock.advance(61)  # every budget has refilled
        limiter.take("one-more")
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert full > 1_000_000 and after < full / 10, (full, after)  # ~3.6 MB for 20,000 keys, then next to nothing
    assert limiter.budgets == 1


def test_control_clock_and_feed_refuse_what_is_no_time_and_the_server_stays_up(sim):
    before = sim.state()
    for value in ("nan", "inf", "-inf", "1e400", -1, 7 * 86400 + 1, 1e300, "abc", [1], True):
        resp = sim.session.post(sim.url + "/_control/clock", json={"advance": value, "feed": True}, timeout=10)
        assert resp.status_code == 400 and "advance" in resp.json()["error"], (value, resp.text)
    for speed in ("nan", "inf", -1, 1e9):
        assert sim.session.post(sim.url + "/_control/feed", json={"speed": speed}, timeout=10).status_code == 400
    after = sim.state()
    assert (after["time"], after["speed"], after["paused"]) == (before["time"], before["speed"], before["paused"])
    answers_normally(sim)
    sim.proc.send_signal(signal.SIGTERM)
    assert sim.proc.wait(10) == 0


def test_control_mark_refuses_what_is_no_price_and_keeps_the_last(sim):
    sim.control("mark", {"price": 4321.5})
    for price in ("nan", "NaN", "inf", "1e400", 0, -5, 2e6, "abc", [5000], None, True):
        resp = sim.session.post(sim.url + "/_control/mark", json={"price": price}, timeout=10)
        assert resp.status_code == 400 and "price" in resp.json()["error"], (price, resp.text)
        (inst,) = sim.session.get(sim.url + API + "/instrument", timeout=10).json()
        assert inst["markPrice"] == 4321.5, price


def test_control_refuses_what_a_web_page_can_send(sim):
    sim.control("mark", {"price": 4000.0})
    port = sim.url.rsplit(":", 1)[1]
    url = sim.url + "/_control/mark"
    payload = json.dumps({"price": 4444.0})
    refused = [
        ({"Content-Type": "text/plain"}, 415),  # a cross-site fetch()/form needs no preflight for these
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Content-Type": "multipart/form-data; boundary=x"}, 415),
        ({}, 415),  # no content type at all (a Blob body)
        ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403),
        ({"Content-Type": "application/json", "Origin": "null"}, 403),
        ({"Content-Type": "application/json", "Host": "evil.example"}, 403),  # DNS rebinding
        ({"Content-Type": "application/json", "Host": f"evil.example:{port}"}, 403),
        ({"Content-Type": "application/json", "Host": f"127.0.0.1.evil.example:{port}"}, 403),
    ]
    for headers, status in refused:
        resp = requests.post(url, data=payload, headers=headers, timeout=10)
        assert resp.status_code == status and "error" in resp.json(), (headers, resp.status_code, resp.text)
    (inst,) = sim.session.get(sim.url + API + "/instrument", timeout=10).json()
    assert inst["markPrice"] == 4000.0  # nothing refused was applied
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1", f"[::1]:{port}"):
        resp = requests.post(url, data=payload, headers={"Content-Type": "application/json", "Host": host}, timeout=10)
        assert resp.status_code == 200, (host, resp.text)
    assert requests.get(sim.url + "/_control/state", timeout=10).status_code == 200  # no body: no content type


def _bad_csv(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("args,expected", [
    (["--speed", "abc"], "--speed: expected a finite number from 0 to 10,000, got 'abc'"),
    (["--speed", "-2"], "--speed: expected a finite number from 0 to 10,000, got '-2'"),
    (["--speed", "inf"], "--speed: expected a finite number from 0 to 10,000, got 'inf'"),
    (["--seed", "x"], "--seed: expected an integer from 0 to"),
    (["--port", "70000"], "--port: expected an integer from 0 to 65,535, got '70000'"),
    (["--rate-limit", "1.5"], "--rate-limit: expected an integer from 0 to"),
    (["--l2-rate", "nan"], "--l2-rate: expected a finite number from 0 to"),
    (["--start", "2018-13-45"], "--start: expected a time"),
    (["--data", "/nope.csv"], "--data: /nope.csv: no such file"),
    (["--data", "BARS"], "--data: BARS: line 3 (time 60 = 1970-01-01T00:01:00.000Z): high -1 is not a positive price"),
    (["--data", "EMPTY"], "--data: EMPTY: no bars"),
    (["--funding", "FUNDING"], "--funding: FUNDING: line 2 (time 100 = 1970-01-01T00:01:40.000Z): funding_rate"),
    (["--max-backlog", "0"], "--max-backlog: expected an integer from 1 to"),
    (["--taker-fee", "0.075"], "--taker-fee: expected a finite number from 0 to 0.01, got '0.075'"),
    (["--account", "no-colons"], "argument --account: expected KEY:SECRET:BALANCE_XBT, got 'no-colons'"),
    (["--account", "k:s:-1"], "argument --account: expected KEY:SECRET:BALANCE_XBT with a balance of a finite number"),
])
def test_a_bad_argument_is_one_line_naming_the_option_and_exit_2(tmp_path, args, expected):
    files = {"BARS": _bad_csv(tmp_path, "bars.csv", "time,open,high,low,close,volume\n0,1,1,1,1,1\n60,1,-1,1,1,1\n"),
             "EMPTY": _bad_csv(tmp_path, "empty.csv", "time,open,high,low,close,volume\n"),
             "FUNDING": _bad_csv(tmp_path, "funding.csv", "time,funding_rate\n100,lots\n")}
    args = [files.get(a, a) for a in args]
    expected = next((expected.replace(k, v) for k, v in files.items() if k in expected), expected)
    done = subprocess.run([sys.executable, "-m", "sniper", "sim", "--port", "0", *args], capture_output=True,
                          text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and done.stdout == "" and len(lines) == 1, done.stderr
    assert lines[0].startswith("sniper sim: ") and expected in lines[0], lines[0]
