"""Tick ingestion: broker frames -> Redis stream -> COPY into tick_data, exactly once."""
