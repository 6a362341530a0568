"""Clock skew between this host and the exchange. A request is signed with api-expires = our now +
5 s, and the exchange refuses a stamp already past by its own clock: a host up to 5 s behind still
trades (REST and websocket), one further behind gets one clear error naming the measured skew, from
REST (ClockSkew) and at the daemon's start (StartError, which the daemon logs as one line)."""

from __future__ import annotations

import pytest
from rigging import soak

from sniper import config
from sniper.app import StartError, build
from sniper.auth import Credentials
from sniper.clock import OffsetClock
from sniper.rest import ClockSkew, RestClient

WITHIN, BEYOND = -3.0, -12.0  # host clock offsets from the exchange's, seconds (api-expires allows 5)


def client(sim, offset: float) -> RestClient:
    return RestClient(sim.url, Credentials(sim.key, sim.secret), OffsetClock(offset))


def test_rest_within_the_window_signs_fine_and_beyond_it_names_the_skew(sim_server):
    assert "marginBalance" in client(sim_server, WITHIN).margin()
    with pytest.raises(ClockSkew) as caught:
        client(sim_server, BEYOND).margin()
    assert abs(caught.value.skew - -BEYOND) <= 1.0  # the exchange states its time in whole seconds
    text = str(caught.value)
    assert "clock skew" in text and f"{caught.value.skew:.0f} s ahead of this host's" in text and "NTP" in text, text


def app_on(sim, tmp_path, offset: float):
    cfg = config.load(soak.daemon_config(tmp_path, 0), exchange_url=sim.url)
    return build(cfg, clock=OffsetClock(offset), exchange_url=sim.url)


def test_the_daemon_starts_within_the_window_and_stops_beyond_it_with_one_clear_error(sim_server, tmp_path):
    app = app_on(sim_server, tmp_path, WITHIN)
    app.start(strategy=False, serve=False)
    try:
        assert app.state.ready and app.ws.session.authenticated
        assert app.venue.position() == 0  # a signed REST read
    finally:
        app.stop(cancel_orders=False)
    app = app_on(sim_server, tmp_path, BEYOND)
    with pytest.raises(StartError) as caught:
        app.start(strategy=False, serve=False)
    text = str(caught.value)
    assert text.startswith("clock skew:") and "s ahead of this host's" in text and "\n" not in text, text
