"""Cancellation edges: concurrent cancels are one cancel (one ``CancelRequested``, so
the cleanup it starts is not interrupted by a second), and the cleanup in ``except
CancelledError`` runs on every store, in memory as on SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from actorflow.reader import Reader
from actorflow.records import CancelRequested
from actorflow.store import MemoryStore

Make = Callable[..., af.Runtime]
Clock = af.testing.ManualClock

go = af.Event("cancelreg.go")
executions: list[str] = []


def effect(what: str) -> str:
    executions.append(what)
    return what


async def async_effect(what: str) -> str:
    executions.append(what)
    return what


@af.workflow(name="cancelreg.swallow")
async def swallow(ctx: af.Context[None]) -> str:
    try:
        await ctx.wait_event(go)
    except asyncio.CancelledError:
        await ctx.step(effect, "cleanup:1")
        await ctx.sleep(10)  # cleanup that waits: a second cancel would interrupt it
        await ctx.step(effect, "cleanup:2")
        return "cleaned up"
    return "not cancelled"


async def test_two_concurrent_cancels_are_one_cancel(runtime: Make, clock: Clock) -> None:
    executions.clear()
    async with runtime() as rt:
        h = await rt.start(swallow)
        await asyncio.gather(h.cancel(), h.cancel(), rt.cancel(h.id))
        await clock.advance(0)
        assert executions == ["cleanup:1"]
        assert [w.kind for w in (await h.status()).waiting_on] == ["timer"]
        await clock.advance(10)
        assert await h.result(timeout=1) == "cleaned up"
        assert (await h.status()).state == "completed"
        assert executions == ["cleanup:1", "cleanup:2"]
        if isinstance(rt._store, MemoryStore):  # what was written: one request
            cancels = [r for r in rt._store.records() if isinstance(r, CancelRequested)]
            assert len(cancels) == 1


async def test_concurrent_cancels_write_one_request_that_replays_once(
    db: Path, clock: Clock
) -> None:
    executions.clear()
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(swallow, id="s")
        await asyncio.gather(h.cancel(), h.cancel())
        await clock.advance(3)  # parked in the cleanup's sleep when the runtime closes
    async with af.Runtime(db, clock=clock) as rt:
        await clock.advance(7)
        assert await rt.handle("s").result(timeout=1) == "cleaned up"
    assert executions == ["cleanup:1", "cleanup:2"]


async def test_a_cancel_while_one_is_being_written_returns_once_it_is_durable(
    db: Path, clock: Clock
) -> None:
    executions.clear()
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(swallow, id="d")
        first = asyncio.ensure_future(h.cancel())
        await asyncio.sleep(0)  # the first is queued, not yet committed
        await h.cancel()  # shares the first's write: returns when it is durable
        await first
    async with af.Runtime(db, clock=clock) as rt:  # the cancel was durable
        await clock.advance(10)
        assert await rt.handle("d").result(timeout=1) == "cleaned up"


# -- cleanup after a cancel, on both stores -------------------------------------------


def _cancellable(name: str, body: Callable[[af.Context[None]], Any], cleanup: Any) -> Any:
    async def run(ctx: af.Context[None]) -> str:
        try:
            await body(ctx)
            await ctx.wait_event(go)
        except asyncio.CancelledError:
            await ctx.step(cleanup, "cleanup")
            raise
        return "not cancelled"

    run.__qualname__ = name  # a stable, distinct name per shape
    return af.workflow(name=name)(run)


SHAPES = {
    "event": lambda ctx: ctx.wait_event(go),
    "sleep": lambda ctx: ctx.sleep(3600),
    "timeout": lambda ctx: ctx.wait_event(go, timeout=3600),
    "first": lambda ctx: ctx.first(ctx.wait_event(go), ctx.sleep(3600)),
    "gather": lambda ctx: asyncio.gather(ctx.wait_event(go), ctx.sleep(3600)),
    "step": lambda ctx: ctx.step(effect, "body"),
}
WORKFLOWS = {
    (shape, kind): _cancellable(f"cancelreg.{shape}.{kind}", body, cleanup)
    for shape, body in SHAPES.items()
    for kind, cleanup in (("sync", effect), ("async", async_effect))
}


@pytest.mark.parametrize("key", sorted(WORKFLOWS), ids="-".join)
async def test_a_cancel_runs_the_cleanup_step_on_every_store(
    runtime: Make, clock: Clock, key: tuple[str, str]
) -> None:
    executions.clear()
    async with runtime() as rt:
        h = await rt.start(WORKFLOWS[key])
        await clock.advance(1)
        await h.cancel()
        await clock.advance(0)
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=1)
        assert "cleanup" in executions
        assert (await h.status()).state == "cancelled"


async def test_a_cancel_right_after_start_runs_the_cleanup_step(runtime: Make) -> None:
    executions.clear()
    async with runtime() as rt:
        h = await rt.start(WORKFLOWS["event", "sync"])
        await h.cancel()
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=1)
        assert executions == ["cleanup"]


# -- retries of a cleanup step, and a step that outlives its cancelled instance ----------
flaky_runs: list[str] = []


def flaky_cleanup() -> str:
    flaky_runs.append("cleanup")
    if len(flaky_runs) < 3:
        raise RuntimeError("not yet")
    return "cleaned"


@af.workflow(name="cancelreg.retrying_cleanup")
async def retrying_cleanup(ctx: af.Context[None]) -> str:
    try:
        await ctx.wait_event(go)
    except asyncio.CancelledError:
        return await ctx.step(flaky_cleanup, retry=af.Retry(attempts=5, initial=1.0))
    return "not cancelled"


async def test_a_cleanup_step_started_after_the_cancel_is_retried(
    runtime: Make, clock: Clock
) -> None:
    """Only attempts of a step the cancelled workflow no longer awaits stop; the cleanup
    it runs after the cancel retries as its policy says."""
    flaky_runs.clear()
    async with runtime() as rt:
        h = await rt.start(retrying_cleanup)
        await h.cancel()
        for _ in range(4):
            await clock.advance(2.0)
        assert await h.result(timeout=5) == "cleaned"
        assert flaky_runs == ["cleanup"] * 3


slow_started = asyncio.Event()
slow_release: list[asyncio.Future[None]] = []
slow_done: list[str] = []


async def slow_step() -> str:
    slow_started.set()
    release: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    slow_release.append(release)
    await release
    slow_done.append("slow")
    return "slow result"


@af.workflow(name="cancelreg.cancelled_in_a_step")
async def cancelled_in_a_step(ctx: af.Context[None]) -> str:
    return await ctx.step(slow_step)


async def test_a_step_running_when_its_instance_is_cancelled_stores_its_result(
    db: Path, clock: Clock
) -> None:
    """A running step is not interrupted: the instance ends cancelled at the step it is
    parked on, and the step's result is still stored (it never runs again)."""
    slow_started.clear()
    slow_release.clear()
    slow_done.clear()
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(cancelled_in_a_step)
        await slow_started.wait()
        await h.cancel()
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=5)
        slow_release[0].set_result(None)
        for _ in range(100):
            if rt.idle and slow_done:
                break
            await asyncio.sleep(0.01)
    steps = Reader(db).show(h.id).steps
    assert [(s.name.rsplit(".", 1)[-1], s.error) for s in steps] == [("slow_step", None)]
    assert slow_done == ["slow"]
