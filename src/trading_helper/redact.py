"""One redaction for everything that may carry a secret, and one escape for text from outside.

``redact_dsn`` knows every DSN form libpq and redis-py accept: URLs (``postgresql://u:pw@h/db``,
``postgresql://:pw@h``, a password containing ``@``, ``?password=`` in the query) and keyword/value
strings (``host=h password=pw``). ``redact`` does that and also hides the values of registered
secrets (settings, loaded broker tokens, the API token), ``Authorization`` values, Kite's
``token key:secret`` form and query or JSON fields named like secrets: anything that came from a
broker (an error message, a proxy that echoes headers) goes through it. ``escape`` makes text
from outside one printable line (control characters, newlines, bidi marks as ``\\uXXXX``).

Why a module of our own: logging libraries redact by field name, not inside free text, and none
knows libpq's DSN forms. The registry is process-wide on purpose: a log record may come from any
task, and a secret seen once (a token read from its file) must stay hidden everywhere after.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

MASK = "***"
#: secret values shorter than this are not searched for (they would mask ordinary words)
MIN_SECRET_LENGTH = 6

#: names of secret fields; ``instrument_token`` and ``exchange_token`` are instrument numbers, not secrets
_SECRET_NAME = (
    r"(?!instrument_token\b|exchange_token\b)[\w.-]*(?:password|passwd|pwd|secret|token|api_?key|"
    r"signature|checksum|auth_code|apphash|appidhash)"
)
#: ``name=value`` in a query string, a form or a keyword/value DSN (value quoted, or up to a
#: separator; a colon ends it only before a space, as in ``...password=x: connection refused``)
_PAIR = re.compile(
    rf"(?i)\b({_SECRET_NAME})(\s*=\s*)('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|"
    r"(?:[^\s&;,'\":]|:(?!\s|$))+)"
)
#: ``"name": "value"`` in JSON
_JSON_FIELD = re.compile(rf"(?i)(\"{_SECRET_NAME}\"\s*:\s*)\"(?:[^\"\\]|\\.)*\"")
#: an Authorization header or field, whatever its scheme (``Bearer x``, ``token key:secret``)
_AUTHORIZATION = re.compile(r"(?i)(\bauthorization\b[\"']?\s*[:=]\s*[\"']?)([^\"'\r\n,}]+)")
#: Kite's ``token api_key:access_token`` wherever it appears without its header name
_KITE_TOKEN = re.compile(r"(?i)\b(token\s+)[\w-]+:[\w-]+")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[\w.~+/=-]+")
_URL_START = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://")

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()


def register(*values: str | None) -> None:
    """Hide these values in everything ``redact`` sees from now on (tokens, keys, passwords)."""
    global _secrets
    fresh = {v.strip() for v in values if v and len(v.strip()) >= MIN_SECRET_LENGTH}
    if fresh - _secrets:
        with _lock:
            _secrets = _secrets | fresh


def registered() -> frozenset[str]:
    return _secrets


def _redact_url_userinfo(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:***@host``; the password may hold ``@``
    or ``/`` (the userinfo ends at the last ``@`` before the query)."""
    out: list[str] = []
    pos = 0
    for match in _URL_START.finditer(text):
        if match.start() < pos:
            continue
        start = match.end()
        end = len(text)
        for stop in (text.find(c, start) for c in " \t\r\n\"'<>?#"):
            if stop != -1:
                end = min(end, stop)
        at = text.rfind("@", start, end)
        if at == -1:
            continue
        colon = text.find(":", start, at)
        if colon == -1:
            continue  # a user name only
        out.append(text[pos : colon + 1] + MASK)
        pos = at
    out.append(text[pos:])
    return "".join(out)


def redact_dsn(dsn: str) -> str:
    """A DSN (URL or keyword/value) without its password, for messages and logs."""
    return redact(dsn)


def redact(text: str) -> str:
    """``text`` without registered secrets, DSN passwords, Authorization values and fields named
    like secrets."""
    if not text:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    text = _redact_url_userinfo(text)
    text = _AUTHORIZATION.sub(lambda m: m.group(1) + MASK, text)
    text = _KITE_TOKEN.sub(lambda m: m.group(1) + MASK, text)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    text = _JSON_FIELD.sub(lambda m: m.group(1) + f'"{MASK}"', text)
    return _PAIR.sub(lambda m: m.group(1) + m.group(2) + MASK, text)


def escape(text: str) -> str:
    """One printable line: newlines, control characters and invisible format characters (bidi
    overrides such as U+202E, zero-width marks) written as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def safe(text: object) -> str:
    """Redacted and escaped: for text from outside on its way into a log line."""
    return escape(redact(str(text)))


class RedactingFilter(logging.Filter):
    """On a handler: every record it emits is redacted, its message escaped to one line (the
    traceback, formatted here, is redacted but keeps its lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            # its formatter unpacks the arguments (client, method, path, version, status)
            record.args = tuple(a if isinstance(a, int | float) else safe(a) for a in record.args)
        else:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):  # a record whose arguments do not fit its format
                message = f"{record.msg!r} {record.args!r}"
            record.msg, record.args = safe(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


def install(loggers: Iterable[str] = _LOGGERS) -> None:
    """Put a :class:`RedactingFilter` on every handler of ``loggers`` (the root and uvicorn's,
    which do not propagate); call after logging is configured. Idempotent."""
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
