"""The TimescaleDB flavour of the schema, proven on a real TimescaleDB engine.

No TimescaleDB server runs here, so the engine is PGlite + TimescaleDB 2.23 in Node
(tests/timescale/engine.mjs, pinned in package.json). It applies the project's migrations as the
runner orders them (common/NNNN then timescale/NNNN, one transaction per version) and the tests
compare every candle of every timeframe with tests.oracle, an independent computation from the raw
ticks. Background jobs do not run by themselves in PGlite: tests refresh explicitly, or CALL
run_job for the policies.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.oracle import IST, ORIGIN, WIDTHS, RawTick, candles
from tests.timescale.engine import (
    LEVELS,
    SQL_ROOT,
    TimescaleEngine,
    tick_row,
)

US = timedelta(microseconds=1)
_TS, _DP, _I4, _I8 = "timestamp with time zone", "double precision", "integer", "bigint"
#: the same on both flavours (tests/storage/test_migrate.py checks plain PostgreSQL)
TICK_DATA_COLUMNS = [
    ("time", _TS),
    ("instrument_id", _I4),
    ("ltp", _DP),
    ("last_qty", _I4),
    ("volume", _I8),
    ("volume_delta", _I8),
    ("avg_price", _DP),
    ("open_interest", _I8),
    ("bid_price", _DP),
    ("bid_qty", _I4),
    ("ask_price", _DP),
    ("ask_qty", _I4),
    ("received_at", _TS),
    ("exchange_time", _TS),
]
QUOTE_UPDATES_COLUMNS = [
    ("time", _TS),
    ("instrument_id", _I4),
    ("ltp", _DP),
    ("last_qty", _I4),
    ("volume", _I8),
    ("avg_price", _DP),
    ("open_interest", _I8),
    ("bid_price", _DP),
    ("bid_qty", _I4),
    ("ask_price", _DP),
    ("ask_qty", _I4),
    ("received_at", _TS),
    ("trade_time", _TS),
]


@pytest.fixture(scope="module")
def engine(timescale_engine: TimescaleEngine) -> TimescaleEngine:
    return timescale_engine


# -- helpers ---------------------------------------------------------------------------------


def rows_of(ticks: list[RawTick]) -> list[dict[str, Any]]:
    return [tick_row(t.time, t.instrument_id, t.ltp, t.volume_delta, t.open_interest) for t in ticks]


def wide_window(ticks: list[RawTick]) -> tuple[datetime, datetime]:
    """A refresh window of whole UTC days well beyond the data on both sides.

    On this engine (2.23) a manual refresh of the origin-bucketed 1d level checks and trims its
    window in UTC days, ignoring the origin (timescaledb #9308, fixed in 2.25.2): a window of
    whole days with margin covers every bucket of every level.
    """
    first = min(t.time for t in ticks).astimezone(UTC)
    last = max(t.time for t in ticks).astimezone(UTC)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC) - timedelta(days=3)
    end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=4)
    return start, end


def assert_same_candles(got: dict[Any, Any], expected: dict[Any, Any]) -> None:
    if got == expected:
        return
    lines = []
    for tf in WIDTHS:
        g = {k: v for k, v in got.items() if k[0] == tf}
        e = {k: v for k, v in expected.items() if k[0] == tf}
        missing = sorted(k for k in e if k not in g)
        extra = sorted(k for k in g if k not in e)
        wrong = sorted(k for k in e if k in g and g[k] != e[k])
        if missing or extra or wrong:
            lines.append(
                f"{tf}: {len(e)} expected, {len(g)} got; missing {len(missing)}, "
                f"extra {len(extra)}, different {len(wrong)}"
            )
            lines += [f"  missing {k}: {e[k]}" for k in missing[:3]]
            lines += [f"  extra   {k}: {g[k]}" for k in extra[:3]]
            lines += [f"  differs {k}: got {g[k]} expected {e[k]}" for k in wrong[:3]]
    pytest.fail(
        "candles differ from the oracle (open, high, low, close, volume, oi, ticks):\n" + "\n".join(lines),
        pytrace=False,
    )


def load_in_batches(
    engine: TimescaleEngine, ticks: list[RawTick], batches: int, window: tuple[datetime, datetime]
) -> None:
    """Load `ticks` in their given order, `batches` slices, refreshing every level after each:
    later slices hold late ticks for buckets that are already materialised."""
    size = -(-len(ticks) // batches)
    for i in range(0, len(ticks), size):
        engine.load(rows_of(ticks[i : i + size]))
        engine.refresh(*window)


def watermarks(engine: TimescaleEngine) -> dict[str, datetime | None]:
    """Where each level's materialisation ends (None: nothing materialised yet)."""
    rows = engine.query(
        "SELECT user_view_name, CASE WHEN w > 0 THEN w::float8 / 1e6 END FROM ("
        "SELECT user_view_name, _timescaledb_functions.cagg_watermark(mat_hypertable_id) AS w "
        "FROM _timescaledb_catalog.continuous_agg) AS marks"
    )  # nothing materialised: 4714 BC
    return {name: None if ts is None else datetime.fromtimestamp(ts, UTC) for name, ts in rows}


# -- 1. the migrations run, statement by statement ------------------------------------------------


def test_every_migration_statement_succeeds(engine: TimescaleEngine) -> None:
    statements = engine.migrations()
    on_disk = {
        f"{folder}/{p.name}" for folder in ("common", "timescale") for p in (SQL_ROOT / folder).glob("*.sql")
    }
    applied = {s.file for s in statements if s.file is not None}
    assert applied == on_disk, f"migration files not applied: {sorted(on_disk - applied)}"
    assert any(f.startswith("timescale/") for f in applied)
    failed = [s for s in statements if not s.ok]
    print(
        f"{len(statements)} statements from {sorted(applied)} on TimescaleDB "
        f"{engine.info['timescaledb']}; {len(failed)} failed"
    )
    assert not failed, f"{len(failed)} statement(s) failed on TimescaleDB:\n\n" + "\n\n".join(
        s.describe() for s in failed
    )


def test_the_harness_splits_statements_like_postgresql(engine: TimescaleEngine) -> None:
    # What a migration file may hold: semicolons inside quotes, identifiers, dollar-quoted bodies
    # (tagged and nested), comments, E'' escapes and a BEGIN ATOMIC body.
    text = """
    -- a comment; not a statement
    CREATE TABLE "odd;name" (v text DEFAULT 'it''s; fine');
    /* block; /* nested; */ still comment; */
    SELECT E'back\\'slash; quote', $x$ body; $$ inner; $$ $x$;
    CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;
    CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END;
    SELECT 1 -- trailing comment without a semicolon
    """
    assert engine.request("split", sql=text) == [
        "CREATE TABLE \"odd;name\" (v text DEFAULT 'it''s; fine')",
        "SELECT E'back\\'slash; quote', $x$ body; $$ inner; $$ $x$",
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$",
        "CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; "
        "SELECT 2; END",
        "SELECT 1 -- trailing comment without a semicolon",
    ]


def test_schema_contract(engine: TimescaleEngine) -> None:
    def columns(relation: str) -> list[tuple[str, str]]:
        return [
            tuple(r)
            for r in engine.query(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                relation,
            )
        ]

    dp, ts, i4, i8 = _DP, _TS, _I4, _I8
    assert columns("tick_data") == TICK_DATA_COLUMNS
    assert columns("quote_updates") == QUOTE_UPDATES_COLUMNS
    candle_columns = [
        ("bucket", ts),
        ("instrument_id", i4),
        ("open", dp),
        ("high", dp),
        ("low", dp),
        ("close", dp),
        ("volume", i8),
        ("open_interest", i8),
        ("tick_count", i8),
    ]
    for level in LEVELS:
        assert columns(level) == candle_columns, level

    assert engine.query(
        "SELECT column_name, time_interval::text FROM timescaledb_information.dimensions "
        "WHERE hypertable_name = 'tick_data'"
    ) == [["time", "1 day"]]
    # quote_updates: a hypertable like tick_data, kept as long as ticks (its row of retention_policy)
    assert engine.query(
        "SELECT column_name, time_interval::text FROM timescaledb_information.dimensions "
        "WHERE hypertable_name = 'quote_updates'"
    ) == [["time", "1 day"]]
    assert engine.query(
        "SELECT hypertable_name, config->>'drop_after' FROM timescaledb_information.jobs "
        "WHERE proc_name = 'policy_retention' AND hypertable_name IN ('tick_data', 'quote_updates') "
        "ORDER BY 1"
    ) == [["quote_updates", "7 days"], ["tick_data", "7 days"]]
    assert engine.query(
        "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc "
        "FROM timescaledb_information.compression_settings WHERE hypertable_name = 'tick_data' "
        "ORDER BY attname"
    ) == [["instrument_id", 1, None, None], ["time", None, 1, True]]
    assert engine.query(
        "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates "
        "ORDER BY view_name"
    ) == sorted([[level, False] for level in LEVELS])
    # Each level stacks on the one below.
    assert engine.query(
        "SELECT c.user_view_name, p.user_view_name FROM _timescaledb_catalog.continuous_agg c "
        "LEFT JOIN _timescaledb_catalog.continuous_agg p ON p.mat_hypertable_id = c.parent_mat_hypertable_id "
        "ORDER BY c.mat_hypertable_id"
    ) == [
        ["candles_1m", None],
        ["candles_5m", "candles_1m"],
        ["candles_15m", "candles_5m"],
        ["candles_1h", "candles_15m"],
        ["candles_1d", "candles_1h"],
    ]
    # The (instrument_id, bucket DESC) index on each materialisation, and no other.
    for level in LEVELS:
        defs = [
            r[0]
            for r in engine.query(
                "SELECT i.indexdef FROM _timescaledb_catalog.continuous_agg c "
                "JOIN _timescaledb_catalog.hypertable h ON h.id = c.mat_hypertable_id "
                "JOIN pg_indexes i ON i.schemaname = h.schema_name AND i.tablename = h.table_name "
                "WHERE c.user_view_name = $1",
                level,
            )
        ]
        assert [d for d in defs if "(instrument_id, bucket DESC)" in d], (level, defs)
    assert engine.query(
        "SELECT indexdef LIKE '%(instrument_id, \"time\" DESC)%' FROM pg_indexes "
        "WHERE tablename = 'tick_data' AND indexname = 'tick_data_instrument_time_idx'"
    ) == [[True]]
    for relation in ("tick_data", "quote_updates", *LEVELS):
        assert engine.query("SELECT obj_description($1::regclass, 'pg_class') IS NOT NULL", relation) == [
            [True]
        ], relation
    # The service's hooks exist with the plain-PostgreSQL signatures and run.
    assert engine.query("CALL refresh_candles()") == []
    assert engine.query("SELECT ensure_tick_partitions(now(), now() + interval '2 days')") == [[0]]
    assert engine.query("SELECT apply_retention()") == [[0]]


# -- 2. a deterministic trading day ---------------------------------------------------------------


def trading_day_dataset() -> list[RawTick]:
    """Three instruments over an IST trading day, an MCX-like evening across 00:15 IST, and ticks
    on (and one microsecond either side of) bucket edges of every width."""
    rnd = random.Random(20250303)
    day = datetime(2025, 3, 3, tzinfo=IST)  # a Monday
    ticks: dict[tuple[int, datetime], RawTick] = {}

    def add(instrument: int, when: datetime, oi: bool) -> None:
        price = round(rnd.uniform(95, 105), 2) if rnd.random() < 0.9 else rnd.uniform(1, 5000)
        open_interest = (rnd.randint(0, 5_000_000) if rnd.random() < 0.9 else None) if oi else None
        ticks[(instrument, when)] = RawTick(
            when,
            instrument,
            price,
            rnd.choice([0, 1, rnd.randint(1, 500), rnd.randint(10**6, 10**10)]),
            open_interest,
        )

    # NSE cash (no OI) and a future (OI): pre-open 09:00-09:08, session 09:15-15:30.
    for instrument, oi in ((101, False), (102, True)):
        for start, end in (
            (day.replace(hour=9), day.replace(hour=9, minute=8)),
            (day.replace(hour=9, minute=15), day.replace(hour=15, minute=30)),
        ):
            t = start
            while t < end:
                add(instrument, t + timedelta(microseconds=rnd.randint(0, 999_999)), oi)
                t += timedelta(seconds=rnd.randint(5, 40))
    # MCX-like: evening of the previous day through 00:15 IST into this day's 1d bucket.
    t = day - timedelta(hours=2)
    while t < day + timedelta(hours=23, minutes=55):
        add(103, t + timedelta(microseconds=rnd.randint(0, 999_999)), True)
        t += timedelta(seconds=rnd.randint(20, 120))
    # Bucket edges: exactly on, and 1 us before/after, edges of every width.
    for instrument in (101, 102, 103):
        for edge in (
            day.replace(hour=9, minute=15),
            day.replace(hour=10, minute=15),
            day.replace(hour=9, minute=30),
            day.replace(hour=9, minute=45),
            day.replace(hour=11, minute=0),
            day.replace(hour=12, minute=20),
            day.replace(hour=14, minute=1),
            day.replace(hour=15, minute=15),
            day.replace(minute=15),
            day + timedelta(days=1, minutes=15),
        ):
            for delta in (-US, timedelta(0), US):
                add(instrument, edge + delta, instrument != 101)
    # Around 00:15 IST (the 1d edge) for the MCX-like instrument.
    for delta in (-timedelta(seconds=30), -US, timedelta(0), US, timedelta(seconds=30)):
        add(103, day + timedelta(minutes=15) + delta, True)
    return list(ticks.values())


def test_trading_day_candles_equal_the_oracle(engine: TimescaleEngine) -> None:
    engine.reset()
    ticks = trading_day_dataset()
    arrival = ticks[:]
    random.Random(7).shuffle(arrival)  # out of order, in three batches with refreshes between
    load_in_batches(engine, arrival, 3, wide_window(ticks))
    expected = candles(ticks)
    got = engine.candles()
    assert len(ticks) > 3000 and {k[0] for k in expected} == set(WIDTHS)
    # The trading day is one 1d candle per instrument, labelled 00:15 IST; 103 also has the evening
    # before, and 1h candles start at 09:15 IST.
    day_start = datetime(2025, 3, 3, 0, 15, tzinfo=IST)
    assert ("1d", 101, day_start) in got and ("1d", 103, day_start - timedelta(days=1)) in got
    assert ("1h", 101, datetime(2025, 3, 3, 9, 15, tzinfo=IST)) in got
    assert not [k for k in got if k[0] == "1h" and k[2].astimezone(IST).minute != 15]
    assert_same_candles(got, expected)


# -- 3. random tick streams ---------------------------------------------------------------------

BASE_DAY = datetime(2025, 3, 10, tzinfo=IST)


@st.composite
def tick_times(draw: st.DrawFn) -> datetime:
    day = BASE_DAY + timedelta(days=draw(st.integers(0, 2)))
    kind = draw(st.sampled_from(["edge", "any", "day-edge"]))
    if kind == "edge":  # on a bucket edge of some width, or a microsecond either side
        width = draw(st.sampled_from(list(WIDTHS.values())))
        offset = draw(st.integers(0, int(timedelta(days=1) / width)))
        edge = ORIGIN + ((day + offset * width - ORIGIN) // width) * width
        return edge + draw(st.sampled_from([-US, timedelta(0), US]))
    if kind == "day-edge":  # around 00:15 IST
        return day + timedelta(minutes=15, microseconds=draw(st.integers(-90_000_000, 90_000_000)))
    return day + timedelta(microseconds=draw(st.integers(0, 86_400_000_000 - 1)))


raw_ticks = st.builds(
    RawTick,
    time=tick_times(),
    instrument_id=st.integers(1, 40),
    ltp=st.floats(min_value=0.05, max_value=1e6, allow_nan=False, allow_infinity=False),
    volume_delta=st.integers(0, 10**12),
    open_interest=st.none() | st.integers(0, 10**10),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    ticks=st.lists(raw_ticks, min_size=1, max_size=250, unique_by=lambda t: (t.instrument_id, t.time)),
    order_seed=st.integers(0, 2**32 - 1),
    batches=st.integers(1, 3),
)
def test_random_streams_equal_the_oracle(
    engine: TimescaleEngine, ticks: list[RawTick], order_seed: int, batches: int
) -> None:
    engine.reset()
    arrival = ticks[:]
    random.Random(order_seed).shuffle(arrival)
    load_in_batches(engine, arrival, batches, wide_window(ticks))
    assert_same_candles(engine.candles(), candles(ticks))


# -- 4. real-time aggregation -----------------------------------------------------------------------


def test_ticks_after_the_last_refresh_are_visible(engine: TimescaleEngine) -> None:
    engine.reset()
    day = datetime(2025, 6, 2, tzinfo=IST)
    cut = day.replace(hour=11, minute=15)
    before = [
        RawTick(
            day.replace(hour=9, minute=15) + timedelta(seconds=37 * i + 1),
            inst,
            100.0 + (i % 17) + inst,
            i % 9,
            1000 + i,
        )
        for inst in (1, 2)
        for i in range(190)
    ]
    assert max(t.time for t in before) < cut
    engine.load(rows_of(before))
    # Materialise up to 11:15 IST. The 1d level only up to the last complete IST day, as its
    # policy (end_offset 1 day) does: on 2.23 a window ending inside a day would materialise the
    # whole, still-forming, day (origin ignored in the window arithmetic, timescaledb #9308).
    engine.refresh(day - timedelta(days=3), cut, levels=LEVELS[:4])
    engine.refresh(
        day + timedelta(minutes=15) - timedelta(days=3), day + timedelta(minutes=15), levels=("candles_1d",)
    )
    marks = watermarks(engine)
    last_before = max(t.time for t in before)
    assert all((m := marks[level]) is not None and last_before < m <= cut for level in LEVELS[:4]), marks
    assert marks["candles_1d"] is None or marks["candles_1d"] <= day, marks

    after = [
        RawTick(cut, 1, 555.5, 7, 42),  # exactly on the edge
        RawTick(cut + timedelta(seconds=30), 1, 90.25, 3, None),
        RawTick(cut + timedelta(minutes=1, microseconds=1), 1, 91.0, 11, 43),
        RawTick(cut + timedelta(minutes=6, seconds=2), 2, 700.0, 5, 44),
        RawTick(cut + timedelta(minutes=31), 3, 12.5, 1, None),
    ]  # a new instrument
    engine.load(rows_of(after))  # no refresh
    got = engine.candles()
    forming = {
        ("1m", 1, cut): (555.5, 555.5, 90.25, 90.25, 10, None, 2),
        ("1m", 1, cut + timedelta(minutes=1)): (91.0, 91.0, 91.0, 91.0, 11, 43, 1),
        ("5m", 1, cut): (555.5, 555.5, 90.25, 91.0, 21, 43, 3),
        ("5m", 2, cut + timedelta(minutes=5)): (700.0, 700.0, 700.0, 700.0, 5, 44, 1),
        ("5m", 3, cut + timedelta(minutes=30)): (12.5, 12.5, 12.5, 12.5, 1, None, 1),
    }
    for key, value in forming.items():
        assert got.get(key) == value, key
    assert_same_candles(got, candles(before + after))
    assert watermarks(engine) == marks  # nothing materialised since: real-time aggregation served it


# -- 5. policies ------------------------------------------------------------------------------------


def test_policies_exist_and_do_their_work(engine: TimescaleEngine) -> None:
    engine.reset()
    jobs = engine.query(
        "SELECT job_id, proc_name, coalesce(hypertable_name, ''), schedule_interval::text, "
        "(config->>'start_offset')::interval::text, (config->>'end_offset')::interval::text, "
        "(config->>'compress_after')::interval::text, (config->>'drop_after')::interval::text, "
        "(config->>'buckets_per_batch')::int "
        "FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY job_id"
    )
    found = {(j[1], j[2]): tuple(j[3:]) for j in jobs}
    refresh = "policy_refresh_continuous_aggregate"
    assert found == {
        ("policy_compression", "tick_data"): ("12:00:00", None, None, "1 day", None, None),
        ("policy_retention", "tick_data"): ("1 day", None, None, None, "7 days", None),
        ("policy_compression", "quote_updates"): ("12:00:00", None, None, "1 day", None, None),
        ("policy_retention", "quote_updates"): ("1 day", None, None, None, "7 days", None),
        # the F&O archive's ticks (migration 13): compressed, never dropped
        ("policy_compression", "tick_archive"): ("12:00:00", None, None, "1 day", None, None),
        (refresh, "candles_1m"): ("00:01:00", "6 days", "00:01:00", None, None, 60),
        (refresh, "candles_5m"): ("00:05:00", "6 days", "00:05:00", None, None, 12),
        (refresh, "candles_15m"): ("00:15:00", "6 days", "00:15:00", None, None, 4),
        (refresh, "candles_1h"): ("00:30:00", "6 days", "01:00:00", None, None, 1),
        (refresh, "candles_1d"): ("01:00:00", "6 days", "1 day", None, None, 1),
        ("policy_retention", "candles_1m"): ("1 day", None, None, None, "30 days", None),
        ("policy_retention", "candles_5m"): ("1 day", None, None, None, "90 days", None),
        ("policy_retention", "candles_15m"): ("1 day", None, None, None, "6 mons", None),
        ("policy_retention", "candles_1h"): ("1 day", None, None, None, "1 year", None),
        ("apply_retention_job", ""): ("01:00:00", None, None, None, None, None),
        # the option chains' minute snapshots (migration 12)
        ("policy_retention", "option_chain_snapshots"): ("1 day", None, None, None, "90 days", None),
        ("policy_retention", "option_quote_snapshots"): ("1 day", None, None, None, "90 days", None),
    }, found
    # The retention table the service reads agrees with the policies (1d: kept forever).
    table = dict(map(tuple, engine.query("SELECT relation, keep::text FROM retention_policy")))
    assert table == {
        "tick_data": "7 days",
        "candles_1m": "30 days",
        "candles_5m": "90 days",
        "candles_15m": "6 mons",
        "candles_1h": "1 year",
        "candles_1d": None,
        "option_snapshots": "90 days",
    }

    # Run every job once on ticks relative to now: 10 days old (past retention and the 6-day
    # refresh window), 3 days old (compressed, materialised) and the last hour (real-time).
    now = datetime.fromisoformat(engine.query("SELECT now()")[0][0])
    old = [RawTick(now - timedelta(days=10, seconds=s), 7, 50.0 + s, 1, None) for s in range(5)]
    mid = [RawTick(now - timedelta(days=3, seconds=13 * s), 7, 60.0 + s, 2, s) for s in range(20)]
    recent = [
        RawTick(now - timedelta(minutes=45, seconds=11 * s), inst, 70.0 + s, 3, s)
        for s in range(30)
        for inst in (7, 8)
    ]
    engine.load(rows_of(old + mid + recent))
    instrument = engine.query(
        "INSERT INTO instruments (exchange, tradingsymbol) VALUES ('NSE', 'POLICYTEST') RETURNING id"
    )[0][0]
    engine.query(
        "INSERT INTO broker_candles (instrument_id, timeframe, bucket, open, high, low, close, "
        "volume, source) VALUES ($1, '1m', now() - interval '40 days', 1, 1, 1, 1, 1, 'sim'), "
        "($1, '1m', now() - interval '10 days', 1, 1, 1, 1, 1, 'sim'), "
        "($1, '1d', now() - interval '5 years', 1, 1, 1, 1, 1, 'sim')",
        instrument,
    )

    def run_jobs_until(expected: dict[Any, Any]) -> None:
        # On 2.23 a batched refresh run can leave one invalidated batch to the next run when the
        # window moved on a minute since the previous run (seen about once in 12 runs; the next
        # run always took it). The scheduler runs these policies every few minutes; here a
        # second or third run of every job stands in for that.
        for _ in range(3):
            for job in jobs:
                engine.query(f"CALL run_job({int(job[0])})")
            if engine.candles() == expected:
                return
        assert_same_candles(engine.candles(), expected)

    run_jobs_until(candles(mid + recent))
    assert engine.query(
        "SELECT count(*), count(*) FILTER (WHERE time < now() - interval '7 days') FROM tick_data"
    ) == [[len(mid) + len(recent), 0]]
    chunks = engine.query(
        "SELECT range_end < now() - interval '1 day', is_compressed "
        "FROM timescaledb_information.chunks WHERE hypertable_name = 'tick_data'"
    )
    assert chunks and all(old_enough == compressed for old_enough, compressed in chunks), chunks
    assert [True, True] in chunks  # the 3-day-old ticks sit in a compressed chunk
    marks = watermarks(engine)
    assert all((marks[level] or ORIGIN) > max(t.time for t in mid) for level in LEVELS), marks
    assert engine.query(
        "SELECT timeframe, bucket < now() - interval '30 days' FROM broker_candles ORDER BY timeframe"
    ) == [["1d", True], ["1m", False]]

    # A late tick into the compressed chunk is folded in by the next policy runs.
    late = RawTick(now - timedelta(days=3, microseconds=1), 7, 1.5, 1000, 99)
    engine.load(rows_of([late]))
    run_jobs_until(candles([*mid, late, *recent]))

    engine.query("DELETE FROM broker_candles WHERE instrument_id = $1", instrument)
    engine.query("DELETE FROM instruments WHERE id = $1", instrument)
    engine.reset()
