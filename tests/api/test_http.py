"""The HTTP API end to end over a real socket: auth, instruments, subscriptions, candles, quotes,
status, metrics, CORS, OpenAPI."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from tests.api.conftest import API_TOKEN, ORIGIN, Api
from trading_helper.api.schemas import CandleResponse
from trading_helper.ingest import codec, keys
from trading_helper.models import DepthLevel, Tick


async def test_every_api_route_needs_the_bearer_token(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as anonymous:
        for method, path in [
            ("GET", "/api/instruments"),
            ("POST", "/api/instruments/sync"),
            ("GET", "/api/instruments/subscriptions"),
            ("GET", "/api/candles?instrument=1"),
            ("POST", "/api/candles"),
            ("GET", "/api/indicators?instrument=1&studies=ema"),
            ("GET", "/api/quotes/1"),
            ("GET", "/api/status"),
        ]:
            resp = await anonymous.request(method, path)
            assert resp.status_code == 401, (method, path)
            assert resp.headers["www-authenticate"] == "Bearer"
            wrong = await anonymous.request(method, path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and "bearer token" in wrong.json()["detail"]
        for path in ("/health", "/health/db", "/health/redis", "/metrics", "/openapi.json"):
            assert (await anonymous.get(path)).status_code == 200, path
    assert api.kite.history_calls == {}  # nothing reached the broker unauthenticated


async def test_health(api: Api) -> None:
    assert (await api.client.get("/health/db")).json() == {"status": "healthy", "component": "database"}
    assert (await api.client.get("/health/redis")).json() == {"status": "healthy", "component": "redis"}


async def test_instruments_search_filter_and_page(api: Api) -> None:
    sync = await api.client.post("/api/instruments/sync")
    assert sync.status_code == 200 and sync.json() == {"broker": "kite", "count": 4}
    everything = (await api.client.get("/api/instruments", params={"expired": "true"})).json()
    assert everything["total"] == 4 and everything["limit"] == 50 and everything["offset"] == 0
    rel = (await api.client.get("/api/instruments", params={"q": "reli"})).json()
    assert rel["total"] == 1
    item = rel["items"][0]
    assert item["tradingsymbol"] == "RELIANCE" and item["broker_ids"] == {"kite": "738561"}
    assert set(item) == {
        "id",
        "exchange",
        "tradingsymbol",
        "name",
        "segment",
        "instrument_type",
        "expiry",
        "strike",
        "option_type",
        "lot_size",
        "tick_size",
        "expired",
        "broker_ids",
    }
    nfo = (await api.client.get("/api/instruments", params={"exchange": "nfo", "expired": "true"})).json()
    assert [i["tradingsymbol"] for i in nfo["items"]] == ["NIFTY24JAN21500CE"]
    assert nfo["items"][0]["expiry"] == "2024-01-25" and nfo["items"][0]["option_type"] == "CE"
    by_expiry = (await api.client.get("/api/instruments", params={"expiry": "2024-01-29"})).json()
    assert [i["tradingsymbol"] for i in by_expiry["items"]] == ["USDINR24JANFUT"]
    page = (await api.client.get("/api/instruments", params={"limit": 2, "offset": 1})).json()
    assert page["total"] == 4 and len(page["items"]) == 2 and page["offset"] == 1
    wildcard = (await api.client.get("/api/instruments", params={"q": "%"})).json()
    assert wildcard["total"] == 0  # LIKE wildcards are literal
    bad = await api.client.get("/api/instruments", params={"limit": 0})
    assert (
        bad.status_code == 422 and bad.json()["code"] == "invalid_request" and "limit" in bad.json()["detail"]
    )


async def test_subscriptions_accept_ids_symbols_and_tokens(api: Api) -> None:
    reliance = (await api.client.get("/api/instruments", params={"q": "RELIANCE"})).json()["items"][0]["id"]
    nifty = (await api.client.get("/api/instruments", params={"q": "NIFTY 50"})).json()["items"][0]["id"]
    resp = await api.client.post(
        "/api/instruments/subscribe", json={"instruments": ["NSE:RELIANCE", "256265", f"id:{reliance}"]}
    )
    assert resp.status_code == 200 and resp.json() == {"subscribed": [reliance, nifty]}
    spec_body = await api.client.post("/api/instruments/subscribe", json={"tokens": [256265]})
    assert spec_body.json() == {"subscribed": [nifty]}
    listed = (await api.client.get("/api/instruments/subscriptions")).json()
    assert listed["total"] == 2 and {i["id"] for i in listed["items"]} == {reliance, nifty}
    assert all(i["mode"] == "full" for i in listed["items"])
    unknown = await api.client.post("/api/instruments/subscribe", json={"instruments": ["NSE:NOPE", 999999]})
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_instrument"
    assert "'NSE:NOPE'" in unknown.json()["detail"] and "'999999' (kite:999999)" in unknown.json()["detail"]
    # a bare number is the broker's token, never our id: our ids are small, Kite's tokens are not
    assert (
        await api.client.post("/api/instruments/subscribe", json={"instruments": [reliance]})
    ).status_code == 404
    bad = await api.client.post(
        "/api/instruments/subscribe", json={"instruments": ["²", "NSE:RELIANCE", "٣", "x"]}
    )
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_reference"
    assert "'²'" in bad.json()["detail"] and "'٣'" in bad.json()["detail"] and "'x'" in bad.json()["detail"]
    assert (await api.client.get("/api/instruments/subscriptions")).json()["total"] == 2
    gone = await api.client.post("/api/instruments/unsubscribe", json={"instruments": [f"id:{nifty}"]})
    assert gone.json() == {"unsubscribed": [nifty]}
    assert [i["id"] for i in (await api.client.get("/api/instruments/subscriptions")).json()["items"]] == [
        reliance
    ]
    empty = await api.client.post("/api/instruments/subscribe", json={"instruments": []})
    assert empty.status_code == 422


async def test_candles_get_and_post_share_one_service(api: Api) -> None:
    params = {
        "instrument": "NSE:RELIANCE",
        "interval": "5m",
        "from": "2024-03-04T09:15:00+05:30",
        "to": "2024-03-04T15:30:00+05:30",
    }
    first = await api.client.get("/api/candles", params=params)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["interval"] == "5m" and body["instrument"]["tradingsymbol"] == "RELIANCE"
    assert body["backfill"] == {"fetched_ranges": 1, "broker_calls": 1, "error": None}
    assert len(body["candles"]) == 75
    candle = body["candles"][0]
    assert candle["time"] == "2024-03-04T09:15:00+05:30" and candle["source"] == "broker"
    assert set(candle) == {"time", "open", "high", "low", "close", "volume", "open_interest", "source"}
    CandleResponse.model_validate(body)  # the documented shape
    # the database-built JSON says exactly what the Python read path reads
    series = await api.app.state.candles.get_candles(
        "NSE:RELIANCE", "5m", datetime.fromisoformat(params["from"]), datetime.fromisoformat(params["to"])
    )
    assert [
        (
            datetime.fromisoformat(c["time"]),
            c["open"],
            c["high"],
            c["low"],
            c["close"],
            c["volume"],
            c["open_interest"],
            c["source"],
        )
        for c in body["candles"]
    ] == [
        (c.bucket, c.open, c.high, c.low, c.close, c.volume, c.open_interest, c.source)
        for c in series.candles
    ]

    spec = await api.client.post(
        "/api/candles",
        json={
            "instrument_token": 738561,
            "from_date": "2024-03-04T03:45:00Z",
            "to_date": "2024-03-04T10:00:00Z",
            "interval": "5m",
        },
    )
    assert spec.status_code == 200, spec.text
    assert spec.json()["candles"] == body["candles"]
    assert spec.json()["backfill"] == {"fetched_ranges": 0, "broker_calls": 0, "error": None}
    naive = await api.client.get(
        "/api/candles", params={**params, "from": "2024-03-04T09:15:00", "to": "2024-03-04T15:30:00"}
    )
    assert naive.json()["candles"] == body["candles"]
    assert api.kite.history_calls[("738561", "5minute")] == 1


async def test_candle_requests_are_validated(api: Api) -> None:
    base = {
        "instrument": "NSE:RELIANCE",
        "interval": "5m",
        "from": "2024-03-04T09:15:00+05:30",
        "to": "2024-03-04T15:30:00+05:30",
    }
    cases = [
        ({**base, "interval": "7m"}, 422, "interval"),
        ({**base, "from": "2024-03-05T00:00:00+05:30"}, 400, "must be before"),
        ({**base, "interval": "1m", "from": "2024-01-01T00:00:00+05:30"}, 400, "at most 31 days"),
        ({**base, "instrument": "NSE:NOSUCH"}, 404, "unknown instrument"),
        ({**base, "instrument": "9999999"}, 404, "unknown instrument '9999999' (kite:9999999)"),
        ({**base, "instrument": "id:9999999"}, 404, "unknown instrument 'id:9999999'"),
        ({**base, "instrument": "²"}, 422, "ASCII"),
        ({**base, "instrument": "0²"}, 422, "ASCII"),
        ({**base, "instrument": "٣"}, 422, "ASCII"),
        ({**base, "instrument": "id:٣"}, 422, "ASCII"),
        ({**base, "instrument": "kite:12x"}, 422, "ASCII digits"),
        ({**base, "from": "yesterday"}, 422, "from"),
        ({**base, "from": "0001-01-01T00:00:00"}, 400, "between"),
        ({**base, "instrument": "a\x00b"}, 422, "instrument"),
    ]
    for params, status, words in cases:
        resp = await api.client.get("/api/candles", params=params)
        assert resp.status_code == status, (params, resp.text)
        assert words in resp.json()["detail"], (params, resp.json())
        assert "Traceback" not in resp.text
    post = await api.client.post(
        "/api/candles",
        json={
            "instrument_token": 738561,
            "from_date": "2024-03-05",
            "to_date": "2024-03-04",
            "interval": "5m",
        },
    )
    assert post.status_code == 400 and post.json()["code"] == "invalid_range"
    wrong_number = await api.client.post(
        "/api/candles",
        json={"instrument_token": 42, "from_date": "2024-03-04", "to_date": "2024-03-05", "interval": "5m"},
    )
    assert wrong_number.status_code == 404 and "'42' (kite:42)" in wrong_number.json()["detail"]
    missing = await api.client.post("/api/candles", json={"from_date": "2024-03-04"})
    assert missing.status_code == 422 and "instrument_token" in missing.json()["detail"]


async def test_an_unknown_query_parameter_is_named(api: Api) -> None:
    """``?symbol=`` for ``?q=`` would otherwise answer every instrument as if nothing were asked."""
    resp = await api.client.get("/api/instruments", params={"symbol": "RELIANCE", "limit": 2})
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["code"] == "invalid_request" and body["errors"][0]["field"] == "symbol"
    assert "expected one of:" in body["detail"] and " q," in body["detail"]
    none = await api.client.get("/api/status", params={"verbose": "1"})
    assert none.status_code == 422 and "takes none" in none.json()["detail"]
    aliased = await api.client.get(
        "/api/candles",
        params={"instrument": "NSE:RELIANCE", "from": "2024-03-04", "to": "2024-03-05", "interval": "1d"},
    )
    assert aliased.status_code == 200, aliased.text
    not_json = await api.client.post(
        "/api/instruments/subscribe", content=b"m\x1f\xff", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 400 and not_json.json()["code"] == "invalid_body", not_json.text


async def test_latest_quote_from_redis(api: Api) -> None:
    iid = (await api.client.get("/api/instruments", params={"q": "RELIANCE"})).json()["items"][0]["id"]
    await api.redis.hdel(keys.QUOTES, str(iid))
    missing = await api.client.get(f"/api/quotes/id:{iid}")
    assert missing.status_code == 404 and missing.json()["code"] == "no_quote"
    now = datetime.now(UTC)
    tick = Tick(
        instrument_id=iid,
        exchange_ts=now,
        received_ts=now,
        last_price=2500.5,
        volume=1200,
        bids=(DepthLevel(2500.4, 10, 2),),
        asks=(DepthLevel(2500.6, 5, 1),),
    )
    await api.redis.hset(keys.QUOTES, str(iid), codec.encode_quote(tick))
    for ref in (f"id:{iid}", "NSE:RELIANCE", "738561", "kite:738561", "reliance"):
        resp = await api.client.get(f"/api/quotes/{ref}")
        assert resp.status_code == 200 and resp.json() == codec.tick_to_json(
            codec.decode_quote(codec.encode_quote(tick))
        )
    assert resp.json()["depth"]["bids"] == [{"price": 2500.4, "quantity": 10, "orders": 2}]
    assert (await api.client.get("/api/quotes/NSE:NOPE")).status_code == 404
    assert (await api.client.get(f"/api/quotes/{iid}")).status_code == 404  # the Kite token {iid}: none
    for bad in ("²", "0²", "٣"):
        assert (await api.client.get(f"/api/quotes/{bad}")).status_code == 422


async def test_status_and_metrics(api: Api) -> None:
    status = (await api.client.get("/api/status")).json()
    assert status["broker"] == {"name": "kite", "state": "unknown"}  # no ingest in this process
    assert isinstance(status["subscriptions"], int) and status["websocket_clients"] == 0
    assert status["stream"]["name"] == api.runtime.settings.TICK_STREAM
    metrics = await api.client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'th_http_requests_total{method="GET",route="/api/status",status="200"}' in text
    assert "th_backfill_broker_calls_total" in text and "th_ws_clients" in text


async def test_cors_allows_only_configured_origins(api: Api) -> None:
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    ok = await api.client.options("/api/candles", headers={"Origin": ORIGIN, **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    evil = await api.client.options("/api/candles", headers={"Origin": "https://evil.example", **preflight})
    assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers


async def test_openapi_documents_auth_and_examples(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    paths = schema["paths"]
    for path in (
        "/api/candles",
        "/api/instruments",
        "/api/instruments/sync",
        "/api/instruments/subscribe",
        "/api/instruments/unsubscribe",
        "/api/instruments/subscriptions",
        "/api/quotes/{instrument}",
        "/api/status",
        "/health",
        "/health/db",
        "/health/redis",
        "/metrics",
    ):
        assert path in paths, path
    assert set(paths["/api/candles"]) == {"get", "post"}
    assert paths["/api/candles"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in paths["/health/db"]["get"]
    assert "naive" in paths["/api/candles"]["get"]["description"]
    assert schema["components"]["schemas"]["CandleRequest"]["examples"][0]["interval"] == "5m"
    assert schema["components"]["schemas"]["CandleResponse"]["examples"]
    assert API_TOKEN not in str(schema)


async def test_an_expired_broker_login_is_a_clear_503_or_a_backfill_note(api: Api) -> None:
    good = api.kite.access_token
    api.kite.expire_token("rotated-token", disconnect=False)
    try:
        sync = await api.client.post("/api/instruments/sync")
        assert sync.status_code == 503 and sync.json()["code"] == "login_required"
        assert sync.json()["detail"].startswith("broker login needed")
        candles = await api.client.get(
            "/api/candles",
            params={
                "instrument": "NSE:RELIANCE",
                "interval": "15m",
                "from": "2024-03-05T09:15:00+05:30",
                "to": "2024-03-05T15:30:00+05:30",
            },
        )
        assert candles.status_code == 200  # what is stored is still served
        assert candles.json()["candles"] == [] and "log" in candles.json()["backfill"]["error"]
    finally:
        api.kite.access_token = good
    again = await api.client.get(
        "/api/candles",
        params={
            "instrument": "NSE:RELIANCE",
            "interval": "15m",
            "from": "2024-03-05T09:15:00+05:30",
            "to": "2024-03-05T15:30:00+05:30",
        },
    )
    assert again.json()["backfill"]["broker_calls"] == 1 and len(again.json()["candles"]) == 25


async def test_the_chart_page_is_served_beside_the_api(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as anonymous:
        page = await anonymous.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert (await anonymous.get("/static/index.html")).status_code == 200
        assert (await anonymous.get("/docs")).status_code == 200
        assert (await anonymous.get("/api/nope")).status_code in (401, 404)
        assert (await anonymous.get("/health")).json() == {"status": "healthy"}
