"""``trading-helper bench ...``: the benchmarks, each printing one JSON object (progress on stderr)."""

from __future__ import annotations

import asyncio

import typer

from trading_helper.cli_common import _fail, _progress
from trading_helper.errors import TradingHelperError
from trading_helper.export.commands import bench_export

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print JSON.")
bench_app.command("export")(bench_export)


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
    import json

    from trading_helper.bench.ingest import run_ingest_bench
    from trading_helper.config import get_settings

    try:
        result = asyncio.run(
            run_ingest_bench(
                get_settings(),
                instruments=instruments,
                ticks=ticks,
                per_frame=per_frame,
                paced_rate=paced_rate,
                paced_seconds=paced_seconds,
            )
        )
    except TradingHelperError as exc:
        _fail(exc)
        return
    print(json.dumps(result) if json_out else json.dumps(result, indent=2))


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
    import json

    from trading_helper.bench.soak.run import run_soak
    from trading_helper.config import get_settings

    with _progress("starting") as progress:
        try:
            kinds = None if faults == "all" else frozenset(k.strip() for k in faults.split(",") if k.strip())
            result = asyncio.run(
                run_soak(
                    get_settings(),
                    days=days,
                    instruments=instruments,
                    speed=speed,
                    faults=kinds,
                    progress=progress,
                )
            )
        except TradingHelperError as exc:
            _fail(exc)
            return
    print(json.dumps(result) if json_out else json.dumps(result, indent=2))


@bench_app.command("query")
def bench_query(
    instruments: int = typer.Option(1000, min=1, help="Instruments in the dataset."),
    days: int = typer.Option(30, min=1, max=60, help="Calendar days of 1m candles (history and live mixed)."),
    samples: int = typer.Option(300, min=10, help="Timed requests per measurement."),
    json_out: bool = typer.Option(False, "--json", help="Print only the JSON result."),
) -> None:
    """Read-path and API latency on a throwaway database (th_bench_<random>, dropped afterwards)."""
    import json

    from trading_helper.bench.query import run_query_bench
    from trading_helper.config import get_settings

    try:
        result = asyncio.run(
            run_query_bench(get_settings(), instruments=instruments, days=days, samples=samples)
        )
    except TradingHelperError as exc:
        _fail(exc)
        return
    print(json.dumps(result) if json_out else json.dumps(result, indent=2))


@bench_app.command("indicators")
def bench_indicators(
    bars: int = typer.Option(20_000, min=1000, max=1_000_000, help="Bars in the random 1m series."),
    repeat: int = typer.Option(5, min=1, help="Timed runs of each batch computation (the best is kept)."),
    json_out: bool = typer.Option(
        False, "--json", help="Print only the JSON result (progress stays on stderr)."
    ),
) -> None:
    """Each study's cost: batch over the series, and bar by bar (closed and forming), vs Bars.of."""
    import json

    from trading_helper.bench.indicators import run_indicators_bench

    with _progress("studies") as progress:
        result = run_indicators_bench(bars=bars, repeat=repeat, progress=progress)
    print(json.dumps(result) if json_out else json.dumps(result, indent=2))


@bench_app.command("options")
def bench_options(
    strikes: int = typer.Option(200, min=2, max=2000, help="Strikes in the chain (a call and a put each)."),
    samples: int = typer.Option(200, min=10, help="Timed runs per measurement."),
    json_out: bool = typer.Option(False, "--json", help="Print only the JSON result."),
) -> None:
    """IV and Greeks of a chain, and GET /api/options/chain latency (throwaway database and Redis key)."""
    import json

    from trading_helper.bench.options import run_options_bench
    from trading_helper.config import get_settings

    try:
        result = asyncio.run(run_options_bench(get_settings(), strikes=strikes, samples=samples))
    except TradingHelperError as exc:
        _fail(exc)
        return
    print(json.dumps(result) if json_out else json.dumps(result, indent=2))


@bench_app.command("alerts")
def bench_alerts(
    rules: int = typer.Option(1000, min=20, max=100_000, help="Alert rules evaluated."),
    instruments: int = typer.Option(200, min=1, max=10_000, help="Simulated instruments."),
    rate: float = typer.Option(1000.0, min=10, help="Ticks per second published for the latency run."),
    seconds: float = typer.Option(10.0, min=1, help="Length of the latency run."),
    json_out: bool = typer.Option(False, "--json", help="Print only the JSON result."),
) -> None:
    """Alert evaluation cost per tick (vs decoding it) and tick-receive-to-webhook latency."""
    import json

    from trading_helper.bench.alerts import run_alerts_bench
    from trading_helper.config import get_settings

    try:
        with _progress("alerts") as progress:
            result = run_alerts_bench(
                get_settings(),
                rules=rules,
                instruments=instruments,
                rate=rate,
                seconds=seconds,
                progress=progress,
            )
    except TradingHelperError as exc:
        _fail(exc)
        return
    print(json.dumps(result) if json_out else json.dumps(result, indent=2))
