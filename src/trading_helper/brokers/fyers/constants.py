"""Fyers API v3 protocol constants, as read from the official client fyers-apiv3 3.x
(``fyers_apiv3/fyersModel.py``, ``FyersWebsocket/data_ws.py``, ``FyersWebsocket/map.json``,
``FyersWebsocket/defines.py``) and https://myapi.fyers.in/docsv3.

Base URLs are configuration (``Settings.FYERS_API_URL``, ``FYERS_WS_URL``,
``FYERS_SYMBOL_MASTER_URL``) so tests and the demo can point them at a local fake; only paths,
codes and layouts live here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Final

from trading_helper.timeframes import Timeframe

BROKER_NAME: Final = "fyers"

# --- REST (fyersModel.Config: API = .../api/v3, DATA_API = .../data) --------------------------
PATH_GENERATE_AUTHCODE: Final = "/api/v3/generate-authcode"
PATH_VALIDATE_AUTHCODE: Final = "/api/v3/validate-authcode"
PATH_HISTORY: Final = "/data/history"
#: symbol -> fytoken lookup the official data socket uses before subscribing (data_ws.SymbolConversion)
PATH_SYMBOL_TOKEN: Final = "/data/symbol-token"
#: data_ws.SymbolConversion sends at most this many symbols per lookup
SYMBOL_TOKEN_BATCH: Final = 500

#: Symbol master CSVs under ``FYERS_SYMBOL_MASTER_URL`` (no header row), and the exchange
#: code we store each under (Kite's names, so one instrument reads the same for both brokers).
SYMBOL_MASTER_FILES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "NSE_CM": "NSE",
        "NSE_FO": "NFO",
        "BSE_CM": "BSE",
        "BSE_FO": "BFO",
        "MCX_COM": "MCX",
    }
)

#: Fyers' own answer codes meaning "this token is not (or no longer) valid": a new login is
#: needed, retrying cannot help. -8 token expired, -15 invalid token, -16 could not
#: authenticate, -17 token invalid or expired (Fyers API v3 error table).
AUTH_ERROR_CODES: Final = frozenset({-8, -15, -16, -17})

#: Fyers API v3 limits per app: 10 requests a second and 200 a minute (docs: "Rate limits").
REQUESTS_PER_SECOND: Final = 10
REQUESTS_PER_MINUTE: Final = 200

#: our timeframe -> Fyers' ``resolution`` (the one table is ``trading_helper.timeframes.FACTS``)
TIMEFRAME_TO_RESOLUTION: Final[Mapping[Timeframe, str]] = MappingProxyType(
    {tf: tf.facts.fyers_resolution for tf in Timeframe}
)

#: The longest range one history request may cover: 100 days for minute resolutions,
#: 366 for daily candles (Fyers history docs).
RESOLUTION_MAX_SPAN: Final[Mapping[str, timedelta]] = MappingProxyType(
    {
        "1": timedelta(days=100),
        "5": timedelta(days=100),
        "15": timedelta(days=100),
        "60": timedelta(days=100),
        "D": timedelta(days=366),
    }
)

# --- Data socket (HSM binary protocol, data_ws.py) -------------------------------------------
#: Request/response types: the byte after the u16 length prefix.
REQ_AUTH: Final = 1
REQ_ACK: Final = 3
REQ_SUBSCRIBE: Final = 4
REQ_UNSUBSCRIBE: Final = 5
RESP_DATAFEED: Final = 6
REQ_PAUSE: Final = 7
REQ_RESUME: Final = 8
REQ_MODE: Final = 12
#: data_ws.__ping sends this 3-byte frame (length 1, type 11) every 10 s; nothing answers it.
PING_FRAME: Final = bytes([0, 1, 11])
APP_PING_INTERVAL_S: Final = 10.0

#: Per-topic record kinds inside a datafeed frame: ord('S'), ord('U'), ord('L').
KIND_SNAPSHOT: Final = 83
KIND_UPDATE: Final = 85
KIND_LITE: Final = 76
#: A field whose value is this int32 carries nothing (absent, or unchanged in an update).
NO_VALUE: Final = -2147483648

#: Mode message field 2: 70 (ord 'F') full, 76 (ord 'L') lite. We always ask for full.
MODE_FULL: Final = 70
MODE_LITE: Final = 76
#: The official client's only channel; the mode message sets bit 11 of a u64 channel mask.
CHANNEL: Final = 11
AUTH_MODE: Final = "P"
#: The auth message's "source" field; the server does not validate it (the SDK sends
#: "PythonSDK-3.0.9"), so we name ourselves.
SOURCE: Final = "trading-helper"
#: data_ws.subscribe: at most 5,000 symbols on the socket, sent 1,500 per subscribe message.
SYMBOL_LIMIT: Final = 5000
SUBSCRIBE_BATCH: Final = 1500

#: Topic prefixes: "sf" symbol feed (scrips), "if" index feed, "dp" 5-level depth.
TOPIC_SCRIP: Final = "sf"
TOPIC_INDEX: Final = "if"
TOPIC_DEPTH: Final = "dp"

#: map.json "data_val": field order of "sf" records (the trailing "type"/"symbol" are not on
#: the wire). vol_traded_today is cumulative for the day; OI is on the wire although 3.2.0's
#: data_ws.__response_output pops it before calling back.
SCRIP_FIELDS: Final = (
    "ltp",
    "vol_traded_today",
    "last_traded_time",
    "exch_feed_time",
    "bid_size",
    "ask_size",
    "bid_price",
    "ask_price",
    "last_traded_qty",
    "tot_buy_qty",
    "tot_sell_qty",
    "avg_trade_price",
    "OI",
    "low_price",
    "high_price",
    "Yhigh",
    "Ylow",
    "lower_ckt",
    "upper_ckt",
    "open_price",
    "prev_close_price",
)
#: The scrip fields data_ws divides by 10**precision * multiplier (its precision_calcu_value).
SCRIP_PRICE_FIELDS: Final = frozenset(
    {
        "ltp",
        "bid_price",
        "ask_price",
        "avg_trade_price",
        "low_price",
        "high_price",
        "open_price",
        "prev_close_price",
    }
)
#: map.json "index_val"; positions 0, 1, 3, 4, 5 are prices.
INDEX_FIELDS: Final = (
    "ltp",
    "prev_close_price",
    "exch_feed_time",
    "high_price",
    "low_price",
    "open_price",
)
INDEX_PRICE_FIELDS: Final = frozenset({"ltp", "prev_close_price", "high_price", "low_price", "open_price"})
#: map.json "depthvalue"; the first ten are prices.
DEPTH_FIELDS: Final = (
    *(f"bid_price{i}" for i in range(1, 6)),
    *(f"ask_price{i}" for i in range(1, 6)),
    *(f"bid_size{i}" for i in range(1, 6)),
    *(f"ask_size{i}" for i in range(1, 6)),
    *(f"bid_order{i}" for i in range(1, 6)),
    *(f"ask_order{i}" for i in range(1, 6)),
)
DEPTH_PRICE_FIELDS: Final = frozenset(DEPTH_FIELDS[:10])

FIELDS_BY_TOPIC: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        TOPIC_SCRIP: SCRIP_FIELDS,
        TOPIC_INDEX: INDEX_FIELDS,
        TOPIC_DEPTH: DEPTH_FIELDS,
    }
)
PRICE_FIELDS_BY_TOPIC: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        TOPIC_SCRIP: SCRIP_PRICE_FIELDS,
        TOPIC_INDEX: INDEX_PRICE_FIELDS,
        TOPIC_DEPTH: DEPTH_PRICE_FIELDS,
    }
)

#: map.json "exch_seg_dict": the first four digits of a fytoken -> the HSM segment name.
#: A fytoken is <exchange:2><segment:2><6 reserved digits><exchange token>.
FYTOKEN_SEGMENTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "1010": "nse_cm",
        "1011": "nse_fo",
        "1012": "cde_fo",
        "1020": "nse_com",
        "1120": "mcx_fo",
        "1210": "bse_cm",
        "1211": "bse_fo",
        "1212": "bcs_fo",
    }
)
FYTOKEN_TOKEN_OFFSET: Final = 10

#: map.json "index_dict" (an excerpt): an index topic is named by the exchange's index name,
#: not by its token; symbols not listed fall back to the part between ':' and '-INDEX', as the
#: official client does.
INDEX_TOPIC_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "NSE:NIFTY50-INDEX": "Nifty 50",
        "NSE:NIFTYBANK-INDEX": "Nifty Bank",
        "NSE:FINNIFTY-INDEX": "Nifty Fin Service",
        "NSE:MIDCPNIFTY-INDEX": "NIFTY MID SELECT",
        "NSE:NIFTYNEXT50-INDEX": "Nifty Next 50",
        "NSE:NIFTY100-INDEX": "Nifty 100",
        "NSE:NIFTY200-INDEX": "Nifty 200",
        "NSE:NIFTY500-INDEX": "Nifty 500",
        "NSE:NIFTYMIDCAP50-INDEX": "Nifty Midcap 50",
        "NSE:NIFTYIT-INDEX": "Nifty IT",
        "NSE:NIFTYAUTO-INDEX": "Nifty Auto",
        "NSE:NIFTYFMCG-INDEX": "Nifty FMCG",
        "NSE:NIFTYMETAL-INDEX": "Nifty Metal",
        "NSE:NIFTYREALTY-INDEX": "Nifty Realty",
        "NSE:INDIAVIX-INDEX": "India VIX",
    }
)
