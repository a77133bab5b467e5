"""Redis key names shared by the ingest service and the API (one place, no string copies)."""

from __future__ import annotations

#: stream of received frames (one entry per frame; its fields are described in ``ingest/stream.py``)
TICK_STREAM_DEFAULT = "th:ticks"
#: consumer group of the database writer on the tick stream
WRITER_GROUP = "th-writer"
#: hash: instrument id (decimal string) -> encoded latest quote (codec.encode_quote)
QUOTES = "th:quotes"
#: pub/sub channel: each message is the encoded ticks of one received frame (codec.encode_ticks)
LIVE_CHANNEL = "th:live"
#: hash: ingest status fields (broker state, subscriptions, rates) written by the service
STATUS = "th:status"
#: the status hash lives this long after its last refresh (the service refreshes it every second)
STATUS_TTL_S = 15

# -- the cluster (collect and write processes, trading_helper/cluster/) -----------------------
#: the coordinator's shard plan (cluster/plan.py Plan.to_json)
PLAN = "th:cluster:plan"
#: a digest of the plan's text, set with it (readers look at it and read the plan only when it changed)
PLAN_VERSION = "th:cluster:plan:version"
#: hash: shard key -> JSON status of the collector holding it (refreshed every second)
SHARD_STATUS = "th:cluster:shards"
#: hash: writer process id -> JSON status (its streams, counts, receive-to-commit histogram)
WRITER_STATUS = "th:cluster:writers"


def shard_stream(base: str, shard_key: str) -> str:
    """The Redis stream of one shard: ``th:ticks:kite:a:0`` for base ``th:ticks``."""
    return f"{base}:{shard_key}"
