"""The hot path makes no cyclic garbage (issue #13, item 3): an event's round trip to a
parked instance, and an instance's whole life (start, wait, finish), leave nothing
that only the cyclic garbage collector could free; reference counting frees it all.

Checked with ``gc.DEBUG_SAVEALL``: with it, every object the collector finds
unreachable is kept in ``gc.garbage`` instead of freed, so after the measured
round trips a collection that finds anything shows a cycle made per event.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import actorflow as af

ping = af.Event("garbage.ping", int)
taken: dict[str, int] = {}  # events each instance's code has taken: a test probe


@af.workflow(name="garbage.echo")
async def echo(ctx: af.Context[None], rounds: int) -> int:
    """Wait for ``rounds`` events, one after another; return their sum."""
    total = 0
    for _ in range(rounds):
        total += await ctx.wait_event(ping)
        taken[ctx.workflow_id] = taken.get(ctx.workflow_id, 0) + 1
    return total


@af.workflow(name="garbage.once")
async def once(ctx: af.Context[None]) -> int:
    """Wait for one event; return it."""
    return await ctx.wait_event(ping)


@pytest.fixture
def saved_garbage() -> Iterator[Callable[[], list[Any]]]:
    """From a clean slate, keep what the collector finds unreachable; the fixture's
    value collects and returns it."""
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)

    def found() -> list[Any]:
        gc.collect()
        return list(gc.garbage)

    try:
        yield found
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def describe(garbage: list[Any]) -> list[str]:
    """The types of what was found (what a failure shows)."""
    return sorted({type(o).__qualname__ for o in garbage})


async def until_taken(workflow_id: str, count: int) -> None:
    """Until the code of ``workflow_id`` has taken ``count`` events."""
    while taken.get(workflow_id, 0) < count:
        await asyncio.sleep(0)


async def test_an_event_round_trip_to_a_parked_instance_makes_no_cyclic_garbage(
    runtime: Callable[..., af.Runtime], saved_garbage: Callable[[], list[Any]]
) -> None:
    taken.clear()
    async with runtime() as rt:
        handles = [await rt.start(echo, 50, id=f"e{i}") for i in range(5)]
        for h in handles:  # warm up: first-time imports, caches, lazily made objects
            await rt.send(h.id, ping, 1)
            await until_taken(h.id, 1)
        await rt.checkpoint()
        gc.collect()
        gc.garbage.clear()
        for n in range(2, 12):
            for h in handles:
                await rt.send(h.id, ping, 1)
            for h in handles:
                await until_taken(h.id, n)
        garbage = saved_garbage()
        assert garbage == [], describe(garbage)
        for h in handles:
            assert (await rt.status(h.id)).state == "waiting"


async def test_an_instance_that_starts_waits_and_finishes_makes_no_cyclic_garbage(
    runtime: Callable[..., af.Runtime], saved_garbage: Callable[[], list[Any]]
) -> None:
    async with runtime() as rt:
        await rt.send((await rt.start(once, id="warm")).id, ping, 0)
        await rt.handle("warm").result()
        await rt.checkpoint()
        gc.collect()
        gc.garbage.clear()
        for i in range(20):
            h = await rt.start(once, id=f"o{i}")
            await rt.send(h.id, ping, i)
            assert await h.result() == i
        garbage = saved_garbage()
        assert garbage == [], describe(garbage)
