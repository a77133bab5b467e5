"""``trading-helper export candles|ticks`` and ``trading-helper import candles`` (registered by
``cli.py``). Progress goes to stderr through Rich; the result line too, so stdout stays clean."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from trading_helper.cli_common import _fail, console, fail_on_error

if TYPE_CHECKING:
    import asyncpg

    from trading_helper.config import Settings
    from trading_helper.export.columns import Kind
    from trading_helper.export.formats import Format
    from trading_helper.storage.sql_export import Zone

export_app = typer.Typer(no_args_is_help=True, help="Export candles or ticks to CSV or Parquet.")
import_app = typer.Typer(no_args_is_help=True, help="Import candles from CSV or Parquet into broker history.")

_REFS = typer.Option(
    ..., "--instrument", "-i", help="Instrument reference (repeat for more): NSE:RELIANCE, id:42 ..."
)
_FROM = typer.Option(..., "--from", help="Start, ISO 8601 (naive = IST).")
_TO = typer.Option(..., "--to", help="End (exclusive), ISO 8601 (naive = IST).")
_FORMAT = typer.Option("csv", "--format", help="csv or parquet.")
_TZ = typer.Option("ist", "--tz", help="Zone of the written times: ist or utc.")
_OUT = typer.Option(..., "-o", "--output", help="The file to write.")


def _with_pool(work: Callable[[asyncpg.Pool, Settings], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """``work`` with the settings and a small pool of DATABASE_URL; an error of the tree ends the
    command with its one-line message."""
    from trading_helper.config import get_settings
    from trading_helper.storage.db import create_pool

    async def run() -> dict[str, Any]:
        settings = get_settings()
        pool = await create_pool(settings.DATABASE_URL, min_size=1, max_size=2)
        try:
            return await work(pool, settings)
        finally:
            await pool.close()

    return fail_on_error(lambda: asyncio.run(run()))


def _run_export(
    kind: Kind, refs: list[str], interval: str, start: str, end: str, fmt: str, tz: str, out: Path
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from trading_helper.errors import ValidationError
    from trading_helper.export.run import build_request, describe, export_to_file

    if fmt not in ("csv", "parquet") or tz not in ("ist", "utc"):
        _fail(ValidationError(f"--format is csv or parquet and --tz ist or utc (given {fmt!r}, {tz!r})"))
    zone, form = cast("Zone", tz), cast("Format", fmt)
    try:
        begin, finish = datetime.fromisoformat(start), datetime.fromisoformat(end)
    except ValueError as exc:
        _fail(ValidationError(f"--from/--to: {exc}"))

    async def go(pool: asyncpg.Pool, settings: Settings) -> dict[str, Any]:
        req = await build_request(
            pool,
            kind,
            refs,
            interval=interval,
            start=begin,
            end=finish,
            zone=zone,
            broker=settings.BROKER,
        )
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rows]:,} rows"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(f"{kind} of {describe(req.instruments)}", total=len(req.instruments), rows=0)

            def progress(done: int, rows: int) -> None:
                bar.update(task, completed=done, rows=rows)

            size = await export_to_file(pool, req, form, out, progress=progress)
        return {"file": str(out), "bytes": size, "instruments": len(req.instruments)}

    console.print(json.dumps(_with_pool(go)))


@export_app.command("candles")
def export_candles(
    instrument: list[str] = _REFS,
    interval: str = typer.Option("1m", "--interval", help="1m 5m 15m 1h 1d."),
    start: str = _FROM,
    end: str = _TO,
    fmt: str = _FORMAT,
    tz: str = _TZ,
    output: Path = _OUT,
) -> None:
    """The merged candle series (live, broker, partial; the `source` column says which)."""
    _run_export("candles", instrument, interval, start, end, fmt, tz, output)


@export_app.command("ticks")
def export_ticks(
    instrument: list[str] = _REFS,
    start: str = _FROM,
    end: str = _TO,
    fmt: str = _FORMAT,
    tz: str = _TZ,
    output: Path = _OUT,
) -> None:
    """The stored ticks (archived F&O ticks included), each instrument in time order."""
    _run_export("ticks", instrument, "1m", start, end, fmt, tz, output)


@import_app.command("candles")
def import_candles(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A CSV or Parquet file.")],
    instrument: str | None = typer.Option(
        None,
        "--instrument",
        "-i",
        help="The instrument of every row (when the file has no instrument column).",
    ),
    interval: str | None = typer.Option(
        None, "--interval", help="The interval of every row (when the file has no interval column)."
    ),
    assume_tz: str | None = typer.Option(
        None, "--assume-tz", help="ist or utc: the zone of times written without offset (else refused)."
    ),
    source: str = typer.Option("import", "--source", help="The source recorded with the candles."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check every row and write nothing."),
) -> None:
    """Candles into broker history, checked row by row; prints the report (JSON) on stdout.

    Columns: time, open, high, low, close, volume [, instrument, interval, open_interest]; an
    export of `trading-helper export candles` reads back as is."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from trading_helper.export.importer import import_candles as run_import

    async def go(pool: asyncpg.Pool, settings: Settings) -> dict[str, Any]:
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(f"checking {path.name}")

            def progress(rows: int) -> None:
                bar.update(task, description=f"checking {path.name}: {rows:,} rows")

            report = await run_import(
                pool,
                path,
                instrument=instrument,
                interval=interval,
                assume_tz=assume_tz,
                source=source,
                broker=settings.BROKER,
                dry_run=dry_run,
                progress=progress,
            )
        return report.as_dict()

    result = _with_pool(go)
    print(json.dumps(result, indent=2))
    if result["refused"]:
        console.print(
            f"[yellow]{sum(result['refused'].values())} row(s) refused[/yellow]: {result['refused']}"
        )
