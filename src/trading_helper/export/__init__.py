"""Data out and back: export of candles and ticks to CSV or Parquet (``trading-helper export``,
``GET /api/export/...``) and import of candles into broker history (``trading-helper import``).

The column sets are in :mod:`.columns`, the streaming read from the database in :mod:`.source`,
the file formats in :mod:`.encode`, the import in :mod:`.importer`.
"""
