"""The supervisor: builds the app, keeps it honest, and turns signals into a clean stop.

The parts run on their own threads (websocket, strategy loop, executor; see app.py); this
main thread checks every second that they are alive and the data fresh, restarts a dead
strategy or executor thread (`App.repair`), pings systemd's watchdog only while healthy, and
logs a status line every 10 s. SIGTERM/SIGINT stop the parts in reverse order (orders
cancelled or kept as `execution.cancel_on_exit` says) and exit 0. An exchange that refuses
the API key (401/403) stops the daemon with status 3, which systemd is told not to restart.
"""

from __future__ import annotations

import logging
import signal
import threading

from sniper import __version__, health, log
from sniper.app import App, Refused, StartError, build
from sniper.config import Config
from sniper.ws.state import configure_switch_interval

logger = logging.getLogger("sniper.daemon")

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 3  # 2 is the CLI's bad-usage/config status
STATUS_EVERY_S = 10.0
TICK_S = 1.0  # supervisor cadence: watchdog ping while healthy, status line every STATUS_EVERY_S
STATUS_KEYS = ("ready", "best_bid", "best_ask", "position", "target", "open_orders", "active_logic", "data_age_s",
               "reconnects", "messages_per_s", "executor")


def run_daemon(cfg: Config, *, exchange_url: str | None = None, log_format: str | None = None,
               log_level: str | None = None) -> int:
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
                __version__, cfg.source, exchange_url or cfg.exchange.base_url, cfg.exchange.symbol,
                cfg.strategy.name)
    app = build(cfg, exchange_url=exchange_url)
    try:
        app.start()
        signal.signal(signal.SIGUSR1, app.risk.on_signal)  # kill switch by hand: kill -USR1 <pid>
        _supervise(app, stop)
    except Refused as exc:
        logger.error("stopping, the exchange refused us: %s (fix the API key, then start again)", exc)
        app.stop(cancel_orders=False)
        return EXIT_REFUSED
    except Exception as exc:
        if isinstance(exc, StartError):
            logger.error("stopping: %s", exc)
        else:
            logger.exception("fatal error, stopping")
        app.stop()
        return EXIT_FAILED
    health.sd_notify("STOPPING=1")
    app.stop()
    logger.info("stopped cleanly")
    return EXIT_OK


def _supervise(app: App, stop: threading.Event) -> None:
    health.sd_notify("READY=1")
    next_status = 0.0
    while not stop.wait(TICK_S):
        if app.ws.fatal:
            raise app.refusal()
        app.repair()
        status = app.health()
        if status["healthy"]:
            health.sd_notify("WATCHDOG=1")
        if app.clock.monotonic() >= next_status:
            logger.info("status %s", " ".join(f"{k}={_brief(status.get(k))}" for k in STATUS_KEYS))
            next_status = app.clock.monotonic() + STATUS_EVERY_S


def _brief(value) -> str:
    if isinstance(value, dict):
        return f"{value.get('qty')}/{value.get('style')}"
    return str(value)
