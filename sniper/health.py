"""Operator-facing liveness: an HTTP endpoint (/health JSON, /metrics Prometheus text) and
systemd's sd_notify (READY=1, WATCHDOG=1, STOPPING=1) without a libsystemd dependency.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sniper.metrics import CONTENT_TYPE

logger = logging.getLogger(__name__)


def sd_notify(message: str) -> bool:
    """Send one datagram to $NOTIFY_SOCKET; False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
        return True
    except OSError as exc:
        logger.warning("sd_notify(%s) failed: %s", message, exc)
        return False


class HealthServer:
    """GET /health -> `status()` as JSON, 200 when it says healthy else 503;
    GET /metrics -> `metrics()`, Prometheus text format."""

    def __init__(self, host: str, port: int, status: Callable[[], dict], metrics: Callable[[], bytes]) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path == "/health":
                    body = outer.status()
                    self._send(200 if body.get("healthy") else 503, "application/json",
                               json.dumps(body, default=str).encode())
                elif self.path == "/metrics":
                    self._send(200, CONTENT_TYPE, outer.metrics())
                else:
                    self.send_error(404)

            def _send(self, code: int, content_type: str, payload: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, fmt: str, *args) -> None:
                logger.debug("health: " + fmt, *args)

        self.status, self.metrics = status, metrics
        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="health", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
