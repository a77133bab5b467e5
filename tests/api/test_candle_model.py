"""One candle model from the database to the wire: the JSON the database builds for the REST answer
is ``Candle.wire()`` of the rows the typed read path reads, in ``CandleOut``'s fields; the answer's
instrument carries its real ``expired`` flag."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import asyncpg

from tests.api.conftest import Api
from trading_helper.api.schemas import CandleOut, CandleResponse
from trading_helper.candles.read import read_candles, read_candles_json
from trading_helper.models import CANDLE_WIRE_FIELDS
from trading_helper.timeframes import IST, Timeframe

DAY = datetime(2024, 3, 5, tzinfo=IST)  # a Tuesday


def test_the_wire_fields_are_the_schema() -> None:
    assert tuple(CandleOut.model_fields) == CANDLE_WIRE_FIELDS


async def test_database_json_is_the_models_wire_form(api: Api, db_pool: asyncpg.Pool) -> None:
    # broker history for the session (via the API's backfill), and live ticks over part of it
    params = {
        "instrument": "NSE:RELIANCE",
        "interval": "1m",
        "from": (DAY + timedelta(hours=9, minutes=15)).isoformat(),
        "to": (DAY + timedelta(hours=10)).isoformat(),
    }
    first = await api.client.get("/api/candles", params=params)
    assert first.status_code == 200, first.text
    iid = first.json()["instrument"]["id"]
    # ticks straight into the table (their day is long past the writer's age limit), captured live
    # 09:30-09:40 (live candles) and 09:40:30-09:41 (a partial minute the broker candle replaces)
    start = DAY + timedelta(hours=9, minutes=30, seconds=5)
    await db_pool.execute("SELECT ensure_tick_partitions($1, $2)", DAY, DAY + timedelta(days=1))
    await db_pool.execute(
        "INSERT INTO tick_data (time, instrument_id, ltp, last_qty, volume_delta, received_at) "
        "SELECT $2::timestamptz + n * interval '13 seconds', $1, 1400 + n / 4.0, n + 1, n + 1, now() "
        "FROM generate_series(0, 49) AS n",
        iid,
        start,
    )
    for lo, hi in ((9, 30, 0), (9, 40, 0)), ((9, 40, 30), (9, 41, 0)):
        await db_pool.execute(
            "INSERT INTO live_coverage (instrument_id, broker, period, open) VALUES ($1, 'kite', tstzrange($2, $3), false)",
            iid,
            DAY + timedelta(hours=lo[0], minutes=lo[1], seconds=lo[2]),
            DAY + timedelta(hours=hi[0], minutes=hi[1], seconds=hi[2]),
        )
    await db_pool.execute("CALL refresh_candles()")

    body = (await api.client.get("/api/candles", params=params)).json()
    CandleResponse.model_validate(body)
    async with db_pool.acquire() as conn:
        lo, hi = datetime.fromisoformat(params["from"]), datetime.fromisoformat(params["to"])
        typed = await read_candles(conn, iid, Timeframe.M1, lo, hi)
        text = await read_candles_json(conn, iid, Timeframe.M1, lo, hi)
    assert {c.source for c in typed} == {"broker", "live"} and len(typed) == 45
    assert [c.bucket.astimezone(IST).minute for c in typed if c.source == "live"] == list(range(30, 40))
    assert json.loads(text) == [c.wire() for c in typed] == body["candles"]
    assert all(list(c) == list(CANDLE_WIRE_FIELDS) for c in body["candles"])


async def test_the_answer_carries_the_instruments_expired_flag(api: Api, db_pool: asyncpg.Pool) -> None:
    await db_pool.execute("UPDATE instruments SET expired = true WHERE tradingsymbol = 'NIFTY24JAN21500CE'")
    window = {"interval": "1d", "from": "2024-01-22T00:00:00+05:30", "to": "2024-01-26T00:00:00+05:30"}
    expired = await api.client.get("/api/candles", params={**window, "instrument": "NFO:NIFTY24JAN21500CE"})
    assert expired.status_code == 200, expired.text
    assert expired.json()["instrument"]["expired"] is True
    live = await api.client.get("/api/candles", params={**window, "instrument": "NSE:RELIANCE"})
    assert live.json()["instrument"]["expired"] is False
    # the same flag as the instrument list gives
    listed = (
        await api.client.get("/api/instruments", params={"q": "NIFTY24JAN21500CE", "expired": "true"})
    ).json()
    assert listed["items"][0]["expired"] is True
