"""Serving the page with uvicorn on a socket of our own (so port 0 picks a free one)."""

from __future__ import annotations

import socket

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
