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
