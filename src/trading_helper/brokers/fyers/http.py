"""Fyers API v3 over HTTP (async httpx): login exchange, symbol masters, history, symbol tokens.

One client per broker instance, one rate limiter shared by every caller of it; 429, 5xx and
network errors are retried with capped exponential backoff and jitter, auth errors never are.
The access token is re-read from the token store on every request (a morning login reaches a
running service) and never appears in a message or a log line.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx

from trading_helper.brokers.fyers import constants as C
from trading_helper.brokers.fyers.instruments import parse_symbol_master
from trading_helper.brokers.fyers.parsing import epoch_to_ist
from trading_helper.brokers.history import history_chunks
from trading_helper.brokers.retry import RateLimiter, send_with_retries
from trading_helper.brokers.tokens import load_token, redact
from trading_helper.config import Settings
from trading_helper.errors import (
    BrokerError,
    BrokerProtocolError,
    BrokerUnavailable,
    LoginRequired,
    RateLimited,
    UnknownInstrument,
)
from trading_helper.models import Candle, Instrument
from trading_helper.timeframes import Timeframe

log = logging.getLogger(__name__)

#: Fyers' code for "invalid symbol" (history, quotes)
CODE_INVALID_SYMBOL = -300


def app_id_hash(app_id: str, secret: str) -> str:
    """``appIdHash`` for validate-authcode. The official client (fyersModel.SessionModel.get_hash)
    hashes ``f"{client_id}:{secret_key}"`` with SHA-256; we trust it over the docs' wording."""
    return hashlib.sha256(f"{app_id}:{secret}".encode()).hexdigest()


class FyersHttp:
    def __init__(
        self,
        settings: Settings,
        *,
        client: httpx.AsyncClient | None = None,
        limiter: RateLimiter | None = None,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self._settings = settings
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))
        self._limiter = limiter or RateLimiter(C.REQUESTS_PER_SECOND, 1.0, (C.REQUESTS_PER_MINUTE, 60.0))
        self._max_attempts = max(1, max_attempts)
        self._backoff = (backoff_initial_s, backoff_max_s)
        #: rows of the last symbol master download that could not be read, per file
        self.rejected_rows: dict[str, int] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    def _api(self, path: str) -> str:
        return self._settings.FYERS_API_URL.rstrip("/") + path

    def _token(self) -> str:
        token = load_token(self._settings, C.BROKER_NAME)
        if not token:
            raise LoginRequired("no Fyers access token: run `trading-helper login fyers`")
        return token

    # --- the one request path ----------------------------------------------------------------
    async def _request(
        self, method: str, url: str, *, auth: str | None, limited: bool = True, **kwargs: Any
    ) -> httpx.Response:
        headers = {"version": "3"}
        if auth is not None:
            headers["Authorization"] = auth

        async def send() -> httpx.Response:
            if limited:
                await self._limiter.acquire()
            return await self._client.request(method, url, headers=headers, **kwargs)

        def judge(response: httpx.Response) -> BrokerError | None:
            status = response.status_code
            if status in (401, 403):
                return LoginRequired(f"Fyers refused the access token (HTTP {status}): log in again")
            if status == 429:
                return RateLimited(
                    f"Fyers {_path(url)}: rate limited (HTTP 429)", retry_after_s=_retry_after(response)
                )
            if status >= 500:
                return BrokerUnavailable(f"Fyers {_path(url)}: HTTP {status}")
            return None

        return await send_with_retries(
            send,
            judge,
            what=f"Fyers {_path(url)}",
            attempts=self._max_attempts,
            base_s=self._backoff[0],
            cap_s=self._backoff[1],
        )

    def _json(self, response: httpx.Response, what: str, token: str = "") -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            raise BrokerProtocolError(f"Fyers {what}: not JSON (HTTP {response.status_code})") from exc
        if not isinstance(body, dict):
            raise BrokerProtocolError(f"Fyers {what}: unexpected answer (HTTP {response.status_code})")
        if body.get("s") == "error" or response.status_code >= 400:
            code = body.get("code")
            message = str(body.get("message", ""))[:200]
            if token:
                message = message.replace(token, redact(token))
            if code in C.AUTH_ERROR_CODES:
                raise LoginRequired(f"Fyers {what}: {message or 'token invalid or expired'} (code {code})")
            if code == CODE_INVALID_SYMBOL:
                raise UnknownInstrument(f"Fyers {what}: {message or 'invalid symbol'} (code {code})")
            raise BrokerProtocolError(
                f"Fyers {what}: {message or 'error'} (code {code}, HTTP {response.status_code})"
            )
        return body

    # --- login -------------------------------------------------------------------------------
    async def validate_authcode(self, auth_code: str, secret: str) -> str:
        """Exchange an auth code for an access token (fyersModel.SessionModel.generate_token)."""
        payload = {
            "grant_type": "authorization_code",
            "appIdHash": app_id_hash(self._settings.FYERS_APP_ID, secret),
            "code": auth_code,
        }
        response = await self._request("POST", self._api(C.PATH_VALIDATE_AUTHCODE), auth=None, json=payload)
        try:
            body = self._json(response, "validate-authcode")
        except BrokerProtocolError as exc:  # a refused code/hash is a failed login, not a bug
            raise LoginRequired(f"{exc} : check the app id, the secret and use a fresh auth code") from exc
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise BrokerProtocolError("Fyers validate-authcode: no access_token in the answer")
        return token

    # --- instruments -------------------------------------------------------------------------
    async def fetch_instruments(self) -> list[Instrument]:
        base = self._settings.FYERS_SYMBOL_MASTER_URL.rstrip("/")
        instruments: list[Instrument] = []
        for file_name, exchange in C.SYMBOL_MASTER_FILES.items():
            # public files on another host: not counted against the API rate limit
            response = await self._request("GET", f"{base}/{file_name}.csv", auth=None, limited=False)
            if response.status_code >= 400:
                raise BrokerProtocolError(f"Fyers symbol master {file_name}: HTTP {response.status_code}")
            parsed, rejected = parse_symbol_master(response.text, file_name, exchange)
            self.rejected_rows[file_name] = rejected
            if rejected:
                log.warning("Fyers symbol master %s: %d rows not understood", file_name, rejected)
            instruments.extend(parsed)
        return instruments

    # --- history -----------------------------------------------------------------------------
    async def history(
        self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> list[Candle]:
        """Candles with bucket in [start, end): one request per allowed span, in order."""
        resolution = C.TIMEFRAME_TO_RESOLUTION[timeframe]
        candles: dict[datetime, Candle] = {}
        for chunk_start, chunk_end in history_chunks(start, end, C.RESOLUTION_MAX_SPAN[resolution]):
            for candle in await self._history_chunk(symbol, timeframe, resolution, chunk_start, chunk_end):
                if start <= candle.bucket < end:
                    candles[candle.bucket] = candle
        return [candles[bucket] for bucket in sorted(candles)]

    async def _history_chunk(
        self, symbol: str, timeframe: Timeframe, resolution: str, start: datetime, end: datetime
    ) -> list[Candle]:
        token = self._token()
        first = int(start.timestamp())
        # range_to is inclusive at Fyers: stop one second before the chunk's end so a span is
        # never longer than the allowed maximum and chunks never overlap
        last = max(first, int(end.timestamp()) - (0 if end.timestamp() % 1 else 1))
        params = {
            "symbol": symbol,
            "resolution": resolution,
            "date_format": "0",
            "range_from": str(first),
            "range_to": str(last),
            "cont_flag": "1",
            "oi_flag": "1",
        }
        response = await self._request(
            "GET", self._api(C.PATH_HISTORY), auth=f"{self._settings.FYERS_APP_ID}:{token}", params=params
        )
        body = self._json(response, "history", token)
        rows = body.get("candles") or []
        if not isinstance(rows, list):
            raise BrokerProtocolError("Fyers history: candles is not a list")
        return [_candle(row, timeframe) for row in rows]

    # --- data socket topics ------------------------------------------------------------------
    async def symbol_tokens(self, symbols: Sequence[str]) -> tuple[dict[str, str], list[str]]:
        """symbol -> fytoken for the data socket, and the symbols Fyers does not know.

        data_ws.SymbolConversion posts 500 symbols at a time and sends the bare access token
        (it strips ``APPID:``) as Authorization; we do the same.
        """
        valid: dict[str, str] = {}
        invalid: list[str] = []
        for i in range(0, len(symbols), C.SYMBOL_TOKEN_BATCH):
            batch = list(symbols[i : i + C.SYMBOL_TOKEN_BATCH])
            token = self._token()
            response = await self._request(
                "POST", self._api(C.PATH_SYMBOL_TOKEN), auth=token, json={"symbols": batch}
            )
            body = self._json(response, "symbol-token", token)
            found = body.get("validSymbol") or {}
            if not isinstance(found, dict):
                raise BrokerProtocolError("Fyers symbol-token: validSymbol is not a mapping")
            valid.update({str(k): str(v) for k, v in found.items()})
            invalid.extend(str(s) for s in body.get("invalidSymbol") or [])
        return valid, invalid


def _candle(row: object, timeframe: Timeframe) -> Candle:
    """``[epoch_start, open, high, low, close, volume]`` plus ``oi`` with oi_flag=1."""
    if not isinstance(row, list) or len(row) < 6:
        raise BrokerProtocolError("Fyers history: a candle is not [t, o, h, l, c, v(, oi)]")
    try:
        oi = row[6] if len(row) > 6 else None
        return Candle(
            bucket=epoch_to_ist(int(row[0])),
            open=float(row[1]),
            high=float(row[2]),
            low=float(row[3]),
            close=float(row[4]),
            volume=int(row[5]),
            open_interest=int(oi) if oi is not None else None,
            source="broker",
            timeframe=timeframe,
        )
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise BrokerProtocolError("Fyers history: a candle has a value that is not a number") from exc


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _path(url: str) -> str:
    return httpx.URL(url).path
