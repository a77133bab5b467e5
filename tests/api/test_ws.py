"""The live WebSocket: ticks published on the Redis channel reach every subscribed client; a slow
client is dropped without holding up the others."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.api.conftest import API_TOKEN, Api
from tests.api.server import serve
from tests.fakes.sink import wait_until
from trading_helper.api.app import create_app
from trading_helper.api.hub import TickHub
from trading_helper.ingest import codec
from trading_helper.models import Tick


def ws_url(api: Api, token: str = API_TOKEN) -> str:
    return api.url.replace("http://", "ws://") + f"/api/ws/ticks?token={token}"


def tick(iid: int, price: float, volume: int, at: datetime | None = None) -> Tick:
    now = at or datetime.now(UTC)
    return Tick(
        instrument_id=iid, exchange_ts=now, received_ts=now, last_price=price, volume=volume, open_interest=7
    )


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(5):
        return json.loads(await ws.recv())  # type: ignore[no-any-return]


async def instrument_ids(api: Api) -> list[int]:
    """Our ids of the fake Kite's instruments, in id order (RELIANCE, NIFTY 50, ...)."""
    items = (await api.client.get("/api/instruments", params={"expired": "true"})).json()["items"]
    return sorted(i["id"] for i in items)


async def test_two_clients_get_the_ticks_they_subscribed(api: Api) -> None:
    i11, i12, i13, _ = await instrument_ids(api)
    async with connect(ws_url(api)) as a, connect(ws_url(api)) as b:
        await a.send(
            json.dumps(
                {"action": "subscribe", "instruments": [f"id:{i11}", f"id:{i12}"], "intervals": ["1m"]}
            )
        )
        assert await recv(a) == {"type": "subscribed", "instruments": [i11, i12], "intervals": ["1m"]}
        await b.send(json.dumps({"action": "subscribe", "instruments": [f"id:{i11}"]}))
        assert (await recv(b))["instruments"] == [i11]

        at = datetime(2025, 1, 6, 4, 0, 30, tzinfo=UTC)  # 09:30:30 IST
        await api.redis.publish(
            api.channel,
            codec.encode_ticks([tick(i11, 100.0, 1000, at), tick(i12, 50.0, 10, at), tick(i13, 1.0, 1, at)]),
        )
        await api.redis.publish(
            api.channel, codec.encode_ticks([tick(i11, 101.5, 1040, at + timedelta(seconds=5))])
        )

        got_a = [await recv(a) for _ in range(6)]
        assert [(m["type"], m["data"]["instrument_id"]) for m in got_a] == [
            ("tick", i11),
            ("candle", i11),
            ("tick", i12),
            ("candle", i12),
            ("tick", i11),
            ("candle", i11),
        ]
        assert got_a[0]["data"] == codec.tick_to_json(tick(i11, 100.0, 1000, at))
        assert got_a[5] == {
            "type": "candle",
            "interval": "1m",
            "data": {
                "instrument_id": i11,
                "time": "2025-01-06T09:30:00+05:30",
                "open": 100.0,
                "high": 101.5,
                "low": 100.0,
                "close": 101.5,
                "volume": 40,
                "open_interest": 7,
            },
        }
        got_b = [await recv(b) for _ in range(2)]
        assert [(m["type"], m["data"]["last_price"]) for m in got_b] == [("tick", 100.0), ("tick", 101.5)]

        await b.send(json.dumps({"action": "unsubscribe", "instruments": [f"id:{i11}"]}))
        assert (await recv(b))["instruments"] == []
        await b.send("not json")
        assert (await recv(b))["type"] == "error"
        await b.send(json.dumps({"action": "subscribe", "instruments": [{"id": 1}]}))
        assert "instrument references" in (await recv(b))["detail"]
        await api.redis.publish(api.channel, codec.encode_ticks([tick(i11, 102.0, 1050)]))
        assert (await recv(a))["data"]["last_price"] == 102.0
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await b.recv()


async def test_references_follow_the_one_grammar_and_each_bad_one_is_named(api: Api) -> None:
    ids = await instrument_ids(api)
    async with connect(ws_url(api)) as ws:
        await ws.send(
            json.dumps({"action": "subscribe", "instruments": ["NSE:RELIANCE", 256265, "kite:256265"]})
        )
        reliance_and_nifty = (await recv(ws))["instruments"]
        assert len(reliance_and_nifty) == 2 and set(reliance_and_nifty) <= set(ids)
        await ws.send(
            json.dumps(
                {"action": "subscribe", "instruments": ["NSE:NOPE", "id:999999", "²", 42, f"id:{ids[3]}"]}
            )
        )
        error = await recv(ws)
        assert error["type"] == "error" and error["errors"] == [
            {
                "instrument": "NSE:NOPE",
                "code": "unknown_instrument",
                "detail": "unknown instrument 'NSE:NOPE'",
            },
            {
                "instrument": "id:999999",
                "code": "unknown_instrument",
                "detail": "unknown instrument 'id:999999'",
            },
            {
                "instrument": "²",
                "code": "invalid_reference",
                "detail": "invalid instrument reference '²': digits must be ASCII (0-9)",
            },
            {"instrument": "42", "code": "unknown_instrument", "detail": "unknown instrument '42' (kite:42)"},
        ]
        assert "'NSE:NOPE'" in error["detail"] and "'²'" in error["detail"]
        await ws.send(json.dumps({"action": "unsubscribe", "instruments": ["NSE:RELIANCE"]}))
        assert len((await recv(ws))["instruments"]) == 1  # the bad message changed nothing


async def test_the_live_channel_is_read_only_while_a_client_watches_an_instrument(api: Api) -> None:
    hub: TickHub = api.app.state.hub
    hub.linger_s = 0.3
    await wait_until(lambda: not hub.subscribed)  # left by an earlier test's clients

    async def readers() -> int:
        return int(dict(await api.redis.pubsub_numsub(api.channel))[api.channel.encode()])

    others = await readers()  # the alerts service reads it too while rules follow instruments
    (i11, *_) = await instrument_ids(api)
    async with connect(ws_url(api)) as ws:
        assert await readers() == others  # a client that watches nothing costs no subscription
        await ws.send(json.dumps({"action": "subscribe", "instruments": [f"id:{i11}"]}))
        assert (await recv(ws))["type"] == "subscribed"
        assert await readers() == others + 1  # in place before the answer: the next tick arrives
        await api.redis.publish(api.channel, codec.encode_ticks([tick(i11, 100.0, 1000)]))
        assert (await recv(ws))["data"]["instrument_id"] == i11
    await wait_until(lambda: not hub.subscribed)
    assert await readers() == others


async def test_a_wrong_token_is_refused(api: Api) -> None:
    async with connect(ws_url(api, token="wrong")) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "token" in closed.value.rcvd.reason
    assert api.app.state.hub.client_count == 0


async def test_a_slow_client_is_dropped_and_the_others_keep_up(api: Api) -> None:
    # an app of its own, on a socket with small kernel buffers: a client that stops reading blocks
    # its sender after some kilobytes instead of megabytes
    app = create_app(api.runtime, live_channel=api.channel + ":slow")
    async with serve(app, send_buffer=8192) as url:
        hub: TickHub = app.state.hub
        hub.queue_frames = 8  # few frames of slack
        host, port = url.removeprefix("http://").split(":")
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing, small window
        raw.connect((host, int(port)))
        raw.setblocking(False)
        ws = url.replace("http://", "ws://") + f"/api/ws/ticks?token={API_TOKEN}"
        i21 = (await instrument_ids(api))[0]
        async with connect(ws, sock=raw, max_queue=1) as slow, connect(ws) as fast:
            for client in (slow, fast):
                await client.send(json.dumps({"action": "subscribe", "instruments": [f"id:{i21}"]}))
                assert (await recv(client))["type"] == "subscribed"
            assert hub.client_count == 2
            received = 0

            async def read_fast() -> None:
                nonlocal received
                async for message in fast:
                    received += isinstance(message, str) and message.startswith('{"type": "tick"')

            reader = asyncio.create_task(read_fast())
            frame = codec.encode_ticks([tick(i21, 100.0 + n * 0.05, 1000 + n) for n in range(100)])
            published = 0
            async with asyncio.timeout(30):
                while hub.client_count == 2:
                    await api.redis.publish(api.channel + ":slow", frame)
                    published += 100
                    await asyncio.sleep(0.002)
                    assert published < 200_000, "the slow client was never dropped"
                while received < published:  # the fast client got every tick, dropped or not
                    if reader.done():
                        break
                    await asyncio.sleep(0.01)
            assert hub.client_count == 1 and received == published
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:  # drain what the slow client had in flight, then the close
                        await slow.recv()
