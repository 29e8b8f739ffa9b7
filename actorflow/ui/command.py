"""``actorflow ui``: serve the page for a database (a file, or a ``postgresql://`` URL)
and print the link to open."""

from __future__ import annotations

import asyncio
import contextlib
import sys

from actorflow.errors import ActorflowError
from actorflow.reader import Reader
from actorflow.store.url import is_postgres_url
from actorflow.ui.serve import base_url, bind, serve
from actorflow.ui.source import FileSource
from actorflow.ui.web import UI


def serve_file(db: str, host: str, port: int) -> int:
    """Serve the page for ``db`` (a file, or a ``postgresql://`` URL) on ``host``:``port``
    until interrupted; returns 0.

    Raises :class:`ActorflowError` for another kind of URL, a file or database that is
    not actorflow's, or an address that cannot be bound. A URL's password is never shown.
    """
    if "://" in db and not is_postgres_url(db):
        raise ActorflowError(
            "actorflow ui reads an SQLite file or a postgresql:// URL; "
            f"not a {db.partition('://')[0]}:// URL"
        )
    source = FileSource(db)
    Reader(db).list()  # fails now, in one line, on a missing or foreign database
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise ActorflowError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    ui = UI(source)
    print(
        f"actorflow ui for {source.label}; open this link (it holds the access token):",
        flush=True,
    )
    print(f"  {ui.url(base_url(sock))}", flush=True)
    if host not in ("127.0.0.1", "::1", "localhost"):
        print(f"warning: listening on {host}, not only on this machine", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops it
        asyncio.run(serve(ui, sock))
    return 0
