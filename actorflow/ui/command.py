"""``actorflow ui``: serve the page for a database file and print the link to open."""

from __future__ import annotations

import asyncio
import contextlib
import sys

from actorflow.errors import ActorflowError
from actorflow.reader import Reader
from actorflow.ui.serve import base_url, bind, serve
from actorflow.ui.source import FileSource
from actorflow.ui.web import UI


def serve_file(db: str, host: str, port: int) -> int:
    """Serve the page for ``db`` on ``host``:``port`` until interrupted; returns 0.

    Raises :class:`ActorflowError` for a URL (only files are supported for now), a
    file that is not an actorflow database, or an address that cannot be bound.
    """
    if "://" in db:
        raise ActorflowError(
            "actorflow ui reads database files only for now; give the path of a SQLite "
            "file, not a URL"
        )
    Reader(db).list()  # fails now, in one line, on a missing or foreign file
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise ActorflowError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    ui = UI(FileSource(db))
    print(f"actorflow ui for {db}; open this link (it holds the access token):", flush=True)
    print(f"  {ui.url(base_url(sock))}", flush=True)
    if host not in ("127.0.0.1", "::1", "localhost"):
        print(f"warning: listening on {host}, not only on this machine", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops it
        asyncio.run(serve(ui, sock))
    return 0
