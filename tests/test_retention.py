"""Retention and purge: finished instances and decided inbox requests are deleted once
old (by the runtime's clock), unfinished ones never; a purged instance is unknown."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from old_schema import make_version_2

import actorflow as af
from actorflow.cli import duration
from actorflow.inbox import NotifyRequest, PurgeRequest, submit, wait_for_receipt
from actorflow.records import Snapshot
from actorflow.retention import BATCH, MAX_GAP
from actorflow.store import MemoryStore, SQLiteStore
from actorflow.store.sqlite import SCHEMA_VERSION, connect_outside

DAY = 86_400.0
WEEK = 7 * DAY
ret_go = af.Event("ret.go")
ret_fail = af.Event("ret.fail")


@af.workflow(name="ret.short")
async def short(ctx: af.Context[None], n: int) -> int:
    return n


@af.workflow(name="ret.gate")
async def gate(ctx: af.Context[None]) -> str:
    await ctx.wait_event(ret_go)
    return "done"


@af.workflow(name="ret.fails")
async def fails(ctx: af.Context[None]) -> None:
    await ctx.wait_event(ret_fail)
    raise RuntimeError("boom")


MakeRuntime = Callable[..., af.Runtime]


async def ids(rt: af.Runtime, state: str | None = None) -> set[str]:
    return {s.id for s in await rt.list(state)}


async def test_retention_over_simulated_months(
    runtime: MakeRuntime, clock: af.testing.ManualClock
) -> None:
    """Every day some short instances finish; after three months only the last week's
    remain, plus the instance that never finished."""
    finished_at: dict[str, float] = {}
    async with runtime(retention=timedelta(days=7)) as rt:
        await rt.start(gate, id="forever")
        for day in range(90):
            for n in range(3):
                h = await rt.start(short, n, id=f"d{day}-{n}")
                assert await h.result(timeout=5) == n
                finished_at[h.id] = clock.now()
                await clock.advance(DAY / 3)  # finishes spread over the day
            now = clock.now()
            present = await ids(rt)
            assert "forever" in present
            for wf, at in finished_at.items():
                if at > now - WEEK:
                    assert wf in present, (day, wf)
                elif at < now - WEEK - MAX_GAP:
                    assert wf not in present, (day, wf)
            assert len(present) <= 1 + 3 * 8
        assert (await rt.handle("forever").status()).state == "waiting"


def pages(db: Path) -> int:
    """Pages of the database file, counting the ones not checkpointed into it yet."""
    conn = connect_outside(db)
    try:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])
    finally:
        conn.close()


async def test_the_file_stays_flat_with_retention(db: Path, clock: af.testing.ManualClock) -> None:
    """Freed pages are reused: after the first weeks the file does not grow."""
    async with af.Runtime(db, clock=clock, retention=timedelta(days=7)) as rt:
        size: dict[int, int] = {}
        for day in range(60):
            handles = await asyncio.gather(*(rt.start(short, n) for n in range(40)))
            await asyncio.gather(*(h.result(timeout=10) for h in handles))
            await clock.advance(DAY)
            await rt.checkpoint()
            size[day] = pages(db)
        assert size[59] <= size[20] * 1.1, size
        assert len(await rt.list()) <= 8 * 40
    assert size[20] > size[3]  # the first week did fill it


async def test_advance_past_retention_deletes_without_real_waiting(
    runtime: MakeRuntime, clock: af.testing.ManualClock
) -> None:
    async with runtime(retention=3600) as rt:
        await (await rt.start(short, 1, id="a")).result(timeout=5)
        await clock.advance(3599)
        assert await ids(rt) == {"a"}
        await clock.advance(2)
        assert await ids(rt) == set()  # done when advance returns: no real wait at all


async def test_unfinished_instances_are_never_deleted(
    runtime: MakeRuntime, clock: af.testing.ManualClock
) -> None:
    async with runtime(retention=60) as rt:
        await rt.start(gate, id="waits")
        await rt.start(fails, id="fails")
        await clock.advance(timedelta(days=400))
        assert await ids(rt, "waiting") == {"waits", "fails"}
        assert await rt.purge(0) == 0
        await rt.send("fails", ret_fail)
        with pytest.raises(af.WorkflowFailed):
            await rt.handle("fails").result(timeout=5)
        await clock.advance(61)
        assert await ids(rt) == {"waits"}


async def test_a_purged_instance_is_unknown_and_its_id_starts_anew(
    runtime: MakeRuntime, clock: af.testing.ManualClock
) -> None:
    async with runtime() as rt:
        await rt.start(gate, id="x")
        await rt.send("x", ret_go)
        assert await rt.handle("x").result(timeout=5) == "done"
        await clock.advance(DAY)
        assert await rt.purge(timedelta(hours=1)) == 1
        for call in (rt.handle("x").status(), rt.handle("x").result(), rt.send("x", ret_go)):
            with pytest.raises(af.ActorflowError, match="no workflow instance"):
                await call
        h = await rt.start(short, 7, id="x")  # another workflow, even: the old one is gone
        assert await h.result(timeout=5) == 7
        assert [s.workflow for s in await rt.list()] == ["ret.short"]


async def test_purge_is_not_undone_by_a_checkpoint_or_a_restart(
    db: Path, clock: af.testing.ManualClock
) -> None:
    """The instance finished after the last checkpoint: its records are only in the
    log and in memory, which must not bring it back once purged."""
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(gate, id="old")
        await rt.checkpoint()  # stored as waiting; it finishes in the log only
        await rt.send("old", ret_go)
        await rt.handle("old").result(timeout=5)
        await clock.advance(DAY)
        assert await rt.purge(60) == 1
        await rt.checkpoint()
        with pytest.raises(af.ActorflowError, match="no workflow instance"):
            await rt.handle("old").status()
    async with af.Runtime(db, clock=clock) as rt:
        assert await ids(rt) == set()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM snapshots").fetchone() == (0,)


async def test_purge_by_status_and_its_arguments(
    runtime: MakeRuntime, clock: af.testing.ManualClock
) -> None:
    async with runtime() as rt:
        await rt.start(gate, id="ok")
        await rt.start(fails, id="bad")
        await rt.start(gate, id="stopped")
        await rt.send("ok", ret_go)
        await rt.send("bad", ret_fail)
        await rt.handle("stopped").cancel()
        await rt.start(gate, id="open")
        await clock.advance(DAY)
        with pytest.raises(ValueError, match="only finished"):
            await rt.purge(0, status=["completed", "waiting"])
        with pytest.raises(ValueError, match="0 or more"):
            await rt.purge(-1)
        with pytest.raises(ValueError):
            await rt.purge(float("nan"))
        with pytest.raises(TypeError):
            await rt.purge("7d")  # type: ignore[arg-type]
        assert await rt.purge(timedelta(days=2)) == 0  # not that old
        assert await rt.purge(timedelta(hours=1), status="failed") == 1
        assert await ids(rt) == {"ok", "stopped", "open"}
        assert await rt.purge(timedelta(hours=1), status={"completed", "cancelled"}) == 2
        assert await ids(rt) == {"open"}


@pytest.mark.parametrize("bad", [-1, float("nan"), "7d"])
def test_retention_argument_is_checked(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        af.Runtime(retention=bad)  # type: ignore[arg-type]


async def test_many_finished_instances_are_deleted_in_batches(
    runtime: MakeRuntime, clock: af.testing.ManualClock
) -> None:
    count = 2 * BATCH + 7
    async with runtime(retention=DAY) as rt:
        handles = [await rt.start(short, n) for n in range(count)]
        await asyncio.gather(*(h.result(timeout=30) for h in handles))
        await rt.start(gate, id="stays")
        await clock.advance(DAY)  # all due at once: one pass, batch after batch
        assert await ids(rt) == {"stays"}
    async with runtime() as rt:
        handles = [await rt.start(short, n) for n in range(count)]
        await asyncio.gather(*(h.result(timeout=30) for h in handles))
        assert await rt.purge(0) == count


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
async def test_store_purge_deletes_at_most_limit_oldest_first(db: Path, kind: str) -> None:
    store = SQLiteStore(db) if kind == "sqlite" else MemoryStore()
    await store.open()
    snapshots = [
        Snapshot(f"s{n}", "ret.short", [], 0.0, 1000.0 + n, "completed", 1000.0 + n)
        for n in range(5)
    ] + [Snapshot("w", "ret.gate", [], 0.0, 0.0)]
    await store.checkpoint(snapshots)
    assert await store.oldest_done() == 1000.0
    assert await store.purge(1003.0, {"completed"}, limit=2) == 2  # s0, s1
    assert await store.load("s1") is None and await store.load("s2") is not None
    assert await store.purge(1003.0, {"failed"}, limit=10) == 0
    assert await store.purge(1e12, {"completed", "running"}, limit=10) == 3
    assert [s.id for s in await store.list(None, None)] == ["w"]
    assert await store.oldest_done() is None
    await store.close()


async def test_decided_inbox_requests_are_deleted_by_the_runtime_clock(
    db: Path, clock: af.testing.ManualClock
) -> None:
    async with af.Runtime(db, clock=clock, retention=timedelta(days=1)) as rt:
        seq = submit(db, NotifyRequest(["t"]))
        assert (await asyncio.to_thread(wait_for_receipt, db, seq, 10)).status == "accepted"
        await rt.start(gate, id="w")
        await clock.advance(timedelta(hours=23))
        assert inbox_seqs(db) == [seq]
        await clock.advance(timedelta(hours=2))
        assert inbox_seqs(db) == []
        assert await ids(rt) == {"w"}


def inbox_seqs(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT seq FROM inbox ORDER BY seq")]


async def test_purge_request_through_the_inbox_reports_what_it_deleted(
    db: Path, clock: af.testing.ManualClock
) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(gate, id="ok")
        await rt.start(fails, id="bad")
        await rt.send("ok", ret_go)
        await rt.send("bad", ret_fail)
        old = submit(db, NotifyRequest(["t"]))
        assert (await asyncio.to_thread(wait_for_receipt, db, old, 10)).status == "accepted"
        await clock.advance(DAY)
        seq = submit(db, PurgeRequest(3600.0, ["completed"]))
        receipt = await asyncio.to_thread(wait_for_receipt, db, seq, 10)
        assert (receipt.status, receipt.reason) == (
            "accepted",
            "purged 1 finished instance(s) and 0 inbox request(s)",
        )
        assert await ids(rt) == {"bad"}
        seq = submit(db, PurgeRequest(3600.0, ["running"]))
        receipt = await asyncio.to_thread(wait_for_receipt, db, seq, 10)
        assert receipt.status == "rejected" and "only finished" in (receipt.reason or "")
        seq = submit(db, PurgeRequest(3600.0))  # all finished ones and old requests
        receipt = await asyncio.to_thread(wait_for_receipt, db, seq, 10)
        assert receipt.reason == "purged 1 finished instance(s) and 1 inbox request(s)"
        assert old not in inbox_seqs(db)
        assert await ids(rt) == set()


async def cli(db: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actorflow", "--db", str(db), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_purge_through_the_running_owner(db: Path, clock: af.testing.ManualClock) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(gate, id="ok")
        await rt.start(fails, id="bad")
        await rt.send("ok", ret_go)
        await rt.send("bad", ret_fail)
        await clock.advance(timedelta(days=3))
        code, out, err = await cli(
            db, "purge", "--older-than", "2d", "--status", "completed", "--wait"
        )
        assert code == 0, err
        assert "accepted" in out and "purged 1 finished instance(s)" in out
        assert await ids(rt) == {"bad"}
        code, out, err = await cli(db, "purge", "--older-than", "4d", "--wait")
        assert code == 0 and "purged 0 finished instance(s)" in out, err
        assert await ids(rt) == {"bad"}


async def test_cli_purge_without_an_owner_purges_at_once(
    db: Path, clock: af.testing.ManualClock
) -> None:
    """With no runtime on the file, the command purges it itself (by the wall clock: the
    manual clock's instances finished at the start of 2026, long before 2 weeks ago)."""
    async with af.Runtime(db, clock=clock) as rt:
        await (await rt.start(short, 1, id="done")).result(timeout=5)
        await rt.start(gate, id="open")
    code, out, err = await cli(db, "purge", "--older-than", "2w")
    assert code == 0 and "purged 1 finished instance(s)" in out, err
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT id FROM snapshots").fetchall() == [("open",)]
        assert conn.execute("SELECT count(*) FROM inbox").fetchone() == (0,)  # nothing queued
    code, out, err = await cli(db, "purge", "--older-than", "2w", "--status", "failed")
    assert code == 0 and "purged 0 finished instance(s)" in out, err
    async with af.Runtime(db, clock=clock) as rt:
        assert await ids(rt) == {"open"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 30), ("90m", 5400), ("12h", 43200), ("7d", 604800), ("2w", 1209600), ("1.5h", 5400)],
)
def test_durations(text: str, expected: float) -> None:
    assert duration(text) == expected


@pytest.mark.parametrize("text", ["7", "d", "7x", "-1d", "nand", "infd", " 7d", "7 d", ""])
async def test_bad_durations_and_states_are_usage_errors(db: Path, text: str) -> None:
    code, _, err = await cli(db, "purge", f"--older-than={text}")
    assert code == 2 and "invalid duration" in err and "30s, 90m, 12h, 7d or 2w" in err
    code, _, err = await cli(db, "purge", "--older-than=1d", "--status", "waiting")
    assert code == 2 and "unfinished and never purged" in err


async def test_schema_2_file_gains_the_retention_indexes(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(gate, id="old")
    with sqlite3.connect(db) as conn:  # what a version-2 file looked like
        make_version_2(conn)
    async with af.Runtime(db) as rt:
        assert await ids(rt, "waiting") == {"old"}
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"snapshots_finished", "inbox_decided"} <= names
    async with af.Runtime(db) as rt:  # the purge uses the new index by name
        await rt.send("old", ret_go)
        await rt.handle("old").result(timeout=5)
        assert await rt.purge(0) == 1


async def test_a_failing_store_delays_the_purge_and_never_stops_it(
    db: Path, clock: af.testing.ManualClock
) -> None:
    from test_faults import Fault, inject

    async with af.Runtime(db, clock=clock, retention=DAY) as rt:
        await (await rt.start(short, 1, id="a")).result(timeout=5)
        await rt.start(gate, id="w")
        fault = Fault("disk I/O error", at="DELETE")
        inject(rt, fault)
        fault.remaining = 3  # the next three passes fail (each at its first DELETE)
        await clock.advance(DAY)
        assert fault.raised == 1 and await ids(rt) == {"a", "w"}
        await clock.advance(60)  # retried after 1 s, 2 s, 4 s: the third retry works
        assert fault.raised == 3 and await ids(rt) == {"w"}
        await rt.send("w", ret_go)  # the runtime carries on
        assert await rt.handle("w").result(timeout=5) == "done"
