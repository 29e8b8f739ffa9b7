"""Durable timers and timeouts: sleep, sleep_until, deterministic values, timeouts on
every wait, the mailbox after a timeout, and all of it across close + reopen and a
real kill -9. Time moves only through :class:`af.testing.ManualClock`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest

import actorflow as af

Make = Callable[..., af.Runtime]
Clock = af.testing.ManualClock

ping = af.Event("td.ping", int)
go = af.Event("td.go")


bump = af.Event("td.bump", int)
executions: list[str] = []


def effect(name: str) -> str:
    executions.append(name)
    return name


def at(clock: Clock, offset: float = 0.0) -> datetime:
    """The clock's time plus ``offset`` seconds, as the API returns times."""
    return datetime.fromtimestamp(clock.now() + offset, UTC)


async def state_of(h: af.Handle[Any]) -> str:
    return (await h.status()).state


# -- sleep ---------------------------------------------------------------------------


@af.workflow(name="td.sleeper")
async def sleeper(ctx: af.Context[None], delay: float) -> float:
    before = ctx.now()
    await ctx.step(effect, f"before:{ctx.workflow_id}")
    await ctx.sleep(delay)
    return (ctx.now() - before).total_seconds()


async def test_sleep_fires_when_the_clock_reaches_the_deadline(runtime: Make, clock: Clock) -> None:
    async with runtime() as rt:
        h = await rt.start(sleeper, 60.0)
        await clock.advance(0)
        st = await h.status()
        assert st.state == "waiting"
        assert st.waiting_on == [af.Wait("timer", None, None, at(clock, 60))]
        await clock.advance(59.9)
        assert await state_of(h) == "waiting"
        await clock.advance(0.1)
        assert await state_of(h) == "completed"
        assert await h.result(timeout=1) == 60.0


async def test_sleep_takes_a_timedelta_and_zero(runtime: Make, clock: Clock) -> None:
    @af.workflow(name="td.sleep_kinds")
    async def kinds(ctx: af.Context[None]) -> list[float]:
        t0 = ctx.now()
        await ctx.sleep(timedelta(minutes=2))
        t1 = ctx.now()
        await ctx.sleep(0)
        t2 = ctx.now()
        return [(t1 - t0).total_seconds(), (t2 - t1).total_seconds()]

    async with runtime() as rt:
        h = await rt.start(kinds)
        await clock.advance(119)
        assert await state_of(h) == "waiting"
        await clock.advance(1)
        assert await h.result(timeout=1) == [120.0, 0.0]


async def test_sleep_rejects_bad_durations(runtime: Make, clock: Clock) -> None:
    @af.workflow(name="td.bad_sleep")
    async def bad(ctx: af.Context[None]) -> list[str]:
        seen = []
        for arg in ("10", None):
            try:
                await ctx.sleep(arg)  # type: ignore[arg-type]
            except TypeError as e:
                seen.append(type(e).__name__)
        try:
            await ctx.sleep_until(datetime(2030, 1, 1))  # naive
        except ValueError:
            seen.append("naive")
        return seen

    async with runtime() as rt:
        h = await rt.start(bad)
        await clock.advance(0)
        assert await h.result(timeout=1) == ["TypeError", "TypeError", "naive"]


async def test_sleep_until_an_aware_datetime(runtime: Make, clock: Clock) -> None:
    @af.workflow(name="td.until")
    async def until(ctx: af.Context[None], when: datetime) -> datetime:
        await ctx.sleep_until(when)
        return ctx.now()

    async with runtime() as rt:
        target = at(clock, 3600).astimezone(timezone(timedelta(hours=2)))
        h = await rt.start(until, target)
        await clock.advance(0)
        assert (await h.status()).waiting_on[0].deadline == target
        await clock.advance(3599)
        assert await state_of(h) == "waiting"
        await clock.advance(1)
        assert await h.result(timeout=1) == target


async def test_sleep_until_the_past_fires_at_once(runtime: Make, clock: Clock) -> None:
    @af.workflow(name="td.past")
    async def past(ctx: af.Context[None], when: datetime) -> str:
        await ctx.sleep_until(when)
        return "woke"

    async with runtime() as rt:
        h = await rt.start(past, at(clock, -86400))
        await clock.advance(0)
        assert await h.result(timeout=1) == "woke"


async def test_many_sleeps_fire_in_deadline_order(runtime: Make, clock: Clock) -> None:
    order: list[int] = []

    @af.workflow(name="td.order")
    async def ordered(ctx: af.Context[None], delay: int) -> None:
        await ctx.sleep(delay)
        order.append(delay)

    async with runtime() as rt:
        delays = [50, 10, 40, 20, 30]
        handles = [await rt.start(ordered, d) for d in delays]
        await clock.advance(25)
        assert order == [10, 20]
        await clock.advance(25)
        assert order == [10, 20, 30, 40, 50]
        for h in handles:
            await h.result(timeout=1)


# -- sleep across restarts -----------------------------------------------------------


async def test_sleep_not_yet_due_after_restart_fires_on_time(db: Path, clock: Clock) -> None:
    executions.clear()
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(sleeper, 60.0, id="s1")
        await clock.advance(10)
        deadline = (await h.status()).waiting_on[0].deadline
        assert deadline == at(clock, 50)
    async with af.Runtime(db, clock=clock) as rt:
        h = rt.handle("s1")
        await clock.advance(0)
        st = await h.status()
        assert st.state == "waiting"
        assert st.waiting_on == [af.Wait("timer", None, None, deadline)]
        await clock.advance(49.5)
        assert await state_of(h) == "waiting"
        await clock.advance(0.5)
        assert await h.result(timeout=1) == 60.0
    assert executions == ["before:s1"]  # the step before the sleep did not run again


async def test_overdue_sleep_fires_at_once_after_restart(db: Path, clock: Clock) -> None:
    executions.clear()
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(sleeper, 60.0, id="s2")
        await clock.advance(1)
    await clock.advance(3600)  # the process is down past the deadline
    async with af.Runtime(db, clock=clock) as rt:
        await clock.settle()
        h = rt.handle("s2")
        assert await state_of(h) == "completed"
        # the timer fired when the runtime reopened: 3601 s after it started
        assert await h.result() == 3601.0
    assert executions == ["before:s2"]


async def test_sleep_survives_several_restarts(db: Path, clock: Clock) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(sleeper, 100.0, id="s3")
        await clock.advance(30)
    for _ in range(3):
        async with af.Runtime(db, clock=clock) as rt:
            await clock.advance(20)
            assert await state_of(rt.handle("s3")) == "waiting"
    async with af.Runtime(db, clock=clock) as rt:
        await clock.advance(10)
        assert await rt.handle("s3").result(timeout=1) == 100.0


async def test_sleep_in_a_loop_resumes_at_the_right_iteration(db: Path, clock: Clock) -> None:
    @af.workflow(name="td.loop")
    async def looping(ctx: af.Context[None]) -> list[str]:
        ticks = []
        for i in range(5):
            await ctx.sleep(10)
            ticks.append(f"{i}@{ctx.now():%M:%S}")
        return ticks

    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(looping, id="loop")
        await clock.advance(25)
    async with af.Runtime(db, clock=clock) as rt:
        await clock.advance(5)  # deadline of iteration 2 (t=30)
        await clock.advance(20)
        h = rt.handle("loop")
        assert await h.result(timeout=1) == ["0@00:10", "1@00:20", "2@00:30", "3@00:40", "4@00:50"]


# -- deterministic values --------------------------------------------------------------


seen_values: list[tuple[str, ...]] = []


@af.workflow(name="td.values")
async def values(ctx: af.Context[None]) -> list[str]:
    first = (str(ctx.now()), repr(ctx.random()), str(ctx.uuid4()))
    seen_values.append(first)
    await ctx.sleep(30)
    second = (str(ctx.now()), repr(ctx.random()), str(ctx.uuid4()))
    seen_values.append(second)
    await ctx.wait_event(go)
    return [*first, *second, str(ctx.now())]


async def test_now_random_uuid4_are_the_same_on_replay(db: Path, clock: Clock) -> None:
    seen_values.clear()
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(values, id="v")
        await clock.advance(30)
        assert len(seen_values) == 2
        t_start, t_after = seen_values
        assert t_start[0] == str(at(clock, -30)) and t_after[0] == str(at(clock))
        assert t_start[1:] != t_after[1:]
    await clock.advance(500)
    async with af.Runtime(db, clock=clock) as rt:
        await clock.settle()
        assert seen_values[2:] == []  # parked: not replayed until it has work
        await rt.send("v", go)
        result = await rt.handle("v").result(timeout=1)
        # replay ran the code again: it saw exactly the recorded values, not new ones
        assert seen_values[2:] == [t_start, t_after]
    assert result[:6] == [*t_start, *t_after]
    assert result[6] == str(at(clock))


async def test_now_is_aware_utc_and_follows_the_clock(runtime: Make, clock: Clock) -> None:
    @af.workflow(name="td.now")
    async def now(ctx: af.Context[None]) -> list[str]:
        a = ctx.now()
        assert a.tzinfo is not None and a.utcoffset() == timedelta(0)
        await ctx.sleep(timedelta(hours=1))
        return [a.isoformat(), ctx.now().isoformat()]

    async with runtime() as rt:
        start = at(clock)
        h = await rt.start(now)
        await clock.advance(timedelta(hours=1))
        assert await h.result(timeout=1) == [
            start.isoformat(),
            (start + timedelta(hours=1)).isoformat(),
        ]


# -- timeouts --------------------------------------------------------------------------


@af.workflow(name="td.timeout_then_wait")
async def timeout_then_wait(ctx: af.Context[None], limit: float) -> list[Any]:
    seen: list[Any] = []
    try:
        seen.append(await ctx.wait_event(ping, timeout=limit))
    except af.WaitTimeout as e:
        assert isinstance(e, TimeoutError)
        seen.append(f"timeout at {ctx.now():%H:%M:%S}")
    await ctx.sleep(100)
    seen.append(await ctx.wait_event(ping))
    return seen


async def test_wait_event_timeout_raises_wait_timeout_inside(runtime: Make, clock: Clock) -> None:
    async with runtime() as rt:
        h = await rt.start(timeout_then_wait, 30.0)
        await clock.advance(0)
        [wait] = (await h.status()).waiting_on
        assert wait == af.Wait("event", "td.ping", None, at(clock, 30))
        await clock.advance(29)
        assert (await h.status()).waiting_on[0].kind == "event"
        await clock.advance(1)
        assert (await h.status()).waiting_on[0].kind == "timer"
        await clock.advance(100)
        await rt.send(h.id, ping, 5)
        assert await h.result(timeout=1) == ["timeout at 00:00:30", 5]


async def test_event_arriving_after_a_timeout_stays_in_the_mailbox(
    runtime: Make, clock: Clock
) -> None:
    async with runtime() as rt:
        h = await rt.start(timeout_then_wait, timedelta(seconds=30).total_seconds())
        await clock.advance(30)
        await rt.send(h.id, ping, 7)  # the wait timed out; the workflow sleeps
        await clock.advance(50)
        [event] = (await h.status()).events
        assert event.consumed_at is None
        await clock.advance(50)
        assert await h.result(timeout=1) == ["timeout at 00:00:30", 7]
        [event] = (await h.status()).events
        assert event.consumed_at == at(clock)


async def test_event_before_the_timeout_wins_and_the_timer_is_dropped(
    runtime: Make, clock: Clock
) -> None:
    async with runtime() as rt:
        h = await rt.start(timeout_then_wait, 30.0)
        await clock.advance(10)
        await rt.send(h.id, ping, 1)
        await clock.advance(0)
        assert [w.kind for w in (await h.status()).waiting_on] == ["timer"]
        await clock.advance(30)  # past the old deadline: nothing happens
        await clock.advance(70)
        await rt.send(h.id, ping, 2)
        assert await h.result(timeout=1) == [1, 2]


async def test_timeout_takes_a_timedelta(runtime: Make, clock: Clock) -> None:
    @af.workflow(name="td.timedelta_timeout")
    async def td_timeout(ctx: af.Context[None]) -> str:
        try:
            await ctx.wait_event(go, timeout=timedelta(days=7))
        except af.WaitTimeout:
            return "expired"
        return "went"

    async with runtime() as rt:
        h = await rt.start(td_timeout)
        await clock.advance(timedelta(days=7) - timedelta(seconds=1))
        assert await state_of(h) == "waiting"
        await clock.advance(1)
        assert await h.result(timeout=1) == "expired"


async def test_uncaught_timeout_fails_the_workflow(runtime: Make, clock: Clock) -> None:
    @af.workflow(name="td.uncaught")
    async def uncaught(ctx: af.Context[None]) -> None:
        await ctx.wait_event(go, timeout=5)

    async with runtime() as rt:
        h = await rt.start(uncaught)
        await clock.advance(5)
        with pytest.raises(af.WorkflowFailed) as info:
            await h.result(timeout=1)
        assert info.value.error_type == "WaitTimeout"
        assert (await h.status()).state == "failed"


class Counter(msgspec.Struct):
    n: int = 0


@af.workflow(name="td.cond_timeout", state=Counter)
async def cond_timeout(ctx: af.Context[Counter]) -> list[str]:
    seen = []
    try:
        await ctx.wait_until(lambda: ctx.state.n >= 3, timeout=20)
        seen.append("met")
    except af.WaitTimeout:
        seen.append(f"timeout n={ctx.state.n}")
    await ctx.wait_until(lambda: ctx.state.n >= 3)
    seen.append(f"met n={ctx.state.n}")
    return seen


@cond_timeout.on(bump)
def _count(state: Counter, by: int) -> None:
    state.n += by


async def test_wait_until_timeout(runtime: Make, clock: Clock) -> None:
    async with runtime() as rt:
        h = await rt.start(cond_timeout)
        await rt.send(h.id, bump, 1)
        await clock.advance(0)
        assert (await h.status()).waiting_on == [
            af.Wait("condition", "condition", None, at(clock, 20))
        ]
        await clock.advance(20)
        assert (await h.status()).waiting_on == [af.Wait("condition", "condition", None, None)]
        await rt.send(h.id, bump, 2)
        assert await h.result(timeout=1) == ["timeout n=1", "met n=3"]


source: dict[str, int] = {}
query_calls: list[str] = []


def read_source(key: str) -> int:
    query_calls.append(key)
    return source.get(key, 0)


@af.workflow(name="td.query_timeout")
async def query_timeout(ctx: af.Context[None], key: str) -> list[Any]:
    seen: list[Any] = []
    try:
        seen.append(await ctx.wait_for(read_source, key, on="td.src", timeout=15))
    except af.WaitTimeout:
        seen.append("timeout")
    seen.append(await ctx.wait_for(read_source, key, on="td.src"))
    return seen


async def test_wait_for_timeout(runtime: Make, clock: Clock) -> None:
    source.clear()
    query_calls.clear()
    async with runtime() as rt:
        h = await rt.start(query_timeout, "k1")
        await clock.advance(0)
        assert (await h.status()).waiting_on == [
            af.Wait("query", f"{__name__}.{read_source.__qualname__}", None, at(clock, 15))
        ]
        await clock.advance(15)
        n = len(query_calls)
        await rt.notify("td.src")  # the second wait listens; the first is gone
        assert len(query_calls) == n + 1
        source["k1"] = 9
        await rt.notify("td.src")
        assert await h.result(timeout=1) == ["timeout", 9]


async def test_timeouts_of_gathered_waits_fire_separately(runtime: Make, clock: Clock) -> None:
    @af.workflow(name="td.gather_timeouts")
    async def gathered(ctx: af.Context[None]) -> list[Any]:
        async def guarded(limit: float) -> Any:
            try:
                return await ctx.wait_event(ping, timeout=limit)
            except af.WaitTimeout:
                return f"timeout {limit}"

        return list(await asyncio.gather(guarded(10), guarded(20), guarded(30)))

    async with runtime() as rt:
        h = await rt.start(gathered)
        await clock.advance(15)
        await rt.send(h.id, ping, 1)  # the first timed out: the oldest live wait takes it
        await clock.advance(100)
        assert await h.result(timeout=1) == ["timeout 10", 1, "timeout 30"]


# -- timeouts across restarts ---------------------------------------------------------


async def test_timeout_not_yet_due_after_restart(db: Path, clock: Clock) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(timeout_then_wait, 30.0, id="t1")
        await clock.advance(10)
    async with af.Runtime(db, clock=clock) as rt:
        h = rt.handle("t1")
        await clock.advance(0)
        assert (await h.status()).waiting_on == [af.Wait("event", "td.ping", None, at(clock, 20))]
        await clock.advance(19)
        assert (await h.status()).waiting_on[0].kind == "event"
        await clock.advance(1)
        assert (await h.status()).waiting_on == [af.Wait("timer", None, None, at(clock, 100))]
    async with af.Runtime(db, clock=clock) as rt:
        await clock.advance(100)
        await rt.send("t1", ping, 3)
        assert await rt.handle("t1").result(timeout=1) == ["timeout at 00:00:30", 3]


async def test_overdue_timeout_fires_at_once_after_restart(db: Path, clock: Clock) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(timeout_then_wait, 30.0, id="t2")
        await clock.advance(1)
    await clock.advance(59)
    async with af.Runtime(db, clock=clock) as rt:
        await clock.settle()
        h = rt.handle("t2")
        # timed out at the reopen (t=60), then the 100 s sleep began
        assert (await h.status()).waiting_on == [af.Wait("timer", None, None, at(clock, 100))]
        await rt.send("t2", ping, 4)  # buffered during the sleep
        await clock.advance(100)
        assert await h.result(timeout=1) == ["timeout at 00:01:00", 4]


async def test_event_after_restart_beats_the_timeout(db: Path, clock: Clock) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(timeout_then_wait, 30.0, id="t3")
        await clock.advance(20)
    async with af.Runtime(db, clock=clock) as rt:
        await rt.send("t3", ping, 8)
        await clock.advance(50)
    async with af.Runtime(db, clock=clock) as rt:
        await clock.advance(50)
        await rt.send("t3", ping, 9)
        assert await rt.handle("t3").result(timeout=1) == [8, 9]


async def test_mailbox_after_timeout_survives_restart(db: Path, clock: Clock) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(timeout_then_wait, 30.0, id="t4")
        await clock.advance(40)
        await rt.send("t4", ping, 6)  # after the timeout: stays in the mailbox
    async with af.Runtime(db, clock=clock) as rt:
        h = rt.handle("t4")
        await clock.advance(0)
        [event] = (await h.status()).events
        assert event.consumed_at is None
        await clock.advance(90)
        assert await h.result(timeout=1) == ["timeout at 00:00:30", 6]


# -- a real kill -9 --------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, os, sys, time
    import actorflow as af

    db, log = sys.argv[1], sys.argv[2]

    def mark(what: str) -> str:
        with open(log, "a") as f:
            f.write(what + "\\n")
            f.flush()
            os.fsync(f.fileno())
        return what

    @af.workflow(name="td.killed")
    async def killed(ctx: af.Context[None], delay: float) -> str:
        await ctx.step(mark, f"before:{ctx.workflow_id}")
        await ctx.sleep(delay)
        return await ctx.step(mark, f"after:{ctx.workflow_id}")

    async def main() -> None:
        async with af.Runtime(db) as rt:
            await rt.start(killed, 2.0, id="soon")
            await rt.start(killed, 3600.0, id="later")
            while True:
                waits = [(await rt.handle(i).status()).waiting_on for i in ("soon", "later")]
                if all(w and w[0].kind == "timer" for w in waits) and rt.idle:
                    break
                await asyncio.sleep(0.002)
            print("PARKED", *(w[0].deadline.timestamp() for w in waits), flush=True)
            await asyncio.sleep(60)  # the parent kills us long before this ends

    asyncio.run(main())
    """
)


def _parent_mark(log: Path) -> Callable[[str], str]:
    def mark(what: str) -> str:
        with open(log, "a") as f:
            f.write(what + "\n")
        return what

    return mark


async def test_timer_across_kill_9(tmp_path: Path) -> None:
    db, log = tmp_path / "kill.db", tmp_path / "steps.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert line.startswith("PARKED"), proc.stderr.read() if proc.stderr else line
    soon_deadline, later_deadline = (float(x) for x in line.split()[1:])
    assert killed_at < soon_deadline, "the child was killed after its deadline; too slow"

    # The same workflow in this process: the step is a closure named like the child's.
    step = _parent_mark(log)
    step.__module__, step.__qualname__ = "__main__", "mark"

    @af.workflow(name="td.killed")
    async def killed(ctx: af.Context[None], delay: float) -> str:
        await ctx.step(step, f"before:{ctx.workflow_id}")
        await ctx.sleep(delay)
        return await ctx.step(step, f"after:{ctx.workflow_id}")

    # The deadlines are absolute wall-clock times stored by the child. Reopen "after"
    # the short one with a clock set past it: it fires at once, with no real waiting;
    # the long one is not due and fires exactly when the clock reaches it.
    clock = Clock(start=datetime.fromtimestamp(soon_deadline + 0.5, UTC))
    async with af.Runtime(db, clock=clock) as rt:
        await clock.settle()
        assert await rt.handle("soon").result(timeout=2) == "after:soon"
        later = rt.handle("later")
        st = await later.status()
        assert st.waiting_on == [
            af.Wait("timer", None, None, datetime.fromtimestamp(later_deadline, UTC))
        ]
        await clock.advance(later_deadline - clock.now() - 0.01)
        assert (await later.status()).state == "waiting"
        await clock.advance(0.02)  # the printed deadline is rounded to microseconds
        assert await later.result(timeout=2) == "after:later"
    lines = log.read_text().splitlines()
    assert sorted(lines) == ["after:later", "after:soon", "before:later", "before:soon"]
