"""Kite Connect REST: session exchange, instruments master, historical candles.

Every request carries ``X-Kite-Version: 3`` and, once logged in, ``Authorization: token
api_key:access_token`` with the token re-read from the token store each time, so a morning login
reaches a running service. Errors come back as ``{"status": "error", "message": "...",
"error_type": "TokenException"}``: a 403 or a ``TokenException`` means "login needed" and is never
retried; 429, 5xx and network errors are retried with capped exponential backoff and jitter.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from trading_helper.brokers.history import history_chunks
from trading_helper.brokers.kite import constants as c
from trading_helper.brokers.kite.instruments import kite_csv_to_instruments
from trading_helper.brokers.retry import RateLimiter, send_with_retries
from trading_helper.brokers.tokens import load_token
from trading_helper.config import Settings
from trading_helper.errors import (
    BrokerError,
    BrokerProtocolError,
    BrokerUnavailable,
    LoginRequired,
    RateLimited,
)
from trading_helper.models import Candle, Instrument
from trading_helper.timeframes import IST, Timeframe

log = logging.getLogger(__name__)

LOGIN_HINT = "log in again with `trading-helper login kite`"


@dataclass(slots=True, frozen=True)
class KiteSession:
    access_token: str
    user_id: str
    login_time: str

    def __repr__(self) -> str:  # never show the token
        return f"KiteSession(user_id={self.user_id!r}, login_time={self.login_time!r})"


_HISTORICAL_LIMITERS: dict[str, RateLimiter] = {}


def historical_limiter(api_key: str) -> RateLimiter:
    """The process-wide limiter for ``api_key``'s historical requests: Kite counts 3 requests/s
    per API key, not per client object, so every caller with that key shares one limiter."""
    limiter = _HISTORICAL_LIMITERS.get(api_key)
    if limiter is None:
        # 10% margin: Kite counts arrivals, and network jitter can bunch our evenly spaced sends
        limiter = _HISTORICAL_LIMITERS[api_key] = RateLimiter(c.HISTORICAL_REQUESTS_PER_SECOND, 1.1)
    return limiter


def session_checksum(api_key: str, request_token: str, api_secret: str) -> str:
    return hashlib.sha256((api_key + request_token + api_secret).encode()).hexdigest()


class KiteHttpClient:
    """One per broker instance: holds one ``httpx.AsyncClient`` (connection pool) for its life."""

    def __init__(
        self,
        settings: Settings,
        *,
        max_attempts: int = 5,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 8.0,
        timeout_s: float = 30.0,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._settings = settings
        self._max_attempts = max(1, max_attempts)
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._limiter = limiter or historical_limiter(settings.KITE_API_KEY)
        self._client = httpx.AsyncClient(
            base_url=settings.KITE_API_URL, timeout=timeout_s, headers={"X-Kite-Version": c.KITE_VERSION}
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> KiteHttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- endpoints ---------------------------------------------------------------------------
    async def create_session(self, request_token: str) -> KiteSession:
        """``POST /session/token``: trade the login redirect's request_token for an access token."""
        api_key = self._settings.KITE_API_KEY
        secret = self._settings.KITE_API_SECRET.get_secret_value()
        form = {
            "api_key": api_key,
            "request_token": request_token,
            "checksum": session_checksum(api_key, request_token, secret),
        }
        # one attempt only: a request_token is single-use, so a blind retry would only fail
        resp = await self._request(
            "POST", c.PATH_SESSION_TOKEN, what="session exchange", data=form, auth=False, attempts=1
        )
        data = _json_data(resp, "session exchange")
        if not isinstance(data, dict) or not data.get("access_token"):
            raise BrokerProtocolError("Kite session exchange: no access_token in the answer")
        return KiteSession(
            str(data["access_token"]), str(data.get("user_id", "")), str(data.get("login_time", ""))
        )

    async def instruments(self) -> list[Instrument]:
        """``GET /instruments``: the whole master (gzipped CSV) as broker-neutral instruments."""
        resp = await self._request("GET", c.PATH_INSTRUMENTS, what="instruments")
        body = resp.content
        if body[:2] == b"\x1f\x8b":  # served as a .gz file rather than with Content-Encoding
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError) as exc:
                raise BrokerProtocolError("Kite instruments: corrupt gzip body") from exc
        return kite_csv_to_instruments(body.decode("utf-8", errors="replace"))

    async def historical(
        self, instrument_token: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> list[Candle]:
        """Candles with bucket in [start, end), in as many requests as the interval's span needs."""
        interval = c.TIMEFRAME_TO_INTERVAL[timeframe]
        path = c.PATH_HISTORICAL.format(instrument_token=instrument_token, interval=interval)
        out: dict[datetime, Candle] = {}
        for chunk_start, chunk_end in history_chunks(start, end, c.INTERVAL_MAX_SPAN[interval]):
            # Kite's ``to`` is inclusive and whole seconds: ask up to one second before the chunk end
            params = {
                "from": _kite_time(chunk_start),
                "to": _kite_time(chunk_end - timedelta(seconds=1)),
                "oi": "1",
            }
            resp = await self._request(
                "GET",
                path,
                what=f"history {instrument_token}/{interval}",
                params=params,
                limiter=self._limiter,
            )
            for candle in kite_candles(_json_data(resp, "history"), timeframe):
                if chunk_start <= candle.bucket < chunk_end:
                    out[candle.bucket] = candle
        return [out[k] for k in sorted(out)]

    # --- transport -----------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        token = load_token(self._settings, c.BROKER_NAME)
        if not token:
            raise LoginRequired(f"no Kite access token: {LOGIN_HINT}")
        return {"Authorization": f"token {self._settings.KITE_API_KEY}:{token}"}

    async def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        auth: bool = True,
        limiter: RateLimiter | None = None,
        attempts: int | None = None,
    ) -> httpx.Response:
        async def send() -> httpx.Response:
            headers = self._headers() if auth else {}  # re-read: a new login may have landed
            if limiter is not None:
                await limiter.acquire()
            return await self._client.request(method, path, params=params, data=data, headers=headers)

        def judge(resp: httpx.Response) -> BrokerError | None:
            status = resp.status_code
            error_type, message = _error_of(resp)
            if (status == 403 or error_type == c.ERROR_TOKEN_EXCEPTION) and not auth:
                return LoginRequired(
                    f"Kite {what}: request token rejected ({message or status}); log in again for a fresh one"
                )
            if status == 403 or error_type == c.ERROR_TOKEN_EXCEPTION:
                return LoginRequired(
                    f"Kite {what}: session expired or invalid ({message or status}): {LOGIN_HINT}"
                )
            if status == 429:
                return RateLimited(f"Kite {what}: HTTP 429 too many requests")
            if status >= 500:
                return BrokerUnavailable(f"Kite {what}: HTTP {status} {message}".rstrip())
            if status >= 400:
                return BrokerProtocolError(
                    f"Kite {what}: HTTP {status} {error_type or ''} {message}".rstrip()
                )
            return None

        return await send_with_retries(
            send,
            judge,
            what=f"Kite {what}",
            attempts=attempts or self._max_attempts,
            base_s=self._backoff_base_s,
            cap_s=self._backoff_cap_s,
        )


def _kite_time(ts: datetime) -> str:
    return ts.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S")


def _error_of(resp: httpx.Response) -> tuple[str | None, str]:
    if resp.status_code < 400:
        return None, ""
    try:
        body = resp.json()
    except ValueError:
        return None, ""
    if not isinstance(body, dict):
        return None, ""
    error_type = body.get("error_type")
    return (error_type if isinstance(error_type, str) else None), str(body.get("message", ""))[:200]


def _json_data(resp: httpx.Response, what: str) -> Any:
    try:
        body = resp.json()
    except ValueError as exc:
        raise BrokerProtocolError(f"Kite {what}: answer is not JSON") from exc
    if not isinstance(body, dict) or body.get("status") != "success" or "data" not in body:
        raise BrokerProtocolError(f"Kite {what}: unexpected answer shape")
    return body["data"]


def parse_kite_timestamp(value: str) -> datetime:
    """``2024-01-01T09:15:00+0530`` -> aware datetime (Kite's candle timestamps carry +0530)."""
    ts = datetime.fromisoformat(value)
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=IST)  # Kite's clock is IST


def kite_candles(data: Any, timeframe: Timeframe) -> list[Candle]:
    """``{"candles": [[ts, open, high, low, close, volume, oi?], ...]}`` -> candles."""
    rows = data.get("candles") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise BrokerProtocolError("Kite history: no candles list in the answer")
    out = []
    try:
        for row in rows:
            oi = int(row[6]) if len(row) > 6 and row[6] is not None else None
            out.append(
                Candle(
                    bucket=parse_kite_timestamp(row[0]),
                    open=float(row[1]),
                    high=float(row[2]),
                    low=float(row[3]),
                    close=float(row[4]),
                    volume=int(row[5]),
                    open_interest=oi,
                    source="broker",
                    timeframe=timeframe,
                )
            )
    except (TypeError, ValueError, IndexError) as exc:
        raise BrokerProtocolError("Kite history: a candle row could not be read") from exc
    return out
