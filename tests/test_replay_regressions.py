"""Replay regressions: divergence of every call kind, code that ends early, a given-back
event keeping its place, and reopen time linear in an instance's history."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import actorflow as af
from actorflow.records import EventReturned

workflow_module = importlib.import_module("actorflow.workflow")  # its registry
writer_module = importlib.import_module("actorflow.host.writer")

go = af.Event("rr.go")
park = af.Event("rr.park")
ran: list[str] = []


def effect(label: str) -> str:
    ran.append(label)
    return label


def ready() -> bool:
    return True


async def perform(ctx: af.Context[None], call: str) -> None:
    """Make one call of the kind ``call`` names (a table entry of the tests below)."""
    match call:
        case "stored":
            await ctx.step(effect, "stored", name="stored")
        case "second":
            await ctx.step(effect, "second", name="second")
        case "step":
            await ctx.step(effect, "inserted", name="inserted")
        case "wait_event":
            await ctx.wait_event(go)
        case "timeout":  # a deadline value call, then the wait
            await ctx.wait_event(go, timeout=60)
        case "wait_until":
            await ctx.wait_until(lambda: True)
        case "wait_for":
            await ctx.wait_for(ready)
        case "sleep":
            await ctx.sleep(1)
        case "now":
            ctx.now()
        case "random":
            ctx.random()
        case "uuid4":
            ctx.uuid4()
        case "create_event":
            await ctx.create_event(go)
        case _:
            raise AssertionError(call)


def define(name: str, calls: list[str], end: str = "park") -> af.Workflow[str]:
    """Register ``name`` as code making ``calls``, then parking (or returning early,
    or raising), in place of any code registered under that name before."""
    workflow_module._registry.pop(name, None)

    async def body(ctx: af.Context[None]) -> str:
        for call in calls:
            await perform(ctx, call)
        if end == "raise":
            raise ValueError("ended early")
        if end == "park":
            await ctx.wait_event(park)
        return end

    return af.workflow(name=name)(body)


@pytest.fixture(autouse=True)
def _registry(restore_workflow_registry: None) -> None:
    """These tests redefine their workflows."""


async def run_to_park(rt: af.Runtime, clock: af.testing.ManualClock, wf: af.Workflow[str]) -> None:
    """Start ``wf`` and feed it (events, time) until it parks on ``park``."""
    h = await rt.start(wf, id="i")
    for _ in range(1000):
        waits = (await h.status()).waiting_on
        if any(w.name == park.name for w in waits):
            return
        if any(w.name == go.name for w in waits):
            await rt.send("i", go)
        elif any(w.kind == "timer" for w in waits):
            await clock.advance(1)
        else:
            await asyncio.sleep(0.002)
    raise AssertionError("the workflow never parked")


KINDS = [
    "step", "wait_event", "wait_until", "wait_for", "sleep", "now", "random", "uuid4",
    "create_event", "timeout",
]  # fmt: skip


def mutations() -> list[Any]:
    """(case, original calls, changed calls): each kind inserted before a stored step,
    removed from before it, and moved after it."""
    cases = []
    for kind in KINDS:
        before = "wait_event" if kind == "timeout" else None  # adding timeout= to a wait
        cases.append((f"insert-{kind}", [before] if before else [], [kind]))
        cases.append((f"remove-{kind}", [kind], [before] if before else []))
        cases.append((f"reorder-{kind}", [kind], []))
    return [
        pytest.param(
            case,
            [*old, "stored"],
            ["stored", *old] if case.startswith("reorder") else [*new, "stored"],
            id=case,
        )
        for case, old, new in cases
    ]


@pytest.mark.parametrize(("case", "original", "changed"), mutations())
async def test_changed_calls_of_every_kind_are_held(
    db: Path,
    clock: af.testing.ManualClock,
    case: str,
    original: list[str],
    changed: list[str],
) -> None:
    name = f"rr.{case}"
    ran.clear()
    async with af.Runtime(db, clock=clock) as rt:
        await run_to_park(rt, clock, define(name, original))
    before = list(ran)
    assert before.count("stored") == 1

    define(name, changed)
    async with af.Runtime(db, clock=clock) as rt:
        with pytest.raises(af.NonDeterminismError):
            await rt.handle("i").result(timeout=2)
        status = await rt.handle("i").status()
        assert status.finished_at is None and status.detail and "call #" in status.detail
    assert ran == before  # the stored step was not run again, nor anything else

    # Untouched: the original code resumes the instance where it was.
    define(name, original)
    async with af.Runtime(db, clock=clock) as rt:
        await rt.send("i", park)
        assert await rt.handle("i").result(timeout=5) == "park"
    assert ran == before


@pytest.mark.parametrize(
    ("original", "end"),
    [
        (["stored", "second"], "returned"),
        (["stored", "second"], "raise"),
        (["stored", "now"], "returned"),
        (["stored", "timeout"], "returned"),
    ],
    ids=["step-returns", "step-raises", "value-returns", "wait-returns"],
)
async def test_code_that_ends_early_is_held_not_completed(
    db: Path, clock: af.testing.ManualClock, original: list[str], end: str
) -> None:
    ran.clear()
    async with af.Runtime(db, clock=clock) as rt:
        await run_to_park(rt, clock, define("rr.early", original))
    before = list(ran)

    define("rr.early", ["stored"], end=end)  # stops after the first call it used to make
    async with af.Runtime(db, clock=clock) as rt:
        with pytest.raises(af.NonDeterminismError, match="no longer makes"):
            await rt.handle("i").result(timeout=2)
        status = await rt.handle("i").status()
        assert status.finished_at is None and status.detail and "#1" in status.detail
        assert await rt.list(status=["completed", "failed"]) == []

    define("rr.early", original)
    async with af.Runtime(db, clock=clock) as rt:
        await rt.send("i", park)
        assert await rt.handle("i").result(timeout=5) == "park"
    assert ran == before


async def test_code_that_pauses_before_a_call_the_journal_holds_is_held(
    db: Path, clock: af.testing.ManualClock
) -> None:
    @af.workflow(name="rr.pause")
    async def both(ctx: af.Context[None]) -> str:
        async def stamp() -> None:
            ctx.now()

        await asyncio.gather(ctx.wait_event(park), stamp())  # the wait is #0, now() #1
        return "park"

    async with af.Runtime(db, clock=clock) as rt:
        await run_to_park(rt, clock, both)

    workflow_module._registry.pop("rr.pause")

    @af.workflow(name="rr.pause")
    async def wait_only(ctx: af.Context[None]) -> str:
        await ctx.wait_event(park)
        return "park"

    async with af.Runtime(db, clock=clock) as rt:
        with pytest.raises(af.NonDeterminismError, match="paused"):
            await rt.handle("i").result(timeout=2)
        status = await rt.handle("i").status()
        assert status.detail and "#1 (now 'now')" in status.detail


# -- a given-back event keeps its place ---------------------------------------------------
gate = af.Event("rr.gate")
number = af.Event("rr.number", int)


@af.workflow(name="rr.first_loser")
async def first_loser(ctx: af.Context[None]) -> list[int]:
    index, _ = await ctx.first(ctx.wait_event(gate), ctx.wait_event(number))
    return [index, await ctx.wait_event(number), await ctx.wait_event(number)]


async def test_given_back_event_is_not_overtaken_by_a_later_send(
    runtime: Callable[..., af.Runtime],
) -> None:
    # The gate and number 1 bind both waits of ctx.first at once; the gate wins, so
    # number 1 is given back. Number 2, sent before that give-back is written, must
    # still come after it.
    async with runtime() as rt:
        h = await rt.start(first_loser, id="fl")
        while len((await h.status()).waiting_on) < 2:
            await asyncio.sleep(0.001)
        await asyncio.gather(
            rt.send("fl", gate), rt.send("fl", number, 1), rt.send("fl", number, 2)
        )
        assert await h.result(timeout=5) == [0, 1, 2]
        consumed = [e.consumed_at is not None for e in (await h.status()).events]
        assert consumed == [True, True, True]


async def test_given_back_event_keeps_its_place_across_a_reopen(
    db: Path, clock: af.testing.ManualClock
) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(first_loser, id="fl")
        while len((await h.status()).waiting_on) < 2:
            await asyncio.sleep(0.001)
        await asyncio.gather(rt.send("fl", gate), rt.send("fl", number, 1))
        while (await h.status()).events[1].consumed_at is None:
            await asyncio.sleep(0.001)
    async with af.Runtime(db, clock=clock) as rt:
        await rt.send("fl", number, 2)
        assert await rt.handle("fl").result(timeout=5) == [0, 1, 2]


async def test_event_given_back_by_replay_keeps_its_place(
    db: Path, clock: af.testing.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crash lost the record giving number 1 back (and all after it); number 2 is in
    # the mailbox. Replay gives number 1 back again: it must come first.
    append = writer_module.GroupWriter.append
    crashed = False

    def crash_at_return(self: Any, records: list[Any]) -> None:
        nonlocal crashed
        crashed = crashed or any(isinstance(r, EventReturned) for r in records)
        if not crashed:
            append(self, records)

    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(first_loser, id="fl")
        while len((await h.status()).waiting_on) < 2:
            await asyncio.sleep(0.001)
        monkeypatch.setattr(writer_module.GroupWriter, "append", crash_at_return)
        await asyncio.gather(
            rt.send("fl", gate), rt.send("fl", number, 1), rt.send("fl", number, 2)
        )
        await clock.advance(0)
        assert crashed
    monkeypatch.undo()
    async with af.Runtime(db, clock=clock) as rt:
        assert await rt.handle("fl").result(timeout=5) == [0, 1, 2]


# -- reopen is linear in the history -----------------------------------------------------
message = af.Event("rr.message", int)


@af.workflow(name="rr.conversation")
async def conversation(ctx: af.Context[None], n: int) -> int:
    total = 0
    for _ in range(n):
        total += await ctx.wait_event(message)
    await ctx.wait_event(park)
    return total


def count_lines(package: str) -> tuple[Callable[[], int], Callable[[], None]]:
    """Start counting lines run in files under ``package`` (this thread only)."""
    count = 0

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename.startswith(package) else None

    sys.settrace(tracer)
    return (lambda: count), (lambda: sys.settrace(None))


async def lines_to_reopen(path: Path, n: int) -> int:
    """Lines of actorflow code run by opening a database whose one instance consumed
    ``n`` events one at a time (a count, unlike a time, does not depend on the machine)."""
    async with af.Runtime(path) as rt:
        await rt.start(conversation, n, id="talk")
        await asyncio.gather(*(rt.send("talk", message, 1) for _ in range(n)))
        while [w.name for w in (await rt.list())[0].waiting_on] != [park.name]:
            await asyncio.sleep(0.005)
    rt = af.Runtime(path)
    lines, stop = count_lines(str(Path(af.__file__).parent))
    try:
        await rt.open()
    finally:
        stop()
    try:
        assert [w.name for w in (await rt.list())[0].waiting_on] == [park.name]
    finally:
        await rt.close()
    return lines()


async def test_reopen_work_grows_linearly_with_the_history(tmp_path: Path) -> None:
    small = await lines_to_reopen(tmp_path / "small.db", 400)
    large = await lines_to_reopen(tmp_path / "large.db", 1600)
    # Four times the history: about four times the work (a scan per replayed event
    # made it about ten times here, and sixteen in the limit).
    assert large / small < 5.5, (small, large)
