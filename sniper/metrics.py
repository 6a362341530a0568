"""Prometheus metrics of one daemon, in prometheus-client's text format.

Why a collector and not gauges set from every thread: most figures (position, data age, book
depth, active logic) already live in the shared state, the executor or the strategy loop; a
scrape reads them once through one `status()` callable, so nothing is copied on the hot path
and no figure can go stale. Only events that leave no state behind (orders sent or refused by
reason, order round trips) are counted as they happen.

Each daemon has its own registry: tests run several in one process.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sniper.orders.venue import Refused, VenueError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    """`orders` counts order requests by kind (place, amend, cancel, cancel_all) and outcome (sent,
    rejected by the exchange, unknown) with a reason; `order_latency` is the round trip from
    sending a request to the exchange's reply. Refusals by the risk gate come from the status
    (`risk_refusals`: rule -> count)."""

    def __init__(self, status: Callable[[], dict]) -> None:
        self.registry = CollectorRegistry()
        self.orders = Counter("sniper_orders", "Order requests by kind, outcome and reason",
                              ("kind", "outcome", "reason"), registry=self.registry)
        self.order_latency = Histogram("sniper_order_roundtrip_seconds",
                                       "From sending an order request to the exchange's reply",
                                       registry=self.registry, buckets=LATENCY_BUCKETS)
        self.registry.register(_StatusCollector(status))

    def count_order(self, kind: str, outcome: str, reason: str = "") -> None:
        self.orders.labels(kind, outcome, reason).inc()

    def metered(self, venue):
        """`venue` with its order writes counted and timed."""
        return MeteredVenue(venue, self)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MeteredVenue:
    """A venue whose writes (place, amend, cancel, cancel-all) are counted by outcome — sent,
    rejected by the exchange (with its reason, numbers masked so the label set stays small), or
    unknown — and timed from request to reply. Everything else passes through."""

    def __init__(self, venue, metrics: Metrics) -> None:
        self._venue, self._metrics = venue, metrics

    def __getattr__(self, name):
        return getattr(self._venue, name)

    def place(self, request: dict):
        return self._write("place", self._venue.place, request)

    def amend(self, clordid: str, **changes):
        return self._write("amend", self._venue.amend, clordid, **changes)

    def cancel(self, **kwargs):
        return self._write("cancel", self._venue.cancel, **kwargs)

    def cancel_all(self, text: str):
        return self._write("cancel_all", self._venue.cancel_all, text)

    def _write(self, kind: str, call, *args, **kwargs):
        started = time.perf_counter()
        try:
            reply = call(*args, **kwargs)
        except Refused as exc:
            self._metrics.count_order(kind, "rejected", _reason(exc))
            raise
        except VenueError as exc:
            self._metrics.count_order(kind, "unknown", type(exc).__name__)
            raise
        self._metrics.order_latency.observe(time.perf_counter() - started)
        self._metrics.count_order(kind, "sent")
        return reply


def _reason(exc: Exception) -> str:
    return re.sub(r"\d+(\.\d+)?", "N", str(exc))[:80]


class _StatusCollector:
    """Turns the daemon's status dict into metric families at scrape time."""

    def __init__(self, status: Callable[[], dict]) -> None:
        self._status = status

    def describe(self):
        return []  # families depend on the status: collected at scrape time only

    def collect(self):
        s = self._status()
        yield _gauge("sniper_up", "1 while the daemon is healthy (data fresh, threads alive)", s.get("healthy"))
        yield _counter("sniper_ws_messages", "Websocket messages applied", s.get("messages"))
        yield _gauge("sniper_ws_messages_per_second", "Websocket messages applied per second, last interval",
                     s.get("messages_per_s"))
        yield _counter("sniper_ws_reconnects", "Websocket reconnections", s.get("reconnects"))
        ages = GaugeMetricFamily("sniper_data_age_seconds", "Seconds since a table last changed", labels=["table"])
        for table, age in sorted((s.get("table_age_s") or {}).items()):
            ages.add_metric([table], float(age))
        ages.add_metric(["all"], float(s.get("data_age_s") or 0.0))
        yield ages
        depth = GaugeMetricFamily("sniper_book_levels", "Price levels in the order book", labels=["side"])
        for side, n in (s.get("book_levels") or {}).items():
            depth.add_metric([side], float(n))
        yield depth
        yield _gauge("sniper_position_contracts", "Position, signed contracts", s.get("position"))
        target = s.get("target") or {}
        yield _gauge("sniper_target_contracts", "The target the executor pursues, signed contracts",
                     target.get("qty"))
        yield _gauge("sniper_unrealised_pnl_xbt", "Unrealised PnL of the position, XBT", s.get("unrealised_pnl_xbt"))
        yield _gauge("sniper_margin_balance_xbt", "Margin balance, XBT", s.get("margin_balance_xbt"))
        yield _gauge("sniper_open_orders", "Our working orders at the exchange", s.get("open_orders"))
        logic = GaugeMetricFamily("sniper_active_logic", "1 for the logic in control", labels=["logic"])
        if s.get("active_logic"):
            logic.add_metric([str(s["active_logic"])], 1.0)
        yield logic
        yield _gauge("sniper_last_decision_timestamp_seconds", "Epoch time of the last strategy decision",
                     s.get("last_decision_ts"))
        refused = CounterMetricFamily("sniper_risk_refusals", "Orders the risk gate refused, by rule",
                                      labels=["rule"])
        for rule, n in sorted((s.get("risk_refusals") or {}).items()):
            refused.add_metric([rule], float(n))
        yield refused
        alive = GaugeMetricFamily("sniper_thread_alive", "1 while the thread runs", labels=["thread"])
        for name, ok in sorted((s.get("threads") or {}).items()):
            alive.add_metric([name], 1.0 if ok else 0.0)
        yield alive


def _gauge(name: str, doc: str, value) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    if value is not None:
        family.add_metric([], float(value))
    return family


def _counter(name: str, doc: str, value) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc)
    if value is not None:
        family.add_metric([], float(value))
    return family
