"""Errors to HTTP answers: a status, a machine-readable ``code`` and a clear ``detail``.

Bad input is a 4xx that says what to change; a broker that needs a login, or a database or Redis
that cannot be reached, is a 503 that says so. Nothing reaches the client as a stack trace: an
unexpected error is logged here and answered with a bare 500.
"""

from __future__ import annotations

import logging

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException

from trading_helper import errors as e
from trading_helper.redact import redact

log = logging.getLogger(__name__)

#: most specific first: the first class that matches decides the status
_STATUS: list[tuple[type[e.TradingHelperError], int]] = [
    (e.UnknownInstrument, 404),
    (e.InvalidReference, 422),
    (e.ValidationError, 400),
    (e.LoginRequired, 503),
    (e.RateLimited, 503),
    (e.SubscriptionLimitExceeded, 409),
    (e.BrokerUnavailable, 502),
    (e.BrokerProtocolError, 502),
    (e.BrokerError, 502),
    (e.StorageError, 503),
    (e.IngestError, 503),
    (e.ConfigError, 503),
]


def status_of(exc: e.TradingHelperError) -> int:
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def error_body(code: str, detail: str, **extra: object) -> dict[str, object]:
    """Every error answer; its detail may quote a broker or a DSN, so it is redacted here."""
    return {"detail": redact(detail), "code": code, **extra}


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.TradingHelperError)
    status = status_of(exc)
    detail = exc.message
    if isinstance(exc, e.LoginRequired):
        detail = f"broker login needed: {exc.message}"
    if status >= 500:
        log.warning("%s %s -> %d %s: %s", request.method, request.url.path, status, exc.code, exc.message)
    headers = {"Retry-After": "5"} if isinstance(exc, e.RateLimited | e.StorageError) else None
    return JSONResponse(error_body(exc.code, detail), status_code=status, headers=headers)


#: codes of the HTTP errors raised by FastAPI and Starlette themselves (auth, routing)
_HTTP_CODES = {400: "invalid_body", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse(error_body(_HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail)),
                        status_code=exc.status_code, headers=exc.headers)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        problems.append({"field": where, "message": err.get("msg", "invalid")})
    detail = "; ".join(f"{p['field'] or 'request'}: {p['message']}" for p in problems) or "invalid request"
    return JSONResponse(error_body("invalid_request", detail, errors=problems), status_code=422)


#: low-level errors that reach a route, by what they mean (the first class that matches decides)
_LOW_LEVEL: list[tuple[tuple[type[Exception], ...], type[e.TradingHelperError], str, str]] = [
    ((asyncpg.QueryCanceledError,), e.QueryTimeout, "query_timeout",
     "the database did not answer within the API's statement timeout (a long query or a lock); try again shortly"),
    ((RedisConnectionError, RedisTimeoutError), e.BufferUnavailable, "redis_unavailable",
     "Redis cannot be reached right now; try again shortly"),
    ((OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
      asyncpg.CannotConnectNowError), e.DatabaseUnavailable, "database_unavailable",
     "the database cannot be reached right now; try again shortly"),
]


def low_level_error(exc: BaseException) -> e.TradingHelperError | None:
    """The domain error a low-level database or Redis error stands for (None: not one of them)."""
    for classes, domain, code, detail in _LOW_LEVEL:
        if isinstance(exc, classes):
            error = domain(detail)
            error.code = code
            return error
    return None


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    domain = low_level_error(exc) or e.DatabaseUnavailable("the database cannot be reached right now")
    log.warning("%s %s -> 503 %s: %s: %s", request.method, request.url.path, domain.code, type(exc).__name__, exc)
    return JSONResponse(error_body(domain.code, domain.message), status_code=503, headers={"Retry-After": "5"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal", "internal error (logged on the server)"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(e.TradingHelperError, _domain)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http)
    for classes, *_ in _LOW_LEVEL:
        for cls in classes:
            app.add_exception_handler(cls, _unavailable)
    app.add_exception_handler(Exception, _unexpected)
