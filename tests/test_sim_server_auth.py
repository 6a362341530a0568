"""Authentication exactly as BitMEX: api-key / api-expires / api-signature on REST,
authKeyExpires (or signed upgrade headers / query) on the websocket; each failure
answered with BitMEX's status and text. Expiry is checked against the real clock
while the simulated clock sits in 2018."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
import requests
import websocket

from sniper import auth

POSITION = "/api/v1/position"


@pytest.fixture(scope="module")
def sim():
    from conftest import start_sim

    handle = start_sim(accounts=[("alice-key", "alice-secret-0123", 1.0), ("bob-key", "bob-secret-4567", 2.0)])
    yield handle
    handle.stop()


def error_of(resp) -> tuple[int, str, str]:
    body = resp.json()["error"]
    return resp.status_code, body["name"], body["message"]


def test_signed_get_succeeds_and_sees_own_account(sim):
    resp = requests.get(sim.url + "/api/v1/user/margin", headers=sim.headers("GET", "/api/v1/user/margin"))
    assert resp.status_code == 200
    bob = auth.Credentials("bob-key", "bob-secret-4567")
    other = requests.get(sim.url + "/api/v1/user/margin",
                         headers=auth.headers(bob, "GET", "/api/v1/user/margin", "", time.time()))
    assert other.status_code == 200
    assert resp.json()["account"] != other.json()["account"]
    assert other.json()["walletBalance"] == 2 * resp.json()["walletBalance"] == 200_000_000


def test_missing_key(sim):
    assert error_of(requests.get(sim.url + POSITION)) == (401, "HTTPError", "Missing API key.")


def test_unknown_key(sim):
    headers = auth.headers(auth.Credentials("mallory", "whatever-secret"), "GET", POSITION, "", time.time())
    assert error_of(requests.get(sim.url + POSITION, headers=headers)) == (401, "HTTPError", "Invalid API Key.")


def test_bad_signature(sim):
    headers = sim.headers("GET", POSITION)
    headers["api-signature"] = "0" * 64
    assert error_of(requests.get(sim.url + POSITION, headers=headers)) == (401, "HTTPError", "Signature not valid.")


def test_signature_covers_query_and_body(sim):
    query = "/api/v1/order?" + urlencode({"filter": json.dumps({"open": True})})
    assert requests.get(sim.url + query, headers=sim.headers("GET", query)).status_code == 200
    signed_without_query = sim.headers("GET", "/api/v1/order")
    assert error_of(requests.get(sim.url + query, headers=signed_without_query))[2] == "Signature not valid."
    body = json.dumps({"symbol": "XBTUSD", "side": "Buy", "orderQty": 1, "price": 5000})
    headers = {**sim.headers("POST", "/api/v1/order", body.replace("5000", "5001")),
               "content-type": "application/json"}
    assert error_of(requests.post(sim.url + "/api/v1/order", data=body, headers=headers))[2] == "Signature not valid."


def test_expired_request(sim):
    now = time.time()
    headers = auth.headers(auth.Credentials(sim.key, sim.secret), "GET", POSITION, "", now - 60, ttl=5)
    status, name, message = error_of(requests.get(sim.url + POSITION, headers=headers))
    assert (status, name) == (401, "HTTPError")
    assert message.startswith("This request has expired - `expires` is in the past. Current time: ")
    assert abs(int(message.rsplit(" ", 1)[1]) - now) < 5  # real time, not the simulated 2018


def test_public_endpoints_need_no_key_but_check_one_if_sent(sim):
    assert requests.get(sim.url + "/api/v1/instrument").status_code == 200
    headers = sim.headers("GET", "/api/v1/instrument")
    headers["api-signature"] = "f" * 64
    assert requests.get(sim.url + "/api/v1/instrument", headers=headers).status_code == 401


def ws_auth_reply(sim, args) -> dict:
    ws = sim.ws()
    ws.send({"op": "authKeyExpires", "args": args})
    return ws.until(lambda m: "success" in m or "error" in m)


def test_ws_auth_success_unlocks_private_tables(sim):
    ws = sim.ws()
    reply = ws.authenticate(sim.key, sim.secret)
    assert reply["success"] is True and reply["request"]["op"] == "authKeyExpires"
    ws.send({"op": "subscribe", "args": ["margin"]})
    partial = ws.until(lambda m: m.get("table") == "margin")
    assert partial["action"] == "partial" and partial["data"][0]["walletBalance"] == 100_000_000


def test_ws_auth_failures(sim):
    expires = int(time.time()) + 10
    good = auth.signature(sim.secret, "GET", "/realtime", expires)
    for args, message in (
        (["mallory", expires, good], "Invalid API Key."),
        ([sim.key, expires, "0" * 64], "Signature not valid."),
        ([sim.key, expires - 60, auth.signature(sim.secret, "GET", "/realtime", expires - 60)],
         "This request has expired"),
    ):
        reply = ws_auth_reply(sim, args)
        assert reply["status"] == 401, reply
        assert reply["error"].startswith(message)
        assert reply["request"] == {"op": "authKeyExpires", "args": args}
    assert ws_auth_reply(sim, ["only-one-arg"])["status"] == 400


def test_ws_auth_by_upgrade_headers_and_query(sim):
    creds = auth.Credentials("bob-key", "bob-secret-4567")
    expires = int(time.time()) + 10
    sig = auth.signature(creds.secret, "GET", "/realtime", expires)
    header = [f"api-key: {creds.key}", f"api-expires: {expires}", f"api-signature: {sig}"]
    conn = websocket.create_connection(sim.ws_url + "?subscribe=wallet", header=header, timeout=5)
    try:
        messages = [json.loads(conn.recv()) for _ in range(3)]
        assert messages[2]["table"] == "wallet" and messages[2]["data"][0]["amount"] == 200_000_000
    finally:
        conn.close()
    query = urlencode({"api-key": creds.key, "api-expires": expires, "api-signature": sig, "subscribe": "margin"})
    conn = websocket.create_connection(f"{sim.ws_url}?{query}", timeout=5)
    try:
        assert [json.loads(conn.recv()) for _ in range(3)][2]["table"] == "margin"
    finally:
        conn.close()
    bad = [f"api-key: {creds.key}", f"api-expires: {expires}", "api-signature: " + "0" * 64]
    with pytest.raises(websocket.WebSocketBadStatusException) as failed:
        websocket.create_connection(sim.ws_url, header=bad, timeout=5)
    assert failed.value.status_code == 401
