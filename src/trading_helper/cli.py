"""The ``trading-helper`` command line: db, demo, serve, login, bench."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from trading_helper.errors import TradingHelperError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Trading Helper: ticks, candles, charts.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(db_app, name="db")
login_app = typer.Typer(no_args_is_help=True, help="Log in to a broker and store its access token.")
app.add_typer(login_app, name="login")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print JSON.")
app.add_typer(bench_app, name="bench")

console = Console(stderr=True)


def _fail(exc: TradingHelperError) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(code=1)


@db_app.command("migrate")
def db_migrate() -> None:
    """Create or upgrade the schema (TimescaleDB when available, plain PostgreSQL otherwise)."""
    from trading_helper.config import get_settings
    from trading_helper.storage.migrate import migrate

    try:
        report = asyncio.run(migrate(get_settings().DATABASE_URL))
    except TradingHelperError as exc:
        _fail(exc)
        return
    applied = ", ".join(report.applied) or "nothing to apply"
    console.print(f"schema up to date on [bold]{report.flavour}[/bold] (version {report.version}): {applied}")


@app.command()
def demo(
    port: int = typer.Option(8000, help="HTTP port of the API and chart page."),
    instruments: int = typer.Option(200, help="Simulated instruments."),
) -> None:
    """Run the whole system on this machine with the simulator broker."""
    console.print(
        "The demo is not built yet (issue: 'See it: ... one-command demo'). "
        f"It will serve the chart page on port {port} with {instruments} simulated instruments."
    )


@login_app.command("kite")
def login_kite(
    request_token: str = typer.Option(
        "", "--request-token", help="The request_token from Kite's redirect (or the whole redirect URL)."
    ),
    listen_port: int = typer.Option(
        0, "--listen-port", help="Catch the redirect on 127.0.0.1:PORT (the app's redirect URL) instead."
    ),
    wait: float = typer.Option(300.0, "--wait", help="Seconds to wait for the redirect."),
) -> None:
    """Log in to Zerodha Kite and store the access token (mode 0600); prints it only redacted."""
    from trading_helper.brokers.kite.login import run_login
    from trading_helper.config import get_settings

    try:
        asyncio.run(run_login(get_settings(), request_token=request_token or None,
                              listen_port=listen_port or None, wait_s=wait, echo=typer.echo))
    except TradingHelperError as exc:
        _fail(exc)


if __name__ == "__main__":
    app()
