"""Replay takes a call's stored outcome at the moment the code parks on it when nothing
else could run first (``Actor.parking``): the code runs on without a trip through the
loop. These tests check that this changes nothing the code sees, also where code opens
several calls before awaiting one, and that the shortcut is taken."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import actorflow as af
from actorflow.loop import InstanceLoop

a = af.Event("park.a", int)
b = af.Event("park.b", int)
c = af.Event("park.c", int)
done = af.Event("park.done", None)


async def double(x: int) -> int:
    return 2 * x


@af.workflow(name="park.mixed")
async def mixed(ctx: af.Context[None]) -> list[object]:
    """Calls opened before they are awaited, awaited out of order, in gather and first."""
    seen: list[object] = []
    fa = ctx.wait_event(a)
    fb = ctx.wait_event(b)
    seen.append(await fb)  # b's outcome may come before a's
    seen.append(await ctx.step(double, 1))
    seen.append(await fa)
    seen.append(list(await asyncio.gather(ctx.wait_event(c), ctx.step(double, 2))))
    seen.append(await ctx.first(ctx.wait_event(a), ctx.sleep(3600)))
    seen.append(ctx.random() < 1)
    for _ in range(3):
        seen.append(await ctx.wait_event(b))
    await ctx.wait_event(done)
    return seen


@pytest.mark.parametrize("order", ["ab", "ba"])
async def test_replay_sees_what_the_first_run_saw(db: Path, order: str) -> None:
    sends = {"ab": [(a, 1), (b, 2)], "ba": [(b, 2), (a, 1)]}[order]
    async with af.Runtime(db) as rt:
        h = await rt.start(mixed, id="m")
        for event, value in sends:
            await rt.send("m", event, value)
        await rt.send("m", c, 3)
        await rt.send("m", a, 4)
        for value in (5, 6, 7):
            await rt.send("m", b, value)
        while len((await h.status()).waiting_on) != 1:
            await asyncio.sleep(0.001)
    async with af.Runtime(db) as rt:  # replays it all, then takes `done`
        await rt.send("m", done, None)
        assert await rt.handle("m").result(timeout=5) == [
            2, 2, 1, [3, 4], [0, 4], True, 5, 6, 7,
        ]  # fmt: skip


@af.workflow(name="park.chat")
async def chat(ctx: af.Context[None]) -> int:
    total = 0
    while (value := await ctx.wait_event(a)) >= 0:
        total += value
    return total


async def test_a_long_replay_runs_the_code_in_one_pass(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(chat, id="c")
        await asyncio.gather(*(rt.send("c", a, 1) for _ in range(300)))
        while any(e.consumed_at is None for e in (await rt.handle("c").status()).events):
            await asyncio.sleep(0.001)
    runs = 0
    run = InstanceLoop.run

    def counted(self: InstanceLoop) -> None:
        nonlocal runs
        runs += 1
        run(self)

    monkeypatch.setattr(InstanceLoop, "run", counted)
    async with af.Runtime(db) as rt:
        h = rt.handle("c")
        await rt.send("c", a, -1)
        assert await h.result(timeout=5) == 300
    assert runs < 30  # not one trip through the loop per replayed message
