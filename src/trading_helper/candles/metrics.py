"""Prometheus metrics of the candle service (the default registry; created once per process)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

BACKFILL_CALLS = Counter("th_backfill_broker_calls_total", "Historical fetches sent to the broker")
BACKFILL_CANDLES = Counter("th_backfill_candles_total", "Candles stored from broker history")
BACKFILL_ERRORS = Counter("th_backfill_errors_total", "Backfills stopped by a broker error", ["code"])
READ_SECONDS = Histogram(
    "th_candle_read_seconds",
    "Merged candle reads (database time)",
    ["timeframe"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
