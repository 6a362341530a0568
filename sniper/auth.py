"""BitMEX API-key signing, shared by the REST client, the websocket client and
the simulator (which verifies what the clients sign).

signature = hex(HMAC_SHA256(secret, verb + path_with_query + expires + body))
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field

from sniper import log

DEFAULT_TTL = 5  # seconds an `api-expires` stamp stays valid ahead of now
# BitMEX's answer to a stamp already past: "This request has expired - `expires` is in the past.
# Current time: 1542585602"; the time it names is the exchange's own, in epoch seconds
_EXPIRED = re.compile(r"expired.*current time:\s*(\d+)", re.IGNORECASE | re.DOTALL)


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


def expired_skew(message: str | None, now: float) -> float | None:
    """How many seconds the exchange's clock is ahead of `now` (this host's), read from its
    "request has expired ... Current time: T" refusal; None when `message` is not that refusal."""
    match = _EXPIRED.search(message or "")
    # the exchange states whole seconds, truncated: its clock read T to T + 1 when it answered
    return None if match is None else int(match.group(1)) + 0.5 - now


def skew_message(skew: float, ttl: int = DEFAULT_TTL) -> str:
    """The one line an operator needs when signatures expire on arrival: the measured skew and
    what to fix (every signed request fails alike, so retrying or a new key cannot help)."""
    direction = "ahead of" if skew >= 0 else "behind"
    return (f"clock skew: the exchange's clock is {abs(skew):.0f} s {direction} this host's, beyond the "
            f"{ttl} s api-expires window, so it refuses every signature as expired; fix the host's clock (NTP)")
