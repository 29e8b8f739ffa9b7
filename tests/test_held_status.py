"""A held instance shows its stored view (state, waits) and says why it is held, in
``status()``, ``list()`` and the command line's ``list`` and ``show``."""

from __future__ import annotations

import asyncio
import importlib
import json
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

import actorflow as af
from actorflow import cli

workflow_module = importlib.import_module("actorflow.workflow")  # its registry
reply = af.Event("held.reply", str)


def one() -> str:
    return "one"


def two() -> str:
    return "two"


def define(name: str, first_step: object) -> af.Workflow[str]:
    """Register ``name`` as: a step, then a wait for ``reply`` (replacing older code)."""
    workflow_module._registry.pop(name, None)

    async def body(ctx: af.Context[None]) -> str:
        await ctx.step(first_step, name=getattr(first_step, "__name__", None))  # type: ignore[arg-type]
        return await ctx.wait_event(reply, timeout=timedelta(days=1))

    return af.workflow(name=name)(body)


@pytest.fixture(autouse=True)
def _registry(restore_workflow_registry: None) -> None:
    """These tests redefine their workflows."""


def cli_out(capsys: pytest.CaptureFixture[str], db: Path, *argv: str) -> str:
    assert cli.main(["--db", str(db), *argv]) == 0
    return capsys.readouterr().out


async def park(db: Path, clock: af.testing.ManualClock, name: str) -> af.Status:
    """Start an instance of ``name`` (code that runs step ``one``) and let it park."""
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(define(name, one), id="h1")
        while (status := await h.status()).state != "waiting":
            await clock.advance(0)
        return status


def assert_stored_view(status: af.Status, parked: af.Status, why: str) -> None:
    assert status.state == "waiting"
    assert status.waiting_on == parked.waiting_on
    assert [w.name for w in status.waiting_on] == [reply.name]
    assert status.detail is not None and why in status.detail


@pytest.mark.parametrize("cause", ["unregistered", "diverged"])
async def test_held_instance_shows_its_stored_view_and_why(
    db: Path, clock: af.testing.ManualClock, capsys: pytest.CaptureFixture[str], cause: str
) -> None:
    name = f"held.{cause}"
    parked = await park(db, clock, name)
    if cause == "unregistered":
        del workflow_module._registry[name]
        why = "not defined"
    else:
        define(name, two)  # a deploy changed the first step
        why = "call #0"

    async with af.Runtime(db, clock=clock) as rt:
        if cause == "diverged":
            with pytest.raises(af.NonDeterminismError):
                await rt.handle("h1").result(timeout=5)
        assert_stored_view(await rt.handle("h1").status(), parked, why)
        (listed,) = await rt.list()
        assert_stored_view(listed, parked, why)
        assert [s.id for s in await rt.list(status="waiting")] == ["h1"]
        await rt.checkpoint()

        # The command line, reading the file while the runtime runs, marks it held.
        table = cli_out(capsys, db, "list")
        assert "waiting (held)" in table and reply.name in table
        shown = cli_out(capsys, db, "show", "h1")
        assert "waiting (held)" in shown and "detail:    " in shown and why in shown
        (doc,) = json.loads(cli_out(capsys, db, "list", "--json"))
        assert doc["state"] == "waiting" and why in doc["detail"]
        doc = json.loads(cli_out(capsys, db, "--json", "show", "h1"))
        assert why in doc["status"]["detail"]

    define(name, one)  # the code that started it is back: it runs, and is no longer held
    async with af.Runtime(db, clock=clock) as rt:
        status = await rt.handle("h1").status()
        assert status.detail is None and status.state == "waiting"
        await rt.checkpoint()
        assert "(held)" not in cli_out(capsys, db, "list")
        assert json.loads(cli_out(capsys, db, "list", "--json"))[0]["detail"] is None
        await rt.send("h1", reply, "hi")
        assert await rt.handle("h1").result(timeout=5) == "hi"


@pytest.mark.parametrize("cause", ["unregistered", "diverged"])
async def test_a_held_instance_is_cancelled_without_running_its_code(
    db: Path, clock: af.testing.ManualClock, cause: str
) -> None:
    """A cancel ends a held instance ``cancelled`` as it stands (DESIGN §3.3), durably."""
    name = f"held.cancel.{cause}"
    await park(db, clock, name)
    if cause == "unregistered":
        del workflow_module._registry[name]
    else:
        define(name, two)
    async with af.Runtime(db, clock=clock) as rt:
        h = rt.handle("h1")
        if cause == "diverged":  # found when it is loaded: opening replays no parked one
            with pytest.raises(af.NonDeterminismError):
                await h.result(timeout=5)
        assert (await h.status()).detail is not None
        await h.cancel()
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=5)
        assert (await h.status()).state == "cancelled"
        await h.cancel()  # idempotent on the finished instance
    define(name, one)  # even with the right code back, it stays cancelled
    async with af.Runtime(db, clock=clock) as rt:
        status = await rt.handle("h1").status()
        assert status.state == "cancelled" and status.detail is None


async def test_a_cancel_ends_an_unloaded_instance_whose_code_diverged(
    db: Path, clock: af.testing.ManualClock
) -> None:
    """The cancel loads it, the replay diverges, and the held instance ends cancelled."""
    name = "held.cancel.unloaded"
    await park(db, clock, name)
    define(name, two)
    async with af.Runtime(db, clock=clock) as rt:
        h = rt.handle("h1")
        assert (await h.status()).detail is None  # not loaded: not replayed yet
        await h.cancel()
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=5)
        assert (await h.status()).state == "cancelled"


class Count(msgspec.Struct):
    n: int = 0


bump = af.Event("held.bump", int)
cleanups: list[str] = []


def define_counting(name: str, handler: bool, early: bool = False) -> af.Workflow[str]:
    """Register ``name``: wait until a ``bump`` was handled, then for ``reply``; on a
    cancel it notes a cleanup. ``handler=False``: the handler is gone; ``early``: the code
    returns before making any call."""
    workflow_module._registry.pop(name, None)

    async def body(ctx: af.Context[Count]) -> str:
        if early:
            return "early"
        try:
            await ctx.wait_until(lambda: ctx.state.n >= 1)
            return await ctx.wait_event(reply)
        except asyncio.CancelledError:
            cleanups.append(ctx.workflow_id)
            raise

    wf = af.workflow(name=name, state=Count)(body)
    if handler:

        @wf.on(bump)
        def bumped(state: Count, by: int) -> None:
            state.n += by

    return wf


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("handler removed", "event 'held.bump' was handled by a handler the code no longer has"),
        ("returns early", "the code returned after 0 calls, but the journal holds call #0 "
         "(condition 'condition') that it no longer makes"),
    ],
)  # fmt: skip
async def test_every_divergence_says_why_and_is_cancelled_without_running_code(
    db: Path, clock: af.testing.ManualClock, change: str, why: str
) -> None:
    name = "held.counting"
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(define_counting(name, handler=True), id="c1")
        await rt.send("c1", bump, 1)
        while [w.name for w in (await h.status()).waiting_on] != [reply.name]:
            await clock.advance(0)
    define_counting(name, handler=False, early=change == "returns early")
    cleanups.clear()
    async with af.Runtime(db, clock=clock) as rt:
        h = rt.handle("c1")
        with pytest.raises(af.NonDeterminismError):
            await h.result(timeout=5)
        detail = (await h.status()).detail
        assert detail is not None and why in detail, detail
        await h.cancel()
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=5)
        assert (await h.status()).state == "cancelled"
    assert cleanups == []  # its code did not run on
