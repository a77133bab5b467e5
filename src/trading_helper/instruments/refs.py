"""The one grammar of instrument references, for HTTP, the WebSocket and the CLI (pure: no I/O).

====================  ==========================================================================
``id:42``             our instrument id
``kite:738561``       a Kite instrument_token (ASCII digits)
``sim:100001``        a simulator token (ASCII digits)
``fyers:NSE:SBIN-EQ`` a Fyers symbol
``NSE:RELIANCE``      EXCHANGE:SYMBOL (with Fyers configured, also tried as a Fyers symbol: that
                      is the form of Fyers' own tokens)
``738561`` / 738561   the configured broker's token (the specification's ``instrument_token``);
                      never our id, never another broker's token
``BANKNIFTY``         plain text: a trading symbol, or an alias of one (``ALIASES``)
====================  ==========================================================================

Digits are ASCII only: ``"²"`` and ``"٣"`` pass ``str.isdigit()`` and ``int()`` reads ``"٣"`` as 3,
so any other numeric character is refused (:class:`InvalidReference`, never another instrument).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from trading_helper.errors import InvalidReference

#: brokers whose tokens a reference may name, and whether their tokens are numbers
BROKER_TOKENS_NUMERIC: Final = {"kite": True, "sim": True, "fyers": False}
#: what traders type for an index -> the symbols brokers list it under (Kite/simulator, Fyers)
ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "NIFTY": ("NIFTY 50", "NIFTY50"),
    "BANKNIFTY": ("NIFTY BANK", "NIFTYBANK"),
    "FINNIFTY": ("NIFTY FIN SERVICE", "FINNIFTY"),
    "MIDCPNIFTY": ("NIFTY MID SELECT", "MIDCPNIFTY"),
    "SENSEX": ("SENSEX",),
}
MAX_LENGTH: Final = 100
#: Kite tokens are unsigned 32-bit; our ids are PostgreSQL integers
MAX_TOKEN: Final = 2**32 - 1
MAX_ID: Final = 2**31 - 1
_EXCHANGE = re.compile(r"^[A-Z][A-Z0-9_]{0,15}$")
_ASCII_DIGITS = re.compile(r"^[0-9]+$")


@dataclass(frozen=True, slots=True)
class OurId:
    id: int


@dataclass(frozen=True, slots=True)
class BrokerToken:
    broker: str
    token: str


@dataclass(frozen=True, slots=True)
class ExchangeSymbol:
    exchange: str
    symbol: str


@dataclass(frozen=True, slots=True)
class SymbolText:
    """Plain text: an exact trading symbol, or one of ``symbols`` (an alias's targets)."""

    text: str
    symbols: tuple[str, ...]


Ref = OurId | BrokerToken | ExchangeSymbol | SymbolText


def _refuse(shown: str, why: str) -> InvalidReference:
    return InvalidReference(f"invalid instrument reference {shown!r}: {why}", reference=shown)


def _number(text: str, shown: str, limit: int, what: str) -> int:
    if not _ASCII_DIGITS.match(text):
        raise _refuse(shown, f"{what} must be ASCII digits")
    value = int(text)
    if not 0 < value <= limit:
        raise _refuse(shown, f"{what} out of range")
    return value


def parse_ref(value: int | str, broker: str | None) -> Ref:
    """``value`` (a JSON number or a string) as a reference; ``broker`` is the configured one."""
    if isinstance(value, bool):
        raise _refuse(str(value), "not a number or text")
    if isinstance(value, int):
        return _bare_token(str(value), str(value), broker)
    shown = value[:MAX_LENGTH]
    text = value.strip()
    if not text:
        raise _refuse(shown, "empty")
    if len(text) > MAX_LENGTH:
        raise _refuse(shown, f"longer than {MAX_LENGTH} characters")
    if not text.isprintable():
        raise _refuse(shown, "control characters are not allowed")
    if any(ch.isnumeric() and not ch.isascii() for ch in text):
        raise _refuse(shown, "digits must be ASCII (0-9)")
    head, colon, rest = text.partition(":")
    prefix = head.strip().lower()
    if colon and prefix == "id":
        return OurId(_number(rest.strip(), shown, MAX_ID, "an id"))
    if colon and prefix in BROKER_TOKENS_NUMERIC:
        return _broker_token(prefix, rest.strip(), shown)
    if _ASCII_DIGITS.match(text):
        return _bare_token(text, shown, broker)
    if colon:
        exchange, symbol = head.strip().upper(), rest.strip().upper()
        if not _EXCHANGE.match(exchange) or not symbol:
            raise _refuse(shown, "use EXCHANGE:SYMBOL, id:N, kite:TOKEN or fyers:SYMBOL")
        return ExchangeSymbol(exchange, symbol)
    upper = search_text(text)
    return SymbolText(upper, symbols_of(upper))


def search_text(text: str) -> str:
    """Plain text as symbols are written: upper case, single spaces."""
    return " ".join(text.upper().split())


def symbols_of(text: str) -> tuple[str, ...]:
    """The symbols plain ``text`` names exactly: an alias's targets, and the text itself."""
    return (*ALIASES.get(text.replace(" ", ""), ()), text)


def _broker_token(broker: str, token: str, shown: str) -> BrokerToken:
    if not token:
        raise _refuse(shown, f"{broker}: needs a token")
    if BROKER_TOKENS_NUMERIC[broker]:
        return BrokerToken(broker, str(_number(token, shown, MAX_TOKEN, f"a {broker} token")))
    return BrokerToken(broker, token.upper())


def _bare_token(text: str, shown: str, broker: str | None) -> BrokerToken:
    if broker is None:
        raise _refuse(
            shown,
            "a bare number is the configured broker's token and no broker is configured; use id:N for our id",
        )
    if not BROKER_TOKENS_NUMERIC.get(broker, True):
        raise _refuse(
            shown, f"a bare number is a {broker} token, and {broker} tokens are symbols; use id:N for our id"
        )
    return _broker_token(broker, text, shown)


def fallbacks(ref: Ref, broker: str | None) -> tuple[Ref, ...]:
    """What else a reference may mean: with Fyers configured, ``NSE:SBIN-EQ`` is also its token."""
    if isinstance(ref, ExchangeSymbol) and broker == "fyers":
        return (BrokerToken("fyers", f"{ref.exchange}:{ref.symbol}"),)
    return ()


def describe(ref: Ref) -> str:
    """The reference as the grammar writes it (for messages)."""
    match ref:
        case OurId(id=n):
            return f"id:{n}"
        case BrokerToken(broker=b, token=t):
            return f"{b}:{t}"
        case ExchangeSymbol(exchange=e, symbol=s):
            return f"{e}:{s}"
        case SymbolText(text=t):
            return t
