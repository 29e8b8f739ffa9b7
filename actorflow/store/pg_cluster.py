"""Several runtimes on one PostgreSQL database: leases, takeover and fencing, in SQL.

Each open runtime has a row in ``runtimes``: its id (what ``instances.owner`` and
``wal.owner`` name) and ``lease_until``, in the server's time (``now()``: never a
runtime's clock, and no two machines' clocks compared). An instance is run by the
runtime its ``owner`` names, and by no other, for as long as that runtime's row exists.

- **Leases.** A runtime renews its row every third of its lease (:func:`renew`). A row
  whose lease has passed belongs to a runtime presumed dead. So does one whose listening
  session (``session_pid``, ``session_start``) the server has lost for a while
  (:data:`SESSION_GRACE`, longer than a runtime takes to listen again after a server
  restart), or at once if it ran on this machine and its process is gone: a killed
  process's connections close at once, so its instances are taken over within seconds
  rather than a lease, while a paused one keeps them until its lease ends.
- **Takeover.** A live runtime deletes the rows of dead runtimes, claims their instances
  (``owner``), and folds their log rows into the instances' snapshots, in one
  transaction (:func:`claim`). Takeovers are serialised by an advisory lock, and a dead
  runtime's row is deleted only while none of its writes is in flight.
- **Fencing.** Every write of a runtime locks its own row (``FOR KEY SHARE``) in the
  same statement or transaction, and writes nothing when the row is gone
  (:data:`FENCE`): once another runtime has taken its instances over, a runtime paused
  past its lease (SIGSTOP, a partition) cannot write for them. The lock also makes a
  takeover wait for (skip) the writes in flight, so none lands after one.
- **Clean close.** A runtime that closes releases its instances (``owner`` NULL) and
  deletes its row (:func:`leave`); the others are told by ``NOTIFY`` and take them
  over at once.
"""

from __future__ import annotations

import os
import socket

import asyncpg

from actorflow.errors import StoreError

RUNTIMES = """
CREATE TABLE {schema}.runtimes (
    id TEXT PRIMARY KEY,
    lease_until TIMESTAMPTZ NOT NULL,
    joined_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    session_pid INTEGER,
    session_start TIMESTAMPTZ
);
"""
"""The table of open runtimes (``{schema}``: the store's schema)."""

GONE = (
    "(r.session_pid IS NOT NULL AND NOT EXISTS"
    " (SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.session_pid"
    " AND (a.backend_start IS NULL OR a.backend_start = r.session_start)))"
)
"""Whether the server has lost the listening session of runtime row ``r``."""
SESSION_GRACE = 2.0
"""Seconds a runtime's session must stay lost before the runtime is presumed dead."""

EVENTS = "actorflow_events"
"""The ``NOTIFY`` channel of what every runtime may want to know: an instance finished
(``done:<id>``), a notify on topics (``topics:<json list>``), a runtime left
(``left:<id>``)."""

TAKEOVER_LOCK = 0x41464C59  # "AFLY": one takeover at a time, across the database

FENCE = "SELECT 1 FROM runtimes WHERE id = $1 FOR KEY SHARE"
"""The fencing lock: one row while the runtime ``$1`` holds its lease, none once it
was taken over. Held to the end of the transaction, it keeps a takeover out meanwhile."""


class LeaseLost(StoreError):
    """This runtime's lease was taken over by another runtime (it was presumed dead):
    it writes nothing more, and closes."""


def process_gone(runtime: str) -> bool:
    """Whether runtime id ``runtime`` (host, process, random part: see
    :func:`~actorflow.store.postgres.runtime_id`) names a process of this machine that
    no longer exists."""
    host, _, rest = runtime.partition(":")
    pid, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, someone else's
        return False
    return False


def lost(label: str, owner: str) -> LeaseLost:
    """The error of a runtime whose instances were taken over."""
    return LeaseLost(
        f"runtime {owner} lost its lease on {label}: another runtime took its instances "
        "over (it was paused or cut off for longer than its lease); it writes nothing more "
        "and closes. Open a new Runtime to go on."
    )


async def join(conn: asyncpg.Connection, owner: str, lease: float) -> None:
    """Register runtime ``owner`` with a lease of ``lease`` seconds."""
    await conn.execute(
        "INSERT INTO runtimes (id, lease_until) VALUES ($1, now() + make_interval(secs => $2))",
        owner,
        lease,
    )


async def listening(conn: asyncpg.Connection, owner: str) -> None:
    """Record ``conn`` (the listening connection) as ``owner``'s session: once the
    server loses it, ``owner`` is presumed dead."""
    await conn.execute(
        "UPDATE runtimes SET session_pid = pg_backend_pid(), session_start ="
        " (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())"
        " WHERE id = $1",
        owner,
    )


async def renew(
    conn: asyncpg.Connection, owner: str, lease: float
) -> tuple[float | None, list[str]]:
    """Extend ``owner``'s lease; return the seconds until the earliest other runtime's
    lease ends (``None``: there is no other), and the runtimes whose session the server
    lost. Raises :class:`LeaseLost` (with an empty message: the caller words it) if
    ``owner``'s row is gone."""
    row = await conn.fetchrow(
        "WITH mine AS (UPDATE runtimes SET lease_until = now() + make_interval(secs => $2)"
        " WHERE id = $1 RETURNING 1)"
        " SELECT (SELECT count(*) FROM mine),"
        " extract(epoch FROM (SELECT min(lease_until) FROM runtimes WHERE id <> $1) - now()),"
        " ARRAY(SELECT r.id FROM runtimes r WHERE r.id <> $1 AND " + GONE + ")",
        owner,
        lease,
    )
    assert row is not None
    if not row[0]:
        raise LeaseLost("")
    return (None if row[1] is None else float(row[1])), list(row[2])


async def gone(conn: asyncpg.Connection, owner: str) -> list[str]:
    """The other runtimes whose session the server lost."""
    return [
        r[0]
        for r in await conn.fetch("SELECT r.id FROM runtimes r WHERE r.id <> $1 AND " + GONE, owner)
    ]


async def fence(conn: asyncpg.Connection, owner: str) -> None:
    """Take the fencing lock of ``owner`` in ``conn``'s transaction; :class:`LeaseLost`
    (empty message) if its lease was taken over."""
    if await conn.fetchval(FENCE, owner) is None:
        raise LeaseLost("")


async def claim(
    conn: asyncpg.Connection, owner: str, everything: bool, suspects: list[str]
) -> tuple[list[str], list[bytes], list[str]] | None:
    """In ``conn``'s transaction: delete the rows of the runtimes whose lease has passed,
    and of the ``suspects`` whose session is still lost; claim for ``owner`` their
    instances and those released by a clean close (``everything``: also any whose owner
    is not a live runtime, as at open), and delete
    the log rows of every runtime no longer registered. Returns the runtimes presumed
    dead, those log rows (oldest first) and the claimed ids; ``None`` when there was
    nothing to take over."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", TAKEOVER_LOCK)
    await fence(conn, owner)
    dead = [
        row[0]
        for row in await conn.fetch(
            "DELETE FROM runtimes WHERE id IN (SELECT id FROM runtimes r WHERE r.id <> $1"
            " AND (r.lease_until < now() OR (r.id = ANY($2) AND " + GONE + "))"
            " FOR UPDATE SKIP LOCKED) RETURNING id",
            owner,
            suspects,
        )
    ]
    if everything:
        taken = await conn.fetch(
            "UPDATE instances SET owner = $1 WHERE owner IS NULL OR NOT EXISTS"
            " (SELECT 1 FROM runtimes WHERE runtimes.id = instances.owner) RETURNING id",
            owner,
        )
    else:
        taken = await conn.fetch(
            "UPDATE instances SET owner = $1 WHERE owner IS NULL OR owner = ANY($2) RETURNING id",
            owner,
            dead,
        )
    log = await conn.fetch(
        "DELETE FROM wal WHERE NOT EXISTS (SELECT 1 FROM runtimes WHERE runtimes.id = wal.owner)"
        " RETURNING seq, record"
    )
    if not (dead or taken or log):
        return None
    return dead, [blob for _, blob in sorted(log)], [row[0] for row in taken]


async def leave(conn: asyncpg.Connection, owner: str) -> bool:
    """Release ``owner``'s instances and delete its row, telling the others
    (:data:`EVENTS`); ``False`` if its lease had been taken over already."""
    async with conn.transaction():
        gone = await conn.fetchval("DELETE FROM runtimes WHERE id = $1 RETURNING 1", owner)
        if gone is None:
            return False
        await conn.execute("UPDATE instances SET owner = NULL WHERE owner = $1", owner)
        await conn.execute("SELECT pg_notify($1, $2)", EVENTS, f"left:{owner}")
    return True


async def leader(conn: asyncpg.Connection) -> str | None:
    """The runtime that decides the inbox requests no instance owner can (a notify, a
    purge, an unknown instance): the longest-registered one."""
    found = await conn.fetchval("SELECT id FROM runtimes ORDER BY joined_at, id LIMIT 1")
    return None if found is None else str(found)
