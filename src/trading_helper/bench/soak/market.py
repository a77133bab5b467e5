"""The simulated market of the soak: instruments, and every tick of every day, seeded and known ahead.

Per instrument and trading day: trades in the pre-open (09:00-09:08 IST, sparse) and the session
(09:15-15:30 IST), at most one per exchange second (Kite stamps seconds; one per second keeps
first/last of a bucket unambiguous), a random walk in ticks of 0.05, a cumulative volume that is
the running sum of the trade quantities; between trades, quote-only updates (the depth moves, the
last trade does not). Each tick is sent late by 0.1-1 s, one in twenty by up to 3 s, in exchange
order per instrument (Kite's ticks are late, not shuffled).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from trading_helper.bench.soak.oracle import IST, WIDTHS, bucket_of

PRE_OPEN = (time(9, 0), time(9, 8))
SESSION = (time(9, 15), time(15, 30))
#: the price a CHECK constraint added by the soak refuses (the poison row)
POISON_PRICE = 9999.95


@dataclass(frozen=True, slots=True)
class SoakInstrument:
    token: int
    symbol: str
    base_price: float


@dataclass(frozen=True, slots=True)
class SoakTick:
    token: int
    epoch: int  # exchange time, epoch seconds
    trade_epoch: int  # time of the last trade
    price: float
    quantity: int
    volume: int  # cumulative today
    bid_paise: int
    trade: bool  # False: a quote-only update (same last trade)
    send_at: float  # simulated epoch seconds at which it is sent


def _at(day: date, clock: time) -> int:
    return int(datetime.combine(day, clock, tzinfo=IST).timestamp())


class Market:
    def __init__(
        self, instruments: int, days: list[date], *, seed: int = 10, poison: dict[date, int] | None = None
    ) -> None:
        self.instruments = [
            SoakInstrument((5000 + i) << 8 | 1, f"SOAK{i:03d}", 100.0 + 37 * i) for i in range(instruments)
        ]
        self.days = days
        self.seed = seed
        #: day -> simulated epoch from which the first trade of the first instrument is the poison
        self.poison = poison or {}
        self.ticks: dict[date, list[SoakTick]] = {d: self._day(d) for d in days}
        by_token: dict[int, list[SoakTick]] = {}
        for d in days:
            for t in self.ticks[d]:
                by_token.setdefault(t.token, []).append(t)
        for rows in by_token.values():
            rows.sort(key=lambda t: t.epoch)
        self.by_token = by_token
        self._epochs = {tok: [t.epoch for t in rows] for tok, rows in by_token.items()}

    def _day(self, day: date) -> list[SoakTick]:
        out: list[SoakTick] = []
        poison_at = self.poison.get(day)
        for n, inst in enumerate(self.instruments):
            rng = random.Random(f"{self.seed}:{inst.token}:{day.isoformat()}")
            steps = round(inst.base_price * 20)
            volume, last_trade, send_prev = 0, 0, 0.0
            poisoned = poison_at is None or n != 0
            for lo, hi, rate in ((*PRE_OPEN, 0.15), (*SESSION, 0.5)):
                for epoch in range(_at(day, lo), _at(day, hi)):
                    u = rng.random()
                    if u < rate:
                        steps += rng.choice((-1, 0, 1))
                        qty = rng.randint(1, 50)
                        price = round(steps * 0.05, 2)
                        if not poisoned and poison_at is not None and epoch >= poison_at:
                            price, poisoned = POISON_PRICE, True
                        volume += qty
                        last_trade, trade = epoch, True
                    elif u < rate + 0.05 and last_trade:
                        qty, price, trade = out[-1].quantity, out[-1].price, False
                    else:
                        continue
                    late = rng.uniform(1.0, 3.0) if rng.random() < 0.05 else rng.uniform(0.1, 1.0)
                    send_prev = max(send_prev, epoch + late)
                    out.append(
                        SoakTick(
                            inst.token,
                            epoch,
                            last_trade,
                            price,
                            qty,
                            volume,
                            round(price * 100) - 5 - rng.randint(0, 3) * 5,
                            trade,
                            send_prev,
                        )
                    )
        out.sort(key=lambda t: t.send_at)
        return out

    def trades_between(self, token: int, start: datetime, end: datetime) -> list[SoakTick]:
        """Trades of ``token`` with exchange times in [start, end)."""
        rows, epochs = self.by_token.get(token, []), self._epochs.get(token, [])
        i, j = bisect.bisect_left(epochs, start.timestamp()), bisect.bisect_left(epochs, end.timestamp())
        return [t for t in rows[i:j] if t.trade]

    def previous_trade(self, token: int, before: datetime) -> SoakTick | None:
        """The last trade of ``token`` before ``before`` on the same IST day, if any."""
        rows, epochs = self.by_token.get(token, []), self._epochs.get(token, [])
        day = before.astimezone(IST).date()
        for k in range(bisect.bisect_left(epochs, before.timestamp()) - 1, -1, -1):
            t = rows[k]
            if datetime.fromtimestamp(t.epoch, IST).date() != day:
                return None
            if t.trade:
                return t
        return None

    def broker_candles(
        self, token: int, timeframe: str, start: datetime, end: datetime
    ) -> dict[datetime, tuple[float, float, float, float, int]]:
        """What Kite's historical API answers: candles of every trade (1d stamped at 00:00 IST)."""
        out: dict[datetime, list[SoakTick]] = {}
        lo = start - WIDTHS[timeframe] if timeframe != "1d" else start
        for t in self.trades_between(token, lo, end + WIDTHS[timeframe]):
            ts = datetime.fromtimestamp(t.epoch, IST)
            if timeframe == "1d":
                stamp = ts.replace(hour=0, minute=0, second=0)
            else:
                stamp = bucket_of(ts, WIDTHS[timeframe])
            if start <= stamp < end:
                out.setdefault(stamp, []).append(t)
        return {
            b: (
                rows[0].price,
                max(r.price for r in rows),
                min(r.price for r in rows),
                rows[-1].price,
                sum(r.quantity for r in rows),
            )
            for b, rows in out.items()
        }


def session_bounds(day: date) -> tuple[datetime, datetime]:
    return (datetime.combine(day, PRE_OPEN[0], tzinfo=IST), datetime.combine(day, SESSION[1], tzinfo=IST))


def width_of(timeframe: str) -> timedelta:
    return WIDTHS[timeframe]
