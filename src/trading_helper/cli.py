"""The ``trading-helper`` command line: db, demo, serve, login, bench, export, import."""

from __future__ import annotations

import asyncio

import typer

from trading_helper.bench.commands import bench_app
from trading_helper.cli_common import _fail, console
from trading_helper.errors import TradingHelperError
from trading_helper.export.commands import export_app, import_app
from trading_helper.reconcile.cli import reconcile as reconcile_command
from trading_helper.replay.cli import replay as replay_command

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help=(
        "Trading Helper: ticks, candles, charts.\n\nSettings come from the environment and from a .env file in the "
        "current folder (see .env.example): DATABASE_URL (PostgreSQL), REDIS_URL, BROKER (kite, fyers or sim), "
        "API_TOKEN ..."
    ),
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(db_app, name="db")
login_app = typer.Typer(no_args_is_help=True, help="Log in to a broker and store its access token.")
app.add_typer(login_app, name="login")
app.add_typer(bench_app, name="bench")
app.add_typer(export_app, name="export")
app.add_typer(import_app, name="import")


def _print_version(value: bool) -> None:
    if value:
        from trading_helper import __version__

        print(f"trading-helper {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    _version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """The options of ``trading-helper`` itself (the help text is the Typer's)."""


@db_app.command("migrate")
def db_migrate() -> None:
    """Create or upgrade the schema (TimescaleDB when available, plain PostgreSQL otherwise)."""
    from trading_helper.config import get_settings
    from trading_helper.storage.migrate import migrate

    try:
        settings = get_settings()
        report = asyncio.run(
            migrate(
                settings.direct_database_url,  # its lock is a session's: never through pgBouncer
                reader_password=settings.GRAFANA_DB_PASSWORD.get_secret_value() or None,
                require_timescale=settings.TIMESCALEDB_REQUIRED,
            )
        )
    except TradingHelperError as exc:
        _fail(exc)
        return
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    applied = ", ".join(report.applied) or "nothing to apply"
    console.print(f"schema up to date on [bold]{report.flavour}[/bold] (version {report.version}): {applied}")


app.command("replay")(replay_command)
app.command("reconcile")(reconcile_command)


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Listen address (default: API_HOST).", show_default=False),
    port: int | None = typer.Option(
        None, min=1, max=65535, help="Listen port (default: API_PORT).", show_default=False
    ),
    ingest: bool = typer.Option(
        True,
        "--ingest/--no-ingest",
        help="Run the broker feed, tick writer and housekeeping too; --no-ingest: a stateless API "
        "replica (docs/production.md).",
    ),
) -> None:
    """Run the HTTP API (uvicorn on API_HOST:API_PORT), with the ingest service unless --no-ingest."""
    import logging

    from trading_helper import runner
    from trading_helper.config import get_settings
    from trading_helper.listen import listen_socket

    try:
        settings = get_settings()
        # before the application's imports: a taken port fails at once, not seconds later
        sock = listen_socket(host or settings.API_HOST, port or settings.API_PORT)
        from trading_helper.api.serve import serve as run_serve

        logging.basicConfig(
            level=settings.LOG_LEVEL, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        runner.run(run_serve(settings, host=host or None, port=port or None, ingest=ingest, sock=sock))
    except TradingHelperError as exc:
        _fail(exc)


def _logging(level: str) -> None:
    import logging

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


_SHARDS = typer.Option(
    None, "--shard", help="Collect only this shard (broker:account:connection, e.g. kite:a:0); repeatable."
)


@app.command()
def collect(
    shard: list[str] | None = _SHARDS,
    max_shards: int | None = typer.Option(
        None, "--max-shards", min=1, help="Hold at most this many shards (default: a fair share)."
    ),
) -> None:
    """Collect the shards of the coordinator's plan this process holds a lease on (a standby for
    the rest): broker feeds into one Redis stream per shard. Run `write` processes to store them."""
    from trading_helper import runner
    from trading_helper.cluster.commands import run_collect
    from trading_helper.config import get_settings

    try:
        settings = get_settings()
        _logging(settings.LOG_LEVEL)
        runner.run(run_collect(settings, shards=shard or (), max_shards=max_shards))
    except TradingHelperError as exc:
        _fail(exc)


@app.command()
def write() -> None:
    """Write the shard streams this process holds a lease on into the database (exactly once per
    stream); any number of writer processes share the streams. One of them runs the maintenance."""
    from trading_helper import runner
    from trading_helper.cluster.commands import run_write
    from trading_helper.config import get_settings

    try:
        settings = get_settings()
        _logging(settings.LOG_LEVEL)
        runner.run(run_write(settings))
    except TradingHelperError as exc:
        _fail(exc)


@app.command()
def status(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The ingest service's status (from Redis) and the tick stream's backlog; for a demo running in
    this folder with its in-process Redis stand-in, the demo's /api/status."""
    import json
    from pathlib import Path

    from trading_helper.config import get_settings
    from trading_helper.demo.state import read_demo_status, running_demo
    from trading_helper.ingest.status import read_status

    try:
        demo = running_demo(Path("var"))
        if demo is not None and demo.in_process:
            result = asyncio.run(read_demo_status(demo))
        else:
            result = asyncio.run(read_status(get_settings()))
    except TradingHelperError as exc:
        _fail(exc)
        return
    if json_out:
        print(json.dumps(result))
        return
    for key, value in result.items():
        console.print(f"[bold]{key}[/bold]: {value}")


@app.command()
def demo(
    port: int = typer.Option(8000, help="HTTP port of the API and chart page."),
    instruments: int = typer.Option(200, min=1, max=5000, help="Simulated instruments."),
    in_process_redis: bool = typer.Option(
        False, "--in-process-redis", help="Use the in-process Redis stand-in even when a Redis answers."
    ),
) -> None:
    """Run the whole system on this machine with the simulator broker (chart page on --port)."""
    from trading_helper.listen import listen_socket

    try:
        sock = listen_socket(
            "127.0.0.1", port
        )  # before the application's imports: a taken port fails at once
        from trading_helper.demo.run import main

        main(port, instruments, in_process_redis=in_process_redis, sock=sock)
    except TradingHelperError as exc:
        _fail(exc)


@login_app.command("kite")
def login_kite(
    request_token: str = typer.Option(
        "", "--request-token", help="The request_token from Kite's redirect (or the whole redirect URL)."
    ),
    listen_port: int = typer.Option(
        0, "--listen-port", help="Catch the redirect on 127.0.0.1:PORT (the app's redirect URL) instead."
    ),
    wait: float = typer.Option(300.0, "--wait", help="Seconds to wait for the redirect."),
    account: str = typer.Option(
        "default", "--account", help="Which of KITE_ACCOUNTS (its token goes to TOKEN_DIR/NAME/)."
    ),
) -> None:
    """Log in to Zerodha Kite and store the access token (mode 0600); prints it only redacted."""
    from trading_helper.brokers.kite.login import run_login
    from trading_helper.config import get_settings

    try:
        settings = get_settings()
        asyncio.run(
            run_login(
                settings.for_account(settings.account(account, "kite")),
                request_token=request_token or None,
                listen_port=listen_port or None,
                wait_s=wait,
                echo=typer.echo,
            )
        )
    except TradingHelperError as exc:
        _fail(exc)


@login_app.command("fyers")
def login_fyers(
    auth_code: str | None = typer.Option(
        None, "--auth-code", help="The auth_code (or the whole redirect URL) from a login done already."
    ),
    paste: bool = typer.Option(
        False,
        "--paste",
        help="Print the login URL, then read the redirect URL pasted back (use this in a "
        "container: the browser cannot reach a listener on the container's 127.0.0.1).",
    ),
    timeout: float = typer.Option(300.0, help="Seconds to wait for the redirect."),
    account: str = typer.Option(
        "default", "--account", help="Which of FYERS_ACCOUNTS (its token goes to TOKEN_DIR/NAME/)."
    ),
) -> None:
    """Log in to Fyers (auth-code flow) and store the access token (mode 0600)."""
    from trading_helper.brokers.fyers.login import login
    from trading_helper.config import get_settings

    try:
        settings = get_settings().for_account(get_settings().account(account, "fyers"))
        asyncio.run(login(settings, auth_code=auth_code, paste=paste, timeout_s=timeout, echo=typer.echo))
    except TradingHelperError as exc:
        _fail(exc)


grafana_app = typer.Typer(no_args_is_help=True, help="Grafana dashboards and provisioning.")
app.add_typer(grafana_app, name="grafana")


@grafana_app.command("build")
def grafana_build(
    timescaledb: bool = typer.Option(
        True,
        "--timescaledb/--no-timescaledb",
        help="The datasource's TimescaleDB flag ($__timeGroup uses time_bucket).",
    ),
    check: bool = typer.Option(
        False, "--check", help="Write nothing; exit 1 when a committed file is stale."
    ),
) -> None:
    """Generate the dashboards JSON and provisioning YAML from src/trading_helper/grafana/."""
    from trading_helper.grafana.build import stale, write

    if check:
        outdated = stale()
        for name in outdated:
            console.print(f"[red]stale:[/red] {name}")
        raise typer.Exit(code=1 if outdated else 0)
    for path in write(timescaledb=timescaledb):
        console.print(f"wrote {path}")


if __name__ == "__main__":
    app()
