"""Logging setup (human text or JSON lines) and secret redaction.

Redaction is a filter on every handler *and* a formatter that scrubs the final
text, so a secret cannot leak through a record's message, its args, or an
exception's traceback. Secrets are registered as they are loaded
(`register_secret`); HMAC signatures (64 hex digits) and `api-signature`
values are scrubbed by pattern, because there is a new one per request.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from pathlib import Path

REDACTED = "***"
_SIG_RE = re.compile(r"\b[0-9a-fA-F]{64}\b")
_HEADER_RE = re.compile(r"(api-signature['\"]?\s*[:=]\s*['\"]?)([^'\",\s}]+)", re.IGNORECASE)
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_MIN_SECRET_LEN = 6  # shorter strings would redact ordinary words


def register_secret(secret: str | None) -> None:
    """Make `secret` unprintable in every log line from now on."""
    if secret and len(secret) >= _MIN_SECRET_LEN:
        with _secrets_lock:
            _secrets.add(secret)


def redact(text: str) -> str:
    """Return `text` with every registered secret and signature replaced."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _HEADER_RE.sub(lambda m: m.group(1) + REDACTED, text)
    return _SIG_RE.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    """Freezes the record's message (args merged, then scrubbed)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad format string must not lose the record
            message = f"{record.msg!r} (unformattable args: {exc})"
        record.msg = redact(message)
        record.args = None
        return True


class _RedactingText(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _RedactingJson(logging.Formatter):
    """One JSON object a line: time, level, logger, thread, message, exc."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(doc, default=str))


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """Log files are created 0600 (and rotated ones too): a log says what the account holds and
    does, which is nobody else's business on a shared machine."""

    def _open(self):
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.chmod(self.baseFilename, 0o600)  # a file that existed with wider bits is narrowed
        return os.fdopen(fd, self.mode.replace("w", "a"), encoding=self.encoding, errors=self.errors)


def setup(level: str = "INFO", fmt: str = "text", file: str | None = None,
          max_bytes: int = 10_000_000, backups: int = 5, stream=None) -> logging.Logger:
    """Configure the root logger once; returns it. Safe to call again."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter: logging.Formatter
    if fmt == "json":
        formatter = _RedactingJson()
    else:
        formatter = _RedactingText("%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s")
    formatter.converter = time.gmtime
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if file:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(_PrivateRotatingFile(file, maxBytes=max_bytes, backupCount=backups))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    root.setLevel(level.upper())
    return root
