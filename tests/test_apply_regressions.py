"""Applying committed records to memory is isolated per record and per instance: one
that fails holds its instance (the reason in ``detail``), the rest of the batch and
other instances carry on, and nothing committed is lost at the next checkpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

import actorflow as af
from actorflow.actor import Actor
from actorflow.host.writer import GroupWriter
from actorflow.records import Record, Started
from actorflow.store import MemoryStore

Make = Callable[..., af.Runtime]
Clock = af.testing.ManualClock

go = af.Event("apply.go")
state_broken = False  # while set, building a Fragile state raises


class Fragile(msgspec.Struct):
    n: int = 0

    def __post_init__(self) -> None:
        if state_broken:
            raise RuntimeError("state store unavailable")


@af.workflow(name="apply.fragile", state=Fragile)
async def fragile(ctx: af.Context[Fragile]) -> str:
    await ctx.wait_event(go)
    return "fragile done"


@af.workflow(name="apply.healthy")
async def healthy(ctx: af.Context[None], x: int) -> int:
    await ctx.wait_event(go)
    return x


cleanups: list[str] = []


def cleanup(what: str) -> str:
    cleanups.append(what)
    return what


@af.workflow(name="apply.cancellable")
async def cancellable(ctx: af.Context[None]) -> str:
    try:
        await ctx.wait_event(go)
    except asyncio.CancelledError:
        await ctx.step(cleanup, ctx.workflow_id)
        raise
    return "not cancelled"


@pytest.fixture
def broken_state() -> object:
    global state_broken
    state_broken = True
    yield
    state_broken = False


async def test_a_start_that_fails_to_apply_holds_only_that_instance(
    db: Path, clock: Clock, broken_state: object
) -> None:
    global state_broken
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(healthy, 1, id="before")
        # one batch: the first start cannot be applied, the second can
        await asyncio.gather(rt.start(fragile, id="bad"), rt.start(healthy, 2, id="good"))
        st = await rt.handle("bad").status()
        assert st.state in ("running", "waiting")
        assert st.detail is not None and "state store unavailable" in st.detail
        with pytest.raises(af.ActorflowError, match="held"):
            await rt.handle("bad").result(timeout=1)
        assert (await rt.handle("good").status()).state == "waiting"
        # held, it still takes events: they are stored for when it runs again
        await rt.send("bad", go)
        await rt.send("before", go)
        assert await rt.handle("before").result(timeout=1) == 1
        await rt.checkpoint()  # the log is folded into snapshots and emptied
    state_broken = False  # the code is fixed
    async with af.Runtime(db, clock=clock) as rt:
        assert {s.id for s in await rt.list()} == {"before", "bad", "good"}
        assert await rt.handle("bad").result(timeout=1) == "fragile done"
        await rt.send("good", go)
        assert await rt.handle("good").result(timeout=1) == 2


async def test_a_start_that_fails_to_apply_does_not_lose_its_batch_in_memory(
    runtime: Make, broken_state: object
) -> None:
    async with runtime() as rt:
        await asyncio.gather(rt.start(fragile, id="bad"), rt.start(healthy, 3, id="good"))
        assert "state store unavailable" in ((await rt.handle("bad").status()).detail or "")
        await rt.send("good", go)
        assert await rt.handle("good").result(timeout=1) == 3
        assert {s.id for s in await rt.list()} == {"bad", "good"}


async def test_an_instance_that_fails_to_resume_at_open_is_held_and_the_rest_run(
    db: Path, clock: Clock
) -> None:
    global state_broken
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(fragile, id="bad")
        await rt.start(healthy, 6, id="good")
    state_broken = True
    try:
        async with af.Runtime(db, clock=clock) as rt:
            # Parked, it is not replayed at open (DESIGN §3.1) but when the event it waits
            # for arrives: that load fails, and holds it alone.
            await rt.send("bad", go)
            await clock.settle()  # type: ignore[attr-defined]
            assert "state store unavailable" in ((await rt.handle("bad").status()).detail or "")
            await rt.send("good", go)
            assert await rt.handle("good").result(timeout=1) == 6
            await rt.send("bad", go)  # stored for when it runs again
    finally:
        state_broken = False
    async with af.Runtime(db, clock=clock) as rt:
        assert await rt.handle("bad").result(timeout=1) == "fragile done"


@pytest.fixture
def cancel_breaks_on_bad(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Applying a cancel to instance ``bad`` raises, as a bug in applying would."""
    react = Actor._cancel

    def failing(self: Actor) -> None:
        if self.id == "bad":
            raise RuntimeError("bug while applying")
        react(self)

    monkeypatch.setattr(Actor, "_cancel", failing)
    return monkeypatch


async def test_a_record_that_fails_to_apply_leaves_the_rest_of_its_batch(
    runtime: Make, clock: Clock, cancel_breaks_on_bad: pytest.MonkeyPatch
) -> None:
    cleanups.clear()
    async with runtime() as rt:
        await rt.start(cancellable, id="bad")
        await rt.start(cancellable, id="other")
        await rt.start(healthy, 4, id="good")
        # one batch: the cancel of "bad" fails to apply; the rest must still be applied
        await asyncio.gather(rt.cancel("bad"), rt.send("good", go), rt.cancel("other"))
        await clock.advance(0)
        assert await rt.handle("good").result(timeout=1) == 4
        with pytest.raises(af.WorkflowCancelled):
            await rt.handle("other").result(timeout=1)
        assert cleanups == ["other"]
        st = await rt.handle("bad").status()
        assert st.detail is not None and "RuntimeError" in st.detail
        assert "bug while applying" in st.detail
        await rt.send("bad", go)  # held: stored, not run


async def test_a_held_instance_keeps_its_records_across_reopen(
    db: Path, clock: Clock, cancel_breaks_on_bad: pytest.MonkeyPatch
) -> None:
    cleanups.clear()
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(cancellable, id="bad")
        await rt.start(healthy, 5, id="good")
        await asyncio.gather(rt.cancel("bad"), rt.send("good", go))
        assert "bug while applying" in ((await rt.handle("bad").status()).detail or "")
        await rt.checkpoint()
    cancel_breaks_on_bad.undo()  # the code is fixed
    async with af.Runtime(db, clock=clock) as rt:
        assert await rt.handle("good").result(timeout=1) == 5
        await clock.advance(0)
        with pytest.raises(af.WorkflowCancelled):  # the cancel was kept, and now applies
            await rt.handle("bad").result(timeout=1)
    assert cleanups == ["bad"]


async def test_the_log_is_kept_when_applying_a_batch_raises_anyway() -> None:
    """The writer's last resort: if ``on_commit`` raises, memory may lack committed
    records, so the log is not checkpointed away (the next open folds it)."""
    store = MemoryStore()
    checkpoints: list[int] = []

    def on_commit(batch: list[Record]) -> None:
        raise RuntimeError("bug while applying")

    async def checkpoint() -> None:
        checkpoints.append(1)
        await store.checkpoint([])

    writer = GroupWriter(store, on_commit, lambda batch, error: None, checkpoint, 10)
    await writer.append_acked([Started("w", "apply.healthy", [], 0.0)])
    await writer.checkpoint()
    await writer.close()
    assert checkpoints == []
    assert [r.wf for r in store.records()] == ["w"]
