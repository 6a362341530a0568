"""The supervisor: wires the parts together and keeps the process honest.

Today it starts the exchange connection (the embedded simulator when the
config says `sim`), the websocket thread that keeps the shared state, the
health endpoint and systemd's watchdog, and logs what it sees; the strategy
loop and executor join here as they are built. SIGTERM/SIGINT stop every
part in reverse order and exit 0; an exchange that refuses the API key (401/403)
stops the daemon with status 3, which systemd is told not to restart.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

from sniper import __version__, log
from sniper.clock import RealClock
from sniper.config import Config
from sniper.ws.state import configure_switch_interval

logger = logging.getLogger("sniper.daemon")

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 3  # 2 is the CLI's bad-usage/config status
STATUS_EVERY_S = 10.0
TICK_S = 1.0  # supervisor cadence: watchdog ping while healthy, status line every STATUS_EVERY_S


def _start_exchange(cfg: Config, stack: contextlib.ExitStack, creds) -> str:
    """The HTTP base URL to trade on; starts the embedded simulator when configured."""
    if not cfg.exchange.is_sim:
        return cfg.exchange.rest_base()
    from sniper.sim.server import SimServer

    server = SimServer(
        port=cfg.sim.port, data=cfg.sim.data, funding=cfg.sim.funding, speed=cfg.sim.speed, seed=cfg.sim.seed,
        accounts=[(creds.key, creds.secret, cfg.sim.balance_xbt)],
        maker_fee=cfg.sim.maker_fee, taker_fee=cfg.sim.taker_fee,
    )
    url = server.start()
    stack.callback(server.stop)
    logger.info("embedded simulator listening on %s (speed %.1fx, seed %d)", url, cfg.sim.speed, cfg.sim.seed)
    return url


class Refused(Exception):
    """The exchange refused us for good (401/403): restarting cannot help, a person must act."""


def _status(state, client) -> dict:
    snap = state.snapshot(depth=1)
    return {
        "healthy": bool(snap.ready) and client.is_alive(),
        "ready": bool(snap.ready),
        "best_bid": snap.best_bid,
        "best_ask": snap.best_ask,
        "position": (snap.position or {}).get("currentQty", 0),
        "open_orders": len(snap.orders),
        "data_age_s": round(snap.data_age, 3),
        "reconnects": snap.reconnects,
        "messages": snap.seq,
    }


def run_daemon(cfg: Config, *, log_format: str | None = None, log_level: str | None = None) -> int:
    log.setup(level=log_level or cfg.logging.level, fmt=log_format or cfg.logging.format,
              file=cfg.logging.file, max_bytes=cfg.logging.max_bytes, backups=cfg.logging.backups)
    configure_switch_interval()
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info("sniper %s starting: config %s, exchange %s, symbol %s, strategy %s",
                __version__, cfg.source, cfg.exchange.base_url, cfg.exchange.symbol, cfg.strategy.name)
    try:
        with contextlib.ExitStack() as stack:
            _supervise(cfg, stack, stop)
    except Refused as exc:
        logger.error("stopping, the exchange refused us: %s (fix the API key, then start again)", exc)
        return EXIT_REFUSED
    except Exception:
        logger.exception("fatal error, stopping")
        return EXIT_FAILED
    logger.info("stopped cleanly")
    return EXIT_OK


def _supervise(cfg: Config, stack: contextlib.ExitStack, stop: threading.Event) -> None:
    from sniper import health
    from sniper.ws.client import WsClient
    from sniper.ws.state import State

    clock = RealClock()
    creds = cfg.api_credentials()
    base_url = _start_exchange(cfg, stack, creds)
    state = State(symbol=cfg.exchange.symbol, clock=clock)
    client = WsClient(base_url.replace("http", "ws", 1) + "/realtime", state, symbol=cfg.exchange.symbol,
                      credentials=creds, clock=clock)
    client.start()
    stack.callback(client.stop)
    stack.callback(health.sd_notify, "STOPPING=1")
    if cfg.metrics.port:
        server = health.HealthServer(cfg.metrics.host, cfg.metrics.port, lambda: _status(state, client))
        logger.info("health endpoint on %s/health", server.start())
        stack.callback(server.stop)
    health.sd_notify("READY=1")
    next_status = 0.0
    while not stop.wait(TICK_S):
        if client.fatal:
            raise Refused(client.fatal)
        status = _status(state, client)
        if status["healthy"]:
            health.sd_notify("WATCHDOG=1")
        if clock.monotonic() >= next_status:
            logger.info("status %s", " ".join(f"{k}={v}" for k, v in status.items()))
            next_status = clock.monotonic() + STATUS_EVERY_S
