"""Journal and replay: determinism across restarts, divergence detection, held instances."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

import pytest

import actorflow as af

tick = af.Event("replay.tick", int)
executions: list[str] = []


def effect(name: str) -> str:
    executions.append(name)
    return name


@af.workflow(name="replay.branches")
async def branches(ctx: af.Context[None]) -> list[str]:
    # Two branches whose later calls depend on which outcome arrives first: replay
    # must feed outcomes in log order for the calls to line up again.
    async def branch(label: str) -> str:
        n = await ctx.wait_event(tick)
        stamp = ctx.uuid4()
        out = await ctx.step(effect, f"{label}{n}")
        return f"{out}:{stamp.hex[:4]}"

    return list(await asyncio.gather(branch("a"), branch("b")))


async def test_concurrent_branches_replay_in_the_same_order(db: Path) -> None:
    executions.clear()
    async with af.Runtime(db) as rt:
        h = await rt.start(branches, id="br")
        await rt.send("br", tick, 1)
        await rt.send("br", tick, 2)
        first = await h.result(timeout=5)
    ran = list(executions)
    async with af.Runtime(db) as rt:
        assert await rt.handle("br").result() == first
    assert executions == ran  # nothing ran again


@af.workflow(name="replay.values")
async def values(ctx: af.Context[None]) -> list[str]:
    before = [str(ctx.now()), str(ctx.random()), str(ctx.uuid4())]
    await ctx.wait_event(tick)
    return [*before, str(ctx.now())]


async def test_now_random_uuid_are_stable_across_restart(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(values, id="v")
        status = await rt.handle("v").status()
        assert status.state == "waiting"
    async with af.Runtime(db) as rt:
        # replay recomputes nothing: the instance is at the same wait
        await rt.send("v", tick, 0)
        result = await rt.handle("v").result(timeout=5)
    async with af.Runtime(db) as rt:
        assert await rt.handle("v").result() == result


def step_one() -> str:
    return "one"


def step_two() -> str:
    return "two"


async def test_changed_code_is_held_with_non_determinism_error(db: Path) -> None:
    @af.workflow(name="replay.changing")
    async def original(ctx: af.Context[None]) -> str:
        await ctx.step(step_one)
        await ctx.wait_event(tick)
        return "done"

    async with af.Runtime(db) as rt:
        h = await rt.start(original, id="ch")
        while (await h.status()).state != "waiting":
            await asyncio.sleep(0.005)

    # A deploy replaces the workflow's code with one that makes another call first.
    registry = importlib.import_module("actorflow.workflow")

    del registry._registry["replay.changing"]

    @af.workflow(name="replay.changing")
    async def changed(ctx: af.Context[None]) -> str:
        await ctx.step(step_two)
        await ctx.wait_event(tick)
        return "done"

    async with af.Runtime(db) as rt:
        h = rt.handle("ch")
        with pytest.raises(af.NonDeterminismError, match="step_one"):
            await h.result()
        st = await h.status()
        assert st.state in ("running", "waiting") and st.detail and "step_two" in st.detail

    # The instance was left untouched: the original code resumes it.
    del registry._registry["replay.changing"]
    restored = af.workflow(name="replay.changing")(original.fn)
    assert restored.name == "replay.changing"
    async with af.Runtime(db) as rt:
        await rt.send("ch", tick, 1)
        assert await rt.handle("ch").result(timeout=5) == "done"


async def test_unregistered_workflow_is_left_untouched(db: Path) -> None:
    @af.workflow(name="replay.ephemeral")
    async def ephemeral(ctx: af.Context[None]) -> str:
        await ctx.wait_event(tick)
        return "back"

    async with af.Runtime(db) as rt:
        await rt.start(ephemeral, id="eph")
    registry = importlib.import_module("actorflow.workflow")

    del registry._registry["replay.ephemeral"]
    async with af.Runtime(db) as rt:
        st = await rt.handle("eph").status()
        assert st.detail is not None and "not defined" in st.detail
        await rt.send("eph", tick, 5)  # accepted into its mailbox all the same
    af.workflow(name="replay.ephemeral")(ephemeral.fn)
    async with af.Runtime(db) as rt:
        assert await rt.handle("eph").result(timeout=5) == "back"


async def test_cancel_survives_restart_and_replays_cleanup(db: Path) -> None:
    executions.clear()

    @af.workflow(name="replay.cancel")
    async def cancellable(ctx: af.Context[None]) -> None:
        try:
            await ctx.wait_event(tick)
        except asyncio.CancelledError:
            await ctx.step(effect, "cleanup")
            await ctx.wait_event(tick)  # cleanup may wait again
            raise

    async with af.Runtime(db) as rt:
        h = await rt.start(cancellable, id="c")
        await h.cancel()
        while (await h.status()).waiting_on == [] or executions != ["cleanup"]:
            await asyncio.sleep(0.005)
    async with af.Runtime(db) as rt:
        await rt.send("c", tick, 1)
        with pytest.raises(af.WorkflowCancelled):
            await rt.handle("c").result(timeout=5)
    assert executions == ["cleanup"]
