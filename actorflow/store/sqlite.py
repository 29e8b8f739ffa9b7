"""SQLite storage: an append-only ``wal`` table, per-instance ``snapshots`` and ``journal``.

Each instance is stored as a base snapshot plus the journal rows its checkpoints
appended since (see :mod:`actorflow.store.layout`), so that a checkpoint costs what
changed, not whole histories again.

The file is actorflow's own: it is marked by ``PRAGMA application_id`` and versioned
by ``PRAGMA user_version``. Anything else (not SQLite, someone else's tables, a newer
schema) raises :class:`StoreError` before a single byte of it is changed.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

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
from actorflow.store import layout
from actorflow.store.base import (
    InboxRow,
    Mark,
    fold,
    fold_log,
    query_topics,
    stored_state,
    waits_on_query,
    wake_of,
)
from actorflow.store.batch import TurnBatch
from actorflow.store.files import DatabaseFile, hold, let_go
from actorflow.store.lock import OwnerLock
from actorflow.workflow import lookup as lookup_workflow

APPLICATION_ID = 0x41464C57  # "AFLW"
SCHEMA_VERSION = 5  # 2: the inbox table; 3: indexes for retention; 4: passivation; 5: journal
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
# Per-instance layout (DESIGN §3.2): ``bases`` holds each instance's base snapshot,
# ``journal`` the records each checkpoint since committed for it (one row per instance
# per checkpoint, in ``seq`` order); ``snapshots`` keeps the small things a checkpoint
# updates (``head``: what list() shows; the sizes that decide when the base is
# rewritten). The base has a table of its own because SQLite rewrites a whole row,
# blob and all, when one of its columns changes. Rowid tables: their rows may be large.
LAYOUT_SCHEMA = """
ALTER TABLE snapshots ADD COLUMN head BLOB;
ALTER TABLE snapshots ADD COLUMN run INTEGER NOT NULL DEFAULT 1;
ALTER TABLE snapshots ADD COLUMN base_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE snapshots ADD COLUMN tail_bytes INTEGER NOT NULL DEFAULT 0;
CREATE TABLE bases (
    id TEXT PRIMARY KEY,
    snapshot BLOB NOT NULL  -- the instance's snapshot when its base was last written
);
INSERT INTO bases (id, snapshot) SELECT id, snapshot FROM snapshots;
ALTER TABLE snapshots DROP COLUMN snapshot;
CREATE TABLE journal (
    seq INTEGER PRIMARY KEY,
    wf TEXT NOT NULL,
    records BLOB NOT NULL  -- a msgpack list of the instance's records
);
CREATE INDEX journal_by_wf ON journal (wf, seq);
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
    + LAYOUT_SCHEMA
)
MIGRATIONS = {1: INBOX_SCHEMA, 2: RETENTION_INDEXES, 3: PASSIVATION_SCHEMA, 4: LAYOUT_SCHEMA}
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
        self._loads = TurnBatch(self._read_stored, self._read_stopped)

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
        ids: builtins.list[str] = []
        for sql, params in (
            (
                "SELECT id FROM snapshots INDEXED BY snapshots_wake"
                " WHERE wake IS NOT NULL AND wake <= ?",
                (self._now(),),
            ),
            ("SELECT id FROM snapshots INDEXED BY snapshots_queries WHERE queries > 0", ()),
        ):
            ids += [row[0] for row in await self._fetchall(sql, params)]
        ids += await self._foreign()
        # Those the log touched are in ``found`` already, as just checkpointed.
        ids = [i for i in dict.fromkeys(ids) if i not in found]
        for instance_id, (base, tail) in (await self._stored(ids)).items():
            found[instance_id] = layout.restore(base, tail)
        return [s for s in found.values() if not s.finished]

    async def _stored(self, ids: Collection[str]) -> dict[str, tuple[bytes, builtins.list[bytes]]]:
        # The base and journal rows of each instance in one hop: a checkpoint (which may
        # rewrite a base and delete its journal) never lands between the two reads.
        wanted = builtins.list(ids)
        return await self._in_thread(lambda conn: stored_rows(conn, wanted))

    async def _foreign(self) -> builtins.list[str]:
        # Unfinished instances of workflows this process does not define: loaded, so
        # that they are held and say why. The few workflow names are found by skipping
        # through the (state, workflow) index, not by reading every row.
        found: builtins.list[str] = []
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
                    rows = await self._fetchall(
                        "SELECT id FROM snapshots INDEXED BY snapshots_by_state"
                        " WHERE state = ? AND workflow = ?",
                        (state, name),
                    )
                    found += [row[0] for row in rows]
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
        """Append to each changed instance's journal its records in the log, update what
        finds it unloaded, and empty the log, atomically: it costs what the log holds,
        not the instances' histories (bases are rewritten only as :func:`layout.plan`
        says)."""
        try:
            # Read, then planned here (the snapshots are the event loop's to read), then
            # written in one transaction. Only the writer writes the log, and it waits for
            # this: what is deleted is exactly what was read (``seq`` bounds it anyway).
            last, records, stored = await self._in_thread(
                lambda conn: _checkpoint_input(conn, snapshots)
            )
            rows = _change_rows(layout.plan(snapshots, records, stored))

            def write(conn: sqlite3.Connection) -> None:
                with _transaction(conn):
                    _write_changes(conn, rows)
                    conn.execute("DELETE FROM wal WHERE seq <= ?", (last,))

            await self._in_thread(write)
        except sqlite3.Error as exc:
            raise StoreError(f"could not checkpoint {self.path}: {exc}") from exc
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StoreError(f"could not checkpoint {self.path} (damaged?): {exc}") from exc

    async def purge(self, before: float, statuses: Collection[str], limit: int) -> int:
        """Delete up to ``limit`` finished instances whose status is in ``statuses`` and
        that finished at or before ``before``, oldest first; return how many were deleted."""
        wanted = [s for s in statuses if s != "running"]
        if not wanted:
            return 0
        select = (
            "SELECT id FROM snapshots INDEXED BY snapshots_finished"
            " WHERE status != 'running' AND updated_at <= ?"
            f" AND status IN ({','.join('?' * len(wanted))}) ORDER BY updated_at LIMIT ?"
        )

        def delete(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                ids = [(row[0],) for row in conn.execute(select, (before, *wanted, limit))]
                conn.executemany("DELETE FROM journal WHERE wf = ?", ids)
                conn.executemany("DELETE FROM bases WHERE id = ?", ids)
                conn.executemany("DELETE FROM snapshots WHERE id = ?", ids)
                return len(ids)

        try:
            return await self._in_thread(delete)
        except sqlite3.Error as exc:
            raise StoreError(f"could not purge {self.path}: {exc}") from exc

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
        """The checkpointed snapshot of ``instance_id`` (its base and journal), if any.
        The loads asked for in one loop turn are read together."""
        rows = await self._loads.get(instance_id)
        if rows is None:
            return None
        # Each caller decodes its own copy: callers may change what they get.
        with self._reading():
            return layout.restore(*rows)

    async def _read_stored(
        self, ids: Collection[str]
    ) -> dict[str, tuple[bytes, builtins.list[bytes]]]:
        with self._reading():
            return await self._stored(ids)

    def _read_stopped(self) -> StoreError:
        return StoreError(f"{self.path}: read stopped")

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
        """Checkpointed snapshots without history, events, values and tokens
        (:func:`layout.head_of`), filtered by the state ``status()`` shows and workflow."""
        sql = "SELECT head FROM snapshots WHERE 1"
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


def stored_rows(
    conn: sqlite3.Connection, ids: Collection[str] | None = None
) -> dict[str, tuple[bytes, builtins.list[bytes]]]:
    """The base and journal rows (in order) of the stored instances among ``ids`` (all
    when ``None``), read in one read transaction unless ``conn`` is in one already; each
    is an instance for :func:`layout.restore`."""
    found: dict[str, tuple[bytes, builtins.list[bytes]]] = {}
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        if ids is None:
            chunks: builtins.list[builtins.list[str]] = [[]]
        else:
            wanted = builtins.list(ids)
            chunks = [wanted[i : i + 500] for i in range(0, len(wanted), 500)]
        for chunk in chunks:
            where = f" WHERE id IN ({','.join('?' * len(chunk))})" if ids is not None else ""
            for instance_id, base in conn.execute(f"SELECT id, snapshot FROM bases{where}", chunk):
                found[instance_id] = (base, [])
            where = f" WHERE wf IN ({','.join('?' * len(chunk))})" if ids is not None else ""
            for wf, records in conn.execute(
                f"SELECT wf, records FROM journal{where} ORDER BY wf, seq", chunk
            ):
                if wf in found:
                    found[wf][1].append(records)
        if own:
            conn.execute("COMMIT")
    finally:
        if own and conn.in_transaction:
            conn.execute("ROLLBACK")
    return found


def read_committed(
    conn: sqlite3.Connection, instance_id: str | None = None, heads: bool = False
) -> dict[str, Snapshot]:
    """Every instance (or just ``instance_id``) as committed, from a connection that does
    not own the file: bases, journals and the log tail, read in one transaction and folded
    as recovery folds them. ``heads``: instances the log does not touch come as their
    head (no history, events, values or tokens), which is all a listing needs."""
    conn.execute("BEGIN")  # one snapshot of the file for every table
    try:
        log = [blob for (blob,) in conn.execute("SELECT record FROM wal ORDER BY seq")]
        records = [r for blob in log for r in BATCH_DECODER.decode(blob)]
        if instance_id is not None:
            records = [r for r in records if r.wf == instance_id]
        found: dict[str, Snapshot] = {}
        if heads and instance_id is None:
            touched = {r.wf for r in records}
            for wf, head in conn.execute("SELECT id, head FROM snapshots"):
                if wf not in touched:
                    found[wf] = SNAPSHOT_DECODER.decode(head)
            rows = stored_rows(conn, touched)
        else:
            rows = stored_rows(conn, None if instance_id is None else [instance_id])
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    for wf, (base, tail) in rows.items():
        found[wf] = layout.restore(base, tail)
    fold(found, records)
    return found


def _checkpoint_input(
    conn: sqlite3.Connection, snapshots: Collection[Snapshot]
) -> tuple[int, builtins.list[Record], dict[str, layout.Stored]]:
    """What a checkpoint plans from: the last ``seq`` of the log, its records, and the
    stored rows of the instances they or ``snapshots`` name."""
    conn.execute("BEGIN")
    try:
        log = conn.execute("SELECT seq, record FROM wal ORDER BY seq").fetchall()
        records = [r for _, blob in log for r in BATCH_DECODER.decode(blob)]
        ids = builtins.list(dict.fromkeys([*(s.id for s in snapshots), *(r.wf for r in records)]))
        stored: dict[str, layout.Stored] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            sql = (
                "SELECT id, run, base_bytes, tail_bytes FROM snapshots"
                f" WHERE id IN ({','.join('?' * len(chunk))})"
            )
            for instance_id, run, base_bytes, tail_bytes in conn.execute(sql, chunk):
                stored[instance_id] = layout.Stored(run, base_bytes, tail_bytes)
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    return (log[-1][0] if log else 0), records, stored


class ChangeRows(NamedTuple):
    """The statements' parameters of :func:`_write_changes`."""

    rows: builtins.list[tuple[object, ...]]
    """Whole ``snapshots`` rows of rewritten instances, their bases in ``bases``."""
    bases: builtins.list[tuple[str, bytes]]
    heads: builtins.list[tuple[tuple[object, ...], bytes | None]]
    """Updates of ``snapshots`` rows (the id last), each with a journal row to append."""
    tails: builtins.list[tuple[tuple[object, ...], bytes]]
    """Journal rows of instances not given (their ``tail_bytes``, their id)."""
    drop_journal: builtins.list[tuple[str]]
    drop_tokens: builtins.list[tuple[str]]
    drop_topics: builtins.list[tuple[str]]
    tokens: builtins.list[tuple[str, str]]
    topics: builtins.list[tuple[str, str]]


def _change_rows(changes: Collection[layout.Change]) -> ChangeRows:
    rows = ChangeRows([], [], [], [], [], [], [], [], [])
    for c in changes:
        s = c.snapshot
        if s is None:
            assert c.tail is not None
            rows.tails.append(((c.tail_bytes, c.id), c.tail))
            continue
        index = (stored_state(s), wake_of(s), waits_on_query(s))
        if c.base is not None:
            rows.rows.append(
                (s.id, s.workflow, s.status, s.created_at, s.updated_at, *index, c.head, s.run,
                 c.base_bytes)
            )  # fmt: skip
            rows.bases.append((s.id, c.base))
            rows.drop_journal.append((s.id,))
        else:
            update = (s.status, s.updated_at, *index, c.head, c.tail_bytes, s.id)
            rows.heads.append((update, c.tail))
        if c.drop_tokens:
            rows.drop_tokens.append((s.id,))
        rows.tokens.extend((token, s.id) for token in c.tokens)
        rows.drop_topics.append((s.id,))
        if not s.finished:
            rows.topics.extend((topic, s.id) for topic in query_topics(s))
    return rows


def _write_changes(conn: sqlite3.Connection, rows: ChangeRows) -> None:
    conn.executemany("DELETE FROM journal WHERE wf = ?", rows.drop_journal)
    conn.executemany(
        "INSERT OR REPLACE INTO snapshots (id, workflow, status, created_at, updated_at,"
        " state, wake, queries, head, run, base_bytes, tail_bytes)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
        rows.rows,
    )
    conn.executemany("INSERT OR REPLACE INTO bases (id, snapshot) VALUES (?, ?)", rows.bases)
    journal: builtins.list[tuple[object, bytes]] = []
    for update, tail in rows.heads:
        found = conn.execute(
            "UPDATE snapshots SET status = ?, updated_at = ?, state = ?, wake = ?, queries = ?,"
            " head = ?, tail_bytes = ? WHERE id = ?",
            update,
        ).rowcount
        if tail is not None and found:  # not where a purge deleted the instance meanwhile
            journal.append((update[-1], tail))
    for update, tail in rows.tails:
        if conn.execute("UPDATE snapshots SET tail_bytes = ? WHERE id = ?", update).rowcount:
            journal.append((update[-1], tail))
    conn.executemany("INSERT INTO journal (wf, records) VALUES (?, ?)", journal)
    # A finished instance's (or an old run's) tokens go; a parked one's topics are rewritten.
    conn.executemany("DELETE FROM topics WHERE wf = ?", rows.drop_topics)
    conn.executemany("DELETE FROM tokens WHERE wf = ?", rows.drop_tokens)
    conn.executemany("INSERT OR IGNORE INTO tokens VALUES (?, ?)", rows.tokens)
    conn.executemany("INSERT OR IGNORE INTO topics VALUES (?, ?)", rows.topics)


def _index_v4(conn: sqlite3.Connection, snapshots: Collection[Snapshot]) -> None:
    """Fill what schema 4 added (what finds an instance unloaded) from whole snapshots."""
    conn.executemany(
        "UPDATE snapshots SET state = ?, wake = ?, queries = ? WHERE id = ?",
        [(stored_state(s), wake_of(s), waits_on_query(s), s.id) for s in snapshots],
    )
    for s in snapshots:
        if not s.finished:
            conn.executemany(
                "INSERT OR IGNORE INTO tokens VALUES (?, ?)", [(t, s.id) for t in s.tokens]
            )
            conn.executemany(
                "INSERT OR IGNORE INTO topics VALUES (?, ?)", [(t, s.id) for t in query_topics(s)]
            )


def _layout_v5(conn: sqlite3.Connection) -> None:
    """Fill what schema 5 added: each stored (whole) snapshot becomes its instance's base."""
    rows = [
        (RECORD_ENCODER.encode(layout.head_of(s)), s.run, len(blob), s.id)
        for (blob,) in conn.execute("SELECT snapshot FROM bases")
        for s in [SNAPSHOT_DECODER.decode(blob)]
    ]
    conn.executemany("UPDATE snapshots SET head = ?, run = ?, base_bytes = ? WHERE id = ?", rows)


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
            _index_v4(conn, snapshots)
        elif step == 4:
            _layout_v5(conn)
        conn.execute(f"PRAGMA user_version={step + 1}")


def _statements(script: str) -> Iterator[str]:
    """The statements of an SQL script (whose statements each end a line with ``;``)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if line.rstrip().endswith(";") and sqlite3.complete_statement(statement):
            yield statement.strip()
            statement = ""
