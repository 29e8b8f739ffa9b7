"""The per-instance layout (DESIGN §3.2): a base snapshot plus one journal row per
checkpoint, so that a checkpoint writes what changed and a load folds base + journal."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from old_schema import make_version_4

import actorflow as af
from actorflow.reader import Reader
from actorflow.records import (
    RECORD_ENCODER,
    EventReturned,
    EventSent,
    Finished,
    Outcome,
    Record,
    Snapshot,
    Started,
    Value,
    Waiting,
    WaitSpec,
)
from actorflow.store import MemoryStore, SQLiteStore, layout
from actorflow.store.base import WORK_NOW, fold, wake_of
from actorflow.store.sqlite import SCHEMA_VERSION

try:
    from actorflow.store.postgres import PostgresStore
except ImportError:  # without asyncpg its runs skip (and fail in CI): see conftest's pg_server

    class PostgresStore:  # type: ignore[no-redef]
        """Never made: the postgres runs need asyncpg."""


Store = SQLiteStore | MemoryStore | PostgresStore


class Driver:
    """Writes records to a store and checkpoints it as the runtime does: the snapshots
    passed are the in-memory fold of everything committed (kept here as the truth)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.truth: dict[str, Snapshot] = {}
        self.touched: set[str] = set()
        self.seq = 0

    async def write(self, records: list[Record]) -> None:
        await self.store.write(records)
        self.touched |= fold(self.truth, records)

    async def checkpoint(self) -> None:
        await self.store.checkpoint([self.truth[i] for i in sorted(self.touched)])
        self.touched.clear()

    def chat(self, wf: str, n: int, at: float = 1.0) -> list[Record]:
        """``n`` messages sent to ``wf``, each taken by a wait."""
        records: list[Record] = []
        events = self.truth[wf].events if wf in self.truth else []
        first = events[-1].id + 1 if events else 0
        for event_id in range(first, first + n):
            self.seq += 1
            records += [
                EventSent(wf, event_id, "msg", None, b"\x01", None, False, at, at),
                Outcome(wf, self.seq, "event", "msg", at, b"\x01", None, event_id),
            ]
        return records


def stored(store: Store, wf: str) -> tuple[bytes, list[bytes]]:
    """The base and journal rows of ``wf`` as the store holds them."""
    if isinstance(store, MemoryStore):
        return store._bases[wf], list(store._journals[wf])
    if isinstance(store, PostgresStore):
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # off the test's loop
            return pool.submit(asyncio.run, _pg_stored(store._url, wf)).result()
    with sqlite3.connect(store.path) as conn:
        (base,) = conn.execute("SELECT snapshot FROM bases WHERE id = ?", (wf,)).fetchone()
        rows = conn.execute("SELECT records FROM journal WHERE wf = ? ORDER BY seq", (wf,))
        return base, [r for (r,) in rows]


async def _pg_stored(url: str, wf: str) -> tuple[bytes, list[bytes]]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        base = await conn.fetchval("SELECT snapshot FROM actorflow.bases WHERE id = $1", wf)
        rows = await conn.fetch(
            "SELECT records FROM actorflow.journal WHERE wf = $1 ORDER BY seq", wf
        )
        return base, [r[0] for r in rows]
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "memory", "postgres"])
async def store(request: pytest.FixtureRequest, db: Path) -> AsyncIterator[Store]:
    made: Store
    if request.param == "postgres":
        made = PostgresStore(request.getfixturevalue("pg_url"))
    else:
        made = SQLiteStore(db) if request.param == "sqlite" else MemoryStore()
    await made.open()
    yield made
    await made.close()


WAIT = Waiting("c", [WaitSpec("event", "msg", None, None)], 1.0)


@pytest.mark.parametrize("history", [10, 5_000])
async def test_a_checkpoint_writes_the_new_records_whatever_the_history(
    store: Store, history: int
) -> None:
    """Each checkpoint after the first appends exactly one journal row, the encoded new
    records, and leaves the base as it was: its cost does not grow with the history."""
    d = Driver(store)
    await d.write([Started("c", "chat", [], 0.0)])
    await d.write([*d.chat("c", history), WAIT])
    await d.checkpoint()  # a new instance: its base holds all of it
    base, tail = stored(store, "c")
    assert tail == []
    new = d.chat("c", 20)
    await d.write(new)
    await d.checkpoint()
    assert stored(store, "c") == (base, [RECORD_ENCODER.encode(new)])
    assert await store.load("c") == d.truth["c"]
    (head,) = await store.list(None, None)
    assert head == layout.head_of(d.truth["c"]) and head.history == [] == head.events


async def test_load_folds_the_base_and_every_journal_row_in_order(store: Store) -> None:
    d = Driver(store)
    await d.write([Started("c", "chat", [], 0.0), WAIT])
    await d.checkpoint()
    for _ in range(4):
        await d.write(d.chat("c", 3))
        await d.checkpoint()
    await d.write(d.chat("c", 2))  # and some only in the log
    assert len(stored(store, "c")[1]) == 4
    await d.checkpoint()
    assert await store.load("c") == d.truth["c"]
    if isinstance(store, SQLiteStore):
        await store.close()
        reopened = SQLiteStore(store.path)
        await reopened.open()
        assert await reopened.load("c") == d.truth["c"]
        assert Reader(store.path).snapshots()["c"] == d.truth["c"]
        await reopened.close()


async def test_the_base_is_rewritten_once_the_journal_outgrows_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bases grow geometrically: few rewrites over many checkpoints, and the journal
    never holds much more than the base."""
    monkeypatch.setattr(layout, "SLACK", 0)
    d = Driver(store)
    await d.write([Started("c", "chat", [], 0.0), WAIT])
    await d.checkpoint()
    rewrites = 0
    for _ in range(200):
        await d.write(d.chat("c", 2))
        await d.checkpoint()
        base, tail = stored(store, "c")
        rewrites += not tail
        assert sum(map(len, tail)) <= len(base)
    assert 3 <= rewrites <= 12, rewrites
    assert await store.load("c") == d.truth["c"]


async def test_a_finished_instance_is_one_base_and_its_tokens_go(store: Store) -> None:
    d = Driver(store)
    token = msgspec.msgpack.encode("tok-1")
    await d.write([Started("c", "chat", [], 0.0), WAIT])
    await d.checkpoint()
    await d.write([Value("c", 1, "create_event", "msg", token, 1.0)])
    await d.checkpoint()
    assert len(stored(store, "c")[1]) == 1
    assert await store.token_owner("tok-1") == "c"  # indexed from the new records
    await d.write([*d.chat("c", 3), Finished("c", "completed", 2.0, b"\xc0")])
    await d.checkpoint()
    base, tail = stored(store, "c")
    assert tail == [] and base == RECORD_ENCODER.encode(d.truth["c"])
    assert await store.token_owner("tok-1") is None
    assert await store.purge(10.0, ["completed"], 10) == 1
    assert await store.load("c") is None


async def test_a_new_run_rewrites_the_base_and_drops_the_old_tokens(store: Store) -> None:
    d = Driver(store)
    await d.write([Started("c", "chat", [], 0.0), WAIT])
    await d.write([Value("c", 1, "create_event", "msg", msgspec.msgpack.encode("old"), 1.0)])
    await d.checkpoint()
    await d.write(d.chat("c", 3))
    await d.checkpoint()
    assert len(stored(store, "c")[1]) == 1
    snapshot = d.truth["c"]  # as continue_as_new leaves it (its fold is the lead's)
    snapshot.run, snapshot.history, snapshot.values, snapshot.tokens = 2, [], {}, {}
    await d.write([Value("c", 1, "create_event", "msg", msgspec.msgpack.encode("new"), 2.0)])
    await d.checkpoint()
    base, tail = stored(store, "c")
    assert tail == [] and base == RECORD_ENCODER.encode(d.truth["c"])
    assert await store.token_owner("old") is None
    assert await store.token_owner("new") == "c"


async def test_purge_deletes_journal_rows(db: Path) -> None:
    store = SQLiteStore(db)
    await store.open()
    d = Driver(store)
    await d.write([Started("c", "chat", [], 0.0), Finished("c", "completed", 1.0)])
    await d.checkpoint()
    with sqlite3.connect(db) as conn:  # a finished instance with a journal left over
        conn.execute("INSERT INTO journal (wf, records) VALUES ('c', ?)", (b"\x90",))
    assert await store.purge(5.0, ["completed"], 10) == 1
    await store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM journal").fetchone()[0] == 0


def test_consumed_events_are_settled_and_a_returned_one_is_seen_again() -> None:
    """wake_of looks at events from ``settled`` on: what is unconsumed, not the history."""
    d = Driver(MemoryStore())
    found: dict[str, Snapshot] = {}
    fold(found, [Started("c", "chat", [], 0.0), WAIT])
    d.truth = found
    fold(found, d.chat("c", 1000))
    snapshot = found["c"]
    assert snapshot.settled == 1000
    assert wake_of(snapshot) is None
    fold(found, [EventReturned("c", 500)])
    assert snapshot.settled == 500
    assert wake_of(snapshot) == WORK_NOW  # its wait takes the event given back
    fold(found, [Outcome("c", 9999, "event", "msg", 2.0, b"\x01", None, 500)])
    assert snapshot.settled == 1000 and wake_of(snapshot) is None


# -- property: for any records and checkpoints, a load is the in-memory fold ---------------

STEPS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from(["send", "take", "return", "token", "wait", "checkpoint", "finish"]),
    ),
    max_size=60,
)


async def play(store: Store, steps: list[tuple[str, str]], reopen: Callable[[], Store]) -> None:
    d = Driver(store)
    await d.write([Started("a", "chat", [], 0.0), Started("b", "chat", [], 0.0)])
    for n, (wf, step) in enumerate(steps):
        s = d.truth[wf]
        records: list[Record] = []
        if step == "send":
            records = d.chat(wf, 1)[:1]
        elif step == "take":
            free = [e.id for e in s.events if e.consumed_at is None]
            if free:
                records = [Outcome(wf, 1000 + n, "event", "msg", float(n), b"\x01", None, free[0])]
        elif step == "return":
            taken = [e.id for e in s.events if e.consumed_at is not None]
            if taken:
                records = [EventReturned(wf, taken[-1])]
        elif step == "token":
            records = [
                Value(wf, n, "create_event", "msg", msgspec.msgpack.encode(f"t{n}"), float(n))
            ]
        elif step == "wait":
            records = [Waiting(wf, [WaitSpec("event", "msg", None, float(n))], float(n))]
        elif step == "finish" and not s.finished:
            records = [Finished(wf, "completed", float(n))]
        elif step == "checkpoint":
            await d.checkpoint()
            for i in ("a", "b"):
                assert await store.load(i) == d.truth[i]
        if records:
            await d.write(records)
    await d.checkpoint()
    for i in ("a", "b"):
        assert await store.load(i) == d.truth[i]
        heads = {h.id: h for h in await store.list(None, None)}
        assert heads[i] == layout.head_of(d.truth[i])
        for token in d.truth[i].tokens:
            owner = await store.token_owner(token)
            assert owner == (None if d.truth[i].finished else i)
    await d.write(d.chat("a", 2))  # left in the log: recovery folds it
    await store.close()
    again = reopen()
    await again.open()
    if isinstance(again, SQLiteStore):
        assert await again.load("a") == d.truth["a"]
        assert await again.load("b") == d.truth["b"]
    await again.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS, slack=st.sampled_from([0, 100, 64 * 1024]))
def test_load_is_the_fold_of_every_record(steps: list[tuple[str, str]], slack: int) -> None:
    saved = layout.SLACK
    layout.SLACK = slack
    try:
        memory = MemoryStore()
        asyncio.run(play(memory, steps, lambda: memory))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "p.db"
            store = SQLiteStore(path)
            asyncio.run(_opened(store, steps, lambda: SQLiteStore(path)))
    finally:
        layout.SLACK = saved


async def _opened(
    store: SQLiteStore, steps: list[tuple[str, str]], again: Callable[[], Store]
) -> None:
    await store.open()
    await play(store, steps, again)


# -- through the runtime ---------------------------------------------------------------------

msg = af.Event("layout.msg", int)


@af.workflow(name="layout.chat")
async def chat(ctx: af.Context[None]) -> int:
    total = 0
    while True:
        got = await ctx.wait_event(msg)
        if got < 0:
            return total
        total += got


def journal(db: Path, wf: str) -> Iterator[int]:
    with sqlite3.connect(db) as conn:
        for (blob,) in conn.execute("SELECT records FROM journal WHERE wf = ? ORDER BY seq", (wf,)):
            yield len(blob)


async def test_a_long_conversation_checkpoints_only_what_is_new(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(chat, id="talk")
        await rt.checkpoint()
        for _ in range(3):
            for _ in range(100):
                await rt.send("talk", msg, 1)
            await rt.checkpoint()
        rows = list(journal(db, "talk"))
        assert len(rows) == 3
        base, _ = stored(rt._store, "talk")  # type: ignore[arg-type]
        for _ in range(5):
            await rt.send("talk", msg, 1)
        await rt.checkpoint()
        after = list(journal(db, "talk"))
        assert after[:3] == rows and len(after) == 4
        assert after[3] < rows[0] / 10  # 5 messages' records, not 305
        assert stored(rt._store, "talk")[0] == base  # type: ignore[arg-type]
        shown = Reader(db).show("talk")
        assert len(shown.status.events) == 305
    async with af.Runtime(db) as rt:
        await rt.send("talk", msg, -1)
        assert await rt.handle("talk").result(timeout=5) == 305


async def test_a_schema_4_file_is_migrated_to_the_journal_layout(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(chat, id="old")
        await rt.checkpoint()
        for _ in range(3):
            await rt.send("old", msg, 2)
            await rt.checkpoint()
        assert len(list(journal(db, "old"))) == 3
    with sqlite3.connect(db) as conn:
        make_version_4(conn)  # one whole snapshot per instance, no journal
    async with af.Runtime(db) as rt:
        (status,) = await rt.list()
        assert status.id == "old" and status.state == "waiting"
        await rt.send("old", msg, 1)
        await rt.checkpoint()
        assert len(list(journal(db, "old"))) == 1  # its old snapshot became its base
        await rt.send("old", msg, -1)
        assert await rt.handle("old").result(timeout=5) == 7
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5


def test_settled_is_reset_when_the_events_are_rebuilt() -> None:
    """A fold that keeps only the unconsumed events (a new run) and forgets ``settled``
    does not make wake_of skip them: the next record applied resets it."""
    found: dict[str, Snapshot] = {}
    d = Driver(MemoryStore())
    d.truth = found
    fold(found, [Started("c", "chat", [], 0.0), WAIT])
    fold(found, [*d.chat("c", 10), *d.chat("c", 3)[::2]])  # 10 taken, 3 left in the mailbox
    snapshot = found["c"]
    assert snapshot.settled == 10
    snapshot.events = [e for e in snapshot.events if e.consumed_at is None]
    fold(found, [WAIT])
    assert snapshot.settled == 0 and wake_of(snapshot) == WORK_NOW
