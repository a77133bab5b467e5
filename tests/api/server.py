"""Run an ASGI app on a real socket (uvicorn, 127.0.0.1, a free port) for the API tests."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import uvicorn

START_TIMEOUT_S = 10.0


def _bound_socket(send_buffer: int | None = None) -> socket.socket:
    # IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only for such sockets
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer is not None:  # inherited by accepted connections (Linux)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def _server(app: Any) -> uvicorn.Server:
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", ws="websockets-sansio", timeout_graceful_shutdown=2
    )
    return uvicorn.Server(config)


@asynccontextmanager
async def serve(app: Any, *, send_buffer: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` in this event loop; yields its base URL. ``send_buffer`` caps the kernel's
    send buffer per connection, so a client that stops reading blocks its sender quickly."""
    sock = _bound_socket(send_buffer)
    server = _server(app)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextmanager
def serve_in_thread(
    build: Callable[[], Awaitable[tuple[Any, Callable[[], Awaitable[None]]]]],
) -> Iterator[str]:
    """Serve the app ``build()`` makes in a thread with its own event loop (for synchronous
    clients such as schemathesis); ``build`` returns the app and an async cleanup."""
    sock = _bound_socket()
    holder: dict[str, Any] = {}
    started = threading.Event()

    async def main() -> None:
        app, cleanup = await build()
        server = _server(app)
        holder["server"] = server
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    break
                await asyncio.sleep(0.01)
            started.set()
            await task
        finally:
            started.set()
            await cleanup()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test below
            holder["error"] = exc

    thread = threading.Thread(target=run, name="api-server", daemon=True)
    thread.start()
    try:
        if not started.wait(START_TIMEOUT_S) or "error" in holder:
            raise RuntimeError(f"API server did not start: {holder.get('error')!r}")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        if "server" in holder:
            holder["server"].should_exit = True
        thread.join(15)
        sock.close()
