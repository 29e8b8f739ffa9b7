"""A web page for the human in the loop: see what waits, approve, reject, send, cancel.

Installed with the extra ``actorflow[ui]`` (Starlette and uvicorn). Two ways to run it:

- ``actorflow ui --db FILE_OR_URL``: a page beside whatever process owns the database
  (a file, or a ``postgresql://`` URL); it reads as ``actorflow list`` / ``show`` do
  and acts through the inbox, so the owner validates each request and the page shows
  its verdict.
- ``actorflow.ui.app(runtime)``: an ASGI app an asyncio web app mounts beside its own
  routes (``starlette_app.mount("/flows", ui)``), serving that runtime in-process.

Either way the page is guarded by a random access token (``ui.token``; ``ui.url(base)``
is the link to open) and updates itself when something changes.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError("actorflow.ui needs the extra 'ui': pip install 'actorflow[ui]'") from exc

from actorflow.runtime import Runtime
from actorflow.ui.serve import bind, serve, serving
from actorflow.ui.source import FileSource, LiveSource
from actorflow.ui.web import UI


def app(runtime: Runtime, *, token: str | None = None) -> UI:
    """The page for ``runtime``, in this process and event loop, as an ASGI app.

    ``token`` is the access token (random unless given); the app's ``url(base)`` is
    the link that opens it.
    """
    return UI(LiveSource(runtime), token=token)


def file_app(path: str, *, token: str | None = None) -> UI:
    """The page for the database at ``path`` (a file, or a ``postgresql://`` URL), owned
    by another process or none."""
    return UI(FileSource(path), token=token)


__all__ = ["UI", "app", "bind", "file_app", "serve", "serving"]
