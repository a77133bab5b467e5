"""The simulator's market against the exchange's rules, each checked from its own source: NSE's
calendar straight from pandas_market_calendars, Kite's symbol formats, NSE's strike steps."""

from __future__ import annotations

import calendar
import functools
import itertools
import re
from datetime import date, datetime, timedelta

import pandas_market_calendars as mcal

from trading_helper.brokers.sim import SimBroker, SimFeed, sim_instruments
from trading_helper.brokers.sim.contracts import contract_token, decode_token
from trading_helper.brokers.sim.market import previous_close
from trading_helper.config import Settings
from trading_helper.models import Candle
from trading_helper.timeframes import IST, Timeframe

TODAY = date(2025, 12, 2)  # a Tuesday: the weekly of 12-09, the monthly of 12-30
NSE = mcal.get_calendar("NSE")
SIM = SimBroker(Settings())


def nse_sessions(first: date, last: date) -> list[date]:
    return sorted(NSE.schedule(first.isoformat(), last.isoformat()).index.date)


@functools.cache
def monthly_expiry(year: int, month: int) -> date:
    """The month's last Tuesday, or the NSE session before it (the calendar read here)."""
    days = calendar.monthrange(year, month)[1]
    last_tuesday = max(d for n in range(1, days + 1) if (d := date(year, month, n)).weekday() == 1)
    return nse_sessions(last_tuesday - timedelta(days=7), last_tuesday)[-1]


def midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=IST)


async def history(token: str, tf: str, first: date, last: date) -> list[Candle]:
    return await SIM.fetch_history(token, Timeframe(tf), midnight(first), midnight(last + timedelta(days=1)))


async def test_levels_are_near_the_real_ones_and_each_day_opens_near_the_last_close() -> None:
    days = nse_sessions(date(2025, 6, 1), date(2025, 12, 31))
    for token, low, high in (("100001", 23_000, 27_500), ("100002", 48_000, 59_000)):
        daily = await history(token, "1d", days[0], days[-1])
        assert [c.bucket.astimezone(IST).date() for c in daily] == days
        assert all(low < c.low <= c.high < high for c in daily), token
        assert len({round(c.close) for c in daily}) > len(days) * 0.9  # the level does move
        minutes = await history(token, "1m", days[0], days[-1])
        first_open: dict[date, float] = {}
        last_close: dict[date, float] = {}
        for c in minutes:
            day = c.bucket.astimezone(IST).date()
            first_open.setdefault(day, c.open)
            last_close[day] = c.close
        for before, after in itertools.pairwise(days):
            gap = first_open[after] / last_close[before] - 1
            assert abs(gap) < 0.012, (token, after, gap)  # a small overnight gap, not a new level


async def test_no_broker_bars_on_nse_holidays_or_weekends_nor_after_expiry() -> None:
    first, last = date(2025, 8, 1), date(2026, 3, 31)
    sessions = set(nse_sessions(first, last))
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    holidays = [d for d in days if d.weekday() < 5 and d not in sessions]
    assert len(holidays) >= 8
    for token in ("100001", "100003", sim_instruments(60, TODAY)[-1].broker_ids["sim"]):
        daily = await history(token, "1d", first, last)
        days = {c.bucket.astimezone(IST).date() for c in daily}
        assert days and days <= sessions
        contract = decode_token(token)
        assert contract is not None
        if contract.expiry is not None:  # listed 8 or 13 weeks before it expires, and traded until then
            assert max(days) == contract.expiry and min(days) >= contract.expiry - timedelta(weeks=13)
    minutes = await history("100003", "1m", date(2025, 10, 20), date(2025, 10, 23))
    per_day: dict[date, int] = {}
    for c in minutes:
        per_day[c.bucket.astimezone(IST).date()] = per_day.get(c.bucket.astimezone(IST).date(), 0) + 1
    # 10-21 is Diwali: only the one-hour Muhurat session; 10-22 a holiday; the others 09:15-15:30
    assert per_day == {date(2025, 10, 20): 375, date(2025, 10, 21): 60, date(2025, 10, 23): 375}


async def test_open_interest_only_on_futures_and_options_and_no_volume_on_indices() -> None:
    items = sim_instruments(120, TODAY)
    kinds = {i.instrument_type for i in items}
    assert kinds == {"INDEX", "EQ", "FUT", "CE", "PE"}
    feed = SimFeed(Settings())
    await feed.subscribe({i.broker_ids["sim"]: n for n, i in enumerate(items)})
    now = datetime(2025, 12, 2, 10, 30, tzinfo=IST)
    frame = feed.make_frame(5000, now)
    assert {items[t.instrument_id].instrument_type for t in frame} == kinds
    for tick in frame:
        kind = items[tick.instrument_id].instrument_type
        assert (tick.open_interest is not None) == (kind in ("FUT", "CE", "PE")), kind
        if kind == "INDEX":
            assert tick.volume is None and tick.last_quantity is None and tick.bid_price is None
        else:
            assert tick.volume and tick.last_quantity and tick.bid_price and tick.ask_price
            assert tick.bid_price < tick.ask_price
            assert tick.last_quantity % items[tick.instrument_id].lot_size == 0
    for inst in items[:6]:
        bars = await history(inst.broker_ids["sim"], "5m", date(2025, 12, 1), date(2025, 12, 1))
        assert len(bars) == 75
        assert all((b.open_interest is not None) == (inst.instrument_type == "FUT") for b in bars)
        assert all((b.volume == 0) == (inst.instrument_type == "INDEX") for b in bars)


def test_strikes_sit_on_nse_steps_around_the_spot() -> None:
    items = sim_instruments(2000, TODAY)
    steps = {"NIFTY": 50, "BANKNIFTY": 100, "RELIANCE": 10, "TCS": 50, "SBIN": 5, "ITC": 5, "MARUTI": 100}
    chains: dict[tuple[str, date], list[float]] = {}
    for inst in items:
        if inst.strike is not None and inst.expiry is not None:
            chains.setdefault((inst.name, inst.expiry), []).append(inst.strike)
    assert {name for name, _ in chains} >= set(steps)
    for (name, _expiry), strikes in chains.items():
        spot = next(
            previous_close(c.underlying, TODAY)
            for i in items
            if (c := decode_token(i.broker_ids["sim"])) and i.name == name
        )
        if name in steps:
            assert all(s % steps[name] == 0 for s in strikes), name
        grid = sorted(set(strikes))
        step = grid[1] - grid[0] if len(grid) > 1 else None
        if step is not None:
            assert all(round(b - a, 2) == step for a, b in itertools.pairwise(grid)), name  # no holes
        assert min(abs(s - spot) for s in grid) <= (step or spot) / 2  # the money strike is listed
        assert all(abs(s / spot - 1) <= 0.31 for s in grid), name


def test_expiries_and_symbols_follow_nse_and_kite() -> None:
    items = sim_instruments(3000, TODAY)
    by_symbol = {i.tradingsymbol: i for i in items}
    weekly = by_symbol["NIFTY25D0924800CE"]  # Tuesday 2025-12-09, Kite's weekly format
    assert (weekly.expiry, weekly.strike, weekly.option_type, weekly.lot_size) == (
        date(2025, 12, 9),
        24_800,
        "CE",
        75,
    )
    monthly = by_symbol["NIFTY25DEC24800PE"]  # the last Tuesday, 2025-12-30, in the monthly format
    assert monthly.expiry == date(2025, 12, 30)
    assert by_symbol["NIFTY25DECFUT"].expiry == date(2025, 12, 30)
    assert by_symbol["BANKNIFTY25DECFUT"].expiry == date(2025, 12, 30)
    assert by_symbol["RELIANCE26JANFUT"].expiry == date(2026, 1, 27)
    assert (by_symbol["NIFTY26JANFUT"].lot_size, by_symbol["BANKNIFTY26JANFUT"].lot_size) == (
        65,
        30,
    )  # revised
    for inst in items:
        if inst.expiry is None:
            continue
        assert inst.expiry >= TODAY
        expected = monthly_expiry(inst.expiry.year, inst.expiry.month)
        if re.fullmatch(rf"{inst.name}\d\d[A-Z]{{3}}(FUT|[\d.]+(CE|PE))", inst.tradingsymbol):
            assert inst.expiry == expected, inst.tradingsymbol  # monthly: the month's last Tuesday
        else:
            e = inst.expiry  # Kite's weekly: year, month as 1-9 or O/N/D, day
            prefix = f"NIFTY{e.year % 100}{'123456789OND'[e.month - 1]}{e.day:02d}"
            assert inst.tradingsymbol == f"{prefix}{inst.strike:.0f}{inst.option_type}"
            assert inst.expiry.weekday() == 1 and inst.expiry != expected  # weekly: the other Tuesdays
    assert len(by_symbol) == len(items)  # one symbol per contract


def test_a_weekly_on_a_holiday_moves_to_the_regular_session_before() -> None:
    items = sim_instruments(400, date(2025, 10, 14))
    expiries = sorted({i.expiry for i in items if i.name == "NIFTY" and i.expiry})
    # 2025-10-21 is Diwali (only the Muhurat hour trades): its weekly expired on Monday 10-20
    assert date(2025, 10, 20) in expiries and date(2025, 10, 21) not in expiries
    assert next(i.tradingsymbol for i in items if i.expiry == date(2025, 10, 20)).startswith("NIFTY25O20")


def test_tokens_spell_their_contract_and_the_master_is_reproducible() -> None:
    items = sim_instruments(500, TODAY)
    assert items[0].tradingsymbol == "NIFTY 50" and items[0].broker_ids["sim"] == "100001"
    for inst in items:
        token = inst.broker_ids["sim"]
        contract = decode_token(token)
        assert contract is not None and contract_token(contract) == token and int(token) < 2**53
        assert (contract.expiry, contract.strike, contract.kind) == (
            inst.expiry,
            inst.strike,
            inst.instrument_type,
        )
    assert sim_instruments(500, TODAY) == items
    assert decode_token("LIVE0") is None and decode_token("2999999999999999") is None


async def test_the_walk_is_seeded_and_reproducible() -> None:
    items = sim_instruments(80, TODAY)
    tokens = {i.broker_ids["sim"]: n for n, i in enumerate(items)}
    now = datetime(2025, 12, 2, 13, 0, tzinfo=IST)
    frames = []
    for _ in range(2):
        feed = SimFeed(Settings())
        await feed.subscribe(tokens)
        frames.append([feed.make_frame(200, now + timedelta(seconds=s)) for s in range(5)])
    assert frames[0] == frames[1]
    assert await history(items[50].broker_ids["sim"], "1m", TODAY, TODAY) == await history(
        items[50].broker_ids["sim"], "1m", TODAY, TODAY
    )


async def test_a_contract_stops_ticking_when_it_expires_and_the_frame_stays_full() -> None:
    expiry_day = date(2025, 12, 9)  # a NIFTY weekly
    items = sim_instruments(60, date(2025, 12, 3))
    weekly = [i for i in items if i.expiry == expiry_day]
    assert weekly
    feed = SimFeed(Settings())
    await feed.subscribe({i.broker_ids["sim"]: n for n, i in enumerate(items)})
    before = datetime(2025, 12, 9, 15, 29, 50, tzinfo=IST)
    ids = {n for n, i in enumerate(items) if i.expiry == expiry_day}
    frames = [feed.make_frame(300, before + timedelta(seconds=s)) for s in range(20)]
    assert all(len(f) == 300 for f in frames)
    assert any(t.instrument_id in ids for f in frames[:10] for t in f)  # until 15:30
    assert not any(t.instrument_id in ids for f in frames[10:] for t in f)  # not after
    only_weekly = SimFeed(Settings())
    await only_weekly.subscribe({weekly[0].broker_ids["sim"]: 1})
    assert (
        len(only_weekly.make_frame(10, before)) == 10
        and only_weekly.make_frame(10, before + timedelta(minutes=1)) == []
    )


def test_open_interest_carries_over_from_one_session_to_the_next() -> None:
    from trading_helper.brokers.sim.bars import contract_minutes

    items = [i for i in sim_instruments(120, date(2026, 11, 2)) if i.instrument_type in ("FUT", "CE", "PE")]
    days = nse_sessions(date(2026, 11, 2), date(2026, 11, 20))
    for inst in items[:: len(items) // 6]:
        contract = decode_token(inst.broker_ids["sim"])
        assert contract is not None
        ends = [(m[0].oi, m[-1].oi) for d in days if (m := contract_minutes(contract, d))]
        assert len(ends) == len(days)
        for (_, closed), (opened, _) in itertools.pairwise(ends):
            assert closed and opened and abs(opened / closed - 1) < 0.15, inst.tradingsymbol
