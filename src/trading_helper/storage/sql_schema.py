"""Named SQL of the schema's own bookkeeping (``storage/migrate.py``): which versions are applied,
the migrator's lock, and the TimescaleDB probe. The schema itself is in ``sql/<flavour>/*.sql``."""

from __future__ import annotations

#: pg_advisory_lock($1): one migrator at a time
LOCK_MIGRATIONS = "SELECT pg_advisory_lock($1)"

CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    flavour    text NOT NULL,
    files      text[] NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())
"""

CURRENT_VERSION = "SELECT coalesce(max(version), 0) FROM schema_migrations"

RECORDED_FLAVOUR = "SELECT flavour FROM schema_migrations ORDER BY version DESC LIMIT 1"

RECORD_MIGRATION = "INSERT INTO schema_migrations (version, flavour, files) VALUES ($1, $2, $3)"

TIMESCALE_INSTALLED = "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"

TIMESCALE_AVAILABLE = "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"

#: tried in a transaction that is rolled back (the probe), then for real
CREATE_TIMESCALE = "CREATE EXTENSION timescaledb"

ENSURE_TIMESCALE = "CREATE EXTENSION IF NOT EXISTS timescaledb"
