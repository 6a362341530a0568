"""The connection's protocol state (sniper/ws/session.py) over a real State: refusals at
the upgrade, the back-off and the server's retry-after, what a new connection forgets,
and who owns the frames that are not table data."""

from __future__ import annotations

import json
import logging
import math
import random

import pytest

from sniper.rest import RETRY_AFTER_MAX_S
from sniper.ws.session import Session
from sniper.ws.state import PUBLIC_TABLES, State

AUTH_ACK = '{"success": true, "request": {"op": "authKeyExpires", "args": ["k", 1, "s"]}}'


def test_a_refused_upgrade_is_fatal_for_401_and_403_only():
    for status in (401, 403):
        state = State()
        state.begin_session(PUBLIC_TABLES)
        session = Session(state)
        session.refused(status, "Invalid API Key.", {})
        snap = state.snapshot(0)
        assert session.fatal == f"authentication failed ({status}): Invalid API Key."
        assert not snap.ready and snap.reason == session.fatal
    for status in (400, 429, 500, 503):
        session = Session(State())
        session.refused(status, "busy", {})
        assert session.fatal is None


def test_retry_after_stretches_one_back_off_only():
    session = Session(State(), backoff_initial=0.1, backoff_max=0.4, rng=random.Random(3))
    session.refused(429, "Rate limit exceeded", {"retry-after": "9"})
    assert session.retry_after == 9.0 and session.next_delay(healthy=False) == 9.0
    assert session.retry_after == 0.0 and session.next_delay(healthy=False) <= 0.4
    session.refused(429, "Rate limit exceeded", {"retry-after": "soon"})  # unreadable: one second
    assert session.next_delay(healthy=False) == 1.0


@pytest.mark.parametrize("figure, wait, logged", [
    (7, 7.0, False), (0, 0.0, False), (2.5, 2.5, False), ("5", 5.0, False),  # a number's text reads as a header's
    (1e308, RETRY_AFTER_MAX_S, True), (-1, 1.0, True), ("soon", 1.0, True), (True, 1.0, True), ([3], 1.0, True),
    ({"s": 3}, 1.0, True)])
def test_a_429_frame_s_retry_after_is_a_bounded_number_or_one_second(figure, wait, logged, caplog):
    state = State()
    session = Session(state, backoff_initial=0.01, backoff_max=0.02)
    with caplog.at_level(logging.WARNING, "sniper.rest"):
        state.apply_message(json.dumps({"status": 429, "error": "slow down", "meta": {"retryAfter": figure}}))
    assert session.retry_after == wait and wait <= session.next_delay(healthy=False) <= max(wait, 0.02)
    lines = [r.getMessage() for r in caplog.records if r.name == "sniper.rest"]
    assert len(lines) == logged and all(line.startswith(f"meta.retryAfter of a 429 frame {figure!r} is ")
                                        for line in lines)


@pytest.mark.parametrize("figure", [math.inf, -math.inf, math.nan])
def test_a_retry_after_no_wait_can_obey_waits_one_second(figure):
    """JSON carries no inf or NaN, but a decoder that did must not hand them to the wait."""
    session = Session(State())
    session.on_control({"status": 429, "meta": {"retryAfter": figure}}, "")
    assert session.retry_after == 1.0


@pytest.mark.parametrize("header, wait", [("1e308", RETRY_AFTER_MAX_S), ("99999999999999999999", RETRY_AFTER_MAX_S),
                                          ("inf", 1.0), ("nan", 1.0), ("-3", 1.0), ("2.5", 2.5)])
def test_a_refused_upgrade_s_retry_after_header_is_read_by_the_same_rule(header, wait):
    session = Session(State())
    session.refused(429, "Rate limit exceeded", {"retry-after": header})
    assert session.retry_after == wait


def test_failures_in_a_row_grow_the_back_off_and_a_healthy_connection_resets_it():
    session = Session(State(), backoff_initial=1.0, backoff_max=64.0, rng=random.Random(5))
    delays = [session.next_delay(healthy=False) for _ in range(4)]
    assert session.attempt == 4
    for attempt, delay in enumerate(delays, 1):
        assert 2 ** attempt / 2 <= delay <= 2 ** attempt
    assert session.next_delay(healthy=True) <= 1.0 and session.attempt == 0


def test_a_new_connection_forgets_its_acks_but_not_a_fatal_refusal():
    state = State()
    session = Session(state)
    state.apply_message(AUTH_ACK)
    state.apply_message('{"success": true, "subscribe": "trade:XBTUSD", "request": {"op": "subscribe"}}')
    assert session.authenticated and session.subscribed == {"trade:XBTUSD"}
    state.apply_message('{"success": true, "unsubscribe": "trade:XBTUSD", "request": {"op": "unsubscribe"}}')
    assert session.subscribed == set()
    state.apply_message('{"status": 403, "error": {"message": "Forbidden", "name": "HTTPError"}}')
    session.start_connection()
    assert not session.authenticated and session.fatal == "authentication failed (403): Forbidden"
    assert state.errors["server 403"] == 1


def test_control_frames_go_to_the_latest_session_and_count_as_bad_without_one():
    state = State()
    state.apply_message(AUTH_ACK)
    assert state.errors["control frame without a session"] == 1
    first = Session(state)
    second = Session(state)  # a new owner of the connection takes the frames over
    state.apply_message(AUTH_ACK)
    assert second.authenticated and not first.authenticated
    assert state.seq == 0 and not state.snapshot(0).ready


@pytest.mark.parametrize("raw", ['{"status": 401}', '{"status": 401, "error": {"message": 5}}'])
def test_a_fatal_error_whose_message_is_missing_or_not_text_is_still_fatal(raw):
    state = State()
    session = Session(state)
    state.apply_message(raw)
    assert session.fatal.startswith("authentication failed (401)") and state.errors["internal error"] == 0
