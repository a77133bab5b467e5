"""Named SQL about the server rather than the schema: is it answering, does a role or a database
exist, and the two statements that take no bound parameter (``ALTER ROLE ... PASSWORD``, ``CREATE
DATABASE``), built here with the name quoted as an identifier and the value as a literal."""

from __future__ import annotations

PING = "SELECT 1"

ROLE_EXISTS = "SELECT 1 FROM pg_roles WHERE rolname = $1"

DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = $1"


def quote_ident(name: str) -> str:
    """``name`` as a PostgreSQL quoted identifier (PostgreSQL's own ``quote_ident`` rule: double
    quotes around, inner ones doubled)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """``text`` as a standard string literal (inner quotes doubled; ``standard_conforming_strings``
    is on by default since PostgreSQL 9.1, so backslashes are plain characters)."""
    if "\0" in text:
        raise ValueError("a PostgreSQL string cannot contain NUL")
    return "'" + text.replace("'", "''") + "'"


def set_login_password(role: str, verifier: str) -> str:
    """Let ``role`` log in with the password whose SCRAM verifier is ``verifier`` (the server
    stores the verifier as given: the password itself never reaches it)."""
    return f"ALTER ROLE {quote_ident(role)} WITH LOGIN PASSWORD {quote_literal(verifier)}"


def create_database(name: str) -> str:
    return f"CREATE DATABASE {quote_ident(name)}"


def drop_database(name: str) -> str:
    """Dropped even with sessions still connected (PostgreSQL 13+)."""
    return f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)"
