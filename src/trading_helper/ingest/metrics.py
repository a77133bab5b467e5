"""Prometheus metrics of the tick pipeline (default registry, served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TICKS_RECEIVED = Counter("th_ticks_received_total", "Ticks received from the broker feed")
TICKS_WRITTEN = Counter("th_ticks_written_total", "Ticks committed to tick_data")
TICKS_REJECTED = Counter("th_ticks_rejected_total", "Ticks or frames rejected, by reason", ["reason"])
FRAMES_BUFFERED_LOCALLY = Gauge("th_local_queue_frames", "Frames held in memory while Redis is unreachable")
STREAM_LENGTH = Gauge("th_stream_length", "Entries in the Redis tick stream not yet trimmed")
STREAM_FILL_RATIO = Gauge("th_stream_fill_ratio", "Stream length as a fraction of its cap (alarm above 0.8)")
BATCH_TICKS = Histogram(
    "th_write_batch_ticks",
    "Ticks per committed batch",
    buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000),
)
COMMIT_LAG = Histogram(
    "th_receive_to_commit_seconds",
    "Receive time to commit, per tick (sampled per batch)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
EXCHANGE_LAG = Histogram(
    "th_exchange_to_commit_seconds",
    "Exchange time to commit (sampled per batch)",
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300),
)
WRITE_FAILURES = Counter("th_write_failures_total", "Failed batch writes (retried), by error", ["error"])
FEED_STATE = Gauge("th_feed_connected", "1 while the broker feed is connected")
TICKS_DEAD_LETTERED = Counter(
    "th_ticks_dead_lettered_total",
    "Tick rows the database refused (SQLSTATE class 22/23), stored in tick_rejects",
)
TICKS_LOST = Counter(
    "th_ticks_lost_total",
    "Ticks in stream entries lost before they were written (gaps in the receiver's sequence)",
)
DB_RESOURCE_ERRORS = Counter(
    "th_write_resource_errors_total",
    "Writer database calls refused for resources, a cancel or a lock (retried), by SQLSTATE",
    ["sqlstate"],
)
WRITER_DB_BUSY = Gauge(
    "th_writer_db_busy", "1 while the database refuses the writer's writes for resources (alarm)"
)
