"""Candles without holes: trading calendars, gap detection, broker backfill and the merged read path."""
