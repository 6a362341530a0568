"""The real order stack (RestClient + State/WsClient -> BitmexVenue, Journal, RiskGate,
Executor) wired to a simulator, shared by the order tests and the crash-restart driver process.
Its interface is what they use: the parts as attributes, start, stop, reached."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sniper.auth import Credentials
from sniper.clock import RealClock
from sniper.config import ExecutionConfig, RiskConfig
from sniper.journal import Journal
from sniper.model import OPEN_ORD_STATUSES, Target
from sniper.orders.bitmex import BitmexVenue
from sniper.orders.executor import Executor
from sniper.rest import RestClient
from sniper.risk import RiskGate
from sniper.ws.client import WsClient
from sniper.ws.state import State

# fast enough for tests, same code paths as production
TEST_EXECUTION = ExecutionConfig(cycle_seconds=0.05, confirm_timeout_s=2.0, dead_mans_refresh_s=5.0)
TEST_RISK = RiskConfig(max_position=100_000, max_leverage=50.0, max_order_qty=100_000,
                       max_orders_per_minute=10_000, daily_loss_limit_xbt=10.0, kill_switch_file="")


@dataclass
class Rig:
    url: str
    key: str
    secret: str
    journal_path: str
    execution: ExecutionConfig = TEST_EXECUTION
    risk_config: RiskConfig = TEST_RISK
    rest_options: dict = field(default_factory=dict)
    clock: object = field(default_factory=RealClock)

    def __post_init__(self) -> None:
        self.creds = Credentials(self.key, self.secret)
        self.rest = RestClient(self.url, self.creds, self.clock, **self.rest_options)
        self.state = State("XBTUSD", self.clock)
        ws_url = "ws" + self.url[len("http"):] + "/realtime"
        self.ws = WsClient(ws_url, self.state, credentials=self.creds, clock=self.clock, ping_interval=1.0,
                           dead_after=3.0, backoff_initial=0.05, backoff_max=0.5)
        self.journal = Journal(self.journal_path, self.clock)
        self.risk = RiskGate(self.risk_config, self.clock, store=self.journal)
        self.venue = BitmexVenue(self.rest, self.state, self.clock, confirm_timeout_s=self.execution.confirm_timeout_s)
        self.executor = Executor(self.venue, self.journal, self.risk, self.clock, self.execution)

    def start(self, executor: bool = True) -> Rig:
        self.ws.start()
        if not self.ws.wait_ready(10):
            raise RuntimeError(f"websocket not ready: {self.state.snapshot(0).ready} {self.ws.last_end}")
        if executor:
            self.executor.start()
        return self

    def stop(self, cancel: bool = False) -> None:
        self.executor.stop(cancel=cancel)
        self.ws.stop()
        self.journal.close()

    def reached(self, target: Target) -> bool:
        """The executor's own view: position at target, nothing working or unknown."""
        snap = self.state.snapshot(depth=1)
        return (snap.ready and self.executor.position(snap) == target.qty and not self.journal.open_orders()
                and not snap.orders)


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
