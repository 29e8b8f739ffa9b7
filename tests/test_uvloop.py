"""The runtime on uvloop as on asyncio's loop: workflow code's futures and tasks live on
its instance loop while the host loop is uvloop (steps in threads, gather, first,
timers, replay after a reopen, the inbox's wake socket). ``.ci/run`` also runs the
core tests on uvloop (``ACTORFLOW_LOOP=uvloop``, see conftest.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import actorflow as af
from actorflow.inbox import SendRequest, submit, wait_for_receipt
from actorflow.loop import host_loop

uvloop = pytest.importorskip("uvloop")
T = TypeVar("T")

left = af.Event("uvl.left", int)
right = af.Event("uvl.right", int)
hosts: list[type[asyncio.AbstractEventLoop]] = []


def double(x: int) -> int:
    return 2 * x


@af.workflow(name="uvl.mixed")
async def mixed(ctx: af.Context[None], x: int) -> int:
    hosts.append(type(host_loop()))
    doubled = await ctx.step(double, x)
    a, b = await asyncio.gather(ctx.wait_event(left), ctx.wait_event(right))
    index, _ = await ctx.first(ctx.sleep(60), ctx.wait_event(left, timeout=3600))
    await ctx.sleep(10)
    return doubled + a + b + index


def on_uvloop(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def test_a_workflow_runs_and_replays_on_uvloop(db: Path) -> None:
    clock = af.testing.ManualClock()

    async def first_run() -> None:
        async with af.Runtime(db, clock=clock) as rt:
            assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
            h = await rt.start(mixed, 5, id="m")
            await rt.send("m", left, 1)
            await clock.settle()
            assert (await h.status()).state == "waiting"

    async def second_run() -> int:
        async with af.Runtime(db, clock=clock) as rt:  # replays to the same pause
            h = rt.handle("m")
            await rt.send("m", right, 2)
            await clock.advance(60)  # the sleep wins ctx.first: index 0
            await clock.advance(10)
            return await h.result(timeout=5)

    hosts.clear()
    on_uvloop(first_run())
    assert on_uvloop(second_run()) == 10 + 1 + 2 + 0
    assert hosts and all(issubclass(kind, uvloop.Loop) for kind in hosts)


def test_the_inbox_wake_socket_works_on_uvloop(db: Path) -> None:
    async def scenario() -> str:
        async with af.Runtime(db) as rt:
            await rt.start(mixed, 1, id="m")
            seq = await asyncio.to_thread(submit, db, SendRequest("m", left.name, "4"))
            found = await asyncio.to_thread(wait_for_receipt, db, seq, 5.0)
            return found.status

    assert on_uvloop(scenario()) == "accepted"


async def test_the_tests_run_on_the_loop_asked_for() -> None:
    running = asyncio.get_running_loop()
    asked = os.environ.get("ACTORFLOW_LOOP", "asyncio") == "uvloop"
    assert isinstance(running, uvloop.Loop) == asked
