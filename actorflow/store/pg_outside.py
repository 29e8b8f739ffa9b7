"""A PostgreSQL database from outside its runtime: what the command line reads and writes.

The twin of :func:`~actorflow.store.sqlite.connect_outside` and
:func:`~actorflow.store.sqlite.read_committed` for a ``postgresql://`` URL. Each call
is synchronous (the CLI is), opening one connection through asyncpg in a loop of its
own, and never takes ownership: reads run in one read-only, repeatable-read
transaction (so a checkpoint running meanwhile cannot make them miss or double a
record) and fold bases, journals and the log tail as recovery does. Every message
names the database by its URL without the password (:func:`~actorflow.store.url.redact`),
and a driver's message is scrubbed of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import TypeVar

import msgspec

from actorflow.errors import ActorflowError, StoreError
from actorflow.store.select import EXTRA

try:
    import asyncpg
except ImportError:  # the import of this module fails with what to do, in one line
    raise StoreError(
        f"a postgresql:// URL needs asyncpg, which is not installed: {EXTRA}"
    ) from None
from actorflow.records import BATCH_DECODER, SNAPSHOT_DECODER, Snapshot
from actorflow.store import layout, postgres
from actorflow.store.base import fold
from actorflow.store.url import redact, scrub

T = TypeVar("T")
_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    asyncio.TimeoutError,
    ValueError,  # a URL asyncpg cannot parse
)
_BAD_RECORD: tuple[type[BaseException], ...] = (msgspec.DecodeError, msgspec.ValidationError)


def _run(url: str, what: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """``work`` on a checked connection to ``url``, in a loop of its own; driver errors
    as :class:`StoreError` saying ``what`` failed, without the password."""

    async def run() -> T:
        async with _connected(url) as conn:
            try:
                return await work(conn)
            except _ERRORS as exc:
                raise _error(url, what, exc) from None
            except _BAD_RECORD as exc:
                raise StoreError(
                    f"{redact(url)} holds a record this actorflow cannot read: {exc}"
                ) from None

    return asyncio.run(run())


def _error(url: str, what: str, exc: BaseException) -> StoreError:
    return StoreError(f"{what} {redact(url)}: {scrub(f'{type(exc).__name__}: {exc}', url)}")


@asynccontextmanager
async def _connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    try:
        conn = await asyncpg.connect(url, **postgres._SETTINGS)
    except _ERRORS as exc:
        raise _error(url, "cannot connect to", exc) from None
    try:
        try:
            marks = await conn.fetch(
                "SELECT application, version FROM meta"
                if await conn.fetchval("SELECT to_regclass($1)", f"{postgres.SCHEMA}.meta")
                else "SELECT NULL, 0 WHERE false"
            )
        except _ERRORS as exc:
            raise _error(url, "cannot read", exc) from None
        if not marks:
            raise StoreError(
                f"{redact(url)} holds no actorflow schema; start a runtime on it first"
                " (or check --db)"
            )
        if len(marks) != 1 or marks[0][0] != postgres.APPLICATION:
            raise StoreError(f"schema {postgres.SCHEMA!r} of {redact(url)} is not actorflow's")
        if marks[0][1] > postgres.SCHEMA_VERSION:
            raise StoreError(
                f"{redact(url)} has a newer actorflow schema ({marks[0][1]}); upgrade actorflow"
            )
        yield conn
    finally:
        with suppress(*_ERRORS):
            await conn.close()


def read_committed(
    url: str, instance_id: str | None = None, heads: bool = False
) -> dict[str, Snapshot]:
    """Every instance (or just ``instance_id``) as committed: bases, journals and the
    log tail, folded. ``heads``: instances the log does not touch come as their head
    (no history, events, values or tokens), which is all a listing needs."""

    async def read(conn: asyncpg.Connection) -> dict[str, Snapshot]:
        found: dict[str, Snapshot] = {}
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            log = [row[0] for row in await conn.fetch("SELECT record FROM wal ORDER BY seq")]
            records = [r for blob in log for r in BATCH_DECODER.decode(blob)]
            if instance_id is not None:
                records = [r for r in records if r.wf == instance_id]
            if heads and instance_id is None:
                touched = list({r.wf for r in records})
                for wf, head in await conn.fetch("SELECT id, head FROM instances"):
                    if wf not in touched:
                        found[wf] = SNAPSHOT_DECODER.decode(head)
                wanted: list[str] | None = touched
            else:
                wanted = None if instance_id is None else [instance_id]
            bases = await conn.fetch(
                "SELECT id, snapshot FROM bases WHERE $1::text[] IS NULL OR id = ANY($1)", wanted
            )
            tails = await conn.fetch(
                "SELECT wf, records FROM journal WHERE $1::text[] IS NULL OR wf = ANY($1)"
                " ORDER BY wf, seq",
                wanted,
            )
        rows: dict[str, tuple[bytes, list[bytes]]] = {wf: (base, []) for wf, base in bases}
        for wf, blob in tails:
            if wf in rows:
                rows[wf][1].append(blob)
        for wf, (base, tail) in rows.items():
            found[wf] = layout.restore(base, tail)
        fold(found, records)
        return found

    return _run(url, "could not read", read)


def submit(url: str, request: bytes, target: str | None = None, token: str | None = None) -> int:
    """Put an encoded request in the inbox of the database at ``url``, addressed to
    instance ``target`` or the one that made ``token``, and ``NOTIFY`` its owner; return
    its sequence number."""
    _run(url, "cannot read", _nothing)  # checks the schema: no inbox is created here
    return asyncio.run(postgres.submit(url, request, target=target, token=token))


async def _nothing(conn: asyncpg.Connection) -> None:
    """Nothing to do once connected and checked."""


def owner_running(url: str) -> bool:
    """Whether a runtime has the database at ``url`` open (holds a lease on it)."""

    async def held(conn: asyncpg.Connection) -> bool:
        return bool(
            await conn.fetchval("SELECT EXISTS (SELECT 1 FROM runtimes WHERE lease_until > now())")
        )

    return _run(url, "cannot read", held)


def wait_for_receipt(url: str, seq: int, timeout: float) -> tuple[str, str | None]:
    """The verdict on inbox request ``seq`` (status, reason), polled until a runtime
    decided it or ``timeout`` seconds passed."""

    async def poll(conn: asyncpg.Connection) -> tuple[str, str | None]:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            row = await conn.fetchrow("SELECT status, reason FROM inbox WHERE seq = $1", seq)
            if row is None:
                raise ActorflowError(f"no inbox request {seq} in {redact(url)}")
            if row[0] != "pending" or time.monotonic() >= deadline:
                return str(row[0]), row[1]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    return _run(url, "cannot read", poll)
