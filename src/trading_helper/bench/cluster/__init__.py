"""``trading-helper bench cluster``: accounts, sharded collectors, writers and API replicas as
real processes on this machine, with kills on a schedule (:mod:`.run`)."""
