"""What the command-line modules share: the stderr console, the one-line error exit (and a runner
that takes a command's errors there) and the progress bar (stdout keeps each command's JSON)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn, TypeVar

import typer
from rich.console import Console

from trading_helper.errors import TradingHelperError

console = Console(stderr=True)
T = TypeVar("T")


@contextmanager
def _progress(first: str) -> Iterator[Callable[[str, float], None]]:
    """A Rich progress bar on stderr (stdout keeps the JSON); yields ``progress(text, done 0..1)``."""
    from rich.progress import Progress

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(first, total=1.0)

        def progress(text: str, done: float) -> None:
            bar.update(task, description=text, completed=done)

        yield progress


def _fail(exc: TradingHelperError) -> NoReturn:
    from rich.markup import escape as no_markup

    from trading_helper.redact import safe

    console.print(f"[red]error:[/red] {no_markup(safe(exc))}", soft_wrap=True)  # one line, never wrapped
    raise typer.Exit(code=1)


def fail_on_error(call: Callable[[], T]) -> T:
    """``call()``; an error of the tree ends the command with its one-line message (``_fail``)."""
    try:
        return call()
    except TradingHelperError as exc:
        _fail(exc)
