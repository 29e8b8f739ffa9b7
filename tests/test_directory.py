"""The instance directory (``actorflow.host.directory``): deadlines of unloaded instances
are never lost between memory and the store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import actorflow as af
from actorflow.store import MemoryStore, SQLiteStore

Make = Callable[..., af.Runtime]
gate = af.Event("directory.gate")


@af.workflow(name="directory.wait")
async def wait_a_minute(ctx: af.Context[None]) -> str:
    try:
        await ctx.wait_event(gate, timeout=60)
    except af.WaitTimeout:
        return "timed out"
    return "woken"


async def test_deadline_of_one_checkpointed_while_due_ones_are_read(
    runtime: Make, clock: af.testing.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The directory asks the store which instances are due; the checkpoint that stores an
    # unloaded instance (and lets go of it in memory) ends while that read is under way,
    # having begun after it: the read misses the instance, and memory no longer has it.
    async with runtime(max_loaded=0) as rt:
        h = await rt.start(wait_a_minute, id="a")
        await clock.settle()
        assert rt.loaded == 0  # parked, then unloaded before any checkpoint stored it

        for store in (SQLiteStore, MemoryStore):
            real_due = store.due

            async def due_then_checkpoint(
                self: Any, after: float, upto: float, real_due: Any = real_due
            ) -> list[str]:
                found: list[str] = await real_due(self, after, upto)
                await rt.checkpoint()
                return found

            monkeypatch.setattr(store, "due", due_then_checkpoint)
        await clock.advance(61)
        assert (await h.status()).state == "completed"  # (result() would load it)
        assert await h.result() == "timed out"


async def test_instance_whose_deadline_has_come_is_not_unloaded(
    runtime: Make, clock: af.testing.ManualClock
) -> None:
    # Its own timer fires: unloaded now, its deadline could lie behind what the directory
    # has already looked for in the store.
    async with runtime(max_loaded=None) as rt:
        due = clock.now() + 60  # the instance's deadline: the clock stands still meanwhile
        seen: list[int] = []
        clock.call_at(due, lambda: setattr(rt, "max_loaded", 0))  # rings before its timer
        clock.call_at(due, lambda: seen.append(rt.loaded))
        h = await rt.start(wait_a_minute, id="a")
        await clock.settle()
        await clock.advance(61)
        assert seen == [1]
        assert (await h.status()).state == "completed"
        assert await h.result() == "timed out"
