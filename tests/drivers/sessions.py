"""A fault-injecting `requests.Session` for faults the simulator has no mode for. It sits on
the client's side of a real connection to the simulator: every request still goes over
127.0.0.1 and the simulator applies it; only what the client gets to see is changed."""

from __future__ import annotations

import threading

import requests

ORDER_PATH = "/api/v1/order"


class FlakyLink(requests.Session):
    """`lose_replies(n)`: the next n POST /order requests reach the exchange and are applied,
    but their replies are lost (the client sees a broken connection).
    `lag_reads(n)`: the next n lookups of an order by clOrdID (GET /order with a clOrdID
    filter) answer with no rows, as a read replica that lags writes does.
    `lost` and `hidden` count the faults delivered."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._lose = self._hide = 0
        self.lost = self.hidden = 0

    def lose_replies(self, n: int) -> None:
        with self._lock:
            self._lose = n

    def lag_reads(self, n: int) -> None:
        with self._lock:
            self._hide = n

    def request(self, method, url, *args, **kwargs):
        response = super().request(method, url, *args, **kwargs)
        path = url.split("://", 1)[-1].partition("/")[2]
        place = method.upper() == "POST" and f"/{path}" == ORDER_PATH
        lookup = method.upper() == "GET" and f"/{path}".startswith(ORDER_PATH + "?") and "clOrdID" in url
        with self._lock:
            if place and self._lose > 0:
                self._lose -= 1
                self.lost += 1
                raise requests.ConnectionError("reply lost (test fault)")
            if lookup and self._hide > 0 and response.status_code == 200:
                self._hide -= 1
                self.hidden += 1
                response._content = b"[]"
        return response
