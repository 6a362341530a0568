"""Request authentication as BitMEX does it, shared by the REST and websocket sides:
the same checks in the same order, answered with BitMEX's texts.

The three values come from headers, a query string or a websocket frame's JSON, so they may
be of any type; whatever is not what a client signs (text key, whole-number expiry, hex
signature) is refused with the text BitMEX sends for that step, never raised as an error."""

from __future__ import annotations

from sniper import auth


class AuthError(Exception):
    """An authentication failure, with the text BitMEX sends for it."""

    status = 401


MSG_MISSING_KEY = "Missing API key."
MSG_INVALID_KEY = "Invalid API Key."
MSG_BAD_SIGNATURE = "Signature not valid."
MSG_EXPIRED = "This request has expired - `expires` is in the past. Current time: {now}"


def check_signature(exchange, real_now: float, key, expires, signature, verb: str, path: str,
                    body: str = "") -> str:
    """Verify one signed request as BitMEX does; returns the api key or raises AuthError.
    `real_now` is wall-clock time: clients sign with real time whatever the replay speed.
    `path` (with its query) and `body` are the text the client signed."""
    if not key:
        raise AuthError(MSG_MISSING_KEY)
    secret = exchange.secret_for(key) if isinstance(key, str) else None
    if secret is None:
        raise AuthError(MSG_INVALID_KEY)
    try:
        expires = int(expires)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite float
        raise AuthError(MSG_BAD_SIGNATURE) from None
    if expires < real_now:
        raise AuthError(MSG_EXPIRED.format(now=int(real_now)))
    if not (isinstance(signature, str) and signature.isascii() and _is_text(path)
            and auth.verify(secret, verb, path, expires, body, signature)):
        raise AuthError(MSG_BAD_SIGNATURE)
    return key


def _is_text(path: str) -> bool:
    """Could a client have signed `path`? Not when it holds bytes that were not UTF-8: aiohttp's
    pure-Python parser (AIOHTTP_NO_EXTENSIONS, or no C extension) hands those on as lone
    surrogates, which no signature covers and which cannot even be encoded to check one."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
