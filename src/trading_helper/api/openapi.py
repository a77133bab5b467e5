"""The answers that come from layers around the routes, for the OpenAPI document, in one place.

The bearer gate answers 401 on every ``/api`` route, the body limit 413 on every route that reads
a body (and FastAPI 400 on a body it cannot decode), our validation handler 422 as ``{"detail",
"code", "errors"}`` (not FastAPI's default ``HTTPValidationError``, a shape we never send), and a
database or Redis out of reach 503.
``PROTECTED`` goes on each ``/api`` router where it is included; a route lists ``WITH_PARAMS`` or
``WITH_BODY`` in its own ``responses`` (a declared 422 replaces FastAPI's default one).
``tests/api/test_schemathesis.py`` checks that no operation misses one.
"""

from __future__ import annotations

from typing import Any, Final

from trading_helper.api.schemas import ErrorOut, InvalidRequestOut

Responses = dict[int | str, dict[str, Any]]

UNAUTHORIZED: Final = {"model": ErrorOut, "description": "missing or wrong bearer token (`unauthorized`)"}
UNAVAILABLE: Final = {
    "model": ErrorOut,
    "description": "the database or Redis cannot be reached, or a broker login is needed",
}
NOT_JSON: Final = {"model": ErrorOut, "description": "the body cannot be read as JSON text (`invalid_body`)"}
TOO_LARGE: Final = {
    "model": ErrorOut,
    "description": "body larger than API_MAX_BODY_BYTES (`body_too_large`)",
}
INVALID: Final = {
    "model": InvalidRequestOut,
    "description": "the request does not fit the schema (`invalid_request`, each field in `errors`), "
    "or an instrument reference outside the grammar (`invalid_reference`)",
}

PROTECTED: Final[Responses] = {401: UNAUTHORIZED, 503: UNAVAILABLE}
WITH_PARAMS: Final[Responses] = {422: INVALID}
WITH_BODY: Final[Responses] = {400: NOT_JSON, 413: TOO_LARGE, 422: INVALID}
