"""Storage faults at the store boundary: disk full, I/O errors, a lock held from outside.

A write that fails is never acknowledged (the caller gets ``af.StoreError``) and
never half-applied: the instances it touched are frozen and replayed from what was
committed, as after a restart, so they run on once writes succeed again; close +
reopen then shows exactly the acknowledged events.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from actorflow.store import SQLiteStore

ping = af.Event("faults.ping", int)
blob = af.Event("faults.blob", str)
anything = af.Event("faults.anything", list[Any])


@af.workflow(name="faults.collect")
async def collect(ctx: af.Context[None], n: int) -> list[int]:
    return [await ctx.wait_event(ping) for _ in range(n)]


@af.workflow(name="faults.big")
async def take_blob(ctx: af.Context[None]) -> int:
    return len(await ctx.wait_event(blob))


class Fault:
    """Makes the store's transactions fail with ``error`` on statements starting with
    ``at`` ("INSERT": mid-transaction, "COMMIT": the commit itself) while active."""

    def __init__(self, message: str, at: str = "INSERT") -> None:
        self.message = message
        self.at = at
        self.active = False
        self.remaining = 0  # fail this many more transactions, then clear
        self.raised = 0

    def hit(self, sql: str) -> bool:
        if not sql.lstrip().upper().startswith(self.at):
            return False
        if self.remaining > 0:
            self.remaining -= 1
            return True
        return self.active


class FaultyConnection:
    """The store's sqlite3 connection, with a fault injected before chosen statements.
    A failing COMMIT leaves the transaction open, as SQLite may after an I/O error."""

    def __init__(self, conn: sqlite3.Connection, fault: Fault) -> None:
        self._conn = conn
        self._fault = fault

    def _check(self, sql: str) -> None:
        if self._fault.hit(sql):
            self._fault.raised += 1
            raise sqlite3.OperationalError(self._fault.message)

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._conn.executemany(sql, *args)

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction


def inject(rt: af.Runtime, fault: Fault) -> None:
    """Route every write transaction of ``rt``'s store through a faulty connection."""
    store = rt._store
    assert isinstance(store, SQLiteStore)
    run = store._in_thread

    async def faulty(fn: Callable[[sqlite3.Connection], Any]) -> Any:
        return await run(lambda conn: fn(FaultyConnection(conn, fault)))  # type: ignore[arg-type]

    store._in_thread = faulty  # type: ignore[method-assign]


def wal_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM wal").fetchone()[0])


async def pings_of(rt: af.Runtime, instance: str) -> list[str]:
    return [e.name for e in (await rt.handle(instance).status()).events]


async def stored_pings(path: Path, instance: str) -> list[int]:
    """The payloads of the events stored for ``instance``, after a reopen."""
    async with af.Runtime(path) as rt:
        snapshot = await rt._lookup(instance)
        assert snapshot is not None
        return [ping.decode(e.payload) for e in snapshot.events]


@pytest.fixture
def no_replay_wait(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import actorflow.host.commits

    monkeypatch.setattr(actorflow.host.commits, "REPLAY_DELAY_MIN", 0.001)
    yield


@pytest.mark.parametrize(
    ("message", "at"),
    [
        ("database or disk is full", "INSERT"),
        ("disk I/O error", "INSERT"),
        ("disk I/O error", "COMMIT"),  # the commit fails and leaves the transaction open
        ("database or disk is full", "COMMIT"),
    ],
)
async def test_send_that_cannot_be_written_is_refused_and_never_delivered(
    db: Path, message: str, at: str
) -> None:
    fault = Fault(message, at)
    async with af.Runtime(db) as rt:
        inject(rt, fault)
        h = await rt.start(collect, 3, id="c")
        other = await rt.start(collect, 1, id="other")
        await rt.send("c", ping, 0)
        rows = wal_rows(db)
        fault.active = True
        with pytest.raises(af.StoreError, match=message) as info:
            await rt.send("c", ping, 1)
        assert str(db) in str(info.value)
        with pytest.raises(af.StoreError):  # several instances in one failed batch
            await asyncio.gather(rt.send("c", ping, 1), rt.send("other", ping, 1))
        assert wal_rows(db) == rows, "a refused send left a row behind"
        fault.active = False
        await rt.send("c", ping, 2)  # writes work again: the transaction was not left open
        await rt.send("c", ping, 3)
        await rt.send("other", ping, 4)
        assert await h.result(timeout=5) == [0, 2, 3]
        assert await other.result(timeout=5) == [4]
        assert fault.raised >= 2
    assert await stored_pings(db, "c") == [0, 2, 3]
    assert await stored_pings(db, "other") == [4]


async def test_fault_lasting_a_while_then_clearing(db: Path) -> None:
    fault = Fault("database or disk is full")
    async with af.Runtime(db) as rt:
        inject(rt, fault)
        h = await rt.start(collect, 4, id="c")
        result = asyncio.ensure_future(h.result(timeout=10))  # waits across the fault
        acked: list[int] = []
        await rt.send("c", ping, 0)
        acked.append(0)
        fault.active = True
        for k in range(1, 20):
            try:
                await rt.send("c", ping, k)
                acked.append(k)
            except af.StoreError:
                pass
            await asyncio.sleep(0.01)
        assert acked == [0]
        st = await rt.handle("c").status()
        assert st.detail is not None and "write failed" in st.detail
        fault.active = False
        for k in (100, 101, 102):
            await rt.send("c", ping, k)
            acked.append(k)
        assert await result == acked
        st = await rt.handle("c").status()
        assert st.state == "completed" and st.detail is None
    assert await stored_pings(db, "c") == acked


async def test_start_during_a_fault_stores_nothing(db: Path) -> None:
    fault = Fault("disk I/O error")
    async with af.Runtime(db) as rt:
        inject(rt, fault)
        fault.active = True
        with pytest.raises(af.StoreError, match="disk I/O error"):
            await rt.start(collect, 1, id="s")
        assert await rt.list() == []
        with pytest.raises(af.ActorflowError, match="no workflow instance"):
            await rt.send("s", ping, 1)
        fault.active = False
        h = await rt.start(collect, 1, id="s")
        await rt.send("s", ping, 7)
        assert await h.result(timeout=5) == [7]
    async with af.Runtime(db) as rt:
        assert [s.id for s in await rt.list()] == ["s"]


async def test_step_result_lost_to_a_fault_runs_the_step_again(
    db: Path, no_replay_wait: None
) -> None:
    fault = Fault("database or disk is full")
    runs: list[int] = []

    async def charge() -> int:
        runs.append(len(runs) + 1)
        if len(runs) == 1:
            fault.remaining = 1  # the write of this result fails
        return len(runs)

    @af.workflow(name="faults.step")
    async def pay(ctx: af.Context[None]) -> int:
        return await ctx.step(charge, name="charge")

    async with af.Runtime(db) as rt:
        inject(rt, fault)
        h = await rt.start(pay, id="p")
        # The first result was never stored: the instance is replayed and runs the step
        # again (allowed: no result was stored); the second result is the one kept.
        assert await h.result(timeout=5) == 2
        assert runs == [1, 2]
    async with af.Runtime(db) as rt:
        assert await rt.handle("p").result() == 2
    assert runs == [1, 2], "a stored step ran again after a reopen"


async def test_token_refused_by_a_fault_can_be_resolved_again(
    db: Path, no_replay_wait: None
) -> None:
    fault = Fault("database or disk is full")
    tokens: list[str] = []

    @af.workflow(name="faults.token")
    async def approve(ctx: af.Context[None]) -> int:
        ref = await ctx.create_event(ping)
        await ctx.step(tokens.append, ref.id, name="publish")
        return await ctx.wait_event(ref)

    async with af.Runtime(db) as rt:
        inject(rt, fault)
        h = await rt.start(approve, id="t")
        while not tokens:
            await asyncio.sleep(0.005)
        fault.active = True
        with pytest.raises(af.StoreError):
            await rt.resolve(tokens[-1], 1)
        fault.active = False
        for _ in range(200):  # the refused resolve did not use up the token
            try:
                await rt.resolve(tokens[-1], 2)
                break
            except af.StoreError:
                await asyncio.sleep(0.01)
        assert await h.result(timeout=5) == 2
        with pytest.raises(af.ActorflowError, match="unknown, already used"):
            await rt.resolve(tokens[-1], 3)


async def test_checkpoint_and_close_during_a_fault(db: Path) -> None:
    fault = Fault("disk I/O error", "COMMIT")
    with pytest.raises(af.StoreError):
        async with af.Runtime(db) as rt:
            inject(rt, fault)
            await rt.start(collect, 3, id="c")
            await rt.send("c", ping, 0)
            fault.active = True
            with pytest.raises(af.StoreError):
                await rt.checkpoint()
            with pytest.raises(af.StoreError):
                await rt.send("c", ping, 1)
            # leaving the block checkpoints, which fails too: close reports it
    async with af.Runtime(db) as rt:  # the committed state, and only it
        assert await pings_of(rt, "c") == ["faults.ping"]
        await rt.send("c", ping, 5)
        await rt.send("c", ping, 6)
        assert await rt.handle("c").result(timeout=5) == [0, 5, 6]


async def test_real_disk_full_from_sqlite(db: Path) -> None:
    """SQLite's own SQLITE_FULL, from a page limit, not a simulated error."""
    async with af.Runtime(db) as rt:
        h = await rt.start(take_blob, id="b")
        store = rt._store
        assert isinstance(store, SQLiteStore)
        await rt.checkpoint()
        pages = await store._scalar("PRAGMA page_count")
        await store._scalar(f"PRAGMA max_page_count = {pages}")
        rows = wal_rows(db)
        with pytest.raises(af.StoreError, match="full"):
            await rt.send("b", blob, "x" * 200_000)
        assert wal_rows(db) == rows
        await store._scalar("PRAGMA max_page_count = 1073741823")
        await rt.send("b", blob, "y" * 300_000)
        assert await h.result(timeout=5) == 300_000
    async with af.Runtime(db) as rt:
        events = (await rt.handle("b").status()).events
        assert len(events) == 1 and events[0].consumed_at is not None


async def test_lock_held_by_an_outside_writer_past_the_busy_timeout(db: Path) -> None:
    async with af.Runtime(db) as rt:
        h = await rt.start(collect, 2, id="c")
        await rt.send("c", ping, 0)
        store = rt._store
        assert isinstance(store, SQLiteStore)
        await store._scalar("PRAGMA busy_timeout = 100")  # rather than wait 5 s
        outsider = sqlite3.connect(db, isolation_level=None)
        try:
            outsider.execute("BEGIN IMMEDIATE")
            with pytest.raises(af.StoreError, match="locked"):
                await rt.send("c", ping, 1)
            with pytest.raises(af.StoreError, match="locked"):
                await rt.start(collect, 1, id="new")
        finally:
            outsider.execute("ROLLBACK")
            outsider.close()
        await rt.send("c", ping, 2)
        assert await h.result(timeout=5) == [0, 2]
        assert [s.id for s in await rt.list()] == ["c"]
    assert await stored_pings(db, "c") == [0, 2]


async def test_lock_held_shorter_than_the_busy_timeout_is_waited_out(db: Path) -> None:
    async with af.Runtime(db) as rt:
        h = await rt.start(collect, 1, id="c")
        outsider = sqlite3.connect(db, isolation_level=None)
        outsider.execute("BEGIN IMMEDIATE")
        asyncio.get_running_loop().call_later(0.2, outsider.execute, "ROLLBACK")
        await rt.send("c", ping, 1)  # waits for the lock instead of failing
        outsider.close()
        assert await h.result(timeout=5) == [1]


async def test_inbox_request_waits_out_a_store_fault(db: Path) -> None:
    from actorflow.inbox import SendRequest, receipt, submit

    fault = Fault("disk I/O error")
    async with af.Runtime(db) as rt:
        h = await rt.start(collect, 1, id="c")
        await rt.checkpoint()
        inject(rt, fault)
        fault.active = True
        seq = submit(db, SendRequest("c", "faults.ping", "7"))
        for _ in range(200):  # the runtime tries it and keeps it pending
            await asyncio.sleep(0.005)
            if fault.raised:
                break
        assert fault.raised and receipt(db, seq).status == "pending"
        fault.active = False  # cleared: retried without any new outside write
        assert await h.result(timeout=5) == [7]
        assert receipt(db, seq).status == "accepted"


async def test_inbox_request_nested_too_deeply_is_rejected_and_the_inbox_goes_on(
    db: Path,
) -> None:
    from actorflow.inbox import SendRequest, receipt, submit, wait_for_receipt

    async with af.Runtime(db) as rt:
        h = await rt.start(collect, 1, id="c")
        deep = submit(db, SendRequest("c", "faults.anything", "[" * 100_000 + "]" * 100_000))
        good = submit(db, SendRequest("c", "faults.ping", "5"))
        assert await h.result(timeout=5) == [5]
        found = await asyncio.to_thread(wait_for_receipt, db, deep, 5)
        assert found.status == "rejected" and "nested too deeply" in (found.reason or "")
        assert receipt(db, good).status == "accepted"
