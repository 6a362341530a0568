"""Request authentication as BitMEX does it, shared by the REST and websocket sides:
the same checks in the same order, answered with BitMEX's texts."""

from __future__ import annotations

from sniper import auth


class AuthError(Exception):
    """An authentication failure, with the text BitMEX sends for it."""

    status = 401


MSG_MISSING_KEY = "Missing API key."
MSG_INVALID_KEY = "Invalid API Key."
MSG_BAD_SIGNATURE = "Signature not valid."
MSG_EXPIRED = "This request has expired - `expires` is in the past. Current time: {now}"


def check_signature(exchange, real_now: float, key: str | None, expires, signature: str | None,
                    verb: str, path: str, body: bytes | str = b"") -> str:
    """Verify one signed request as BitMEX does; returns the api key or raises AuthError.
    `real_now` is wall-clock time: clients sign with real time whatever the replay speed."""
    if not key:
        raise AuthError(MSG_MISSING_KEY)
    secret = exchange.secret_for(key)
    if secret is None:
        raise AuthError(MSG_INVALID_KEY)
    try:
        expires = int(expires)
    except (TypeError, ValueError):
        raise AuthError(MSG_BAD_SIGNATURE) from None
    if expires < real_now:
        raise AuthError(MSG_EXPIRED.format(now=int(real_now)))
    if not auth.verify(secret, verb, path, expires, body, signature or ""):
        raise AuthError(MSG_BAD_SIGNATURE)
    return key
