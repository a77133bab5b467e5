"""``trading-helper bench ...``: the benchmarks, each printing one JSON object (progress on stderr)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import typer

from trading_helper.cli_common import _progress, fail_on_error

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print JSON.")

#: a benchmark's progress: (what it does now, the share done 0..1)
Say = Callable[[str, float], None]
Result = dict[str, Any]


def _bench(
    work: Callable[[Say], Coroutine[Any, Any, Result] | Result], json_out: bool, *, bar: str | None = None
) -> None:
    """One benchmark run and its result printed: ``work(progress)`` (a coroutine it returns runs to
    its end), with a progress bar on stderr when ``bar`` names its first step; the JSON on stdout,
    indented unless ``--json``; an error of the tree ends the command with its one-line message."""

    def run() -> Result:
        with _progress(bar) if bar is not None else nullcontext(lambda text, done: None) as progress:
            out = work(progress)
            return asyncio.run(out) if isinstance(out, Coroutine) else out

    result = fail_on_error(run)
    print(json.dumps(result) if json_out else json.dumps(result, indent=2))


@bench_app.command("ingest")
def bench_ingest(
    instruments: int = typer.Option(1000, help="Simulated instruments."),
    ticks: int = typer.Option(500_000, help="Ticks pushed at full speed."),
    per_frame: int = typer.Option(100, help="Ticks per received frame (one stream entry each)."),
    paced_rate: int = typer.Option(1000, help="Ticks per second in the latency phase."),
    paced_seconds: float = typer.Option(10.0, help="Length of the latency phase."),
    json_out: bool = typer.Option(False, "--json", help="Print only the JSON result."),
) -> None:
    """Ingest throughput and latency through the real path, against raw COPY in the same run."""
    from trading_helper.bench.ingest import run_ingest_bench
    from trading_helper.config import get_settings

    _bench(
        lambda _: run_ingest_bench(
            get_settings(),
            instruments=instruments,
            ticks=ticks,
            per_frame=per_frame,
            paced_rate=paced_rate,
            paced_seconds=paced_seconds,
        ),
        json_out,
    )


@bench_app.command("volume")
def bench_volume(
    instruments: int = typer.Option(12_000, min=1, help="Instruments, each updated once per round."),
    per_batch: int = typer.Option(2_000, min=1, help="Distinct instruments per batch."),
    rounds: int = typer.Option(12, min=1, help="Updates per instrument."),
    json_out: bool = typer.Option(False, "--json", help="Print only the JSON result."),
) -> None:
    """The writer's volume rules by batch (VolumeBook) against one by one (VolumeTracker), and
    build_batch, per tick on the same updates (no database)."""
    from trading_helper.bench.volume import run_volume_bench

    _bench(lambda _: run_volume_bench(instruments=instruments, per_batch=per_batch, rounds=rounds), json_out)


@bench_app.command("pgbouncer")
def bench_pgbouncer(
    instruments: int = typer.Option(200, help="Simulated instruments of the dataset."),
    days: int = typer.Option(10, help="Calendar days of 1m candles."),
    samples: int = typer.Option(500, help="Timed reads per way."),
    concurrency: int = typer.Option(8, help="Callers at once in the throughput phase."),
    seconds: float = typer.Option(5.0, help="Length of each throughput phase."),
    json_out: bool = typer.Option(False, "--json", help="Print only the JSON result."),
) -> None:
    """The API's read path through pgBouncer (transaction pooling, PGBOUNCER=true) against a direct
    pool with its statement cache, in the same run (needs pgbouncer on PATH)."""
    from trading_helper.bench.pgbouncer import run_pgbouncer_bench
    from trading_helper.config import get_settings

    _bench(
        lambda _: run_pgbouncer_bench(
            get_settings(),
            instruments=instruments,
            days=days,
            samples=samples,
            concurrency=concurrency,
            seconds=seconds,
        ),
        json_out,
    )


@bench_app.command("soak")
def bench_soak(
    days: int = typer.Option(5, min=1, max=5, help="Simulated trading days (the last ones before today)."),
    instruments: int = typer.Option(10, min=1, max=500, help="Instruments on the Kite stand-in."),
    speed: float = typer.Option(200.0, min=1.0, help="Simulated seconds per real second in sessions."),
    faults: str = typer.Option(
        "all",
        help="Comma-separated fault kinds to inject (token_expiry, "
        "reconnect_preopen, reconnect_session, redis_restart, postgres_down, "
        "serve_sigkill, api_restart, poison_row), or all.",
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print only the JSON result (progress stays on stderr)."
    ),
) -> None:
    """A market week through the real path (Kite stand-in, serve, Redis, PostgreSQL) with faults; checks."""
    from trading_helper.bench.soak.run import run_soak
    from trading_helper.config import get_settings

    kinds = None if faults == "all" else frozenset(k.strip() for k in faults.split(",") if k.strip())
    _bench(
        lambda progress: run_soak(
            get_settings(), days=days, instruments=instruments, speed=speed, faults=kinds, progress=progress
        ),
        json_out,
        bar="starting",
    )


@bench_app.command("query")
def bench_query(
    instruments: int = typer.Option(1000, min=1, help="Instruments in the dataset."),
    days: int = typer.Option(30, min=1, max=60, help="Calendar days of 1m candles (history and live mixed)."),
    samples: int = typer.Option(300, min=10, help="Timed requests per measurement."),
    json_out: bool = typer.Option(False, "--json", help="Print only the JSON result."),
) -> None:
    """Read-path and API latency on a throwaway database (th_bench_<random>, dropped afterwards)."""
    from trading_helper.bench.query import run_query_bench
    from trading_helper.config import get_settings

    _bench(
        lambda _: run_query_bench(get_settings(), instruments=instruments, days=days, samples=samples),
        json_out,
    )


@bench_app.command("indicators")
def bench_indicators(
    bars: int = typer.Option(20_000, min=1000, max=1_000_000, help="Bars in the random 1m series."),
    repeat: int = typer.Option(5, min=1, help="Timed runs of each batch computation (the best is kept)."),
    json_out: bool = typer.Option(
        False, "--json", help="Print only the JSON result (progress stays on stderr)."
    ),
) -> None:
    """Each study's cost: batch over the series, and bar by bar (closed and forming), vs Bars.of."""
    from trading_helper.bench.indicators import run_indicators_bench

    _bench(
        lambda progress: run_indicators_bench(bars=bars, repeat=repeat, progress=progress),
        json_out,
        bar="studies",
    )


@bench_app.command("options")
def bench_options(
    strikes: int = typer.Option(200, min=2, max=2000, help="Strikes in the chain (a call and a put each)."),
    samples: int = typer.Option(200, min=10, help="Timed runs per measurement."),
    json_out: bool = typer.Option(False, "--json", help="Print only the JSON result."),
) -> None:
    """IV and Greeks of a chain, and GET /api/options/chain latency (throwaway database and Redis key)."""
    from trading_helper.bench.options import run_options_bench
    from trading_helper.config import get_settings

    _bench(lambda _: run_options_bench(get_settings(), strikes=strikes, samples=samples), json_out)


@bench_app.command("alerts")
def bench_alerts(
    rules: int = typer.Option(1000, min=20, max=100_000, help="Alert rules evaluated."),
    instruments: int = typer.Option(200, min=1, max=10_000, help="Simulated instruments."),
    rate: float = typer.Option(1000.0, min=10, help="Ticks per second published for the latency run."),
    seconds: float = typer.Option(10.0, min=1, help="Length of the latency run."),
    json_out: bool = typer.Option(False, "--json", help="Print only the JSON result."),
) -> None:
    """Alert evaluation cost per tick (vs decoding it) and tick-receive-to-webhook latency."""
    from trading_helper.bench.alerts import run_alerts_bench
    from trading_helper.config import get_settings

    _bench(
        lambda progress: run_alerts_bench(
            get_settings(),
            rules=rules,
            instruments=instruments,
            rate=rate,
            seconds=seconds,
            progress=progress,
        ),
        json_out,
        bar="alerts",
    )


@bench_app.command("export")
def bench_export(
    instruments: int = typer.Option(1000, min=1, help="Instruments with ticks."),
    days: int = typer.Option(30, min=1, max=60, help="Days of ticks."),
    ticks_per_day: int = typer.Option(100, min=1, help="Ticks per instrument and day."),
    json_out: bool = typer.Option(False, "--json", help="Print only the JSON result."),
) -> None:
    """Export of ticks (CSV and Parquet) on a throwaway database: rows/s against the database's own
    CSV in the same run, and peak memory."""
    from trading_helper.bench.export import run_export_bench
    from trading_helper.config import get_settings

    _bench(
        lambda progress: run_export_bench(
            get_settings(), instruments=instruments, days=days, ticks_per_day=ticks_per_day, progress=progress
        ),
        json_out,
        bar="starting",
    )


_LOGS = typer.Option(None, help="Copy every process's log into this folder.")


@bench_app.command("cluster")
def bench_cluster(
    accounts: int = typer.Option(2, min=1, max=8, help="Kite accounts (API keys) on the stand-in."),
    instruments: int = typer.Option(12_000, min=1, help="Instruments, 2 ticks/s each."),
    seconds: float = typer.Option(180.0, min=10.0, help="Seconds of sending (kills at 25/45/70 %)."),
    collectors: int | None = typer.Option(None, min=1, help="collect processes (default: 2 per account)."),
    writers: int = typer.Option(2, min=1, help="write processes."),
    api_replicas: int = typer.Option(2, min=1, help="serve --no-ingest processes."),
    restart_after: float = typer.Option(
        -1.0,
        help="Start a killed process again this many seconds later, as compose's restart policy "
        "would, to take its share back (negative, the default: it stays dead for the rest of the run).",
    ),
    logs: Path | None = _LOGS,
    json_out: bool = typer.Option(
        False, "--json", help="Print only the JSON result (progress stays on stderr)."
    ),
) -> None:
    """Accounts, sharded collectors, writers and API replicas as real processes, with kills; checks."""
    from trading_helper.bench.cluster.run import run_cluster
    from trading_helper.config import get_settings

    _bench(
        lambda progress: run_cluster(
            get_settings(),
            accounts=accounts,
            instruments=instruments,
            seconds=seconds,
            collectors=collectors,
            writers=writers,
            api_replicas=api_replicas,
            restart_after_s=restart_after if restart_after >= 0 else None,
            progress=progress,
            logs=logs,
        ),
        json_out,
        bar="starting",
    )
