"""SQLite storage: an append-only ``wal`` table plus per-instance ``snapshots``.

The file is actorflow's own: it is marked by ``PRAGMA application_id`` and versioned
by ``PRAGMA user_version``. Anything else (not SQLite, someone else's tables, a newer
schema) raises :class:`StoreError` before a single byte of it is changed.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite
import msgspec

from actorflow.errors import StoreError
from actorflow.records import (
    BATCH_DECODER,
    RECORD_ENCODER,
    SNAPSHOT_DECODER,
    Record,
    Snapshot,
)
from actorflow.store.base import (
    InboxRow,
    Mark,
    fold_log,
    query_topics,
    stored_state,
    waits_on_query,
    wake_of,
)
from actorflow.store.files import DatabaseFile, hold, let_go
from actorflow.store.lock import OwnerLock
from actorflow.workflow import lookup as lookup_workflow

APPLICATION_ID = 0x41464C57  # "AFLW"
SCHEMA_VERSION = 4  # 2: the inbox table; 3: indexes for retention; 4: passivation
T = TypeVar("T")
SQLITE_HEADER = b"SQLite format 3\x00"

INBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    request TEXT NOT NULL,  -- JSON, see actorflow.inbox
    status TEXT NOT NULL DEFAULT 'pending',  -- pending | accepted | rejected
    reason TEXT,
    decided_at REAL
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (status, seq);
"""
# Retention deletes by age: finished instances by ``updated_at`` (a finished snapshot
# changes no more, so it is its ``finished_at``) and decided requests by ``decided_at``.
# Partial indexes: running instances and pending requests cost them nothing.
RETENTION_INDEXES = """
CREATE INDEX IF NOT EXISTS snapshots_finished ON snapshots (updated_at)
    WHERE status != 'running';
CREATE INDEX IF NOT EXISTS inbox_decided ON inbox (decided_at) WHERE decided_at IS NOT NULL;
"""
# What finds an instance that is not loaded (passivation, DESIGN §3.1): the state
# list() filters on, when it must wake by itself (``wake``: -inf = now), whether it
# waits on a query (run again at each open), its event tokens and its queries' topics.
PASSIVATION_SCHEMA = """
ALTER TABLE snapshots ADD COLUMN state TEXT NOT NULL DEFAULT 'running';
ALTER TABLE snapshots ADD COLUMN wake REAL;
ALTER TABLE snapshots ADD COLUMN queries INTEGER NOT NULL DEFAULT 0;
CREATE INDEX snapshots_by_state ON snapshots (state, workflow);
CREATE INDEX snapshots_wake ON snapshots (wake) WHERE wake IS NOT NULL;
CREATE INDEX snapshots_queries ON snapshots (id) WHERE queries > 0;
CREATE TABLE tokens (token TEXT PRIMARY KEY, wf TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX tokens_by_wf ON tokens (wf);
CREATE TABLE topics (topic TEXT NOT NULL, wf TEXT NOT NULL, PRIMARY KEY (topic, wf))
    WITHOUT ROWID;
CREATE INDEX topics_by_wf ON topics (wf);
"""
SCHEMA = (
    """
CREATE TABLE wal (
    seq INTEGER PRIMARY KEY,
    record BLOB NOT NULL  -- one committed batch: a msgpack list of records
);
CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    snapshot BLOB NOT NULL
);
CREATE INDEX snapshots_by_status ON snapshots (status, workflow);
"""
    + INBOX_SCHEMA
    + RETENTION_INDEXES
    + PASSIVATION_SCHEMA
)
MIGRATIONS = {1: INBOX_SCHEMA, 2: RETENTION_INDEXES, 3: PASSIVATION_SCHEMA}
"""What takes a file from schema version N to N + 1."""


Durability = Literal["normal", "full"]


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # Also when COMMIT itself failed (disk full, I/O error): a transaction left
        # open would make every later BEGIN fail, long after the fault has cleared.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def check_header(file: DatabaseFile) -> None:
    """Raise :class:`StoreError` if ``file`` is not empty and is not SQLite (read
    through the held descriptor: opening and closing another would drop SQLite's
    locks, see :mod:`actorflow.store.files`)."""
    header = os.pread(file.fd, len(SQLITE_HEADER), 0)
    if header and header != SQLITE_HEADER:
        raise StoreError(
            f"{file.path} is not an SQLite database (nor an actorflow one); "
            "pass the path of an actorflow database or of a new file"
        )


class OutsideConnection(sqlite3.Connection):
    """A connection that holds its file's descriptor (:func:`hold`) until closed."""

    held: DatabaseFile | None = None

    def close(self) -> None:
        """Close the connection, then let go of the file."""
        try:
            super().close()
        finally:
            held, self.held = self.held, None
            if held is not None:
                let_go(held)


def connect_outside(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A plain connection to an existing actorflow database, for processes that do not
    own it (the CLI): checked like :meth:`SQLiteStore.open` checks, never created."""
    path = Path(path)
    try:
        file = hold(path, create=False)
    except FileNotFoundError:
        raise StoreError(
            f"{path} does not exist; start a runtime on it first (or check --db)"
        ) from None
    try:
        check_header(file)
        conn = sqlite3.connect(path, timeout=10, isolation_level=None, factory=OutsideConnection)
    except BaseException as exc:
        let_go(file)
        if isinstance(exc, sqlite3.DatabaseError):
            raise StoreError(f"{path} is damaged or not a database: {exc}") from None
        raise
    conn.held = file
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path} is damaged or not a database: {exc}") from None
    if app_id != APPLICATION_ID:
        conn.close()
        raise StoreError(f"{path} is not an actorflow database")
    if version > SCHEMA_VERSION:
        conn.close()
        raise StoreError(f"{path} has a newer actorflow schema ({version}); upgrade actorflow")
    return conn


class SQLiteStore:
    """A :class:`~actorflow.store.Store` on one SQLite file, through aiosqlite."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        durability: Durability = "normal",
        now: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.durability = durability
        self._now = now  # stamps inbox verdicts: retention ages them by the runtime's clock
        self._db: aiosqlite.Connection | None = None
        self._lock = OwnerLock(self.path)
        self._file: DatabaseFile | None = None
        self._data_version: object = None
        # load() calls of one loop turn, by id, read together by one query (a thread hop
        # per instance would cap how fast unloaded instances come back).
        self._loads: dict[str, asyncio.Future[bytes | None]] = {}
        self._reads: set[asyncio.Task[None]] = set()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError(f"{self.path} is not open")
        return self._db

    async def open(self) -> list[Snapshot]:
        """Open or create the file (private: mode 0600), take ownership of it, fold the
        log into snapshots, return unfinished ones."""
        self._file = file = hold(self.path, create=True)
        try:
            check_header(file)
            self._lock.acquire(file)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            await self._abandon(file)
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        except BaseException:
            await self._abandon(file)
            raise
        try:
            await self._check_schema()
            return await self._recover()
        except (sqlite3.DatabaseError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            await self._abandon(file)
            raise StoreError(f"{self.path} is damaged or not a database: {exc}") from None
        except BaseException:
            await self._abandon(file)
            raise

    async def _abandon(self, file: DatabaseFile) -> None:
        await self.close()
        if file.created and self.path.exists() and self.path.stat().st_size == 0:
            self.path.unlink()  # we made that empty file; leave nothing behind

    async def _check_schema(self) -> None:
        db = self.db
        app_id = await self._scalar("PRAGMA application_id")
        version = await self._scalar("PRAGMA user_version")
        tables = await self._scalar("SELECT count(*) FROM sqlite_master")
        if app_id == 0 and tables == 0:  # a new (or empty) file
            # One transaction, so a crash never leaves tables without the marks.
            await db.executescript(
                f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA application_id={APPLICATION_ID}; "
                f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            )
        elif app_id != APPLICATION_ID:
            raise StoreError(
                f"{self.path} is an SQLite database that does not belong to actorflow "
                "(it has other tables); keep your app's data in another file"
            )
        elif isinstance(version, int) and version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has actorflow schema version {version}, newer than this "
                f"actorflow understands ({SCHEMA_VERSION}); upgrade actorflow"
            )
        elif isinstance(version, int) and version < SCHEMA_VERSION:
            for step in range(version, SCHEMA_VERSION):  # each step in one transaction
                await self._in_thread(partial(_migrate, step))
        await self._scalar("PRAGMA journal_mode=WAL")
        sync = "FULL" if self.durability == "full" else "NORMAL"
        await self._scalar(f"PRAGMA synchronous={sync}")

    async def _scalar(self, sql: str, *params: object) -> object:
        rows = await self._fetchall(sql, params)
        return rows[0][0] if rows else None

    async def _fetchall(self, sql: str, params: Sequence[object]) -> builtins.list[Any]:
        # One hop to aiosqlite's thread (a cursor takes three: execute, fetch, close), and
        # one read: a write of this connection (a checkpoint) never lands halfway through.
        return builtins.list(await self.db.execute_fetchall(sql, params))

    async def _recover(self) -> list[Snapshot]:
        # Fold the log into the snapshots it touched, then read only those and the
        # instances with something to do: the rest stay on disk until an event, a
        # deadline, a cancel or a notify needs them, so opening costs the work to do.
        db = self.db
        async with db.execute("SELECT record FROM wal ORDER BY seq") as cur:
            records = [r async for (blob,) in cur for r in BATCH_DECODER.decode(blob)]
        found: dict[str, Snapshot] = {}
        if records:
            # Instances the log touched were active when the runtime stopped, perhaps
            # halfway through a change (an event given back, a step's result): replayed.
            touched = await fold_log(found, records, self.load)
            await self.checkpoint([found[i] for i in touched])
        for sql, params in (
            (
                "SELECT snapshot FROM snapshots INDEXED BY snapshots_wake"
                " WHERE wake IS NOT NULL AND wake <= ?",
                (self._now(),),
            ),
            ("SELECT snapshot FROM snapshots INDEXED BY snapshots_queries WHERE queries > 0", ()),
        ):
            async with db.execute(sql, params) as cur:
                async for (blob,) in cur:
                    snapshot = SNAPSHOT_DECODER.decode(blob)
                    found[snapshot.id] = snapshot
        for snapshot in await self._foreign():
            found.setdefault(snapshot.id, snapshot)
        return [s for s in found.values() if not s.finished]

    async def _foreign(self) -> builtins.list[Snapshot]:
        # Unfinished instances of workflows this process does not define: loaded, so
        # that they are held and say why. The few workflow names are found by skipping
        # through the (state, workflow) index, not by reading every row.
        found: builtins.list[Snapshot] = []
        for state in ("running", "waiting"):
            name = ""
            while True:
                row = await self._scalar(
                    "SELECT workflow FROM snapshots INDEXED BY snapshots_by_state"
                    " WHERE state = ? AND workflow > ? ORDER BY workflow LIMIT 1",
                    state,
                    name,
                )
                if not isinstance(row, str):
                    break
                name = row
                if lookup_workflow(name) is None:
                    async with self.db.execute(
                        "SELECT snapshot FROM snapshots INDEXED BY snapshots_by_state"
                        " WHERE state = ? AND workflow = ?",
                        (state, name),
                    ) as cur:
                        found.extend([SNAPSHOT_DECODER.decode(b) async for (b,) in cur])
        return found

    async def _in_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # One hop to aiosqlite's thread for a whole transaction instead of one per
        # statement: the group commit's latency is mostly these hops.
        # aiosqlite's worker keeps its last job referenced until the next one arrives:
        # the job lets go of ``fn`` (and the batch or snapshots it holds) once it ran,
        # so an idle runtime does not keep its last transaction's data alive.
        db = self.db
        job = [fn]

        def run(conn: sqlite3.Connection) -> T:
            return job.pop()(conn)

        return await db._execute(run, db._conn)  # type: ignore[no-any-return,no-untyped-call]

    async def write(self, records: list[Record], marks: Sequence[Mark] = ()) -> None:
        """Append ``records`` in one transaction, as one row (the batch is the unit),
        together with the verdicts on the inbox requests that produced them."""
        blob = RECORD_ENCODER.encode(records) if records else None
        now = self._now()

        def insert(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                if blob is not None:
                    conn.execute("INSERT INTO wal (record) VALUES (?)", (blob,))
                if marks:
                    conn.executemany(
                        "UPDATE inbox SET status = ?, reason = ?, decided_at = ? WHERE seq = ?",
                        [(status, reason, now, seq) for seq, status, reason in marks],
                    )

        try:
            await self._in_thread(insert)
        except sqlite3.Error as exc:
            raise StoreError(f"could not write to {self.path}: {exc}") from exc

    async def checkpoint(self, snapshots: list[Snapshot]) -> None:
        """Replace the given snapshots (with what finds them unloaded) and empty the log,
        atomically."""
        rows = _snapshot_rows(snapshots)

        def replace(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                _write_snapshots(conn, *rows)
                conn.execute("DELETE FROM wal")

        try:
            await self._in_thread(replace)
        except sqlite3.Error as exc:
            raise StoreError(f"could not checkpoint {self.path}: {exc}") from exc

    async def purge(self, before: float, statuses: Collection[str], limit: int) -> int:
        """Delete up to ``limit`` finished instances whose status is in ``statuses`` and
        that finished at or before ``before``, oldest first; return how many were deleted."""
        wanted = [s for s in statuses if s != "running"]
        if not wanted:
            return 0
        sql = (
            "DELETE FROM snapshots WHERE id IN (SELECT id FROM snapshots"
            " INDEXED BY snapshots_finished WHERE status != 'running' AND updated_at <= ?"
            f" AND status IN ({','.join('?' * len(wanted))}) ORDER BY updated_at LIMIT ?)"
        )
        return await self._delete(sql, (before, *wanted, limit))

    async def purge_inbox(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` inbox requests decided at or before ``before``, oldest first."""
        sql = (
            "DELETE FROM inbox WHERE seq IN (SELECT seq FROM inbox"
            " WHERE decided_at IS NOT NULL AND decided_at <= ? ORDER BY decided_at LIMIT ?)"
        )
        return await self._delete(sql, (before, limit))

    async def _delete(self, sql: str, params: tuple[object, ...]) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                return conn.execute(sql, params).rowcount

        try:
            return await self._in_thread(delete)
        except sqlite3.Error as exc:
            raise StoreError(f"could not purge {self.path}: {exc}") from exc

    async def oldest_done(self) -> float | None:
        """When the oldest stored finished instance finished, or the oldest decided inbox
        request was decided, whichever is earlier; ``None`` when there is neither."""
        with self._reading():
            finished = await self._scalar(
                "SELECT min(updated_at) FROM snapshots WHERE status != 'running'"
            )
            decided = await self._scalar(
                "SELECT min(decided_at) FROM inbox WHERE decided_at IS NOT NULL"
            )
        found = [float(t) for t in (finished, decided) if isinstance(t, int | float)]
        return min(found, default=None)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        # A read can meet a damaged page or record long after open: say so as the
        # StoreError every caller expects, not as a raw sqlite3 or msgspec error.
        try:
            yield
        except (sqlite3.Error, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StoreError(f"could not read {self.path} (damaged?): {exc}") from exc
        except ValueError as exc:  # aiosqlite's, for a connection closed mid-read
            if self._db is not None:
                raise
            raise StoreError(f"{self.path} was closed during a read") from exc

    async def load(self, instance_id: str) -> Snapshot | None:
        """The checkpointed snapshot of ``instance_id``, if any. The loads asked for in
        one loop turn are read with one query."""
        found = self._loads.get(instance_id)
        if found is None:
            if not self._loads:
                asyncio.get_running_loop().call_soon(self._read_loads)
            found = self._loads[instance_id] = asyncio.get_running_loop().create_future()
        # Shielded: one caller cancelled leaves the read to the others. Each decodes its
        # own copy, as callers may change what they get.
        blob = await asyncio.shield(found)
        return None if blob is None else SNAPSHOT_DECODER.decode(blob)

    def _read_loads(self) -> None:
        loads, self._loads = self._loads, {}
        task = asyncio.get_running_loop().create_task(self._read_snapshots(loads))
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _read_snapshots(self, loads: dict[str, asyncio.Future[bytes | None]]) -> None:
        ids = builtins.list(loads)
        try:
            with self._reading():
                blobs: dict[str, bytes] = {}
                for i in range(0, len(ids), 500):
                    chunk = ids[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    sql = f"SELECT id, snapshot FROM snapshots WHERE id IN ({marks})"
                    blobs.update(await self._fetchall(sql, chunk))
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else StoreError(f"{self.path}: read stopped")
            for future in loads.values():
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved: a cancelled caller does not warn
            if not isinstance(exc, Exception):
                raise
            return
        for instance_id, future in loads.items():
            if not future.done():
                future.set_result(blobs.get(instance_id))

    async def workflows_of(self, instance_ids: Collection[str]) -> dict[str, str]:
        """The workflow name of each checkpointed instance among ``instance_ids``."""
        ids = list(instance_ids)
        found: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            sql = f"SELECT id, workflow FROM snapshots WHERE id IN ({','.join('?' * len(chunk))})"
            with self._reading():
                found.update({row[0]: row[1] for row in await self._fetchall(sql, chunk)})
        return found

    async def due(self, after: float, upto: float) -> builtins.list[str]:
        """Unfinished instances whose stored wake lies in ``(after, upto]``."""
        return await self._ids(
            "SELECT id FROM snapshots INDEXED BY snapshots_wake"
            " WHERE wake IS NOT NULL AND wake > ? AND wake <= ? ORDER BY wake",
            (after, upto),
        )

    async def next_wake(self, after: float) -> float | None:
        """The earliest stored wake later than ``after``, if any."""
        with self._reading():
            found = await self._scalar(
                "SELECT min(wake) FROM snapshots INDEXED BY snapshots_wake"
                " WHERE wake IS NOT NULL AND wake > ?",
                after,
            )
        return float(found) if isinstance(found, int | float) else None

    async def token_owner(self, token: str) -> str | None:
        """The unfinished instance that made event token ``token``, if one is stored."""
        found = await self._ids("SELECT wf FROM tokens WHERE token = ?", (token,))
        return found[0] if found else None

    async def listening(self, topics: Collection[str]) -> builtins.list[str]:
        """Unfinished instances that wait on a query on one of ``topics``."""
        wanted = list(topics)
        if not wanted:
            return []
        return await self._ids(
            f"SELECT DISTINCT wf FROM topics WHERE topic IN ({','.join('?' * len(wanted))})",
            tuple(wanted),
        )

    async def _ids(self, sql: str, params: tuple[object, ...]) -> builtins.list[str]:
        with self._reading():
            return [str(row[0]) for row in await self._fetchall(sql, params)]

    async def list(self, states: Collection[str] | None, workflow: str | None) -> list[Snapshot]:
        """Checkpointed snapshots, filtered by the state ``status()`` shows and workflow name."""
        sql = "SELECT snapshot FROM snapshots WHERE 1"
        params: list[object] = []
        if states is not None:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            params += list(states)
        if workflow is not None:
            sql += " AND workflow = ?"
            params.append(workflow)
        with self._reading():
            async with self.db.execute(sql + " ORDER BY created_at", params) as cur:
                return [SNAPSHOT_DECODER.decode(blob) async for (blob,) in cur]

    async def inbox(
        self, everything: bool = False, max_bytes: int | None = None
    ) -> builtins.list[InboxRow] | None:
        """Pending inbox requests, oldest first, if another process wrote since the last
        call (``PRAGMA data_version`` of this connection moved) or ``everything``; else
        ``None``. Each request comes as raw bytes (``None`` if NULL or larger than
        ``max_bytes``), so no row's content can make the read fail."""
        with self._reading():
            version = await self._scalar("PRAGMA data_version")
            if version == self._data_version and not everything:
                return None
            # As bytes, not text: one row of invalid UTF-8 (or a blob, a number) written
            # by a raw writer must not make the whole batch unreadable. The size is asked
            # first so that an oversized row is never copied into memory.
            async with self.db.execute(
                "SELECT seq, length(CAST(request AS BLOB)) AS size,"
                " CASE WHEN ? IS NULL OR length(CAST(request AS BLOB)) <= ?"
                " THEN CAST(request AS BLOB) END"
                " FROM inbox WHERE status = 'pending' ORDER BY seq",
                (max_bytes, max_bytes),
            ) as cur:
                rows = [InboxRow(int(seq), size, request) async for seq, size, request in cur]
            self._data_version = version  # only once read: a failed read is tried again
            return rows

    async def close(self) -> None:
        """Close the connection and give up ownership (idempotent)."""
        db, self._db = self._db, None
        file, self._file = self._file, None
        try:
            if db is not None:
                await db.close()
        finally:
            self._lock.release()
            if file is not None:  # after SQLite let go of it: see store.files
                let_go(file)


SnapshotRows = tuple[
    builtins.list[tuple[object, ...]],
    builtins.list[tuple[str, str]],
    builtins.list[tuple[str]],
    builtins.list[tuple[str, str]],
]
"""Rows of :func:`_write_snapshots`: snapshots, tokens, instances whose tokens and topics
go, topics."""


def _snapshot_rows(snapshots: Collection[Snapshot]) -> SnapshotRows:
    encode = RECORD_ENCODER.encode
    rows: builtins.list[tuple[object, ...]] = []
    tokens: builtins.list[tuple[str, str]] = []
    gone: builtins.list[tuple[str]] = []
    topics: builtins.list[tuple[str, str]] = []
    for s in snapshots:
        rows.append(
            (s.id, s.workflow, s.status, s.created_at, s.updated_at, encode(s), stored_state(s),
             wake_of(s), waits_on_query(s))
        )  # fmt: skip
        gone.append((s.id,))
        if not s.finished:
            tokens += [(token, s.id) for token in s.tokens]
            topics += [(topic, s.id) for topic in query_topics(s)]
    return rows, tokens, gone, topics


def _write_snapshots(
    conn: sqlite3.Connection,
    rows: builtins.list[tuple[object, ...]],
    tokens: builtins.list[tuple[str, str]],
    gone: builtins.list[tuple[str]],
    topics: builtins.list[tuple[str, str]],
) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO snapshots (id, workflow, status, created_at, updated_at,"
        " snapshot, state, wake, queries) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    # A finished instance's tokens and topics go; a parked one's topics are rewritten.
    conn.executemany("DELETE FROM topics WHERE wf = ?", gone)
    finished = [g for g, row in zip(gone, rows, strict=True) if row[2] != "running"]
    conn.executemany("DELETE FROM tokens WHERE wf = ?", finished)
    conn.executemany("INSERT OR IGNORE INTO tokens VALUES (?, ?)", tokens)
    conn.executemany("INSERT OR IGNORE INTO topics VALUES (?, ?)", topics)


def _migrate(step: int, conn: sqlite3.Connection) -> None:
    """Take the file from schema version ``step`` to ``step + 1``, in one transaction."""
    with _transaction(conn):
        for statement in _statements(MIGRATIONS[step]):
            conn.execute(statement)
        if step == 3:  # fill the passivation columns and tables from the stored snapshots
            snapshots = [
                SNAPSHOT_DECODER.decode(blob)
                for (blob,) in conn.execute("SELECT snapshot FROM snapshots")
            ]
            _write_snapshots(conn, *_snapshot_rows(snapshots))
        conn.execute(f"PRAGMA user_version={step + 1}")


def _statements(script: str) -> Iterator[str]:
    """The statements of an SQL script (whose statements each end a line with ``;``)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if line.rstrip().endswith(";") and sqlite3.complete_statement(statement):
            yield statement.strip()
            statement = ""
