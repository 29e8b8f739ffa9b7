"""PostgreSQL storage through asyncpg: the same layout as SQLite, in schema ``actorflow``,
shared by several runtimes (processes or machines) at once.

Tables (all in the dedicated schema :data:`SCHEMA`, marked by ``meta``'s row):

- ``runtimes``: the open runtimes and their leases (:mod:`actorflow.store.pg_cluster`
  says how leases, takeover and fencing work).
- ``wal``: the log, one row per group-committed batch (a msgpack list of records),
  written by one statement (one round trip) per batch, tagged with the writing
  runtime's ``owner``; that runtime's checkpoint folds its rows away, or the runtime
  that takes its instances over does.
- ``instances``: one row per instance, its head (what ``list()`` shows: status, state,
  workflow, times, the encoded head snapshot), what finds it unloaded (``wake``,
  ``queries``), the sizes that decide when its base is rewritten (``run``,
  ``base_bytes``, ``tail_bytes``), and the runtime that runs it (``owner``). A start
  writes the row at once (:meth:`PostgresStore.claim`): no two runtimes start one id.
- ``bases`` and ``journal``: each instance's base snapshot and the records each
  checkpoint since appended for it (:mod:`actorflow.store.layout` plans both).
- ``tokens``, ``topics``: event tokens (written with the record that makes one, so any
  runtime finds a token's instance at once) and query topics of unfinished instances.
- ``inbox``: requests from other processes (the CLI) and from other runtimes (an event
  for an instance another runtime owns), addressed to an instance (``target``) and so
  decided by its owner; those addressed to none (a notify, a purge) by the longest-open
  runtime. A writer ``NOTIFY``s channel :data:`CHANNEL` in the same transaction with the
  owner's id, and the owner, which ``LISTEN``s on its own connection, reads the inbox at
  once (:class:`NotifyBell`).
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
from actorflow.records import (
    BATCH_DECODER,
    RECORD_ENCODER,
    SNAPSHOT_DECODER,
    Finished,
    Record,
    Snapshot,
    Value,
)
from actorflow.store import layout, pg_cluster
from actorflow.store.base import (
    InboxRow,
    Mark,
    Peers,
    fold,
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
SCHEMA_VERSION = 2
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
    record BYTEA NOT NULL,
    wfs TEXT[]
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
    owner TEXT
);
CREATE INDEX instances_by_state ON {SCHEMA}.instances (state, workflow);
CREATE INDEX instances_wake ON {SCHEMA}.instances (wake) WHERE wake IS NOT NULL;
CREATE INDEX instances_queries ON {SCHEMA}.instances (id) WHERE queries;
CREATE INDEX instances_finished ON {SCHEMA}.instances (updated_at) WHERE status <> 'running';
CREATE INDEX instances_by_owner ON {SCHEMA}.instances (owner);
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
    decided_at DOUBLE PRECISION,
    target TEXT,
    origin TEXT
);
CREATE INDEX inbox_pending ON {SCHEMA}.inbox (seq) WHERE status = 'pending';
CREATE INDEX inbox_decided ON {SCHEMA}.inbox (decided_at) WHERE decided_at IS NOT NULL;
CREATE INDEX wal_by_owner ON {SCHEMA}.wal (owner, seq);
""" + pg_cluster.RUNTIMES.format(schema=SCHEMA)
MIGRATIONS = {
    1: f"""
ALTER TABLE {SCHEMA}.instances DROP COLUMN lease_until;
DROP INDEX IF EXISTS {SCHEMA}.instances_by_owner;  -- gone with lease_until
CREATE INDEX instances_by_owner ON {SCHEMA}.instances (owner);
ALTER TABLE {SCHEMA}.inbox ADD COLUMN target TEXT, ADD COLUMN origin TEXT;
CREATE INDEX wal_by_owner ON {SCHEMA}.wal (owner, seq);
ALTER TABLE {SCHEMA}.wal ADD COLUMN wfs TEXT[];
"""
    + pg_cluster.RUNTIMES.format(schema=SCHEMA),
}
"""The statements that bring the schema from a version to the next (several runtimes)."""
_SETTINGS: dict[str, Any] = {
    "server_settings": {"search_path": SCHEMA, "application_name": "actorflow"}
}
"""Every connection's: unqualified names are actorflow's tables."""
_SCHEMA_LOCK = 0x41464C57  # "AFLW": one runtime at a time creates or checks the tables
RELISTEN_DELAY = 1.0
"""Seconds between attempts to listen again after the listening connection was lost."""
LEASE_MARGIN = 0.05
"""Seconds past another runtime's lease end before looking whether it was renewed."""
_EARLY_MAX = 10_000
VERDICT_CHECK = 1.0
"""Seconds between reads of a forwarded request while no verdict was heard."""
RETAKE_DELAY = 0.2
"""Seconds at least between two takeovers by one runtime."""
_NOTIFY_MAX = 8000
"""Bytes a ``NOTIFY`` payload may hold."""
_TOPICS = msgspec.json.Decoder(builtins.list[str])
_TOPICS_ENCODER = msgspec.json.Encoder()
TOKEN_DECODER = msgspec.msgpack.Decoder(str)


def _runtime_settings(lease: float) -> dict[str, Any]:
    """The settings of a runtime's connections: :data:`_SETTINGS`, and a transaction left
    idle (its process paused) ends after a lease, so that its locks never keep the other
    runtimes from taking its instances over."""
    settings = dict(_SETTINGS["server_settings"])
    settings["idle_in_transaction_session_timeout"] = str(max(1000, int(lease * 1000)))
    return {"server_settings": settings}


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
        self._settings = _runtime_settings(lease)
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
        self._peers: Peers | None = None  # the runtime's, once it follows the others
        self._keeper: asyncio.Task[None] | None = None
        self._keeper_bell = asyncio.Event()  # rung when a runtime left: take over now
        self._done: dict[str, builtins.list[asyncio.Future[None]]] = {}
        self._verdicts: dict[int, asyncio.Future[str]] = {}  # requests forwarded, by seq
        self._early: dict[int, str] = {}  # verdicts heard before :meth:`decided` was called
        self._lost: pg_cluster.LeaseLost | None = None
        self._gone_since: dict[str, float] = {}  # runtimes whose session was seen lost
        self._closing = False

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
        # the password the driver may quote; a lost lease as what it is.
        try:
            yield
        except pg_cluster.LeaseLost:
            raise self._fenced() from None
        except StoreError:
            raise
        except _READ_ERRORS as exc:
            if self._pool is None:
                raise StoreError(f"{self.label} was closed during a read") from None
            raise self._error(what, exc) from None

    def _fenced(self) -> pg_cluster.LeaseLost:
        """This runtime's lease was taken over: tell the runtime (once), return the error."""
        if self._lost is None:
            self._lost = pg_cluster.lost(self.label, self.owner)
            _log.error("runtime.lease_lost", store=self.label, runtime=self.owner)
            if self._peers is not None:
                self._peers.lost(self._lost)
        return self._lost

    # -- opening -------------------------------------------------------------------------
    async def open(self) -> builtins.list[Snapshot]:
        """Connect, create or check the schema, join the runtimes of the database, take
        over the instances no live runtime owns (folding their log), start listening for
        inbox requests; return the unfinished instances taken that have something to do."""
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=4,
                reset=_keep_session,
                **self._settings,
            )
        except _CONNECT_ERRORS as exc:
            raise self._error("cannot connect to", exc) from None
        try:
            with self._failing("cannot open"):
                await self._check_schema()
                async with self.pool.acquire() as conn:
                    await pg_cluster.join(conn, self.owner, self.lease)
                _log.info("runtime.joined", store=self.label, runtime=self.owner)
                await self._listen()
                return await self._take_over(everything=True) or []
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
            for step in range(version, SCHEMA_VERSION):
                await conn.execute(MIGRATIONS[step])
            if version < SCHEMA_VERSION:
                await conn.execute(f"UPDATE {SCHEMA}.meta SET version = $1", SCHEMA_VERSION)

    async def _listen(self) -> None:
        # A connection of its own: a pooled one may be handed to another query.
        listener = await asyncpg.connect(self._url, **self._settings)
        try:
            await pg_cluster.listening(listener, self.owner)
            await listener.add_listener(CHANNEL, self._on_notify)
            await listener.add_listener(pg_cluster.EVENTS, self._on_event)
            listener.add_termination_listener(self._on_lost)
        except BaseException:
            await listener.close()
            raise
        self._listener = listener
        self._bell.hear(True)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        # A request for an instance another runtime owns is that runtime's.
        if payload and payload != self.owner:
            return
        self._notified = True
        self._bell.ring()

    def _on_event(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        kind, _, what = payload.partition(":")
        if kind == "done":
            for waiter in self._done.pop(what, ()):
                if not waiter.done():
                    waiter.set_result(None)
        elif kind == "decided":  # of a request this runtime forwarded, if it is its origin
            origin, seq, status = [*what.split(" "), "", ""][:3]
            if origin != self.owner or not seq.isdigit():
                return
            verdict = self._verdicts.get(int(seq))
            if verdict is None:
                if len(self._early) >= _EARLY_MAX:
                    self._early.clear()  # a waiter that gave up never collects its own
                self._early[int(seq)] = status
            elif not verdict.done():
                verdict.set_result(status)
        elif kind == "left" and what != self.owner:
            self._keeper_bell.set()
        elif kind == "topics" and self._peers is not None:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                sender, *topics = _TOPICS.decode(what)  # its own are run already
                if sender != self.owner:
                    self._peers.notified(topics)

    def _on_lost(self, connection: object) -> None:
        # Notifications are lost with the connection: the inbox is read at each of the
        # watcher's polls meanwhile, and the connection is made again in the background.
        if connection is not self._listener or self._pool is None:
            return  # closed by close(): nothing lost
        _log.warning("inbox.listen_lost", store=self.label)
        self._listener = None
        self._bell.hear(False)
        self._notified = True
        self._bell.ring()
        for waiters in self._done.values():  # h.result() callers look again
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self._done.clear()
        if self._relisten is None:
            self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        try:
            while self._pool is not None:
                await asyncio.sleep(RELISTEN_DELAY)
                try:
                    await self._listen()
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
                    self._keeper_bell.set()  # and runtimes that left meanwhile
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

    # -- the other runtimes -------------------------------------------------------------
    def follow(self, peers: Peers) -> None:
        """Start keeping this runtime's lease and taking over the instances of runtimes
        that die or leave; ``peers`` hears what the others do."""
        self._peers = peers
        if self._keeper is None:
            self._keeper = asyncio.get_running_loop().create_task(
                self._keep_lease(), name="actorflow-lease"
            )

    async def _keep_lease(self) -> None:
        # Renews every third of a lease; wakes when the earliest other lease ends (or a
        # runtime left) to take its instances over: within a lease and a moment of a
        # runtime's death.
        # A connection of its own: reads and starts queued on the pool never delay it.
        conn: asyncpg.Connection | None = None
        try:
            while self._pool is not None and not self._closing:
                tried = False
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(self._url, **self._settings)
                    others, gone = await pg_cluster.renew(conn, self.owner, self.lease)
                    suspects = self._suspects(gone)
                    if suspects or (others is not None and others < 0):
                        await self._take_over_now(suspects)
                        tried = True
                except pg_cluster.LeaseLost:
                    self._fenced()
                    break
                except StoreError:
                    break  # closed
                except _DRIVER_ERRORS as exc:  # the server is away: writes are fenced anyway
                    error = scrub(f"{type(exc).__name__}: {exc}", self._url)
                    _log.warning("lease.renew_failed", store=self.label, error=error)
                    others = None
                wait = self.lease / 3
                if others is not None:
                    wait = min(wait, others + LEASE_MARGIN)
                if self._gone_since:  # confirm them once the grace has passed
                    wait = min(wait, pg_cluster.SESSION_GRACE / 2)
                if tried:  # a dead runtime's write may still hold its row: not in a busy loop
                    wait = max(wait, RETAKE_DELAY)
                self._keeper_bell.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._keeper_bell.wait(), wait)
                    if not self._closing:
                        await self._take_over_now([])
        finally:
            if conn is not None:
                with contextlib.suppress(*_DRIVER_ERRORS):
                    await conn.close()

    def _suspects(self, gone: builtins.list[str]) -> builtins.list[str]:
        """Of the runtimes whose session the server lost, those presumed dead: lost for
        :data:`~pg_cluster.SESSION_GRACE` seconds, or at once if their process, on this
        machine, is gone."""
        now = time.monotonic()
        self._gone_since = {r: self._gone_since.get(r, now) for r in gone}
        return [
            r
            for r, since in self._gone_since.items()
            if now - since >= pg_cluster.SESSION_GRACE or pg_cluster.process_gone(r)
        ]

    async def _take_over_now(self, suspects: builtins.list[str]) -> None:
        peers = self._peers
        snapshots: builtins.list[Snapshot] | None = None
        if peers is not None:
            await peers.taking()
        try:
            with self._failing("could not take over in"):
                snapshots = await self._take_over(everything=False, suspects=suspects)
        except pg_cluster.LeaseLost:
            raise
        except StoreError as exc:
            _log.warning("lease.takeover_failed", store=self.label, error=str(exc))
        finally:
            if snapshots is not None:
                self._notified = True  # requests waiting for them are this runtime's now
                self._bell.ring()
            if peers is not None:
                peers.taken(snapshots)

    async def _take_over(
        self, everything: bool, suspects: Sequence[str] = ()
    ) -> builtins.list[Snapshot] | None:
        """Claim the instances of dead runtimes (``everything``: of any runtime not open,
        as at open), fold their log rows, and return the unfinished ones that have
        something to do (the others are found through the indexes when they do);
        ``None`` when there was nothing to take over."""
        found: dict[str, Snapshot] = {}
        async with self.pool.acquire() as conn, conn.transaction():
            if everything:  # at open: those of this machine whose process is gone
                lost = await pg_cluster.gone(conn, self.owner)
                suspects = [r for r in lost if pg_cluster.process_gone(r)]
            claimed = await pg_cluster.claim(conn, self.owner, everything, builtins.list(suspects))
            if claimed is None:
                return None
            dead, log, taken = claimed
            records = [r for blob in log for r in BATCH_DECODER.decode(blob)]
            if records:
                # Instances a dead runtime's log touched were active: replayed.
                async def load(instance_id: str) -> Snapshot | None:
                    rows = (await self._stored([instance_id], conn)).get(instance_id)
                    return None if rows is None else layout.restore(*rows)

                touched = await fold_log(found, records, load)
                await self._checkpoint_in(conn, [found[i] for i in touched], log)
            rows = await conn.fetch(
                "SELECT id, workflow, (wake IS NOT NULL AND wake <= $2) OR queries"
                " FROM instances WHERE id = ANY($1) AND status = 'running'",
                taken,
                self._now(),
            )
            ids = [
                i
                for i, workflow, due in rows
                if (due or lookup_workflow(workflow) is None) and i not in found
            ]
            for instance_id, (base, tail) in (await self._stored(ids, conn)).items():
                found[instance_id] = layout.restore(base, tail)
        if dead or taken:
            _log.info("lease.took_over", store=self.label, runtimes=dead, instances=len(taken))
        return [s for s in found.values() if not s.finished]

    async def _stored(
        self, ids: Collection[str], conn: asyncpg.Connection | None = None, anyone: bool = False
    ) -> dict[str, tuple[bytes, builtins.list[bytes]]]:
        """The base and journal rows (in order) of the stored instances among ``ids`` that
        this runtime owns (``anyone``: whoever does), read in one transaction (a checkpoint
        never lands between the two reads); in ``conn``'s transaction if given."""
        wanted = builtins.list(ids)
        found: dict[str, tuple[bytes, builtins.list[bytes]]] = {}
        if not wanted:
            return found
        if conn is None:
            async with self.pool.acquire() as own, own.transaction(isolation="repeatable_read"):
                return await self._stored(wanted, own)
        bases = await conn.fetch(
            "SELECT b.id, b.snapshot FROM bases b JOIN instances i ON i.id = b.id"
            " WHERE b.id = ANY($1) AND (i.owner = $2 OR $3)",
            wanted,
            self.owner,
            anyone,
        )
        for instance_id, base in bases:
            found[instance_id] = (base, [])
        tails = await conn.fetch(
            "SELECT wf, records FROM journal WHERE wf = ANY($1) ORDER BY wf, seq",
            builtins.list(found),
        )
        for wf, records in tails:
            found[wf][1].append(records)
        return found

    # -- writing -------------------------------------------------------------------------
    async def write(self, records: builtins.list[Record], marks: Sequence[Mark] = ()) -> None:
        """Append ``records`` as one log row, with the verdicts on the inbox requests that
        produced them, the tokens they make, and a ``NOTIFY`` for each instance they end:
        one statement, so one transaction and one round trip, which writes nothing if
        this runtime's lease was taken over (:class:`~pg_cluster.LeaseLost`)."""
        blob = RECORD_ENCODER.encode(records) if records else None
        if blob is None and not marks:
            return
        tokens: builtins.list[str] = []
        token_wfs: builtins.list[str] = []
        ended: builtins.list[str] = []
        touched: dict[str, None] = {}  # the instances of the row: others read only theirs
        for record in records:
            touched[record.wf] = None
            if isinstance(record, Value):
                if record.kind == "create_event":
                    tokens.append(TOKEN_DECODER.decode(record.value))
                    token_wfs.append(record.wf)
            elif isinstance(record, Finished):
                ended.append(record.wf)
        with self._failing("could not write to"):
            async with self._log_lock:
                log = self._log
                if log is None or log.is_closed():  # first write, or the last one broke it
                    self.pool  # noqa: B018 (raises StoreError once closed)
                    log = self._log = await asyncpg.connect(self._url, **self._settings)
                if not (marks or tokens or ended):
                    written = await log.fetchval(
                        "INSERT INTO wal (owner, record, wfs) SELECT $1, $2, $3 FROM runtimes"
                        " WHERE id = $1 FOR KEY SHARE RETURNING 1",
                        self.owner,
                        blob,
                        builtins.list(touched),
                    )
                else:
                    written = await self._write_more(
                        log, blob, builtins.list(touched), marks, tokens, token_wfs, ended
                    )
                if written is None:
                    raise pg_cluster.LeaseLost("")

    async def _write_more(
        self,
        log: asyncpg.Connection,
        blob: bytes | None,
        touched: builtins.list[str],
        marks: Sequence[Mark],
        tokens: builtins.list[str],
        token_wfs: builtins.list[str],
        ended: builtins.list[str],
    ) -> object:
        return await log.fetchval(
            "WITH me AS (SELECT 1 FROM runtimes WHERE id = $1 FOR KEY SHARE),"
            " w AS (INSERT INTO wal (owner, record, wfs) SELECT $1, $2::bytea, $11 FROM me"
            " WHERE $2::bytea IS NOT NULL),"
            " v AS (UPDATE inbox SET status = m.status, reason = m.reason, decided_at = $3"
            " FROM unnest($4::bigint[], $5::text[], $6::text[]) AS m (seq, status, reason)"
            " WHERE inbox.seq = m.seq AND EXISTS (SELECT 1 FROM me)"
            " RETURNING inbox.seq, inbox.status, inbox.origin),"
            " t AS (INSERT INTO tokens (token, wf) SELECT * FROM unnest($7::text[], $8::text[])"
            " WHERE EXISTS (SELECT 1 FROM me) ON CONFLICT DO NOTHING),"
            " n AS (SELECT pg_notify($10, 'done:' || e) FROM unnest($9::text[]) AS e"
            " WHERE EXISTS (SELECT 1 FROM me)),"
            " d AS (" + _VERDICT_NOTIFY.format(events="$10") + ")"
            " SELECT 1 FROM me WHERE (SELECT count(*) FROM n) + (SELECT count(*) FROM d) >= 0",
            self.owner,
            blob,
            self._now(),
            [seq for seq, _, _ in marks],
            [status for _, status, _ in marks],
            [reason for _, _, reason in marks],
            tokens,
            token_wfs,
            ended,
            pg_cluster.EVENTS,
            touched,
        )

    async def checkpoint(self, snapshots: builtins.list[Snapshot]) -> None:
        """Append to each changed instance's journal its records in this runtime's log
        (or rewrite its base, as :func:`layout.plan` says), update its row, tokens and
        topics, and empty the log up to what was read, in one transaction (which writes
        nothing once this runtime's lease was taken over)."""
        with self._failing("could not checkpoint"):
            async with self.pool.acquire() as conn, conn.transaction():
                await pg_cluster.fence(conn, self.owner)
                log = await conn.fetch(
                    "SELECT seq, record FROM wal WHERE owner = $1 ORDER BY seq", self.owner
                )
                await self._checkpoint_in(conn, snapshots, [blob for _, blob in log])
                if log:
                    await conn.execute(
                        "DELETE FROM wal WHERE owner = $1 AND seq <= $2", self.owner, log[-1][0]
                    )

    async def _checkpoint_in(
        self,
        conn: asyncpg.Connection,
        snapshots: builtins.list[Snapshot],
        log: builtins.list[bytes],
    ) -> None:
        records = [r for blob in log for r in BATCH_DECODER.decode(blob)]
        ids = builtins.list(dict.fromkeys([*(s.id for s in snapshots), *(r.wf for r in records)]))
        stored = {
            row[0]: layout.Stored(row[1], row[2], row[3])
            for row in await conn.fetch(
                "SELECT id, run, base_bytes, tail_bytes FROM instances WHERE id = ANY($1)", ids
            )
        }
        changes = layout.plan(snapshots, records, stored)
        await self._write_changes(conn, changes)

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
                " wake, queries, head, run, base_bytes, tail_bytes, owner)"
                " SELECT *, 0, $12 FROM unnest($1::text[],"
                " $2::text[], $3::text[], $4::float8[], $5::text[], $6::float8[], $7::float8[],"
                " $8::bool[], $9::bytea[], $10::int[], $11::bigint[])"
                " ON CONFLICT (id) DO UPDATE SET workflow = excluded.workflow,"
                " status = excluded.status, created_at = excluded.created_at,"
                " state = excluded.state, updated_at = excluded.updated_at,"
                " wake = excluded.wake, queries = excluded.queries, head = excluded.head,"
                " run = excluded.run, base_bytes = excluded.base_bytes, tail_bytes = 0,"
                " owner = excluded.owner",
                *_columns(rows, 11),
                self.owner,
            )
        if heads:
            # Not for an instance a purge deleted meanwhile: its row stays gone.
            await conn.execute(
                "UPDATE instances SET status = h.status, state = h.state,"
                " updated_at = h.updated_at, wake = h.wake, queries = h.queries,"
                " head = h.head, tail_bytes = h.tail_bytes"
                " FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[],"
                " $6::bool[], $7::bytea[], $8::bigint[])"
                " AS h (id, status, state, updated_at, wake, queries, head, tail_bytes)"
                " WHERE instances.id = h.id",
                *_columns(heads, 8),
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

    # -- instances of other runtimes ----------------------------------------------------
    async def claim(self, snapshot: Snapshot) -> str | None:
        """Store the new instance ``snapshot`` (a start) as this runtime's, unless its id
        exists: then return the existing instance's workflow name. No two runtimes start
        one id; a start that commits nothing more is resumed from scratch by its owner."""
        change = layout.plan([snapshot], [], {})[0]
        assert change.base is not None and change.head is not None
        with self._failing("could not write to"):
            async with self.pool.acquire() as conn, conn.transaction():
                await pg_cluster.fence(conn, self.owner)
                new = await conn.fetchval(
                    "INSERT INTO instances (id, workflow, status, state, created_at, updated_at,"
                    " wake, queries, head, run, base_bytes, tail_bytes, owner)"
                    " VALUES ($1, $2, $3, $4, $5, $5, $6, false, $7, $8, $9, 0, $10)"
                    " ON CONFLICT (id) DO NOTHING RETURNING true",
                    snapshot.id,
                    snapshot.workflow,
                    snapshot.status,
                    stored_state(snapshot),
                    snapshot.created_at,
                    wake_of(snapshot),
                    change.head,
                    snapshot.run,
                    change.base_bytes,
                    self.owner,
                )
                if new is None:
                    found = await conn.fetchval(
                        "SELECT workflow FROM instances WHERE id = $1", snapshot.id
                    )
                    return str(found)
                await conn.execute(
                    "INSERT INTO bases (id, snapshot) VALUES ($1, $2)"
                    " ON CONFLICT (id) DO UPDATE SET snapshot = excluded.snapshot",
                    snapshot.id,
                    change.base,
                )
                await conn.execute("DELETE FROM journal WHERE wf = $1", snapshot.id)
        return None

    async def read(self, instance_id: str) -> Snapshot | None:
        """Instance ``instance_id`` as committed by whichever runtime runs it (its base,
        journal and its owner's log, folded), if it exists."""
        with self._failing("could not read"):
            rows = await self.pool.fetch(_READ_ONE, instance_id)
            if not rows or rows[0][0] != 0:
                return None  # no base: no such instance
            tail = [blob for part, blob, _ in rows if part == 1]
            found = {instance_id: layout.restore(rows[0][1], tail)}
            log = (blob for part, blob, _ in rows if part == 2)
            fold(found, (r for b in log for r in BATCH_DECODER.decode(b) if r.wf == instance_id))
            return found[instance_id]

    async def located(self, instance_id: str) -> str | None:
        """The status of instance ``instance_id`` as of its last checkpoint (whichever
        runtime runs it), ``None`` if there is no such instance: one indexed read."""
        with self._failing("could not read"):
            found = await self.pool.fetchval(
                "SELECT status FROM instances WHERE id = $1", instance_id
            )
        return None if found is None else str(found)

    async def forward(self, request: bytes, target: str | None, marks: Sequence[Mark]) -> int:
        """Put ``request`` in the inbox for the runtime that runs instance ``target`` (or
        the instance that made the token it names) and ring that runtime, with the
        verdicts ``marks`` on the requests that led here: one statement, durable when
        this returns, nothing written once this runtime's lease was taken over. Returns
        the request's number, whose verdict :meth:`decided` waits for (with ``marks``,
        a request of this runtime's inbox, decided here as handed over: nobody waits)."""
        with self._failing("could not write to"):
            row = await self.pool.fetchrow(
                _FORWARD,
                self._now(),
                request,
                target,
                CHANNEL,
                self.owner,
                None if marks else self.owner,
                [seq for seq, _, _ in marks],
                [status for _, status, _ in marks],
                [reason for _, _, reason in marks],
                pg_cluster.EVENTS,
            )
            if row is None:
                raise pg_cluster.LeaseLost("")
        return int(row[0])

    async def decided(self, seq: int) -> str | None:
        """Wait for the verdict on request ``seq`` put in the inbox by :meth:`forward`:
        ``None`` once it was accepted, else the reason it was rejected. Woken by the
        ``NOTIFY`` of the runtime that decides it; a lost notice is caught by reading
        the request every :data:`VERDICT_CHECK` seconds."""
        early = self._early.pop(seq, None)  # heard before anyone waited
        if early is not None:
            verdict: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            verdict.set_result(early)
        else:
            verdict = self._verdicts[seq] = asyncio.get_running_loop().create_future()
        try:
            while True:
                try:
                    status = await asyncio.wait_for(asyncio.shield(verdict), VERDICT_CHECK)
                except TimeoutError:
                    with self._failing("could not read"):
                        row = await self.pool.fetchrow(
                            "SELECT status, reason FROM inbox WHERE seq = $1", seq
                        )
                    if row is None:
                        return "the request was deleted before it was decided"
                    if row[0] == "pending":
                        continue
                    return None if row[0] == "accepted" else str(row[1] or "rejected")
                if status == "accepted":
                    return None
                with self._failing("could not read"):
                    reason = await self.pool.fetchval(
                        "SELECT reason FROM inbox WHERE seq = $1", seq
                    )
                return str(reason or "rejected")
        finally:
            self._verdicts.pop(seq, None)

    async def tell_topics(self, topics: Collection[str]) -> None:
        """Tell the other runtimes to re-run their queries on ``topics`` (not durable: a
        runtime that is not listening re-runs them all when it opens)."""
        payload = "topics:" + _TOPICS_ENCODER.encode([self.owner, *topics]).decode()
        if len(payload.encode()) >= _NOTIFY_MAX:
            raise StoreError(
                f"the topics of one notify take {len(payload.encode())} bytes, over the "
                f"{_NOTIFY_MAX} PostgreSQL carries; notify fewer or shorter topics at a time"
            )
        with self._failing("could not write to"):
            await self.pool.execute("SELECT pg_notify($1, $2)", pg_cluster.EVENTS, payload)

    def ended(self, instance_id: str) -> asyncio.Future[None]:
        """A future resolved when a runtime reports that ``instance_id`` ended (or this
        runtime's listening connection was lost or closed: look again then)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._listener is None:
            waiter.set_result(None)
        else:
            self._done.setdefault(instance_id, []).append(waiter)
        return waiter

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
        """Unfinished instances of this runtime whose stored wake lies in ``(after, upto]``."""
        return await self._ids(
            "SELECT id FROM instances WHERE wake IS NOT NULL AND wake > $1 AND wake <= $2"
            " AND owner = $3 ORDER BY wake",
            after,
            upto,
            self.owner,
        )

    async def next_wake(self, after: float) -> float | None:
        """The earliest stored wake of this runtime's instances later than ``after``."""
        with self._failing("could not read"):
            found = await self.pool.fetchval(
                "SELECT min(wake) FROM instances WHERE wake IS NOT NULL AND wake > $1"
                " AND owner = $2",
                after,
                self.owner,
            )
        return float(found) if found is not None else None

    async def token_owner(self, token: str) -> str | None:
        """The unfinished instance that made event token ``token``, if one is stored
        (whichever runtime runs it)."""
        found = await self._ids("SELECT wf FROM tokens WHERE token = $1", token)
        return found[0] if found else None

    async def listening(self, topics: Collection[str]) -> builtins.list[str]:
        """Unfinished instances of this runtime that wait on a query on one of ``topics``."""
        wanted = builtins.list(topics)
        if not wanted:
            return []
        return await self._ids(
            "SELECT DISTINCT t.wf FROM topics t JOIN instances i ON i.id = t.wf"
            " WHERE t.topic = ANY($1) AND i.owner = $2",
            wanted,
            self.owner,
        )

    async def _ids(self, sql: str, *params: object) -> builtins.list[str]:
        with self._failing("could not read"):
            return [str(row[0]) for row in await self.pool.fetch(sql, *params)]

    async def list(
        self, states: Collection[str] | None, workflow: str | None
    ) -> builtins.list[Snapshot]:
        """Checkpointed snapshots without history, events, values and tokens
        (:func:`layout.head_of`), filtered in SQL by state and workflow; and, whole, those
        that other runtimes changed since their last checkpoint, as committed (not
        filtered: the caller filters what it gets)."""
        with self._failing("could not read"):
            async with (
                self.pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                rows = await conn.fetch(
                    "SELECT head FROM instances WHERE ($1::text[] IS NULL OR state = ANY($1))"
                    " AND ($2::text IS NULL OR workflow = $2) ORDER BY created_at",
                    None if states is None else builtins.list(states),
                    workflow,
                )
                log = await conn.fetch(
                    "SELECT record FROM wal WHERE owner <> $1 ORDER BY seq", self.owner
                )
                records = [r for (blob,) in log for r in BATCH_DECODER.decode(blob)]
                touched = {r.wf for r in records}
                found: dict[str, Snapshot] = {}
                if touched:
                    stored = await self._stored(touched, conn, anyone=True)
                    found = {i: layout.restore(base, tail) for i, (base, tail) in stored.items()}
            heads = [SNAPSHOT_DECODER.decode(row[0]) for row in rows]
            fold(found, records)
            return [s for s in heads if s.id not in found] + builtins.list(found.values())

    async def inbox(
        self, everything: bool = False, max_bytes: int | None = None
    ) -> builtins.list[InboxRow] | None:
        """Pending inbox requests for this runtime, oldest first, if a ``NOTIFY`` came since
        the last call (or the listening connection was lost: then every call reads) or
        ``everything``; else ``None``. A request larger than ``max_bytes`` comes without
        its bytes. This runtime's are those for the instances it owns, and, if it is the
        leader (:func:`pg_cluster.leader`), those for no instance or an unknown one."""
        if not (everything or self._notified or not self._bell.listening):
            return None
        self._notified = False  # before the read: a NOTIFY during it means read again
        try:
            with self._failing("could not read the inbox of"):
                rows = await self.pool.fetch(
                    "SELECT q.seq, length(q.request), CASE WHEN $1::bigint IS NULL"
                    " OR length(q.request) <= $1 THEN q.request END"
                    " FROM inbox q LEFT JOIN instances i ON i.id = q.target"
                    " WHERE q.status = 'pending' AND (i.owner = $2 OR (i.id IS NULL AND"
                    " (SELECT id FROM runtimes ORDER BY joined_at, id LIMIT 1) = $2))"
                    " ORDER BY q.seq",
                    max_bytes,
                    self.owner,
                )
        except BaseException:
            self._notified = True  # a failed read is tried again
            raise
        return [InboxRow(int(seq), size, request) for seq, size, request in rows]

    async def close(self) -> None:
        """Release this runtime's instances to the others (unless its lease was taken
        over), stop listening, close the connections (idempotent)."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            # The flag ends it even when Python 3.11's wait_for swallows the cancel (the
            # bell rang at the same moment).
            self._closing = True
            self._keeper_bell.set()
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if self._pool is not None and self._lost is None:
            with contextlib.suppress(*_DRIVER_ERRORS):
                async with self._pool.acquire() as conn:
                    await pg_cluster.leave(conn, self.owner)
        for waiters in self._done.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self._done.clear()
        for verdict in self._verdicts.values():
            if not verdict.done():
                verdict.set_exception(StoreError(f"{self.label} was closed"))
                verdict.exception()  # its waiter may be gone: never "never retrieved"
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


_INBOX_INSERT = (
    "WITH q AS (INSERT INTO inbox (created_at, request, target) VALUES ($1, $2,"
    " coalesce($3::text, (SELECT wf FROM tokens WHERE token = $4::text))) RETURNING seq, target)"
    " SELECT q.seq, pg_notify($5::text,"
    " coalesce((SELECT owner FROM instances WHERE id = q.target), '')) FROM q"
)
"""Put a request in the inbox, addressed, and ring its owner (everyone's, if none)."""
_READ_ONE = (
    "SELECT 0, snapshot, 0::bigint AS seq FROM bases WHERE id = $1"
    " UNION ALL SELECT 1, records, seq FROM journal WHERE wf = $1"
    " UNION ALL SELECT 2, record, seq FROM wal"
    " WHERE owner = (SELECT owner FROM instances WHERE id = $1) AND (wfs IS NULL OR $1 = ANY(wfs))"
    " ORDER BY 1, 3"
)
"""One instance as committed, in one statement (one snapshot, one round trip): its base,
journal rows and the rows of its owner's log that name it (only its owner writes for it:
a takeover folds the dead owner's rows as it claims the instance)."""
_VERDICT_NOTIFY = (
    "SELECT pg_notify({events}, 'decided:' || v.origin || ' ' || v.seq || ' ' || v.status)"
    " FROM v WHERE v.origin IS NOT NULL"
)
"""Tell the runtime that forwarded each request just decided (CTE ``v``) its verdict."""
_FORWARD = (
    "WITH me AS (SELECT 1 FROM runtimes WHERE id = $5 FOR KEY SHARE),"
    " q AS (INSERT INTO inbox (created_at, request, target, origin)"
    " SELECT $1, $2, $3, $6 FROM me RETURNING seq, target),"
    " v AS (UPDATE inbox SET status = m.status, reason = m.reason, decided_at = $1"
    " FROM unnest($7::bigint[], $8::text[], $9::text[]) AS m (seq, status, reason)"
    " WHERE inbox.seq = m.seq AND EXISTS (SELECT 1 FROM me)"
    " RETURNING inbox.seq, inbox.status, inbox.origin),"
    " d AS (" + _VERDICT_NOTIFY.format(events="$10") + ")"
    " SELECT q.seq, pg_notify($4, coalesce((SELECT owner FROM instances WHERE id = q.target),"
    " '')), (SELECT count(*) FROM d) FROM q"
)
"""A request of a runtime to the runtime that runs an instance, with the verdicts on its
own inbox's requests that led to it: one statement, fenced (no row once its lease was
taken over)."""


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> builtins.list[builtins.list[Any]]:
    """``rows`` as ``width`` columns (lists), for ``unnest``."""
    return [[row[i] for row in rows] for i in range(width)]


async def submit(
    url: str,
    request: bytes,
    created_at: float | None = None,
    target: str | None = None,
    token: str | None = None,
) -> int:
    """Put an encoded inbox request in the database at ``url``, addressed to instance
    ``target`` (or the instance that made ``token``; neither: the leader's), and
    ``NOTIFY`` its owner (delivered when the insert commits); return its sequence number."""
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
                _INBOX_INSERT,
                time.time() if created_at is None else created_at,
                request,
                target,
                token,
                CHANNEL,
            )
        return int(seq)
    except _DRIVER_ERRORS as exc:
        raise StoreError(
            f"could not write to {label}: {scrub(f'{type(exc).__name__}: {exc}', url)}"
        ) from None
    finally:
        await conn.close()
