"""Steps while closing, overlapping attempts, a step's own CancelledError, stable names.

Regressions for: a graceful close (``async with`` exit, Ctrl-C) re-running steps that
finished in the grace; timed-out sync attempts overlapping; attempts going on after a
cancel; a step raising ``CancelledError`` leaving its instance running forever; a
``functools.partial`` step named by its memory address.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import actorflow as af
import actorflow.host.executor as executor_module
from actorflow.records import Outcome, Started
from actorflow.store import SQLiteStore

Make = Callable[..., af.Runtime]
Clock = af.testing.ManualClock

go = af.Event("stepreg.go")


async def until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait (polling, real time) until ``predicate()``: for work running in threads."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


class Gate:
    """A sync step's side: counts runs, says when one began, holds it until released."""

    def __init__(self) -> None:
        self.runs = 0
        self.finished = 0
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, label: str) -> str:
        self.runs += 1
        self.started.set()
        assert self.release.wait(10), "the test never released the step"
        self.finished += 1
        return f"{label}:{self.runs}"


# -- 1. closing -------------------------------------------------------------------------
gate = Gate()


def held_step(label: str) -> str:
    return gate(label)


@af.workflow(name="stepreg.close_in_grace")
async def close_in_grace(ctx: af.Context[None]) -> str:
    first = await ctx.step(held_step, "a")
    await ctx.wait_event(go)
    return first


async def release_once_closing(rt: af.Runtime) -> None:
    await until(lambda: rt.closed)
    await asyncio.sleep(0.01)
    gate.release.set()


async def test_a_step_finishing_in_the_grace_of_a_close_is_stored_and_not_run_again(
    db: Path, clock: Clock
) -> None:
    global gate
    gate = Gate()
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(close_in_grace, id="grace")
        await until(gate.started.is_set)
        releasing = asyncio.ensure_future(release_once_closing(rt))
    # Leaving the block closed the runtime while the step ran, then released it.
    assert releasing.done()
    assert gate.finished == 1  # close returned after the step's code ended
    async with af.Runtime(db, clock=clock) as rt:
        await rt.send("grace", go)
        assert await rt.handle("grace").result(timeout=5) == "a:1"
    assert gate.runs == 1


sleeper_runs: list[str] = []


def after_sleep_step(who: str) -> str:
    sleeper_runs.append(who)
    return who


@af.workflow(name="stepreg.sleeper")
async def sleeper(ctx: af.Context[None]) -> str:
    await ctx.sleep(10)
    return await ctx.step(after_sleep_step, ctx.workflow_id)


async def test_a_timer_firing_in_the_grace_starts_no_step(db: Path, clock: Clock) -> None:
    global gate
    gate = Gate()
    sleeper_runs.clear()
    rt = af.Runtime(db, clock=clock)
    await rt.open()
    await rt.start(close_in_grace, id="busy")
    await rt.start(sleeper, id="sleepy")
    await until(gate.started.is_set)
    await clock.advance(0)
    closing = asyncio.ensure_future(rt.close())
    await asyncio.sleep(0.01)
    await clock.advance(10)  # the sleep ends while the runtime closes
    with contextlib.suppress(AssertionError):  # time for a (wrongly) started step to run
        await until(lambda: bool(sleeper_runs), 0.5)
    gate.release.set()
    await closing
    await asyncio.sleep(0.1)
    assert sleeper_runs == []  # no step started once closing began
    async with af.Runtime(db, clock=clock) as rt:
        assert await rt.handle("sleepy").result(timeout=5) == "sleepy"
    assert sleeper_runs == ["sleepy"]


async def test_a_sync_step_past_the_grace_is_abandoned_named_and_never_stored(
    db: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    global gate
    gate = Gate()
    monkeypatch.setattr(executor_module, "STEP_GRACE", 0.05)
    caplog.set_level(logging.WARNING, logger="actorflow")
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(close_in_grace, id="slow")
        await until(gate.started.is_set)
    assert "step.abandoned" in caplog.text
    assert f"{__name__}.held_step" in caplog.text
    gate.release.set()  # the abandoned attempt ends now: its result must not be stored
    await until(lambda: gate.finished == 1)
    async with af.Runtime(db, clock=clock) as rt:
        await until(lambda: gate.runs == 2)
        await rt.send("slow", go)
        assert await rt.handle("slow").result(timeout=5) == "a:2"


CTRL_C_CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    import actorflow as af

    db, marker = sys.argv[1], Path(sys.argv[2])

    def slow_side_effect() -> int:
        with open(marker, "a") as f:
            f.write("run\\n")
        time.sleep(0.3)
        return len(marker.read_text().splitlines())

    @af.workflow(name="stepreg.ctrl_c")
    async def flow(ctx: af.Context[None]) -> int:
        return await ctx.step(slow_side_effect)

    async def main() -> None:
        async with af.Runtime(db) as rt:
            h = await rt.start(flow, id="ctrl-c")
            print("RESULT", await h.result(), flush=True)

    asyncio.run(main())
    """
)


def test_ctrl_c_during_a_sync_step_stores_its_result(tmp_path: Path) -> None:
    db, marker = tmp_path / "ctrl_c.db", tmp_path / "runs.log"
    command = [sys.executable, "-c", CTRL_C_CHILD, str(db), str(marker)]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=interruptible,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not (marker.exists() and marker.read_text()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the child never ran its step"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert "RESULT" not in out
    assert "KeyboardInterrupt" in err or proc.returncode != 0
    again = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert again.returncode == 0, again.stderr
    assert "RESULT 1" in again.stdout
    assert marker.read_text().splitlines() == ["run"]  # the step ran exactly once


# -- 2. attempts ------------------------------------------------------------------------
class Overlap:
    """Counts the attempts running at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.runs = 0

    def __call__(self) -> str:
        with self.lock:
            self.now += 1
            self.runs += 1
            self.most = max(self.most, self.now)
        time.sleep(0.15)
        with self.lock:
            self.now -= 1
        return "late"


overlap = Overlap()


def slow_attempt() -> str:
    return overlap()


@af.workflow(name="stepreg.timeouts")
async def timeouts(ctx: af.Context[None]) -> str:
    try:
        await ctx.step(slow_attempt, timeout=0.03, retry=af.Retry(attempts=3, initial=0))
    except af.StepFailed as e:
        return e.error_type
    return "finished?"


async def test_timed_out_sync_attempts_never_overlap(runtime: Make) -> None:
    global overlap
    overlap = Overlap()
    async with runtime() as rt:
        h = await rt.start(timeouts)
        assert await h.result(timeout=10) == "TimeoutError"
    assert overlap.runs == 3
    assert overlap.most == 1


charges: list[int] = []
refunds: list[int] = []


def charge() -> None:
    charges.append(1)
    raise ConnectionError("payment service down")


def refund() -> None:
    refunds.append(1)


@af.workflow(name="stepreg.charge")
async def charging(ctx: af.Context[None]) -> None:
    try:
        await ctx.step(charge, retry=af.Retry(attempts=6, initial=1.0, backoff=1.0))
    except asyncio.CancelledError:
        await ctx.step(refund)
        raise


async def test_no_attempt_starts_once_the_instance_is_cancelled(
    runtime: Make, clock: Clock
) -> None:
    charges.clear()
    refunds.clear()
    async with runtime() as rt:
        h = await rt.start(charging)
        await until(lambda: len(charges) == 1)
        await clock.advance(0)
        await h.cancel()
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=5)
        for _ in range(6):
            await clock.advance(1.0)
        assert refunds == [1]
        assert charges == [1]
        assert (await h.status()).state == "cancelled"


# -- 3. a step's own CancelledError -------------------------------------------------------
cancelled_runs: list[str] = []


async def awaits_a_cancelled_task() -> None:
    cancelled_runs.append("async")
    task = asyncio.ensure_future(asyncio.sleep(10))
    await asyncio.sleep(0)
    task.cancel()
    await task


def raises_cancelled_in_a_thread() -> None:
    cancelled_runs.append("sync")
    raise asyncio.CancelledError()


@af.workflow(name="stepreg.own_cancel")
async def own_cancel(ctx: af.Context[None], sync: bool, timeout: float | None) -> str:
    fn = raises_cancelled_in_a_thread if sync else awaits_a_cancelled_task
    try:
        await ctx.step(fn, retry=af.Retry(attempts=3, initial=0), timeout=timeout)
    except af.StepFailed as e:
        return e.error_type
    return "finished?"


@pytest.mark.parametrize("sync", [False, True])
@pytest.mark.parametrize("timeout", [None, 5.0])
async def test_a_step_raising_cancelled_error_fails_and_is_retried(
    runtime: Make, sync: bool, timeout: float | None
) -> None:
    cancelled_runs.clear()
    async with runtime() as rt:
        h = await rt.start(own_cancel, sync, timeout)
        assert await h.result(timeout=5) == "CancelledError"
    assert len(cancelled_runs) == 3


# -- 4. names ---------------------------------------------------------------------------
def add(a: int, b: int) -> int:
    return a + b


kept: list[Any] = []  # every closure made stays alive: no address is reused by a new one


def fresh_add() -> Callable[[int, int], int]:
    def adder(a: int, b: int) -> int:
        return a + b

    kept.append(adder)
    return adder


def ready(value: int) -> int:
    return value


@af.workflow(name="stepreg.partials")
async def partials(ctx: af.Context[None]) -> list[int]:
    a = await ctx.step(functools.partial(add, 1), 2)
    b = await ctx.step(functools.partial(fresh_add(), 10), 5)
    c = await ctx.wait_for(functools.partial(ready, 7))
    await ctx.wait_event(go)
    return [a, b, c]


async def test_a_partial_step_and_query_keep_their_name_across_a_restart(
    db: Path, clock: Clock
) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(partials, id="p")
        await clock.advance(0)
        await until(lambda: rt.idle)
        assert (await h.status()).waiting_on == [af.Wait("event", go.name, None, None)]
    async with af.Runtime(db, clock=clock) as rt:  # replays with new partial objects
        await rt.send("p", go)
        assert await rt.handle("p").result(timeout=5) == [3, 15, 7]
        assert (await rt.handle("p").status()).detail is None


class Charger:
    def __call__(self, amount: int) -> int:
        return amount


@af.workflow(name="stepreg.instance_step")
async def instance_step(ctx: af.Context[None], named: bool) -> str:
    try:
        if named:
            return str(await ctx.step(Charger(), 5, name="charger"))
        return str(await ctx.step(Charger(), 5))
    except TypeError as e:
        assert isinstance(e, af.ActorflowError)
        return "needs a name"


@af.workflow(name="stepreg.instance_query")
async def instance_query(ctx: af.Context[None], named: bool) -> str:
    try:
        if named:
            return str(await ctx.wait_for(Charger(), 6, name="charger"))
        return str(await ctx.wait_for(Charger(), 6))
    except TypeError as e:
        assert isinstance(e, af.ActorflowError)
        return "needs a name"


async def test_a_callable_without_a_stable_name_needs_name(runtime: Make) -> None:
    async with runtime() as rt:
        assert await (await rt.start(instance_step, False)).result(timeout=5) == "needs a name"
        assert await (await rt.start(instance_step, True)).result(timeout=5) == "5"
        assert await (await rt.start(instance_query, False)).result(timeout=5) == "needs a name"
        assert await (await rt.start(instance_query, True)).result(timeout=5) == "6"


def failing() -> None:
    raise ValueError("no")


@af.workflow(name="stepreg.named")
async def named(ctx: af.Context[None]) -> list[str]:
    names = []
    for fn in (failing, functools.partial(failing), lambda: failing()):
        try:
            await ctx.step(fn)
        except af.StepFailed as e:
            names.append(e.step)
    return names


async def test_the_default_name_is_module_and_qualified_name(runtime: Make) -> None:
    async with runtime() as rt:
        h = await rt.start(named)
        assert await h.result(timeout=5) == [
            f"{__name__}.failing",
            f"{__name__}.failing",
            f"{__name__}.named.<locals>.<lambda>",
        ]


@af.workflow(name="stepreg.legacy")
async def legacy(ctx: af.Context[None]) -> list[int]:
    a = await ctx.step(add, 1, 2)
    b = await ctx.step(functools.partial(add, 5), 5)
    await ctx.wait_event(go)
    return [a, b]


async def test_a_history_written_with_old_step_names_still_replays(db: Path, clock: Clock) -> None:
    encode = msgspec.msgpack.encode
    store = SQLiteStore(db)
    await store.open()
    now = clock.now()
    old_partial = f"functools.partial(<function add at 0x{id(add):x}>, 5)"
    await store.write(
        [
            Started("old", "stepreg.legacy", [], now),
            Outcome("old", 0, "step", "add", now, value=encode(3)),  # a bare qualified name
            Outcome("old", 1, "step", old_partial, now, value=encode(10)),
        ]
    )
    await store.close()
    async with af.Runtime(db, clock=clock) as rt:
        await rt.send("old", go)
        assert await rt.handle("old").result(timeout=5) == [3, 10]


async def test_a_different_step_still_diverges(db: Path, clock: Clock) -> None:
    encode = msgspec.msgpack.encode
    store = SQLiteStore(db)
    await store.open()
    now = clock.now()
    await store.write(
        [
            Started("other", "stepreg.legacy", [], now),
            Outcome("other", 0, "step", "subtract", now, value=encode(3)),
        ]
    )
    await store.close()
    async with af.Runtime(db, clock=clock) as rt:
        await clock.advance(0)
        status = await rt.handle("other").status()
        assert status.detail is not None and "subtract" in status.detail


@af.workflow(name="stepreg.charge_later")
async def charging_later(ctx: af.Context[None]) -> None:
    await ctx.step(charge, retry=af.Retry(attempts=6, initial=1000.0))


async def test_a_cancel_ends_the_wait_between_attempts(db: Path, clock: Clock) -> None:
    charges.clear()
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(charging_later, id="later")
        await until(lambda: len(charges) == 1)
        await clock.advance(0)
        await h.cancel()  # no clock advance: the step stops waiting for its next attempt
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=5)
        # The step is over, with no clock advance.
        await until(lambda: rt._executor.running_steps == 0)
        await clock.advance(5000)
    assert charges == [1]


retried: list[int] = []


def fails_once() -> int:
    retried.append(1)
    if len(retried) == 1:
        raise ConnectionError("once")
    return len(retried)


@af.workflow(name="stepreg.retry_across_close")
async def retry_across_close(ctx: af.Context[None]) -> int:
    return await ctx.step(fails_once, retry=af.Retry(attempts=3, initial=10.0))


async def test_closing_between_attempts_starts_no_attempt(db: Path, clock: Clock) -> None:
    retried.clear()
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(retry_across_close, id="rc")
        await until(lambda: len(retried) == 1)
        await clock.advance(0)
    assert retried == [1]
    async with af.Runtime(db, clock=clock) as rt:
        assert await rt.handle("rc").result(timeout=5) == 2


async def test_cancelling_the_main_task_stores_the_step_in_flight(db: Path, clock: Clock) -> None:
    global gate
    gate = Gate()

    async def main() -> None:
        async with af.Runtime(db, clock=clock) as rt:
            await rt.start(close_in_grace, id="main")
            await asyncio.Event().wait()

    task = asyncio.ensure_future(main())
    await until(gate.started.is_set)
    task.cancel()  # as asyncio.run does on Ctrl-C
    await asyncio.sleep(0.02)
    gate.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.finished == 1
    async with af.Runtime(db, clock=clock) as rt:
        await rt.send("main", go)
        assert await rt.handle("main").result(timeout=5) == "a:1"
    assert gate.runs == 1


def interruptible() -> None:
    """In the child: Ctrl-C is KeyboardInterrupt even when the tests run where SIGINT is
    ignored (a background job), which the child would otherwise inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
