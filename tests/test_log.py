"""No API secret or signature reaches a log line, whatever path it takes."""

import io
import json
import logging

import pytest

from sniper import auth, log

SECRET = "Zx9-very-secret-api-secret-value-123"


@pytest.fixture
def capture():
    stream = io.StringIO()
    log.setup(level="DEBUG", fmt="text", stream=stream)
    yield stream
    log.setup(level="WARNING")


def test_secret_in_message_and_args_is_redacted(capture):
    auth.Credentials("key-1", SECRET)
    logger = logging.getLogger("t")
    logger.info("secret inline %s", SECRET)
    logger.warning("secret as arg %r", {"api_secret": SECRET})
    out = capture.getvalue()
    assert SECRET not in out and out.count(log.REDACTED) >= 2
    assert "secret inline ***" in out


def test_exception_text_with_secret_is_redacted(capture):
    auth.Credentials("key-2", SECRET)
    logger = logging.getLogger("t")
    try:
        raise RuntimeError(f"request failed with secret={SECRET}")
    except RuntimeError:
        logger.exception("boom")
    out = capture.getvalue()
    assert "RuntimeError: request failed with secret=***" in out
    assert SECRET not in out


def test_signatures_are_redacted(capture):
    sig = auth.signature(SECRET, "POST", "/api/v1/order", 1700000000, '{"orderQty":1}')
    headers = auth.headers(auth.Credentials("key-3", SECRET), "GET", "/api/v1/position", "", now=1.0)
    logging.getLogger("t").info("sent %s and %s", sig, headers)
    out = capture.getvalue()
    assert sig not in out and headers["api-signature"] not in out
    assert "key-3" in out  # the key id is not secret and helps operators


def test_json_format_redacts_and_parses():
    stream = io.StringIO()
    log.setup(level="INFO", fmt="json", stream=stream)
    auth.Credentials("key-4", SECRET)
    try:
        raise ValueError(SECRET)
    except ValueError:
        logging.getLogger("j").exception("failed %s", SECRET)
    log.setup(level="WARNING")
    doc = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert doc["level"] == "ERROR" and doc["message"] == "failed ***"
    assert SECRET not in stream.getvalue() and "ValueError: ***" in doc["exc"]


def test_rotating_file_is_redacted(tmp_path):
    path = tmp_path / "logs" / "sniper.log"
    log.setup(level="INFO", file=str(path), stream=io.StringIO())
    auth.Credentials("key-5", SECRET)
    logging.getLogger("f").error("with %s", SECRET)
    log.setup(level="WARNING")
    assert SECRET not in path.read_text() and "with ***" in path.read_text()


def test_credentials_repr_hides_secret():
    creds = auth.Credentials("key-6", SECRET)
    assert SECRET not in repr(creds) and SECRET not in str(creds)


def test_signature_matches_bitmex_documented_example():
    # BitMEX API docs example: secret chNOOS4KvNXR_Xq4k4c9qsfoKWvnDecLATCRlcBwyKDYnWgO,
    # GET /api/v1/instrument, expires 1518064236 -> c7682d435d0cfe87c16098df34ef2eb5a549d4c5a3c2b1f0f77b8af73423bf00
    sig = auth.signature("chNOOS4KvNXR_Xq4k4c9qsfoKWvnDecLATCRlcBwyKDYnWgO", "GET", "/api/v1/instrument", 1518064236)
    assert sig == "c7682d435d0cfe87c16098df34ef2eb5a549d4c5a3c2b1f0f77b8af73423bf00"
