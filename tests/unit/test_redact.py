"""One redaction (every DSN form, broker text, registered secrets) and one escape for log lines."""

from __future__ import annotations

import logging
import sys

import pytest

from trading_helper import redact
from trading_helper.redact import MASK, RedactingFilter, escape, redact_dsn, safe


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://user:pw-Secret1@db:5432/trading", "postgresql://user:***@db:5432/trading"),
        ("postgresql://:pw-Secret1@db/trading", "postgresql://:***@db/trading"),
        (
            "postgresql://user:p@ss@w0rd@db/trading?sslmode=require",
            "postgresql://user:***@db/trading?sslmode=require",
        ),
        ("postgresql://user:pa/ss@db/trading", "postgresql://user:***@db/trading"),
        (
            "postgresql://user@db/trading?password=pw-Secret1&sslmode=require",
            "postgresql://user@db/trading?password=***&sslmode=require",
        ),
        (
            "postgresql://user@db/trading?sslpassword=pw-Secret1",
            "postgresql://user@db/trading?sslpassword=***",
        ),
        (
            "host=db port=5432 user=me password=pw-Secret1 dbname=trading",
            "host=db port=5432 user=me password=*** dbname=trading",
        ),
        ("host=db password='pw Secret1' dbname=trading", "host=db password=*** dbname=trading"),
        ("redis://:pw-Secret1@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://default:pw-Secret1@cache:6380", "rediss://default:***@cache:6380"),
        ("postgresql://user@db/trading", "postgresql://user@db/trading"),
        ("postgresql://db:5432/trading", "postgresql://db:5432/trading"),
    ],
)
def test_every_dsn_form_loses_its_password(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown
    assert redact_dsn(f"cannot connect to {dsn}: refused") == f"cannot connect to {shown}: refused"


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("Kite history: HTTP 500 Authorization: token kitekey:AcCeSsToKeN9", "AcCeSsToKeN9"),
        ('upstream echoed {"authorization": "token kitekey:AcCeSsToKeN9"}', "AcCeSsToKeN9"),
        ("sent token kitekey:AcCeSsToKeN9 upstream", "AcCeSsToKeN9"),
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi"),
        ("Fyers rejected Authorization=appid-100:eyJ0eXAi (code -16)", "eyJ0eXAi"),
        ('{"access_token": "AcCeSsToKeN9", "status": "error"}', "AcCeSsToKeN9"),
        ("GET /callback?auth_code=AuThCoDe77&state=x", "AuThCoDe77"),
        ("POST /session/token api_key=kitekey&request_token=ReQuEsT55&checksum=ChEcK99", "ReQuEsT55"),
        ("/api/ws/ticks?token=ApItOkEn33", "ApItOkEn33"),
        ("api_secret=ApISeCrEt", "ApISeCrEt"),
    ],
)
def test_broker_text_loses_its_secrets(text: str, hidden: str) -> None:
    assert hidden not in redact.redact(text) and MASK in redact.redact(text)


def test_instrument_tokens_are_not_secrets() -> None:
    assert (
        redact.redact("no tick for instrument_token=738561 exchange_token=2885")
        == "no tick for instrument_token=738561 exchange_token=2885"
    )


def test_registered_values_are_hidden_anywhere() -> None:
    redact.register("RegisteredValue-4815", "short", None, "")
    assert redact.redact("the broker said: RegisteredValue-4815!") == f"the broker said: {MASK}!"
    assert "short" not in redact.registered()  # too short to look for: it would hide ordinary words


def test_escape_makes_one_printable_line() -> None:
    assert escape("ok text: NIFTY 50 ₹") == "ok text: NIFTY 50 ₹"
    assert (
        escape("a\nINFO forged line\r\x1b[31m\u202eevil\u200b\t")
        == "a\\nINFO forged line\\r\\x1b[31m\\u202eevil\\u200b\\t"
    )
    assert safe("x\ny password=hunter22") == "x\\ny password=***"


def test_the_log_filter_redacts_messages_arguments_and_tracebacks() -> None:
    try:
        raise ValueError("connect postgresql://u:TraceSecret1@h/db failed")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "broker said %s", ("bad\nAuthorization: token k:v9",), exc_info
    )
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "broker said bad\\nAuthorization: ***"
    assert (
        record.exc_text is not None
        and "TraceSecret1" not in record.exc_text
        and "Traceback" in record.exc_text
    )
    line = logging.Formatter("%(message)s").format(record)
    assert "TraceSecret1" not in line and "k:v9" not in line
    broken = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items", ("not a number",), None)
    assert RedactingFilter().filter(broken) and "not a number" in broken.getMessage()


def test_uvicorn_access_records_keep_their_arguments() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/api/ws/ticks?token=AcCeSs99\n", "1.1", 101),
        None,
    )
    assert RedactingFilter().filter(record)
    assert isinstance(record.args, tuple) and record.args[4] == 101
    assert record.getMessage() == '127.0.0.1:5 - "GET /api/ws/ticks?token=***\\n HTTP/1.1" 101'
