"""The one composition root: a config in, every part of a running daemon out.

`build(cfg)` wires the exchange (the embedded simulator when `exchange.base_url: sim`), the
websocket state, the REST client, the journal, the risk gate, the executor, the bar store and
live bars, the strategy and its loop, and the health/metrics endpoint. The daemon, the
integration tests, the crash-restart test and the benchmarks all build through here, so what
they exercise is what production runs.

`start(strategy=False)` runs the order stack alone (a caller sets targets on the executor):
that is how order tests and the crash driver use it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from sniper import auth
from sniper import config as config_mod
from sniper.auth import Credentials
from sniper.clock import OffsetClock, RealClock
from sniper.config import Config
from sniper.model import SATOSHI, iso, parse_time

logger = logging.getLogger("sniper.app")

READY_TIMEOUT_S = 30.0
MAX_RESTARTS = 5  # per thread; beyond that the supervisor gives up and the process exits non-zero


class StartError(Exception):
    """A part could not start (exchange unreachable, data never complete)."""


class App:
    """Every part of one daemon. Attributes are None until `start` creates them."""

    def __init__(self, cfg: Config, *, clock=None, exchange_url: str | None = None,
                 rest_options: dict | None = None) -> None:
        self.cfg = cfg
        self.rest_options = dict(rest_options or {})  # RestClient keywords: retries, timeouts, a session
        self.clock = clock or RealClock()
        self.exchange_url = exchange_url
        self.creds: Credentials | None = config_mod.resolve_for_url(cfg, exchange_url)
        self.sim = None
        self.url: str | None = None
        self.market_clock = None
        self.state = self.ws = self.rest = None
        self.journal = self.risk = self.venue = self.executor = None
        self.store = self.bars = self.strategy = self.loop = None
        self.metrics = self.health_server = None
        self.restarts: dict[str, int] = {}
        self._stack = contextlib.ExitStack()
        self._messages = (0, time.monotonic(), 0.0)  # (seq, when, rate) for messages/s

    # ------------------------------------------------------------------ lifecycle
    def wire(self) -> App:
        """Create the exchange connection's and the order stack's parts without starting their
        threads (the embedded simulator does start: its URL is needed). Idempotent."""
        if self.executor is None:
            try:
                self._start_exchange()
                self._wire_market_data()
                self._wire_orders()
            except BaseException:
                self._stack.close()
                raise
        return self

    def start(self, *, strategy: bool = True, serve: bool = True, executor: bool = True) -> App:
        """Start every part, in dependency order; on failure whatever started is stopped.
        `strategy=False` runs the order stack alone (a caller sets the executor's targets)."""
        self.wire()
        try:
            self._start_market_data()
            if executor:
                self.executor.start()
            if strategy:
                self._start_strategy()
            if serve and self.cfg.metrics.enabled:
                self._start_health()
        except BaseException:
            self._stack.close()
            raise
        return self

    def stop(self, cancel_orders: bool | None = None) -> None:
        """Stop in reverse order: loop, executor (cancelling our orders if asked, else as the
        config says), websocket, journal, simulator."""
        if self.loop is not None:
            self.loop.stop()
        if self.executor is not None:
            self.executor.stop(cancel=cancel_orders)
        self._stack.close()

    def _start_exchange(self) -> None:
        cfg = self.cfg
        if self.exchange_url:
            self.url = self.exchange_url.rstrip("/")
        elif cfg.exchange.is_sim:
            from sniper.sim.server import SimServer

            s = cfg.sim
            self.sim = SimServer(port=s.port, data=s.data, funding=s.funding, speed=s.speed, seed=s.seed,
                                 start=s.start, accounts=[(self.creds.key, self.creds.secret, s.balance_xbt)],
                                 maker_fee=s.maker_fee, taker_fee=s.taker_fee)
            self.url = self.sim.start()
            self._stack.callback(self.sim.stop)
            logger.info("embedded simulator listening on %s (speed %.1fx, seed %d, replay from %s)", self.url,
                        s.speed, s.seed, iso(self.sim.sim.clock.now()))
        else:
            self.url = cfg.exchange.rest_base()
        from sniper.rest import RestClient

        self.rest = RestClient(self.url, self.creds, self.clock, symbol=cfg.exchange.symbol, **self.rest_options)

    def _wire_market_data(self) -> None:
        from sniper.ws.client import WsClient
        from sniper.ws.state import State

        symbol = self.cfg.exchange.symbol
        self.state = State(symbol=symbol, clock=self.clock)
        ws_url = "ws" + self.url[len("http"):] + "/realtime"
        self.ws = WsClient(ws_url, self.state, symbol=symbol, credentials=self.creds, clock=self.clock,
                           **self.cfg.websocket.client_options())

    def _start_market_data(self) -> None:
        self.ws.start()
        self._stack.callback(self.ws.stop)
        if not self.ws.wait_ready(READY_TIMEOUT_S):
            if self.ws.fatal:
                raise self.refusal()
            raise StartError(f"market data not complete after {READY_TIMEOUT_S:.0f} s: "
                             f"{self.state.snapshot(depth=0).reason}")
        if self.sim is not None:
            self.market_clock = self.sim.sim.clock  # the embedded exchange's own clock
        else:
            # set from the exchange's first timestamps, in either direction: a simulator replaying
            # 2018 is years behind ours, and `observe` only ever moves the clock forward
            exchange_time = self._exchange_time()
            self.market_clock = OffsetClock(0.0 if exchange_time is None else exchange_time - time.time())

    def _exchange_time(self) -> float | None:
        """The exchange's latest timestamp in the live view (instrument, trade), if any."""
        snap = self.state.snapshot(depth=0)
        times = [parse_time((row or {}).get("timestamp")) for row in (snap.instrument, snap.last_trade)]
        return max((t for t in times if t is not None), default=None)

    def observe_exchange_time(self) -> None:
        """Move the market clock up to the exchange's latest timestamp (instrument, trade)."""
        if not isinstance(self.market_clock, OffsetClock):
            return
        exchange_time = self._exchange_time()
        if exchange_time is not None:
            self.market_clock.observe(exchange_time)

    def _wire_orders(self) -> None:
        from sniper.journal import Journal, JournalUnwritable
        from sniper.orders.bitmex import BitmexVenue
        from sniper.orders.executor import Executor
        from sniper.risk import RiskGate

        cfg = self.cfg
        Path(cfg.paths.journal).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.journal = Journal(cfg.paths.journal, self.clock)
        except JournalUnwritable as exc:  # one line for the operator, not a traceback
            raise StartError(str(exc)) from exc
        self._stack.callback(self.journal.close)
        self.risk = RiskGate(cfg.risk, self.clock, store=self.journal)
        from sniper.metrics import Metrics

        self.metrics = Metrics(self.health)
        self.venue = self.metrics.metered(BitmexVenue(self.rest, self.state, self.clock,
                                                      confirm_timeout_s=cfg.execution.confirm_timeout_s))
        self.executor = Executor(self.venue, self.journal, self.risk, self.clock, cfg.execution)
        self._stack.callback(self.executor.stop, False)  # idempotent; stop() cancels as asked first

    def _start_strategy(self) -> None:
        from sniper import strategies
        from sniper.bars import LiveBars
        from sniper.history import Store
        from sniper.loop import StrategyLoop
        from sniper.rest import RestClient

        cfg = self.cfg
        Path(cfg.paths.history).parent.mkdir(parents=True, exist_ok=True)
        self.store = Store(cfg.paths.history)
        self._stack.callback(self.store.close)
        # its own REST client: a RestClient is not shared between threads (the executor's is busy)
        bars_rest = RestClient(self.url, self.creds, self.clock, symbol=cfg.exchange.symbol)
        self.bars = LiveBars(self.store, bars_rest, self.state, self.market_clock, symbol=cfg.exchange.symbol,
                             lookback=cfg.strategy.lookback_minutes)
        last = self.store.last_bar_time()
        logger.info("bringing the history up to date from the exchange's trade/bucketed (store %s: %s)",
                    cfg.paths.history, "empty, fetching the last %d minutes" % cfg.strategy.lookback_minutes
                    if last is None else f"last bar {iso(last)}")
        added = self.bars.backfill()
        bars = self.bars.bars
        if len(bars):
            logger.info("history loaded: %d bars from %s to %s (%d fetched from the exchange), %d funding rows",
                        len(bars), iso(int(bars["time"][0])), iso(int(bars["time"][-1]) + 60), added,
                        len(self.bars.funding_history[0]))
        maker, taker = self._fees()
        self.strategy = strategies.build(cfg.strategy, taker_fee=taker,
                                         min_liquidation_distance=cfg.risk.min_liquidation_distance)
        logger.info("strategy %s: needs %d bars of warm-up; fees maker %.4f %% taker %.4f %%",
                    cfg.strategy.name, self.strategy.warmup, maker * 100, taker * 100)
        self.loop = StrategyLoop(self.strategy, self.bars, self.state, self.executor, self.risk,
                                 self.market_clock, taker_fee=taker, maker_fee=maker,
                                 on_wake=self.observe_exchange_time)
        self.loop.start()

    def _fees(self) -> tuple[float, float]:
        """The instrument's maker and taker fees (BitMEX publishes them on the instrument); the
        configured ones when the instrument has none or garbled ones (logged)."""
        from sniper.orders.venue import VenueError, number

        inst = self.state.snapshot(depth=0).instrument or {}
        try:
            maker, taker = (number(inst.get(f), f"instrument {f}") for f in ("makerFee", "takerFee"))
        except VenueError as exc:
            logger.warning("%s: the configured fees are used", exc)
            maker = taker = None
        if maker is None or taker is None:
            return self.cfg.sim.maker_fee, self.cfg.sim.taker_fee
        return float(maker), float(taker)

    def _start_health(self) -> None:
        from sniper import health

        self.health_server = health.HealthServer(self.cfg.metrics.host, self.cfg.metrics.port, self.health,
                                                 self.metrics.render)
        logger.info("health on %s/health, Prometheus metrics on %s/metrics", self.health_server.start(),
                    self.health_server.url)
        self._stack.callback(self.health_server.stop)

    # ------------------------------------------------------------------ supervision
    def _threads(self) -> dict:
        """The supervised threads by name, the market data first (the others act on it)."""
        parts = {"websocket": self.ws, "executor": self.executor, "strategy": self.loop}
        return {name: part for name, part in parts.items() if part is not None}

    def threads(self) -> dict[str, bool]:
        return {name: part.is_alive() for name, part in self._threads().items()}

    def repair(self) -> list[str]:
        """Restart a dead websocket, executor or strategy thread. A websocket the exchange refused
        for good ended by design and is left alone: restarting cannot help, the supervisor stops
        on `refusal()`. Raises StartError once a thread has died more than MAX_RESTARTS times:
        then a person must look, and systemd restarts the process."""
        repaired = []
        for name, part in self._threads().items():
            if part.is_alive() or (part is self.ws and self.ws.fatal):
                continue
            self.restarts[name] = self.restarts.get(name, 0) + 1
            if self.restarts[name] > MAX_RESTARTS:
                raise StartError(f"the {name} thread died {self.restarts[name]} times")
            logger.error("the %s thread died: restarting it (%d of %d)", name, self.restarts[name], MAX_RESTARTS)
            part.start()
            repaired.append(name)
        return repaired

    def refusal(self) -> Exception:
        """The websocket's refusal for good as the error to stop with: a signature refused as
        expired is the host's clock to fix (a StartError naming the skew), anything else the key."""
        skew = auth.expired_skew(self.ws.fatal, self.clock.now())
        if skew is not None:
            return StartError(auth.skew_message(skew))
        return Refused(self.ws.fatal)

    def health(self) -> dict:
        from sniper.orders.venue import balance_of, contracts, number

        snap = self.state.snapshot(depth=None)  # the whole book: its depth is a metric
        pos = snap.position or {}
        unreadable: list[str] = []
        position = _shown(unreadable, contracts, pos)
        pnl = _shown(unreadable, number, pos.get("unrealisedPnl"), "position unrealisedPnl")
        balance = _shown(unreadable, balance_of, snap)
        threads = self.threads()
        seq, when, rate = self._messages
        now = time.monotonic()
        if now - when >= 1.0:
            rate = (snap.seq - seq) / (now - when)
            self._messages = (snap.seq, now, rate)
        target = self.executor.target if self.executor is not None else None
        journal_error = getattr(self.executor, "journal_error", None)
        status = {
            "healthy": bool(snap.ready) and all(threads.values()) and journal_error is None,
            "ready": bool(snap.ready),
            "reason": snap.reason,
            "best_bid": snap.best_bid,
            "best_ask": snap.best_ask,
            "position": position,
            "target": None if target is None else {"qty": target.qty, "style": target.style,
                                                   "reason": target.reason},
            "open_orders": len(snap.orders),
            "unrealised_pnl_xbt": None if pnl is None else pnl / SATOSHI,
            "margin_balance_xbt": None if balance is None else balance / SATOSHI,
            "unreadable": unreadable,  # the garbled figures shown as None above, and why
            "data_age_s": round(snap.data_age, 3),
            "table_age_s": self.state.table_ages(),
            "book_levels": {"Buy": len(snap.bids), "Sell": len(snap.asks)} if snap.ready else {},
            "reconnects": snap.reconnects,
            "messages": snap.seq,
            "messages_per_s": round(rate, 1),
            "executor": getattr(self.executor, "last_status", None),
            "executor_last_error": getattr(self.executor, "last_error", None),
            "rest_last_error": getattr(self.rest, "last_error", None),
            "journal": journal_error or "ok",
            "websocket_last_end": getattr(self.ws, "last_end", None),
            "threads": threads,
            "dead_threads": [name for name, alive in threads.items() if not alive],  # what repair restarts
            "restarts": dict(self.restarts),
            "risk_refusals": dict(self.risk.refusals) if self.risk is not None else {},
        }
        if self.market_clock is not None:
            status["market_time"] = iso(self.market_clock.now())
        if self.loop is not None:
            status.update(self.loop.status())
        return status


def _shown(unreadable: list[str], read, *args):
    """`read(*args)` as /health shows a figure: 0 when absent, None when garbled, with the reason
    added to `unreadable`. The supervisor reports what it cannot read; it must not die on it."""
    from sniper.orders.venue import VenueError

    try:
        return read(*args) or 0
    except VenueError as exc:
        unreadable.append(str(exc))
        return None


class Refused(Exception):
    """The exchange refused us for good (401/403): restarting cannot help, a person must act."""


def build(cfg: Config, *, clock=None, exchange_url: str | None = None, rest_options: dict | None = None) -> App:
    """The daemon for `cfg`, not yet started."""
    return App(cfg, clock=clock, exchange_url=exchange_url, rest_options=rest_options)
