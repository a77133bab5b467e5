"""Kite Connect protocol constants, as read from the official clients (pykiteconnect 5.x,
gokiteconnect v4) and https://kite.trade/docs/connect/v3/.

The endpoints themselves are configuration (``Settings.KITE_API_URL``, ``KITE_WS_URL``,
``KITE_LOGIN_URL``) so tests and the demo can point them at a local fake; only paths live here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Final
from urllib.parse import urlencode

from trading_helper.config import Settings
from trading_helper.timeframes import Timeframe

BROKER_NAME: Final = "kite"

# --- REST -------------------------------------------------------------------------------------
KITE_VERSION: Final = "3"  # sent as the X-Kite-Version header and the login URL's ``v``
PATH_SESSION_TOKEN: Final = "/session/token"
PATH_INSTRUMENTS: Final = "/instruments"
PATH_HISTORICAL: Final = "/instruments/historical/{instrument_token}/{interval}"
#: Kite's error_type for an expired/invalid session (sent with HTTP 403)
ERROR_TOKEN_EXCEPTION: Final = "TokenException"

#: Kite counts historical calls per API key: more than this per second answers 429, and
#: repeated violations can get an app blocked (kite forum 11404).
HISTORICAL_REQUESTS_PER_SECOND: Final = 3

#: The longest range one historical request may cover, per interval (Kite answers 400 beyond).
INTERVAL_MAX_SPAN: Final[Mapping[str, timedelta]] = MappingProxyType(
    {
        "minute": timedelta(days=60),
        "5minute": timedelta(days=100),
        "15minute": timedelta(days=200),
        "60minute": timedelta(days=400),
        "day": timedelta(days=2000),
    }
)

#: our timeframe -> Kite's ``interval`` (the one table is ``trading_helper.timeframes.FACTS``)
TIMEFRAME_TO_INTERVAL: Final[Mapping[Timeframe, str]] = MappingProxyType(
    {tf: tf.facts.kite_interval for tf in Timeframe}
)

#: Columns of the instruments master CSV (``GET /instruments``), in Kite's order.
INSTRUMENT_COLUMNS: Final = (
    "instrument_token",
    "exchange_token",
    "tradingsymbol",
    "name",
    "last_price",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "instrument_type",
    "segment",
    "exchange",
)

# --- Ticker (WebSocket) -----------------------------------------------------------------------
MODE_LTP: Final = "ltp"
MODE_QUOTE: Final = "quote"
MODE_FULL: Final = "full"
MODES: Final = frozenset({MODE_LTP, MODE_QUOTE, MODE_FULL})

#: Packet lengths in bytes. Index packets (segment 9) have their own, shorter layouts.
PACKET_LTP: Final = 8
PACKET_INDEX_QUOTE: Final = 28
PACKET_INDEX_FULL: Final = 32
PACKET_QUOTE: Final = 44
PACKET_FULL: Final = 184
PACKET_LENGTHS: Final = frozenset(
    {PACKET_LTP, PACKET_INDEX_QUOTE, PACKET_INDEX_FULL, PACKET_QUOTE, PACKET_FULL}
)

#: A full packet ends with 5 bid then 5 offer levels of 12 bytes each, starting at byte 64:
#: quantity int32, price int32, orders int16, then 2 bytes of padding.
DEPTH_LEVELS: Final = 5
DEPTH_ENTRY_SIZE: Final = 12
DEPTH_OFFSET: Final = 64

#: Segment numbers, carried in the low byte of every instrument token (``token & 0xff``).
SEGMENT_NSE: Final = 1
SEGMENT_NFO: Final = 2
SEGMENT_CDS: Final = 3
SEGMENT_BSE: Final = 4
SEGMENT_BFO: Final = 5
SEGMENT_BCD: Final = 6
SEGMENT_MCX: Final = 7
SEGMENT_MCXSX: Final = 8
SEGMENT_INDICES: Final = 9
SEGMENT_NCO: Final = 12  # NSE commodity derivatives

#: Prices arrive as integers: paise (divide by 100) except NSE currency derivatives (1e7), BSE
#: currency derivatives (1e4) and NSE commodity derivatives (1e4), as the official pykiteconnect
#: 5.2.2 ``_parse_binary`` divides them (checked by ``tests/brokers/kite/test_official_parser.py``).
DEFAULT_PRICE_DIVISOR: Final = 100.0
SEGMENT_PRICE_DIVISORS: Final[Mapping[int, float]] = MappingProxyType(
    {
        SEGMENT_CDS: 10_000_000.0,
        SEGMENT_BCD: 10_000.0,
        SEGMENT_NCO: 10_000.0,
    }
)

#: Kite's documented limits: 3000 instruments per connection, 3 connections per API key.
MAX_TOKENS_PER_CONNECTION: Final = 3000
MAX_CONNECTIONS: Final = 3

#: Reject labels the parser and the feed count (besides ``trading_helper.models.REJECT_REASONS``).
REJECT_MALFORMED_FRAME: Final = "malformed_frame"
REJECT_TRUNCATED_PACKET: Final = "truncated_packet"
REJECT_UNKNOWN_PACKET_LENGTH: Final = "unknown_packet_length"
REJECT_UNKNOWN_INSTRUMENT: Final = "unknown_instrument"


def price_divisor(instrument_token: int) -> float:
    return SEGMENT_PRICE_DIVISORS.get(instrument_token & 0xFF, DEFAULT_PRICE_DIVISOR)


def login_url(settings: Settings) -> str:
    """Where the user logs in; Kite then redirects to the app's redirect URL with a request_token."""
    return f"{settings.KITE_LOGIN_URL}?{urlencode({'api_key': settings.KITE_API_KEY, 'v': KITE_VERSION})}"
