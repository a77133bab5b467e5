"""Trading Helper: tick capture, candles and charts for Indian markets (Kite, Fyers)."""

from __future__ import annotations

__version__ = "0.1.0"
