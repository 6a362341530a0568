"""BitMEX API-key signing, shared by the REST client, the websocket client and
the simulator (which verifies what the clients sign).

signature = hex(HMAC_SHA256(secret, verb + path_with_query + expires + body))
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from sniper import log

DEFAULT_TTL = 5  # seconds an `api-expires` stamp stays valid ahead of now


@dataclass(frozen=True)
class Credentials:
    """An API key pair. The secret never shows in repr/str and is registered
    with the log redaction filter the moment the object exists."""

    key: str
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        log.register_secret(self.secret)

    def __str__(self) -> str:
        return f"Credentials(key={self.key!r})"


def signature(secret: str, verb: str, path: str, expires: int, body: str | bytes = "") -> str:
    """Hex HMAC-SHA256 of verb + path (with query) + expires + body."""
    if isinstance(body, bytes):
        body = body.decode()
    message = f"{verb.upper()}{path}{int(expires)}{body}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def headers(creds: Credentials, verb: str, path: str, body: str | bytes, now: float, ttl: int = DEFAULT_TTL) -> dict:
    """The three BitMEX auth headers for one request signed at `now`."""
    expires = int(now) + ttl
    return {
        "api-key": creds.key,
        "api-expires": str(expires),
        "api-signature": signature(creds.secret, verb, path, expires, body),
    }


def ws_auth_message(creds: Credentials, now: float, ttl: int = DEFAULT_TTL) -> dict:
    """The websocket `authKeyExpires` op (signature over GET/realtime + expires)."""
    expires = int(now) + ttl
    return {"op": "authKeyExpires", "args": [creds.key, expires, signature(creds.secret, "GET", "/realtime", expires)]}


def verify(secret: str, verb: str, path: str, expires: int, body: str | bytes, sig: str) -> bool:
    """Constant-time check of a signature, as the exchange does it."""
    return hmac.compare_digest(signature(secret, verb, path, expires, body), sig or "")
