"""``ctx.patched`` / ``ctx.deprecate_patch`` (DESIGN §3.3): code changed under running
instances. Old instances are started by the old code in a child process, and the file is
reopened here under the new code; markers take no call position, answer once per run,
and survive a reopen. Also ``ctx.history_length``, the same on replay as on the first run."""

from __future__ import annotations

import importlib
import inspect
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow as af

workflow_module = importlib.import_module("actorflow.workflow")  # its registry
CHILD = Path(__file__).with_name("patching_child.py")
NAME = "patching.flow"
go = af.Event("patching.go", str)


def mark(what: str) -> str:
    return what


@pytest.fixture(autouse=True)
def _registry(restore_workflow_registry: None) -> None:
    """These tests redefine their workflows."""


def define(name: str, body: Callable[..., Awaitable[Any]]) -> af.Workflow[Any]:
    """Register ``body`` as workflow ``name``, replacing older code (a deploy)."""
    workflow_module._registry.pop(name, None)
    return af.workflow(name=name)(body)


async def patched_code(ctx: af.Context[None]) -> list[object]:
    """The code with the patch: new instances run step ``new-b`` instead of ``old-b``."""
    a = await ctx.step(mark, "a", name="a")
    first = ctx.patched("x")
    if first:
        b = await ctx.step(mark, "new", name="new-b")
    else:
        b = await ctx.step(mark, "old", name="old-b")
    got = await ctx.wait_event(go)
    again = ctx.patched("x")  # the run's first answer, whatever the journal holds now
    end = "new-end" if ctx.patched("y") else "old-end"
    return [a, b, got, end, first, again]


async def deprecated_code(ctx: af.Context[None]) -> list[object]:
    """No instance predates patch ``x`` any more: only its new branch is left."""
    a = await ctx.step(mark, "a", name="a")
    ctx.deprecate_patch("x")
    b = await ctx.step(mark, "new", name="new-b")
    got = await ctx.wait_event(go)
    return [a, b, got, "deprecated"]


async def cleaned_code(ctx: af.Context[None]) -> list[object]:
    """The patch's call removed altogether."""
    a = await ctx.step(mark, "a", name="a")
    b = await ctx.step(mark, "new", name="new-b")
    got = await ctx.wait_event(go)
    return [a, b, got, "cleaned"]


def start_old_instances(db: Path, *ids: str, mode: str = "old") -> None:
    """The old code (before the patch) starts ``ids`` in another process, which parks
    them on ``go`` and exits (``mode="kill"``: the patched code, then SIGKILL)."""
    out = subprocess.run(
        [sys.executable, str(CHILD), str(db), mode, *ids],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if mode == "kill":
        assert out.returncode == -signal.SIGKILL, out.stderr
    else:
        assert out.returncode == 0 and "DONE" in out.stdout, out.stderr


async def parked(h: af.WorkflowHandle[Any]) -> af.Status:
    while (status := await h.status()).state != "waiting":
        await af.testing.ManualClock().settle()
    return status


async def test_old_instances_keep_the_old_branch_new_ones_take_the_new_one(db: Path) -> None:
    start_old_instances(db, "o1", "o2", "o3")

    wf = define(NAME, patched_code)
    async with af.Runtime(db) as rt:
        # Old: the journal went past the patch point without the marker.
        await rt.send("o1", go, "hi")
        assert await rt.handle("o1").result(timeout=5) == [
            "a", "old", "hi",
            "new-end",  # ``y`` was not reached under the old code: a fresh path
            False, False,
        ]  # fmt: skip
        assert (await rt.handle("o1").status()).detail is None
        # New: a fresh path takes the new branch, and answers the same later in the run.
        n1 = await rt.start(wf, id="n1")
        for i in ("n2", "n3", "n4"):
            await parked(await rt.start(wf, id=i))
        await rt.send("n1", go, "yo")
        assert await n1.result(timeout=5) == ["a", "new", "yo", "new-end", True, True]

    async with af.Runtime(db) as rt:  # reopened: each takes the branch it took before
        await rt.send("o2", go, "hi")
        assert (await rt.handle("o2").result(timeout=5))[1:5] == ["old", "hi", "new-end", False]
        await rt.send("n2", go, "yo")  # replayed past patched(): its marker says True
        assert await rt.handle("n2").result(timeout=5) == [
            "a", "new", "yo", "new-end", True, True,
        ]  # fmt: skip
        assert (await rt.handle("n2").status()).detail is None

    define(NAME, deprecated_code)
    async with af.Runtime(db) as rt:
        await rt.send("n3", go, "yo")  # it holds the marker: it replays
        assert await rt.handle("n3").result(timeout=5) == ["a", "new", "yo", "deprecated"]
        # Deprecated too early: an instance that took the old branch diverges, is held,
        # says where and from what to what, and can still be cancelled.
        h = rt.handle("o3")
        with pytest.raises(af.NonDeterminismError):
            await h.result(timeout=5)
        detail = (await h.status()).detail
        assert (
            detail is not None
            and ("call #1: the journal holds step 'old-b' but the code now makes step 'new-b'")
            in detail
        )
        await h.cancel()
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=5)
        assert (await h.status()).state == "cancelled"

    define(NAME, cleaned_code)
    async with af.Runtime(db) as rt:
        await rt.send("n4", go, "yo")  # its unused marker is ignored
        assert await rt.handle("n4").result(timeout=5) == ["a", "new", "yo", "cleaned"]


async def test_a_marker_committed_before_a_kill_is_recovered_from_the_log(db: Path) -> None:
    start_old_instances(db, "k1", mode="kill")  # patched: True, parked, killed
    define(NAME, patched_code)
    async with af.Runtime(db) as rt:
        await rt.send("k1", go, "back")
        result = await rt.handle("k1").result(timeout=5)
    assert result == ["a", "new", "back", "new-end", True, True]


async def test_an_instance_parked_right_at_the_patch_point_takes_the_new_branch(
    db: Path,
) -> None:
    """Nothing past the point is stored: replay reaches ``patched`` on a fresh path (while
    still replaying), records the marker and runs the new step once live."""
    ran: list[str] = []

    def new_step() -> str:
        ran.append("new")
        return "new"

    async def before(ctx: af.Context[None]) -> str:
        await ctx.step(mark, "a", name="a")
        return await ctx.wait_event(go)

    async def after(ctx: af.Context[None]) -> str:
        await ctx.step(mark, "a", name="a")
        if ctx.patched("z"):
            await ctx.step(new_step, name="z-step")
        return await ctx.wait_event(go)

    wf = define("patching.edge", before)
    async with af.Runtime(db) as rt:
        await parked(await rt.start(wf, id="e1"))
    define("patching.edge", after)
    async with af.Runtime(db) as rt:
        await rt.send("e1", go, "later")
        assert await rt.handle("e1").result(timeout=5) == "later"
    assert ran == ["new"]


async def test_deprecate_patch_accepts_histories_without_the_marker(db: Path) -> None:
    """Instances the patch found past its point would diverge; one that had not reached
    it (or started after) replays with or without the marker."""
    wf = define(NAME, cleaned_code)  # written before the patch existed, new branch only
    async with af.Runtime(db) as rt:
        await parked(await rt.start(wf, id="w1"))
    define(NAME, deprecated_code)
    async with af.Runtime(db) as rt:
        await rt.send("w1", go, "ok")
        assert await rt.handle("w1").result(timeout=5) == ["a", "new", "ok", "deprecated"]


async def test_patched_answers_once_per_run_and_takes_no_call_position(
    db: Path, clock: af.testing.ManualClock
) -> None:
    seen: list[tuple[bool, int]] = []

    async def body(ctx: af.Context[None]) -> list[object]:
        before = ctx.history_length
        answers = [ctx.patched("p") for _ in range(3)]
        seen.append((answers[0], ctx.history_length))
        assert ctx.history_length == before  # a marker takes no position
        now = ctx.now()
        got = await ctx.wait_event(go)
        return [*answers, ctx.patched("p"), got, now.isoformat()]

    wf = define("patching.once", body)
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(wf, id="p1")
        await parked(h)
    async with af.Runtime(db, clock=clock) as rt:
        await rt.send("p1", go, "x")
        result = await rt.handle("p1").result(timeout=5)
    assert result[:5] == [True, True, True, True, "x"]
    assert seen == [(True, 0), (True, 0)]  # the first run, then the replay


async def test_patched_takes_a_str() -> None:
    async def body(ctx: af.Context[None]) -> None:
        ctx.patched(1)  # type: ignore[arg-type]

    wf = define("patching.badid", body)
    async with af.Runtime(None) as rt:
        h = await rt.start(wf, id="b")
        with pytest.raises(af.WorkflowFailed, match="patch_id must be a str"):
            await h.result(timeout=5)


async def test_history_length_is_the_same_on_replay(
    db: Path, clock: af.testing.ManualClock
) -> None:
    runs: list[list[int]] = []

    async def body(ctx: af.Context[None]) -> list[int]:
        lengths = [ctx.history_length]
        runs.append(lengths)  # seen from outside: the first run, then each replay
        await ctx.step(mark, "a", name="a")
        lengths.append(ctx.history_length)
        ctx.uuid4()
        ctx.patched("h")
        lengths.append(ctx.history_length)
        await ctx.sleep(5)  # a deadline and a timer
        lengths.append(ctx.history_length)
        await ctx.wait_event(go)
        lengths.append(ctx.history_length)
        await ctx.wait_event(go, timeout=60)  # a wait and its deadline
        lengths.append(ctx.history_length)
        return lengths

    wf = define("patching.length", body)
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(wf, id="l1")
        await clock.advance(5)
        await parked(h)
        await rt.send("l1", go, "one")
        await parked(h)
    async with af.Runtime(db, clock=clock) as rt:
        await rt.send("l1", go, "two")
        result = await rt.handle("l1").result(timeout=5)
    assert result == [0, 1, 2, 4, 5, 7]
    first, replay = runs
    assert first == [0, 1, 2, 4, 5] and replay == result


# -- every call kind inserted, removed or reordered is found on replay -------------------
kev = af.Event("patching.k", str)
Snippet = Callable[[af.Context[None]], object]


def ready() -> bool:
    return True


async def make_token(ctx: af.Context[None]) -> None:
    await ctx.create_event(kev)


DEADLINE = "deadline 'deadline' (of a sleep or a timeout)"
CALLS: dict[str, tuple[Snippet, str]] = {
    # kind: (the call, as the journal and the detail name it at its first position)
    "step": (lambda ctx: ctx.step(mark, "k", name="k.step"), "step 'k.step'"),
    "event": (lambda ctx: ctx.wait_event(kev), "event 'patching.k'"),
    "sleep": (lambda ctx: ctx.sleep(5), DEADLINE),  # its deadline, then timer
    "condition": (lambda ctx: ctx.wait_until(ready), "condition 'condition'"),
    "query": (lambda ctx: ctx.wait_for(ready, name="k.query"), "query 'k.query'"),
    "now": (lambda ctx: ctx.now(), "now 'now'"),
    "random": (lambda ctx: ctx.random(), "random 'random'"),
    "uuid4": (lambda ctx: ctx.uuid4(), "uuid4 'uuid4'"),
    "token": (make_token, "create_event 'patching.k'"),
    "timeout": (lambda ctx: ctx.wait_until(ready, timeout=60), "condition 'condition'"),
}
A = (lambda ctx: ctx.step(mark, "a", name="fill.a"), "step 'fill.a'")
B = (lambda ctx: ctx.step(mark, "b", name="fill.b"), "step 'fill.b'")
UNTIMED = (lambda ctx: ctx.wait_until(ready), "condition 'condition'")
TIMED = (lambda ctx: ctx.wait_until(ready, timeout=60), DEADLINE)


def diverged_at(seq: int, held: tuple[Snippet, str], made: tuple[Snippet, str]) -> str:
    return f"call #{seq}: the journal holds {held[1]} but the code now makes {made[1]}"


def mutations() -> list[Any]:
    """``(old script, new script, the detail's divergence)`` for each call kind."""
    cases = []
    for kind, k in CALLS.items():
        cases += [
            pytest.param([A, B], [A, k, B], diverged_at(1, B, k), id=f"{kind}-inserted"),
            pytest.param([A, k, B], [A, B], diverged_at(1, k, B), id=f"{kind}-removed"),
            pytest.param([A, k, B], [k, A, B], diverged_at(0, A, k), id=f"{kind}-reordered"),
        ]
    # A wait's timeout is a call of its own (its deadline, after the wait's position).
    added, dropped = diverged_at(2, B, TIMED), diverged_at(2, TIMED, B)
    cases += [
        pytest.param([A, UNTIMED, B], [A, TIMED, B], added, id="timeout-added"),
        pytest.param([A, TIMED, B], [A, UNTIMED, B], dropped, id="timeout-dropped"),
    ]
    return cases


def scripted(script: list[tuple[Snippet, str]]) -> Callable[..., Awaitable[str]]:
    """A workflow body making the calls of ``script`` in order, then waiting for ``go``."""

    async def body(ctx: af.Context[None]) -> str:
        for call, _ in script:
            made = call(ctx)
            if inspect.isawaitable(made):
                await made
        return await ctx.wait_event(go)

    return body


@pytest.mark.parametrize(("old", "new", "diverged"), mutations())
async def test_a_changed_call_is_held_naming_it_and_can_be_cancelled(
    db: Path,
    clock: af.testing.ManualClock,
    request: pytest.FixtureRequest,
    old: list[tuple[Snippet, str]],
    new: list[tuple[Snippet, str]],
    diverged: str,
) -> None:
    name = f"patching.table.{request.node.callspec.id}"
    wf = define(name, scripted(old))
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(wf, id="t")
        await rt.send("t", kev, "k")  # for an event wait (else left in the mailbox)
        while [w.name for w in (await h.status()).waiting_on] != [go.name]:
            assert (await h.status()).state in ("running", "waiting")
            await clock.advance(5)  # for a sleep

    define(name, scripted(new))
    async with af.Runtime(db, clock=clock) as rt:
        h = rt.handle("t")
        with pytest.raises(af.NonDeterminismError):
            await h.result(timeout=5)
        status = await h.status()
        assert status.detail is not None and diverged in status.detail, status.detail
        assert status.state == "waiting"
        await h.cancel()
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=5)
        assert (await h.status()).state == "cancelled"
