"""JSON of large documents built as plain data (the option chain: about 160 kB for 200 strikes),
encoded by orjson: fifteen to twenty times faster than the standard library's encoder on the chain,
which cost more than its IV and Greeks. NaN and infinities become ``null`` (JSON has neither);
NumPy scalars are written as numbers."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def dumps(doc: Any) -> bytes:
    """Compact JSON (UTF-8) of ``doc``."""
    return orjson.dumps(doc, option=_OPTIONS)


def json_response(doc: Any) -> Response:
    """``doc`` as an ``application/json`` answer (no response model: it is built as plain data)."""
    return Response(dumps(doc), media_type="application/json")
