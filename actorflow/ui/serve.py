"""Serving the page with uvicorn on a socket of our own (so port 0 picks a free one)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import uvicorn

from actorflow.ui.web import UI


def bind(host: str = "127.0.0.1", port: int = 8765) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (``0``: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def base_url(sock: socket.socket) -> str:
    """``http://host:port`` of a socket from :func:`bind`."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def server(ui: UI) -> uvicorn.Server:
    """A uvicorn server for ``ui``: no access log (URLs hold the access token), and a
    short grace at shutdown (open pages keep an event stream open)."""
    config = uvicorn.Config(
        ui, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1
    )
    return uvicorn.Server(config)


async def serve(ui: UI, sock: socket.socket) -> None:
    """Serve ``ui`` on ``sock`` until the task is cancelled or the process is interrupted."""
    try:
        await server(ui).serve(sockets=[sock])
    finally:
        ui.changes.stop()


@contextlib.asynccontextmanager
async def serving(ui: UI, host: str = "127.0.0.1", port: int = 8765) -> AsyncIterator[str]:
    """Serve ``ui`` in this event loop while the block runs; yield the link to open
    (``port=0``: any free port). Raises :class:`OSError` if the address is taken."""
    sock = bind(host, port)
    srv = server(ui)
    task = asyncio.get_running_loop().create_task(srv.serve(sockets=[sock]))
    try:
        while not srv.started:
            if task.done():  # it could not start: say why
                task.result()
                raise OSError(f"the page's server on {host}:{port} stopped at start")
            await asyncio.sleep(0.01)
        yield ui.url(base_url(sock))
    finally:
        srv.should_exit = True
        await task
        ui.changes.stop()
        sock.close()
