"""Beyond one process: shards of the subscriptions over broker accounts and connections
(:mod:`.plan`), leases that let exactly one collector or writer own a shard or stream
(:mod:`.lease`), the coordinator that publishes the plan (:mod:`.coordinator`), and the
``collect`` and ``write`` processes (:mod:`.collector`, :mod:`.writers`)."""
