"""The real order stack wired to an exchange, shared by the order tests and the crash-restart
driver process. `Rig`: the daemon's composition root (`sniper.app`) with the strategy loop off,
against a simulator server, threaded. `LocalRig`: the
same Journal, RiskGate and Executor over a LocalVenue on an in-process Exchange built as the
server builds its own (`local_exchange`), stepped. Their interface is what the tests use: the
parts as attributes, start/stop (Rig), reached."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sniper.app import build
from sniper.clock import RealClock, SimClock
from sniper.config import (
    SIM_DEMO_KEY,
    SIM_DEMO_SECRET,
    Config,
    CredentialsConfig,
    ExchangeConfig,
    ExecutionConfig,
    MetricsConfig,
    PathsConfig,
    RiskConfig,
    WebsocketConfig,
)
from sniper.journal import Journal
from sniper.model import OPEN_ORD_STATUSES, Target
from sniper.orders.executor import Executor
from sniper.orders.local import LocalVenue
from sniper.orders.venue import Venue, position_of
from sniper.rest import RestClient
from sniper.risk import RiskGate
from sniper.sim import feed
from sniper.sim.exchange import Exchange

# fast enough for tests, same code paths as production
TEST_EXECUTION = ExecutionConfig(cycle_seconds=0.05, confirm_timeout_s=2.0, dead_mans_refresh_s=5.0)
TEST_RISK = RiskConfig(max_position=100_000, max_leverage=50.0, max_order_qty=100_000,
                       max_orders_per_minute=10_000, daily_loss_limit_xbt=10.0, kill_switch_file="")
TEST_WEBSOCKET = WebsocketConfig(ping_interval_s=1.0, dead_after_s=3.0, backoff_initial_s=0.05, backoff_max_s=0.5)


@dataclass
class Rig:
    """The daemon's own order stack (`sniper.app`, strategy loop and health endpoint off) on the
    simulator at `url`, with test timings; the parts are the app's."""

    url: str
    key: str
    secret: str
    journal_path: str
    execution: ExecutionConfig = TEST_EXECUTION
    risk_config: RiskConfig = TEST_RISK
    rest_options: dict = field(default_factory=dict)
    clock: object = field(default_factory=RealClock)

    def __post_init__(self) -> None:
        cfg = Config(exchange=ExchangeConfig(base_url=self.url),
                     credentials=CredentialsConfig(api_key=self.key, api_secret=self.secret),
                     execution=self.execution, risk=self.risk_config, websocket=TEST_WEBSOCKET,
                     paths=PathsConfig(journal=self.journal_path), metrics=MetricsConfig(enabled=False))
        self.app = build(cfg, clock=self.clock, exchange_url=self.url, rest_options=self.rest_options).wire()
        a = self.app
        self.creds, self.rest, self.state, self.ws = a.creds, a.rest, a.state, a.ws
        self.journal, self.risk, self.venue, self.executor = a.journal, a.risk, a.venue, a.executor

    def start(self, executor: bool = True) -> Rig:
        self.app.start(strategy=False, serve=False, executor=executor)
        return self

    def stop(self, cancel: bool = False) -> None:
        self.app.stop(cancel_orders=cancel)

    def reached(self, target: Target) -> bool:
        return reached(self.venue, self.journal, target)


def reached(venue: Venue, journal: Journal, target: Target) -> bool:
    """The executor's own view: position at target, nothing working or unknown."""
    snap = venue.snapshot()
    return snap.ready and position_of(snap) == target.qty and not journal.open_orders() and not snap.orders


def local_exchange(*, seed: int = 1, lot: int | None = None) -> tuple[Exchange, SimClock]:
    """An Exchange as `python -m sniper sim --paused --seed SEED` builds its own (bundled minutes
    and funding, the demo account, the feed stepped to the start), on a paused clock; `lot`
    overrides the instrument's lotSize."""
    bars = feed.load_bars(feed.DEFAULT_BARS)
    clock = SimClock(feed.default_start(bars), 0.0)
    instrument = feed.instrument_for(bars) | ({"lotSize": lot} if lot else {})
    exchange = Exchange(instrument, clock, funding=feed.load_funding(feed.DEFAULT_FUNDING), seed=seed)
    exchange.add_account(SIM_DEMO_KEY, SIM_DEMO_SECRET, 1.0)
    feed.Feed(exchange, bars, seed=seed).step_until(clock.now())
    return exchange, clock


@dataclass
class LocalRig:
    """The order stack over `exchange`'s demo account, in-process and stepped (`executor.settle()`)."""

    exchange: Exchange
    clock: SimClock
    journal_path: str = ":memory:"
    execution: ExecutionConfig = TEST_EXECUTION
    risk_config: RiskConfig = TEST_RISK

    def __post_init__(self) -> None:
        self.venue = LocalVenue(self.exchange, SIM_DEMO_KEY)
        self.journal = Journal(self.journal_path, self.clock)
        self.risk = RiskGate(self.risk_config, self.clock, store=self.journal)
        self.executor = Executor(self.venue, self.journal, self.risk, self.clock, self.execution)

    def reached(self, target: Target) -> bool:
        return reached(self.venue, self.journal, target)


def wait_for(predicate, timeout: float = 10.0, every: float = 0.005, what: str = "condition"):
    """Poll `predicate` until truthy; returns its value or raises AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def exchange_view(rest: RestClient) -> tuple[int, list[dict], list[dict]]:
    """What the exchange says, by REST: (position, open orders, all recent orders)."""
    position = int((rest.position() or {}).get("currentQty") or 0)
    orders = rest.orders(count=500)
    return position, [o for o in orders if o["ordStatus"] in OPEN_ORD_STATUSES], orders
