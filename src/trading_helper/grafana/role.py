"""The Grafana read-only role's password, set from the environment after each migration.

The migration creates ``grafana_reader`` without a password (NOLOGIN). Here it gets one: the
password is turned into a SCRAM-SHA-256 verifier on our side (RFC 5802/7677, the format
PostgreSQL stores in ``pg_authid``), so the plain password never reaches the server, its logs or
``pg_stat_statements``. ``ALTER ROLE`` takes no bind parameters; the verifier is made of base64
characters, ``$`` and ``:`` only, so quoting it as a literal is safe.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from trading_helper.errors import ConfigError
from trading_helper.storage import sql_server
from trading_helper.storage.db import Connection

READER_ROLE = "grafana_reader"
SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)


def scram_sha256_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` for ``password``.

    Printable ASCII only: PostgreSQL runs other passwords through SASLprep before hashing, and a
    verifier that silently differs from the server's would make every login fail.
    """
    if not password or not all(" " <= ch <= "~" for ch in password):
        raise ConfigError("GRAFANA_DB_PASSWORD must be non-empty printable ASCII")
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


async def set_reader_password(conn: Connection, password: str) -> bool:
    """Let ``grafana_reader`` log in with ``password``; False when the role does not exist."""
    if not await conn.fetchval(sql_server.ROLE_EXISTS, READER_ROLE):
        return False
    verifier = scram_sha256_verifier(password)
    await conn.execute(sql_server.set_login_password(READER_ROLE, verifier))
    return True
