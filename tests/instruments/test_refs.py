"""The instrument-reference grammar (pure): every string is a reference or a clear
InvalidReference, digits are ASCII only, and a bare number is the configured broker's token."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from trading_helper.errors import InvalidReference
from trading_helper.instruments.refs import (
    MAX_ID,
    MAX_TOKEN,
    BrokerToken,
    ExchangeSymbol,
    OurId,
    SymbolText,
    describe,
    fallbacks,
    parse_ref,
)

BROKERS = st.sampled_from(["kite", "sim", "fyers", None])
#: every numeric character of the Basic Multilingual Plane outside ASCII (² ٣ ½ 三 ...)
NON_ASCII_DIGITS = st.sampled_from([chr(c) for c in range(128, 0x10000) if chr(c).isnumeric()])
SYMBOL_CHARS = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-&_ ")


@given(st.text(max_size=120), BROKERS)
@example("²", "kite")
@example("0²", "kite")
@example("٣", "kite")
@example("id:", None)
@example("\u202eNSE:RELIANCE", "kite")
def test_any_text_is_a_reference_or_a_clear_refusal(text: str, broker: str | None) -> None:
    try:
        ref = parse_ref(text, broker)
    except InvalidReference as exc:
        assert exc.message.startswith("invalid instrument reference ") and exc.reference == text[:100]
        return
    assert isinstance(ref, OurId | BrokerToken | ExchangeSymbol | SymbolText)
    assert describe(ref)


@given(st.text(max_size=20), NON_ASCII_DIGITS, st.text(max_size=20), BROKERS)
def test_a_non_ascii_digit_anywhere_is_refused(
    before: str, digit: str, after: str, broker: str | None
) -> None:
    with pytest.raises(InvalidReference):
        parse_ref(before + digit + after, broker)


@given(st.integers(min_value=1, max_value=MAX_TOKEN), st.sampled_from(["kite", "sim"]), st.booleans())
def test_a_bare_number_is_the_configured_brokers_token_never_our_id(
    n: int, broker: str, as_text: bool
) -> None:
    ref = parse_ref(str(n) if as_text else n, broker)
    assert ref == BrokerToken(broker, str(n))
    assert parse_ref(f"  {n:012d} ", broker) == BrokerToken(broker, str(n))  # leading zeros: the same token


@given(st.integers())
def test_a_bare_number_without_a_numeric_broker_is_refused(n: int) -> None:
    for broker in (None, "fyers"):
        with pytest.raises(InvalidReference, match="id:N"):
            parse_ref(n, broker)


@given(st.integers(min_value=1, max_value=MAX_ID), BROKERS)
def test_id_n_is_ours_and_round_trips(n: int, broker: str | None) -> None:
    assert parse_ref(f"id:{n}", broker) == parse_ref(f"ID: {n}", broker) == OurId(n)
    assert parse_ref(describe(OurId(n)), broker) == OurId(n)


@given(st.integers().filter(lambda n: not 0 < n <= MAX_ID))
def test_an_id_out_of_range_is_refused(n: int) -> None:
    with pytest.raises(InvalidReference):
        parse_ref(f"id:{n}", "kite")


@given(st.from_regex(r"[A-Z]{2,6}", fullmatch=True), st.text(SYMBOL_CHARS, min_size=1, max_size=30), BROKERS)
def test_exchange_symbol_round_trips(exchange: str, symbol: str, broker: str | None) -> None:
    if not symbol.strip() or exchange.lower() in ("id", "kite", "sim", "fyers"):
        return
    ref = parse_ref(f"{exchange.lower()}:{symbol}", broker)
    assert ref == ExchangeSymbol(exchange, symbol.strip())
    assert parse_ref(describe(ref), broker) == ref
    assert fallbacks(ref, broker) == ((BrokerToken("fyers", describe(ref)),) if broker == "fyers" else ())


@pytest.mark.parametrize(
    ("typed", "symbol"),
    [
        ("BANKNIFTY", "NIFTY BANK"),
        ("banknifty", "NIFTY BANK"),
        ("Bank Nifty", "NIFTY BANK"),
        ("NIFTY", "NIFTY 50"),
        ("FINNIFTY", "NIFTY FIN SERVICE"),
        ("MIDCPNIFTY", "NIFTY MID SELECT"),
        ("sensex", "SENSEX"),
        ("nifty  50", "NIFTY 50"),
        ("reliance", "RELIANCE"),
    ],
)
def test_plain_text_means_its_symbol_or_an_aliased_one(typed: str, symbol: str) -> None:
    ref = parse_ref(typed, "kite")
    assert isinstance(ref, SymbolText) and symbol in ref.symbols


def test_broker_prefixes() -> None:
    assert parse_ref("kite:738561", "fyers") == BrokerToken("kite", "738561")
    assert parse_ref("fyers:nse:sbin-eq", "kite") == BrokerToken("fyers", "NSE:SBIN-EQ")
    assert parse_ref("sim:100001", None) == BrokerToken("sim", "100001")
    for bad in (
        "kite:",
        "kite:-1",
        "kite:12a",
        f"kite:{MAX_TOKEN + 1}",
        "fyers:",
        "id:1.0",
        ":X",
        "N$E:X",
        True,
    ):
        with pytest.raises(InvalidReference):
            parse_ref(bad, "kite")  # type: ignore[arg-type]
