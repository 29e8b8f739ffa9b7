"""PostgreSQL storage through asyncpg: the same layout as SQLite, in schema ``actorflow``.

Tables (all in the dedicated schema :data:`SCHEMA`, marked by ``meta``'s row):

- ``wal``: the log, one row per group-committed batch (a msgpack list of records),
  written by one statement (one round trip) per batch, tagged with the writing
  runtime's ``owner``; a checkpoint folds it away.
- ``instances``: one row per instance, its head (what ``list()`` shows: status, state,
  workflow, times, the encoded head snapshot), what finds it unloaded (``wake``,
  ``queries``), the sizes that decide when its base is rewritten (``run``,
  ``base_bytes``, ``tail_bytes``), and ``owner`` / ``lease_until``.
- ``bases`` and ``journal``: each instance's base snapshot and the records each
  checkpoint since appended for it (:mod:`actorflow.store.layout` plans both).
- ``tokens``, ``topics``: event tokens and query topics of unfinished instances.
- ``inbox``: requests from other processes (the CLI), decided by the owner; a writer
  ``NOTIFY``s channel :data:`CHANNEL` in the same transaction, and the owner, which
  ``LISTEN``s on its own connection, reads the inbox at once (:class:`NotifyBell`).

One runtime per database for now: a session-level advisory lock, held on the
listening connection while the runtime is open, refuses a second one
(:class:`StoreError`). This runtime sets ``owner`` (its id,
:attr:`PostgresStore.owner`) and ``lease_until`` of every instance it checkpoints,
and nothing reads them yet. How several runtimes will share one database with them:

- **Leases.** An instance is run by the runtime named in its ``owner`` while
  ``lease_until`` (server time, ``now()``: never the runtime's clock) lies ahead. A
  runtime renews all its leases in the background with one ``UPDATE instances SET
  lease_until = now() + lease WHERE owner = $me``, every third of a lease; a clean
  close sets ``lease_until = NULL`` (released at once). Starting an instance inserts
  its row owned by the starter.
- **Takeover.** A live runtime claims expired instances with ``UPDATE ... SET owner =
  $me, lease_until = now() + lease WHERE lease_until < now() ... FOR UPDATE SKIP
  LOCKED`` (so two runtimes never claim the same one), folds the dead owner's ``wal``
  rows for them (``owner`` tells whose), then loads and replays them as recovery does.
- **Fencing.** Every write of a runtime carries its id: the log row and each
  checkpoint's updates only apply ``WHERE owner = $me`` (a checked row count, in the
  same statement or transaction), so a runtime paused past its lease (SIGSTOP, a
  partition) whose instances were taken over writes nothing for them when it resumes:
  its write fails, it drops those instances, and the new owner's history stands.
- **Routing.** A send for an instance owned elsewhere goes to ``inbox`` (addressed to
  that owner) and ``NOTIFY``s the owner's channel; ``list()`` and ``status()`` read
  the shared tables.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import asyncpg
import msgspec

from actorflow.errors import StoreError
from actorflow.log import logger as _log
from actorflow.records import BATCH_DECODER, RECORD_ENCODER, SNAPSHOT_DECODER, Record, Snapshot
from actorflow.store import layout
from actorflow.store.base import (
    InboxRow,
    Mark,
    fold_log,
    query_topics,
    stored_state,
    waits_on_query,
    wake_of,
)
from actorflow.store.batch import TurnBatch
from actorflow.store.url import redact, scrub
from actorflow.store.wake import InboxBell
from actorflow.workflow import lookup as lookup_workflow

SCHEMA = "actorflow"
"""The schema that holds actorflow's tables: the database's other schemas are the app's."""
SCHEMA_VERSION = 1
APPLICATION = "actorflow"
CHANNEL = "actorflow_inbox"
"""The ``NOTIFY`` channel a request written to the inbox rings."""

TABLES = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE {SCHEMA}.meta (
    application TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE {SCHEMA}.wal (
    seq BIGSERIAL PRIMARY KEY,
    owner TEXT NOT NULL,
    record BYTEA NOT NULL
);
CREATE TABLE {SCHEMA}.instances (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    wake DOUBLE PRECISION,
    queries BOOLEAN NOT NULL DEFAULT false,
    head BYTEA NOT NULL,
    run INTEGER NOT NULL DEFAULT 1,
    base_bytes BIGINT NOT NULL DEFAULT 0,
    tail_bytes BIGINT NOT NULL DEFAULT 0,
    owner TEXT,
    lease_until TIMESTAMPTZ
);
CREATE INDEX instances_by_state ON {SCHEMA}.instances (state, workflow);
CREATE INDEX instances_wake ON {SCHEMA}.instances (wake) WHERE wake IS NOT NULL;
CREATE INDEX instances_queries ON {SCHEMA}.instances (id) WHERE queries;
CREATE INDEX instances_finished ON {SCHEMA}.instances (updated_at) WHERE status <> 'running';
CREATE INDEX instances_by_owner ON {SCHEMA}.instances (owner, lease_until);
CREATE TABLE {SCHEMA}.bases (
    id TEXT PRIMARY KEY,
    snapshot BYTEA NOT NULL
);
CREATE TABLE {SCHEMA}.journal (
    seq BIGSERIAL PRIMARY KEY,
    wf TEXT NOT NULL,
    records BYTEA NOT NULL
);
CREATE INDEX journal_by_wf ON {SCHEMA}.journal (wf, seq);
CREATE TABLE {SCHEMA}.tokens (token TEXT PRIMARY KEY, wf TEXT NOT NULL);
CREATE INDEX tokens_by_wf ON {SCHEMA}.tokens (wf);
CREATE TABLE {SCHEMA}.topics (topic TEXT NOT NULL, wf TEXT NOT NULL, PRIMARY KEY (topic, wf));
CREATE INDEX topics_by_wf ON {SCHEMA}.topics (wf);
CREATE TABLE {SCHEMA}.inbox (
    seq BIGSERIAL PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    request BYTEA NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    decided_at DOUBLE PRECISION
);
CREATE INDEX inbox_pending ON {SCHEMA}.inbox (seq) WHERE status = 'pending';
CREATE INDEX inbox_decided ON {SCHEMA}.inbox (decided_at) WHERE decided_at IS NOT NULL;
"""
_SETTINGS: dict[str, Any] = {
    "server_settings": {"search_path": SCHEMA, "application_name": "actorflow"}
}
"""Every connection's: unqualified names are actorflow's tables."""
_SCHEMA_LOCK = 0x41464C57  # "AFLW": one runtime at a time creates or checks the tables
_OWNER_LOCK = 0x41464C58  # held by the one runtime that has the database open
OWNER_WAIT = 5.0
RELISTEN_DELAY = 1.0
"""Seconds between attempts to listen again after the listening connection was lost."""
"""Seconds an opening runtime waits for the owner lock of a runtime that just died."""

_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    asyncio.TimeoutError,
)
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    *_DRIVER_ERRORS,
    ValueError,
)  # ValueError: a URL asyncpg cannot parse
_READ_ERRORS: tuple[type[BaseException], ...] = (
    *_DRIVER_ERRORS,
    msgspec.DecodeError,
    msgspec.ValidationError,
)


def runtime_id() -> str:
    """A name for this runtime, unique across processes and machines: what ``owner``
    holds (host, process, and a random part)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Nothing to reset when a pooled connection comes back: the store sets no session
    state (an open transaction is rolled back by asyncpg anyway). The default reset
    costs a round trip per query, doubling the latency of a group commit."""


class NotifyBell(InboxBell):
    """The inbox watcher's bell on PostgreSQL: rung by ``NOTIFY`` on :data:`CHANNEL`
    (through the store's listening connection), by :meth:`ring`, or by the end of a
    wait's timeout."""

    def __init__(self) -> None:
        super().__init__(None, None)
        self._hearing = False

    @property
    def listening(self) -> bool:
        """Whether ``NOTIFY`` reaches it (the store's ``LISTEN`` is in place)."""
        return self._hearing

    def hear(self, hearing: bool) -> None:
        """Say whether notifications reach the bell now (else each inbox read reads)."""
        self._hearing = hearing

    def close(self) -> None:
        """Nothing to release: the store closes its listening connection."""


class PostgresStore:
    """A :class:`~actorflow.store.Store` on a PostgreSQL database, through asyncpg."""

    def __init__(self, url: str, now: Callable[[], float] = time.time, lease: float = 10.0) -> None:
        self._url = url
        self.label = redact(url)
        """The URL without its password: what errors and logs show."""
        self.owner = runtime_id()
        self.lease = lease
        self._now = now  # stamps inbox verdicts: retention ages them by the runtime's clock
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._relisten: asyncio.Task[None] | None = None
        # The writer's own connection (writes come one at a time, from the writer): no
        # pool hand-off on the hot path of a group commit.
        self._log: asyncpg.Connection | None = None
        self._log_lock = asyncio.Lock()
        self._bell = NotifyBell()
        self._notified = True  # the first read of the inbox reads it
        self._loads = TurnBatch(self._read_stored, self._read_stopped)

    def __repr__(self) -> str:
        return f"PostgresStore({self.label!r})"

    @property
    def pool(self) -> asyncpg.Pool:
        """The connections reads and checkpoints use (:class:`StoreError` once closed)."""
        if self._pool is None:
            raise StoreError(f"{self.label} is not open")
        return self._pool

    def _error(self, what: str, exc: BaseException) -> StoreError:
        text = scrub(f"{type(exc).__name__}: {exc}", self._url)
        return StoreError(f"{what} {self.label}: {text}")

    @contextlib.contextmanager
    def _failing(self, what: str) -> Iterator[None]:
        # Driver and decoding errors as the StoreError every caller expects, without
        # the password the driver may quote.
        try:
            yield
        except StoreError:
            raise
        except _READ_ERRORS as exc:
            if self._pool is None:
                raise StoreError(f"{self.label} was closed during a read") from None
            raise self._error(what, exc) from None

    # -- opening -------------------------------------------------------------------------
    async def open(self) -> builtins.list[Snapshot]:
        """Connect, create or check the schema, fold the log, return the unfinished
        instances with something to do; start listening for inbox requests."""
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=4,
                reset=_keep_session,
                **_SETTINGS,
            )
        except _CONNECT_ERRORS as exc:
            raise self._error("cannot connect to", exc) from None
        try:
            with self._failing("cannot open"):
                await self._check_schema()
                await self._listen()
                return await self._recover()
        except BaseException:
            await self.close()
            raise

    async def _check_schema(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            tables = {
                row[0]
                for row in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = $1", SCHEMA
                )
            }
            if not tables:
                await conn.execute(TABLES)
                await conn.execute(
                    f"INSERT INTO {SCHEMA}.meta VALUES ($1, $2)", APPLICATION, SCHEMA_VERSION
                )
                return
            marks = (
                await conn.fetch(f"SELECT application, version FROM {SCHEMA}.meta")
                if "meta" in tables
                else []
            )
            if len(marks) != 1 or marks[0][0] != APPLICATION:
                raise StoreError(
                    f"schema {SCHEMA!r} of {self.label} holds tables that are not "
                    "actorflow's; keep your app's tables in another schema"
                )
            version = marks[0][1]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.label} has actorflow schema version {version}, newer than this "
                    f"actorflow understands ({SCHEMA_VERSION}); upgrade actorflow"
                )

    async def _listen(self, wait: float | None = None) -> None:
        # A connection of its own: a pooled one may be handed to another query.
        listener = await asyncpg.connect(self._url, **_SETTINGS)
        try:
            # One runtime per database until leases come (see above): this session
            # holds the database's owner lock while the runtime is open. It goes with
            # the connection, so a killed runtime's is released once the server sees
            # it gone (at once for a local process; waited for a little, as the server
            # may take a moment to notice).
            deadline = time.monotonic() + (OWNER_WAIT if wait is None else wait)
            while not await listener.fetchval("SELECT pg_try_advisory_lock($1)", _OWNER_LOCK):
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"{self.label} is open in another runtime; one runtime per database"
                        " for now (several need leases, not built yet)"
                    )
                await asyncio.sleep(0.05)
            await listener.add_listener(CHANNEL, self._on_notify)
            listener.add_termination_listener(self._on_lost)
        except BaseException:
            await listener.close()
            raise
        self._listener = listener
        self._bell.hear(True)

    def _on_notify(self, *_: object) -> None:
        self._notified = True
        self._bell.ring()

    def _on_lost(self, connection: object) -> None:
        # Notifications (and the owner lock) are lost with the connection: the inbox is
        # read at each of the watcher's polls meanwhile, and the connection is made
        # again in the background.
        if connection is not self._listener or self._pool is None:
            return  # closed by close(): nothing lost
        _log.warning("inbox.listen_lost", store=self.label)
        self._listener = None
        self._bell.hear(False)
        self._notified = True
        self._bell.ring()
        if self._relisten is None:
            self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        try:
            while self._pool is not None:
                await asyncio.sleep(RELISTEN_DELAY)
                try:
                    await self._listen(wait=0)
                except StoreError as exc:  # another runtime opened the database meanwhile
                    _log.error("inbox.listen_failed", store=self.label, error=str(exc))
                except _CONNECT_ERRORS as exc:
                    error = scrub(f"{type(exc).__name__}: {exc}", self._url)
                    _log.warning("inbox.listen_failed", store=self.label, error=error)
                else:
                    if self._pool is None:  # closed meanwhile
                        await self._drop_listener()
                        return
                    _log.info("inbox.listening_again", store=self.label)
                    self._notified = True  # what came while deaf is read now
                    self._bell.ring()
                    return
        finally:
            self._relisten = None

    async def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        with contextlib.suppress(*_DRIVER_ERRORS):
            if listener is not None:
                await listener.close()

    def inbox_bell(self) -> InboxBell:
        """The bell ``NOTIFY`` rings: what the runtime's inbox watcher sleeps on."""
        return self._bell

    async def _recover(self) -> builtins.list[Snapshot]:
        rows = await self.pool.fetch("SELECT record FROM wal ORDER BY seq")
        records = [r for (blob,) in rows for r in BATCH_DECODER.decode(blob)]
        found: dict[str, Snapshot] = {}
        if records:
            # Instances the log touched were active when the runtime stopped: replayed.
            touched = await fold_log(found, records, self.load)
            await self.checkpoint([found[i] for i in touched])
        ids: builtins.list[str] = []
        ids += [
            r[0]
            for r in await self.pool.fetch(
                "SELECT id FROM instances WHERE wake IS NOT NULL AND wake <= $1", self._now()
            )
        ]
        ids += [r[0] for r in await self.pool.fetch("SELECT id FROM instances WHERE queries")]
        ids += await self._foreign()
        ids = [i for i in dict.fromkeys(ids) if i not in found]
        for instance_id, (base, tail) in (await self._stored(ids)).items():
            found[instance_id] = layout.restore(base, tail)
        return [s for s in found.values() if not s.finished]

    async def _foreign(self) -> builtins.list[str]:
        # Unfinished instances of workflows this process does not define: loaded, so that
        # they are held and say why (the few names found by skipping through the index).
        found: builtins.list[str] = []
        for state in ("running", "waiting"):
            name = ""
            while True:
                row = await self.pool.fetchval(
                    "SELECT min(workflow) FROM instances WHERE state = $1 AND workflow > $2",
                    state,
                    name,
                )
                if row is None:
                    break
                name = row
                if lookup_workflow(name) is None:
                    rows = await self.pool.fetch(
                        "SELECT id FROM instances WHERE state = $1 AND workflow = $2", state, name
                    )
                    found += [r[0] for r in rows]
        return found

    async def _stored(
        self, ids: Collection[str] | None
    ) -> dict[str, tuple[bytes, builtins.list[bytes]]]:
        """The base and journal rows (in order) of the stored instances among ``ids``,
        read in one transaction (a checkpoint never lands between the two reads)."""
        wanted = builtins.list(ids) if ids is not None else None
        found: dict[str, tuple[bytes, builtins.list[bytes]]] = {}
        if wanted == []:
            return found
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            bases = await conn.fetch("SELECT id, snapshot FROM bases WHERE id = ANY($1)", wanted)
            for instance_id, base in bases:
                found[instance_id] = (base, [])
            tails = await conn.fetch(
                "SELECT wf, records FROM journal WHERE wf = ANY($1) ORDER BY wf, seq", wanted
            )
        for wf, records in tails:
            if wf in found:
                found[wf][1].append(records)
        return found

    # -- writing -------------------------------------------------------------------------
    async def write(self, records: builtins.list[Record], marks: Sequence[Mark] = ()) -> None:
        """Append ``records`` as one log row, with the verdicts on the inbox requests that
        produced them: one statement, so one transaction and one round trip."""
        blob = RECORD_ENCODER.encode(records) if records else None
        if blob is None and not marks:
            return
        with self._failing("could not write to"):
            async with self._log_lock:
                log = self._log
                if log is None or log.is_closed():  # first write, or the last one broke it
                    self.pool  # noqa: B018 (raises StoreError once closed)
                    log = self._log = await asyncpg.connect(self._url, **_SETTINGS)
                if not marks:
                    await log.execute(
                        "INSERT INTO wal (owner, record) VALUES ($1, $2)", self.owner, blob
                    )
                    return
                await self._write_marked(log, blob, marks)

    async def _write_marked(
        self, log: asyncpg.Connection, blob: bytes | None, marks: Sequence[Mark]
    ) -> None:
        await log.execute(
            "WITH w AS (INSERT INTO wal (owner, record) SELECT $1, $2::bytea"
            " WHERE $2::bytea IS NOT NULL)"
            " UPDATE inbox SET status = m.status, reason = m.reason, decided_at = $3"
            " FROM unnest($4::bigint[], $5::text[], $6::text[]) AS m (seq, status, reason)"
            " WHERE inbox.seq = m.seq",
            self.owner,
            blob,
            self._now(),
            [seq for seq, _, _ in marks],
            [status for _, status, _ in marks],
            [reason for _, _, reason in marks],
        )

    async def checkpoint(self, snapshots: builtins.list[Snapshot]) -> None:
        """Append to each changed instance's journal its records in the log (or rewrite
        its base, as :func:`layout.plan` says), update its row, tokens and topics, and
        empty the log up to what was read, in one transaction."""
        with self._failing("could not checkpoint"):
            async with self.pool.acquire() as conn, conn.transaction():
                log = await conn.fetch("SELECT seq, record FROM wal ORDER BY seq")
                records = [r for _, blob in log for r in BATCH_DECODER.decode(blob)]
                ids = builtins.list(
                    dict.fromkeys([*(s.id for s in snapshots), *(r.wf for r in records)])
                )
                stored = {
                    row[0]: layout.Stored(row[1], row[2], row[3])
                    for row in await conn.fetch(
                        "SELECT id, run, base_bytes, tail_bytes FROM instances WHERE id = ANY($1)",
                        ids,
                    )
                }
                changes = layout.plan(snapshots, records, stored)
                await self._write_changes(conn, changes)
                if log:
                    await conn.execute("DELETE FROM wal WHERE seq <= $1", log[-1][0])

    async def _write_changes(
        self, conn: asyncpg.Connection, changes: Collection[layout.Change]
    ) -> None:
        rows: builtins.list[tuple[Any, ...]] = []  # new bases: whole rows, upserted
        heads: builtins.list[tuple[Any, ...]] = []  # updates of rows that stay
        bases: builtins.list[tuple[str, bytes]] = []
        tails: builtins.list[tuple[str, bytes]] = []
        tail_only: builtins.list[tuple[str, int]] = []
        drop_tokens: builtins.list[str] = []
        given: builtins.list[str] = []
        tokens: builtins.list[tuple[str, str]] = []
        topics: builtins.list[tuple[str, str]] = []
        for c in changes:
            s = c.snapshot
            if s is None or c.head is None:
                if c.tail is not None:
                    tail_only.append((c.id, c.tail_bytes))
                    tails.append((c.id, c.tail))
                continue
            index = (stored_state(s), s.updated_at, wake_of(s), waits_on_query(s), c.head)
            if c.base is not None:
                rows.append((s.id, s.workflow, s.status, s.created_at, *index, s.run, c.base_bytes))
                bases.append((s.id, c.base))
            else:
                heads.append((s.id, s.status, *index, c.tail_bytes))
                if c.tail is not None:
                    tails.append((s.id, c.tail))
            if c.drop_tokens:
                drop_tokens.append(s.id)
            tokens += [(token, s.id) for token in c.tokens]
            given.append(s.id)
            if not s.finished:
                topics += [(topic, s.id) for topic in query_topics(s)]
        if bases:
            ids = [i for i, _ in bases]
            await conn.execute("DELETE FROM journal WHERE wf = ANY($1)", ids)
            await conn.execute(
                "INSERT INTO bases (id, snapshot) SELECT * FROM unnest($1::text[], $2::bytea[])"
                " ON CONFLICT (id) DO UPDATE SET snapshot = excluded.snapshot",
                ids,
                [b for _, b in bases],
            )
            await conn.execute(
                "INSERT INTO instances (id, workflow, status, created_at, state, updated_at,"
                " wake, queries, head, run, base_bytes, tail_bytes, owner, lease_until)"
                " SELECT *, 0, $12, now() + make_interval(secs => $13) FROM unnest($1::text[],"
                " $2::text[], $3::text[], $4::float8[], $5::text[], $6::float8[], $7::float8[],"
                " $8::bool[], $9::bytea[], $10::int[], $11::bigint[])"
                " ON CONFLICT (id) DO UPDATE SET workflow = excluded.workflow,"
                " status = excluded.status, created_at = excluded.created_at,"
                " state = excluded.state, updated_at = excluded.updated_at,"
                " wake = excluded.wake, queries = excluded.queries, head = excluded.head,"
                " run = excluded.run, base_bytes = excluded.base_bytes, tail_bytes = 0,"
                " owner = excluded.owner, lease_until = excluded.lease_until",
                *_columns(rows, 11),
                self.owner,
                self.lease,
            )
        if heads:
            # Not for an instance a purge deleted meanwhile: its row stays gone.
            await conn.execute(
                "UPDATE instances SET status = h.status, state = h.state,"
                " updated_at = h.updated_at, wake = h.wake, queries = h.queries,"
                " head = h.head, tail_bytes = h.tail_bytes, owner = $8,"
                " lease_until = now() + make_interval(secs => $9)"
                " FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[],"
                " $6::bool[], $7::bytea[], $10::bigint[])"
                " AS h (id, status, state, updated_at, wake, queries, head, tail_bytes)"
                " WHERE instances.id = h.id",
                *_columns(heads, 8)[:7],
                self.owner,
                self.lease,
                _columns(heads, 8)[7],
            )
        if tail_only:
            await conn.execute(
                "UPDATE instances SET tail_bytes = t.bytes"
                " FROM unnest($1::text[], $2::bigint[]) AS t (id, bytes) WHERE instances.id = t.id",
                [i for i, _ in tail_only],
                [n for _, n in tail_only],
            )
        if tails:
            # Not for an instance a purge deleted meanwhile (its row is gone).
            await conn.execute(
                "INSERT INTO journal (wf, records) SELECT t.wf, t.records"
                " FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS t (wf, records, n)"
                " WHERE EXISTS (SELECT 1 FROM instances WHERE id = t.wf) ORDER BY t.n",
                [i for i, _ in tails],
                [t for _, t in tails],
            )
        # A finished instance's (or an old run's) tokens go; a parked one's topics are
        # rewritten.
        if given:
            await conn.execute("DELETE FROM topics WHERE wf = ANY($1)", given)
        if drop_tokens:
            await conn.execute("DELETE FROM tokens WHERE wf = ANY($1)", drop_tokens)
        if tokens:
            await conn.execute(
                "INSERT INTO tokens (token, wf) SELECT * FROM unnest($1::text[], $2::text[])"
                " ON CONFLICT DO NOTHING",
                [t for t, _ in tokens],
                [w for _, w in tokens],
            )
        if topics:
            await conn.execute(
                "INSERT INTO topics (topic, wf) SELECT * FROM unnest($1::text[], $2::text[])"
                " ON CONFLICT DO NOTHING",
                [t for t, _ in topics],
                [w for _, w in topics],
            )

    async def purge(self, before: float, statuses: Collection[str], limit: int) -> int:
        """Delete up to ``limit`` finished instances whose status is in ``statuses`` and
        that finished at or before ``before``, oldest first; return how many were deleted."""
        wanted = [s for s in statuses if s != "running"]
        if not wanted:
            return 0
        with self._failing("could not purge"):
            async with self.pool.acquire() as conn, conn.transaction():
                ids = [
                    r[0]
                    for r in await conn.fetch(
                        "SELECT id FROM instances WHERE status <> 'running' AND updated_at <= $1"
                        " AND status = ANY($2) ORDER BY updated_at LIMIT $3 FOR UPDATE",
                        before,
                        wanted,
                        limit,
                    )
                ]
                if ids:
                    for table, column in (
                        ("journal", "wf"), ("bases", "id"), ("tokens", "wf"),
                        ("topics", "wf"), ("instances", "id"),
                    ):  # fmt: skip
                        await conn.execute(f"DELETE FROM {table} WHERE {column} = ANY($1)", ids)
                return len(ids)

    async def purge_inbox(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` inbox requests decided at or before ``before``, oldest first."""
        with self._failing("could not purge"):
            found = await self.pool.fetchval(
                "WITH gone AS (DELETE FROM inbox WHERE seq IN (SELECT seq FROM inbox"
                " WHERE decided_at IS NOT NULL AND decided_at <= $1 ORDER BY decided_at"
                " LIMIT $2) RETURNING 1) SELECT count(*) FROM gone",
                before,
                limit,
            )
        return int(found)

    # -- reading -------------------------------------------------------------------------
    async def oldest_done(self) -> float | None:
        """When the oldest stored finished instance finished, or the oldest decided inbox
        request was decided, whichever is earlier; ``None`` when there is neither."""
        with self._failing("could not read"):
            found = await self.pool.fetchval(
                "SELECT least((SELECT min(updated_at) FROM instances WHERE status <> 'running'),"
                " (SELECT min(decided_at) FROM inbox WHERE decided_at IS NOT NULL))"
            )
        return float(found) if found is not None else None

    async def load(self, instance_id: str) -> Snapshot | None:
        """The checkpointed snapshot of ``instance_id`` (its base and journal), if any.
        The loads asked for in one loop turn are read together."""
        rows = await self._loads.get(instance_id)
        if rows is None:
            return None
        with self._failing(
            "could not read"
        ):  # each caller decodes its own copy: callers may change it
            return layout.restore(*rows)

    async def _read_stored(
        self, ids: Collection[str]
    ) -> dict[str, tuple[bytes, builtins.list[bytes]]]:
        with self._failing("could not read"):
            return await self._stored(ids)

    def _read_stopped(self) -> StoreError:
        return StoreError(f"{self.label}: read stopped")

    async def workflows_of(self, instance_ids: Collection[str]) -> dict[str, str]:
        """The workflow name of each checkpointed instance among ``instance_ids``."""
        with self._failing("could not read"):
            rows = await self.pool.fetch(
                "SELECT id, workflow FROM instances WHERE id = ANY($1)", builtins.list(instance_ids)
            )
        return {row[0]: row[1] for row in rows}

    async def due(self, after: float, upto: float) -> builtins.list[str]:
        """Unfinished instances whose stored wake lies in ``(after, upto]``."""
        return await self._ids(
            "SELECT id FROM instances WHERE wake IS NOT NULL AND wake > $1 AND wake <= $2"
            " ORDER BY wake",
            after,
            upto,
        )

    async def next_wake(self, after: float) -> float | None:
        """The earliest stored wake later than ``after``, if any."""
        with self._failing("could not read"):
            found = await self.pool.fetchval(
                "SELECT min(wake) FROM instances WHERE wake IS NOT NULL AND wake > $1", after
            )
        return float(found) if found is not None else None

    async def token_owner(self, token: str) -> str | None:
        """The unfinished instance that made event token ``token``, if one is stored."""
        found = await self._ids("SELECT wf FROM tokens WHERE token = $1", token)
        return found[0] if found else None

    async def listening(self, topics: Collection[str]) -> builtins.list[str]:
        """Unfinished instances that wait on a query on one of ``topics``."""
        wanted = builtins.list(topics)
        if not wanted:
            return []
        return await self._ids("SELECT DISTINCT wf FROM topics WHERE topic = ANY($1)", wanted)

    async def _ids(self, sql: str, *params: object) -> builtins.list[str]:
        with self._failing("could not read"):
            return [str(row[0]) for row in await self.pool.fetch(sql, *params)]

    async def list(
        self, states: Collection[str] | None, workflow: str | None
    ) -> builtins.list[Snapshot]:
        """Checkpointed snapshots without history, events, values and tokens
        (:func:`layout.head_of`), filtered in SQL by state and workflow."""
        with self._failing("could not read"):
            rows = await self.pool.fetch(
                "SELECT head FROM instances WHERE ($1::text[] IS NULL OR state = ANY($1))"
                " AND ($2::text IS NULL OR workflow = $2) ORDER BY created_at",
                None if states is None else builtins.list(states),
                workflow,
            )
            return [SNAPSHOT_DECODER.decode(row[0]) for row in rows]

    async def inbox(
        self, everything: bool = False, max_bytes: int | None = None
    ) -> builtins.list[InboxRow] | None:
        """Pending inbox requests, oldest first, if a ``NOTIFY`` came since the last call
        (or the listening connection was lost: then every call reads) or ``everything``;
        else ``None``. A request larger than ``max_bytes`` comes without its bytes."""
        if not (everything or self._notified or not self._bell.listening):
            return None
        self._notified = False  # before the read: a NOTIFY during it means read again
        try:
            with self._failing("could not read the inbox of"):
                rows = await self.pool.fetch(
                    "SELECT seq, length(request),"
                    " CASE WHEN $1::bigint IS NULL OR length(request) <= $1 THEN request END"
                    " FROM inbox WHERE status = 'pending' ORDER BY seq",
                    max_bytes,
                )
        except BaseException:
            self._notified = True  # a failed read is tried again
            raise
        return [InboxRow(int(seq), size, request) for seq, size, request in rows]

    async def close(self) -> None:
        """Stop listening, close the connections (idempotent)."""
        relisten, self._relisten = self._relisten, None
        if relisten is not None:
            relisten.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relisten
        listener, self._listener = self._listener, None
        log, self._log = self._log, None
        with contextlib.suppress(*_DRIVER_ERRORS):
            if log is not None:
                await log.close()
        pool, self._pool = self._pool, None
        self._bell.hear(False)
        with contextlib.suppress(*_DRIVER_ERRORS):
            if listener is not None:
                await listener.close()
        with contextlib.suppress(*_DRIVER_ERRORS):
            if pool is not None:
                await pool.close()


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> builtins.list[builtins.list[Any]]:
    """``rows`` as ``width`` columns (lists), for ``unnest``."""
    return [[row[i] for row in rows] for i in range(width)]


async def submit(url: str, request: bytes, created_at: float | None = None) -> int:
    """Put an encoded inbox request in the database at ``url`` and ``NOTIFY`` its owner
    (delivered when the insert commits); return its sequence number."""
    label = redact(url)
    try:
        conn = await asyncpg.connect(url, **_SETTINGS)
    except _CONNECT_ERRORS as exc:
        raise StoreError(
            f"cannot connect to {label}: {scrub(f'{type(exc).__name__}: {exc}', url)}"
        ) from None
    try:
        async with conn.transaction():
            seq = await conn.fetchval(
                "INSERT INTO inbox (created_at, request) VALUES ($1, $2) RETURNING seq",
                time.time() if created_at is None else created_at,
                request,
            )
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(seq))
        return int(seq)
    except _DRIVER_ERRORS as exc:
        raise StoreError(
            f"could not write to {label}: {scrub(f'{type(exc).__name__}: {exc}', url)}"
        ) from None
    finally:
        await conn.close()
