"""Kite instruments master CSV (``GET /instruments``, gzipped) -> Instruments. No I/O.

The file has a header row with the columns of ``constants.INSTRUMENT_COLUMNS``; a missing column
is a protocol error, a row that cannot be read is skipped and counted.
"""

from __future__ import annotations

import csv
import io
import logging
from datetime import date

from trading_helper.brokers.kite import constants as c
from trading_helper.errors import BrokerProtocolError
from trading_helper.models import Instrument

log = logging.getLogger(__name__)


def kite_csv_to_instruments(text: str) -> list[Instrument]:
    """The instruments master CSV -> instruments with ``broker_ids={"kite": instrument_token}``.

    A row that cannot be read is skipped and counted in the log, so one odd row does not cost
    the whole master; a missing column is a protocol error.
    """
    reader = csv.DictReader(io.StringIO(text))
    missing = set(c.INSTRUMENT_COLUMNS) - set(reader.fieldnames or ())
    if missing:
        raise BrokerProtocolError(f"Kite instruments: missing columns {sorted(missing)}")
    out: list[Instrument] = []
    skipped = 0
    for row in reader:
        try:
            out.append(_instrument(row))
        except (TypeError, ValueError):
            skipped += 1
    if skipped:
        log.warning("Kite instruments: skipped %d unreadable rows of %d", skipped, skipped + len(out))
    return out


def _instrument(row: dict[str, str]) -> Instrument:
    token = int(row["instrument_token"])
    strike = float(row["strike"] or 0)
    expiry = row["expiry"].strip()
    instrument_type = row["instrument_type"].strip()
    return Instrument(
        exchange=row["exchange"].strip(),
        tradingsymbol=row["tradingsymbol"].strip(),
        segment=row["segment"].strip(),
        instrument_type=instrument_type,
        name=row["name"].strip(),
        expiry=date.fromisoformat(expiry) if expiry else None,
        strike=strike or None,
        option_type=instrument_type if instrument_type in ("CE", "PE") else None,
        lot_size=int(float(row["lot_size"] or 1)),
        tick_size=float(row["tick_size"] or 0),
        broker_ids={c.BROKER_NAME: str(token)},
        broker_aux_ids={c.BROKER_NAME: row["exchange_token"].strip()}
        if row["exchange_token"].strip()
        else {},
    )
