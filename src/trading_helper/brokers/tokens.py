"""Where broker access tokens live between ``trading-helper login`` and the service.

The file is re-read before every (re)connect, so a morning login reaches a running service
without a restart. Files are written with mode 0600; a token is never logged in full.
"""

from __future__ import annotations

import os
from pathlib import Path

from trading_helper import redact as redaction
from trading_helper.config import Settings


def token_path(settings: Settings, broker: str) -> Path:
    return settings.TOKEN_DIR / f"{broker}.token"


def save_token(settings: Settings, broker: str, token: str) -> Path:
    path = token_path(settings, broker)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token.strip() + "\n")
    os.chmod(path, 0o600)
    return path


def load_token(settings: Settings, broker: str) -> str:
    """The newest token: the login file when present, else the environment's ``<BROKER>_ACCESS_TOKEN``."""
    path = token_path(settings, broker)
    try:
        value = path.read_text().strip()
    except OSError:
        value = ""
    if not value:
        env = {"kite": settings.KITE_ACCESS_TOKEN, "fyers": settings.FYERS_ACCESS_TOKEN}.get(broker)
        value = env.get_secret_value() if env is not None else ""
    redaction.register(value)  # hidden from every log line and error body from now on
    return value


def redact(token: str) -> str:
    """What a login may print to say which token it stored: the last 4 characters at most (the
    whole value is hidden everywhere by ``trading_helper.redact``)."""
    return f"…{token[-4:]}" if len(token) > 8 else "…"
