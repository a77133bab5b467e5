"""``trading-helper reconcile --date``: run a day's reconciliation (a Rich progress bar on stderr)
and print its summary as JSON on stdout; ``--no-run`` prints what is stored."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import Any

import typer

from trading_helper.errors import TradingHelperError, ValidationError


async def _reconcile(day: date, run: bool, differences: bool) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import Progress

    from trading_helper.brokers.registry import build_broker
    from trading_helper.config import get_settings
    from trading_helper.reconcile.job import reconcile_day
    from trading_helper.reconcile.summary import day_summary
    from trading_helper.storage.db import create_pool

    settings = get_settings()
    pool = await create_pool(settings.DATABASE_URL, min_size=1, max_size=2)
    try:
        if run:
            broker = build_broker(settings)
            try:
                with Progress(console=Console(stderr=True), transient=True) as bar:
                    task = bar.add_task(f"reconciling {day}", total=None)
                    await reconcile_day(
                        pool,
                        broker,
                        day,
                        progress=lambda done, total: bar.update(task, completed=done, total=total),
                    )
            finally:
                await broker.aclose()
        return await day_summary(pool, day, differences=differences)
    finally:
        await pool.close()


def reconcile(
    day: str = typer.Option(..., "--date", help="The IST trading day, YYYY-MM-DD."),
    run: bool = typer.Option(
        True, "--run/--no-run", help="Fetch and compare now, or only print what is stored."
    ),
    differences: bool = typer.Option(False, "--differences", help="List every difference too."),
) -> None:
    """Hold a day's live 1m candles of the subscribed instruments against the broker's (within
    its rate limits), store the differences, print the summary as JSON."""
    from trading_helper.cli_common import _fail

    try:
        try:
            wanted = date.fromisoformat(day)
        except ValueError:
            raise ValidationError(f"--date must be YYYY-MM-DD; got {day!r}") from None
        print(json.dumps(asyncio.run(_reconcile(wanted, run, differences)), indent=2))
    except TradingHelperError as exc:
        _fail(exc)
