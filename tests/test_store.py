"""The SQLite file: ownership marks, foreign and damaged files, WAL, checkpoints, recovery."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from old_schema import make_version_1, make_version_3

import actorflow as af
from actorflow.records import Finished, Outcome, Started
from actorflow.store import SQLiteStore
from actorflow.store.sqlite import APPLICATION_ID, SCHEMA_VERSION

gate = af.Event("store.gate")


@af.workflow(name="store.wait")
async def wait_once(ctx: af.Context[None]) -> str:
    await ctx.wait_event(gate)
    return "ok"


def wal_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM wal").fetchone()[0])


async def test_new_file_is_marked_as_actorflow(db: Path) -> None:
    async with af.Runtime(db):
        pass
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_empty_file_is_a_new_database(db: Path) -> None:
    db.touch()
    async with af.Runtime(db) as rt:
        await rt.start(wait_once)


@pytest.mark.parametrize(
    "content",
    [b"hello, I am a text file\n", b"\x00" * 4096, b"SQLite format 3\x00" + b"\xff" * 200],
)
async def test_non_database_file_is_refused_untouched(db: Path, content: bytes) -> None:
    db.write_bytes(content)
    with pytest.raises(af.StoreError):
        async with af.Runtime(db):
            pass
    assert db.read_bytes() == content


async def test_foreign_sqlite_file_is_refused_untouched(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
    before = db.read_bytes()
    with pytest.raises(af.StoreError, match="does not belong to actorflow"):
        async with af.Runtime(db):
            pass
    assert db.read_bytes() == before


async def test_newer_schema_is_refused_untouched(db: Path) -> None:
    async with af.Runtime(db):
        pass
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    before = db.read_bytes()
    with pytest.raises(af.StoreError, match="newer"):
        async with af.Runtime(db):
            pass
    assert db.read_bytes() == before


async def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(af.StoreError, match="directory"):
        async with af.Runtime(tmp_path):
            pass


async def test_checkpoint_folds_the_log_and_recovery_reads_both(db: Path) -> None:
    async with af.Runtime(db) as rt:
        done = await rt.start(wait_once, id="done")
        await rt.send("done", gate)
        await done.result()
        await rt.checkpoint()
        assert wal_rows(db) == 0
        await rt.start(wait_once, id="open")  # only in the log now
        assert wal_rows(db) > 0
    async with af.Runtime(db) as rt:  # recovery folded the tail and checkpointed
        assert wal_rows(db) == 0
        assert (await rt.handle("open").status()).state == "waiting"
        assert await rt.handle("done").result() == "ok"
        await rt.send("open", gate)
        assert await rt.handle("open").result(timeout=5) == "ok"


async def test_group_commit_puts_many_records_in_one_transaction(db: Path) -> None:
    writes: list[int] = []
    async with af.Runtime(db) as rt:
        store = rt._store
        assert isinstance(store, SQLiteStore)
        original = store.write

        async def counting(records: list[object], marks: object = ()) -> None:
            writes.append(len(records))
            await original(records, marks)  # type: ignore[arg-type]

        store.write = counting  # type: ignore[method-assign,assignment]
        import asyncio

        await asyncio.gather(*(rt.start(wait_once) for _ in range(200)))
    assert sum(writes) >= 200
    assert len(writes) < 20, writes  # batched, not one transaction per start


async def test_store_folds_records_written_directly(db: Path) -> None:
    store = SQLiteStore(db)
    assert await store.open() == []
    await store.write(
        [
            Started("x", "store.wait", [], 1.0),
            Outcome("x", 0, "event", "store.gate", 2.0),
            Finished("x", "completed", 3.0, b"\xa2ok"),
        ]
    )
    await store.close()
    store = SQLiteStore(db)
    assert await store.open() == []  # finished: nothing to resume
    snapshot = await store.load("x")
    assert snapshot is not None and snapshot.status == "completed"
    assert [type(e).__name__ for e in snapshot.history] == ["Outcome"]
    await store.close()


token_reply = af.Event("store.token", int)


@af.workflow(name="store.tokened")
async def tokened(ctx: af.Context[None]) -> int:
    ref = await ctx.create_event(token_reply)
    return await ctx.wait_event(ref, timeout=timedelta(hours=1))


async def test_schema_3_file_gains_the_passivation_indexes(
    db: Path, clock: af.testing.ManualClock
) -> None:
    """Migrating fills state, wake and the token index from the stored snapshots, so
    that unloaded instances are found by status filter, deadline and token."""
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(wait_once, id="by-name")
        tokens = [await rt.start(tokened, id=f"t{i}") for i in range(3)]
        await (await rt.start(wait_once, id="done")).cancel()
        await clock.advance(0)
        stored = {h.id: (await h.status()) for h in tokens}
    with sqlite3.connect(db) as conn:
        make_version_3(conn)
    async with af.Runtime(db, clock=clock, max_loaded=1) as rt:
        assert rt.loaded <= 1
        assert {s.id for s in await rt.list(status="waiting")} == {"by-name", "t0", "t1", "t2"}
        assert [s.id for s in await rt.list(status="cancelled")] == ["done"]
        token = stored["t1"].waiting_on[0].token
        assert token is not None
        await rt.resolve(token, 7)
        assert await rt.handle("t1").result(timeout=5) == 7
        await clock.advance(3600)  # the others' deadlines wake them, unloaded or not
        for i in (0, 2):
            with pytest.raises(af.WorkflowFailed, match="WaitTimeout"):
                await rt.handle(f"t{i}").result(timeout=5)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_schema_1_file_is_migrated_in_place(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(wait_once, id="old")
    with sqlite3.connect(db) as conn:  # what a version-1 file looked like: no inbox
        make_version_1(conn)
    async with af.Runtime(db) as rt:
        assert (await rt.handle("old").status()).state == "waiting"
        await rt.send("old", gate)
        assert await rt.handle("old").result(timeout=5) == "ok"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0
