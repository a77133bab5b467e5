"""Errors to HTTP answers: a status, a machine-readable ``code`` and a clear ``detail``.

Bad input is a 4xx that says what to change; a broker that needs a login, or a database or Redis
that cannot be reached, is a 503 that says so. Only the tree's errors are mapped: low-level
database and Redis errors were wrapped below the routes (``api/deps.py``). Nothing reaches the
client as a stack trace: an unexpected error is logged here and answered with a bare 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from trading_helper import errors as e
from trading_helper.redact import redact

log = logging.getLogger(__name__)

#: most specific first: the first class that matches decides the status
_STATUS: list[tuple[type[e.TradingHelperError], int]] = [
    (e.UnknownInstrument, 404),
    (e.UnknownAlert, 404),
    (e.InvalidReference, 422),
    (e.InvalidStudy, 422),
    (e.InvalidAlert, 422),
    (e.AlertLimitReached, 409),
    (e.ValidationError, 400),
    (e.LoginRequired, 503),
    (e.RateLimited, 503),
    (e.SubscriptionLimitExceeded, 409),
    (e.BrokerUnavailable, 502),
    (e.BrokerProtocolError, 502),
    (e.BrokerError, 502),
    (e.QueryFailed, 500),
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


#: the answer's detail for a wrapped database or Redis failure, whose own text names hosts and
#: statements (it is logged instead)
_WRAPPED_DETAIL: list[tuple[type[e.TradingHelperError], str]] = [
    (e.DatabaseUnavailable, "the database cannot be reached right now; try again shortly"),
    (
        e.QueryTimeout,
        "the database did not answer within the API's statement timeout (a long query or a lock); try again shortly",
    ),
    (e.DatabaseBusy, "the database is busy right now; try again shortly"),
    (e.BufferUnavailable, "Redis cannot be reached right now; try again shortly"),
    (e.QueryFailed, "internal error (logged on the server)"),
]


def _detail(exc: e.TradingHelperError) -> str:
    if isinstance(exc, e.LoginRequired):
        return f"broker login needed: {exc.message}"
    if exc.__cause__ is not None:
        for cls, text in _WRAPPED_DETAIL:
            if isinstance(exc, cls):
                return text
    return exc.message


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.TradingHelperError)
    status = status_of(exc)
    if status == 500:
        log.error(
            "%s %s -> 500 %s: %s", request.method, request.url.path, exc.code, exc.message, exc_info=exc
        )
    elif status > 500:
        log.warning("%s %s -> %d %s: %s", request.method, request.url.path, status, exc.code, exc.message)
    headers = {"Retry-After": "5"} if status == 503 and e.should_retry(exc) else None
    extra = {"reason": exc.reason} if isinstance(exc, e.InvalidAlert) else {}
    return JSONResponse(error_body(exc.code, _detail(exc), **extra), status_code=status, headers=headers)


#: codes of the HTTP errors raised by FastAPI and Starlette themselves (auth, routing)
_HTTP_CODES = {400: "invalid_body", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        error_body(_HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail)),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        problems.append({"field": where, "message": err.get("msg", "invalid")})
    detail = "; ".join(f"{p['field'] or 'request'}: {p['message']}" for p in problems) or "invalid request"
    return JSONResponse(error_body("invalid_request", detail, errors=problems), status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal", "internal error (logged on the server)"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(e.TradingHelperError, _domain)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
