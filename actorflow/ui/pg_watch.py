"""How the page notices that a PostgreSQL database changed: a cheap fingerprint, polled.

The runtime does not ``NOTIFY`` on its commits (only a request written to the inbox
rings its owner), so the page asks, on one connection kept open, for a few numbers
that move whenever something it shows may have changed: the last record of the log
(every commit appends one; a checkpoint empties it), the last journal record (a
checkpoint appends there), the last inbox request with how many still wait (a request
sent or decided), and how many instances were ever deleted, from the server's
statistics (a purge by retention; counted when the server flushes its statistics,
within seconds). Index look-ups only: counting the instances instead would cost a
scan of them each time (about 10 ms per look at 100,000 instances).
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import asyncpg

from actorflow.store import postgres

FINGERPRINT = (
    "SELECT (SELECT coalesce(max(seq), 0) FROM wal),"
    " (SELECT coalesce(max(seq), 0) FROM journal),"
    " (SELECT coalesce(max(seq), 0) FROM inbox),"
    " (SELECT count(*) FROM inbox WHERE status = 'pending'),"
    " (SELECT n_tup_del FROM pg_stat_user_tables WHERE relid = 'instances'::regclass)"
)
"""One row of numbers that moves whenever something the page shows may have changed."""
CONNECT_TIMEOUT = 10.0  # seconds one attempt to (re)connect may take


class PgWatch:
    """Watches the database at ``url`` from one connection (reopened after a failure)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: asyncpg.Connection | None = None
        self._seen: tuple[Any, ...] | None = None

    async def moved(self) -> bool:
        """Whether the fingerprint moved since the last look (``False`` at the first look
        and when the database cannot be reached; the next look tries again)."""
        try:
            if self._conn is None:
                self._conn = await asyncpg.connect(
                    self.url, timeout=CONNECT_TIMEOUT, **postgres._SETTINGS
                )
            row = await self._conn.fetchrow(FINGERPRINT)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, ValueError):
            await self.close()
            return False
        now = tuple(row) if row is not None else None
        moved = self._seen is not None and now != self._seen
        self._seen = now
        return moved

    async def close(self) -> None:
        """Close the connection (it reopens on the next look)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                await conn.close(timeout=CONNECT_TIMEOUT)
