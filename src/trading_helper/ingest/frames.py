"""One received frame's ticks as the receiver stores them: a record payload and quote values.

Of a frame the receiver needs only its record payload (the stream entry and the live fan-out,
:mod:`.codec`'s layout), each tick's instrument id and latest-quote value, and the newest
exchange time. An :class:`EncodedFrame` carries those. A parser that can build them for a whole
frame at once, without a :class:`Tick` per tick (Kite's full packets, with numpy:
``brokers/kite/frames.py``), hands one to its sink; any other list of ticks is encoded here by
:func:`encoded`. Either is also a sequence of ticks, so every sink can read it as ticks (a frame
built without them makes them when first asked).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import overload

import numpy as np

from trading_helper.ingest.codec import RECORD_DTYPE, TICK_SIZE, encode_ticks, quote_value
from trading_helper.ingest.volume import from_us
from trading_helper.models import Tick

#: a depth level in a quote value: (price, quantity, orders), packed as :mod:`.codec` packs it
LEVEL_DTYPE = np.dtype([("p", "<f8"), ("q", "<i8"), ("o", "<i4")])
#: a frame builder's row: the record, the bid and ask counts, then up to ``levels`` levels (bids
#: first, then asks); a quote value is the first ``QUOTE_HEAD + LEVEL_DTYPE.itemsize * (bids +
#: asks)`` bytes of it, exactly :func:`.codec.quote_value`'s bytes
QUOTE_HEAD = TICK_SIZE + 2


def quote_dtype(levels: int) -> np.dtype[np.void]:
    return np.dtype([("rec", RECORD_DTYPE), ("nb", "u1"), ("na", "u1"), ("lv", LEVEL_DTYPE, (levels,))])


class EncodedFrame(Sequence[Tick], abc.ABC):
    """The ticks of one frame, encoded: :attr:`payload`, :attr:`instrument_ids`, :meth:`quote`."""

    #: the records of the frame's ticks, in order (:func:`.codec.encode_ticks`'s bytes)
    payload: bytes
    #: each tick's instrument id, in order
    instrument_ids: list[int]

    @abc.abstractmethod
    def quote(self, i: int) -> bytes:
        """The latest-quote value of tick ``i`` (:func:`.codec.encode_quote`'s bytes)."""

    @abc.abstractmethod
    def newest(self) -> datetime:
        """The newest exchange time in the frame (the frame is not empty)."""

    @abc.abstractmethod
    def ticks(self) -> list[Tick]:
        """The frame as ticks."""

    def __len__(self) -> int:
        return len(self.instrument_ids)

    @overload
    def __getitem__(self, i: int) -> Tick: ...
    @overload
    def __getitem__(self, i: slice) -> list[Tick]: ...
    def __getitem__(self, i: int | slice) -> Tick | list[Tick]:
        return self.ticks()[i]

    def __iter__(self) -> Iterator[Tick]:
        return iter(self.ticks())


class TickList(EncodedFrame):
    """A list of ticks, encoded record by record (timestamps must be aware)."""

    def __init__(self, ticks: Sequence[Tick]) -> None:
        self._ticks = list(ticks)
        self.payload = encode_ticks(self._ticks)
        self.instrument_ids = [t.instrument_id for t in self._ticks]

    def quote(self, i: int) -> bytes:
        return quote_value(self.payload[i * TICK_SIZE : (i + 1) * TICK_SIZE], self._ticks[i])

    def newest(self) -> datetime:
        return max(t.exchange_ts for t in self._ticks)

    def ticks(self) -> list[Tick]:
        return self._ticks


class RowFrame(EncodedFrame):
    """A frame built as rows of :func:`quote_dtype` (records, depth counts, levels) at once; its
    ticks come from ``make_ticks`` when asked for (the parser's own scalar path)."""

    def __init__(
        self, rows: np.ndarray, instrument_ids: list[int], make_ticks: Callable[[], list[Tick]]
    ) -> None:
        self.payload = rows["rec"].tobytes()
        self.instrument_ids = instrument_ids
        self._rows = rows.tobytes()
        self._width = rows.dtype.itemsize
        levels = rows["nb"].astype(np.int64) + rows["na"]
        self._ends = (
            np.arange(len(rows)) * self._width + QUOTE_HEAD + LEVEL_DTYPE.itemsize * levels
        ).tolist()
        self._newest = int(rows["rec"]["ex"].max()) if len(rows) else 0
        self._make_ticks = make_ticks
        self._ticks: list[Tick] | None = None

    def quote(self, i: int) -> bytes:
        return self._rows[i * self._width : self._ends[i]]

    def newest(self) -> datetime:
        return from_us(self._newest)

    def ticks(self) -> list[Tick]:
        if self._ticks is None:
            self._ticks = self._make_ticks()
        return self._ticks


def encoded(ticks: Sequence[Tick]) -> EncodedFrame:
    """``ticks`` as an :class:`EncodedFrame` (itself when it is one)."""
    return ticks if isinstance(ticks, EncodedFrame) else TickList(ticks)
