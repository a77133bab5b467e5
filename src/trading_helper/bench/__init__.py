"""Benchmarks printing one JSON object each (``trading-helper bench ...``)."""
