"""Time values at their edges: ``math.inf`` is no deadline, NaN a ``ValueError`` at the
call, a deadline past the year 9999 none; no stored deadline breaks status or list."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

import actorflow as af
from actorflow.reader import Reader
from actorflow.records import Started, Value, Waiting, WaitSpec
from actorflow.store import SQLiteStore

Make = Callable[..., af.Runtime]
Clock = af.testing.ManualClock

poke = af.Event("timevals.poke", int)

FOREVER: dict[str, Any] = {
    "inf": math.inf,
    "huge": 1e300,
    "timedelta.max": timedelta.max,
    "past 9999": timedelta(days=3_000_000),
}


@af.workflow(name="timevals.wait_forever")
async def wait_forever(ctx: af.Context[None], kind: str) -> int:
    return await ctx.wait_event(poke, timeout=FOREVER[kind])


@af.workflow(name="timevals.sleep_forever")
async def sleep_forever(ctx: af.Context[None], kind: str) -> int:
    index, value = await ctx.first(ctx.sleep(FOREVER[kind]), ctx.wait_event(poke))
    assert index == 1
    return int(value)


@pytest.mark.parametrize("kind", sorted(FOREVER))
async def test_a_wait_with_no_deadline_survives_a_restart_and_an_event_resumes_it(
    db: Path, clock: Clock, kind: str
) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(wait_forever, kind, id="w")
        await clock.advance(0)
        status = await h.status()
        assert status.state == "waiting"
        assert status.waiting_on == [af.Wait("event", poke.name, None, None)]
        assert [s.waiting_on for s in await rt.list()] == [status.waiting_on]
    async with af.Runtime(db, clock=clock) as rt:  # opening does not fail on it
        await clock.advance(timedelta(days=3650))
        h = rt.handle("w")
        assert (await h.status()).waiting_on == [af.Wait("event", poke.name, None, None)]
        await rt.send("w", poke, 7)
        assert await h.result(timeout=5) == 7


@pytest.mark.parametrize("kind", sorted(FOREVER))
async def test_a_sleep_with_no_deadline_sleeps_forever(db: Path, clock: Clock, kind: str) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(sleep_forever, kind, id="s")
        await clock.advance(0)
        status = await h.status()
        assert status.state == "waiting"
        assert af.Wait("timer", None, None, None) in status.waiting_on
    async with af.Runtime(db, clock=clock) as rt:
        await clock.advance(timedelta(days=3650))
        h = rt.handle("s")
        assert (await h.status()).state == "waiting"
        await rt.send("s", poke, 3)
        assert await h.result(timeout=5) == 3


def double(n: int) -> int:
    return 2 * n


def truthy() -> bool:
    return True


@af.workflow(name="timevals.inf_elsewhere")
async def inf_elsewhere(ctx: af.Context[None]) -> list[Any]:
    return [
        await ctx.step(double, 2, timeout=math.inf),
        await ctx.wait_for(truthy, every=math.inf, timeout=math.inf),
        await ctx.wait_until(lambda: True, timeout=math.inf),
    ]


async def test_inf_is_no_limit_for_steps_queries_and_conditions(runtime: Make) -> None:
    async with runtime() as rt:
        h = await rt.start(inf_elsewhere)
        assert await h.result(timeout=5) == [4, True, None]


NAN = math.nan
NAN_CALLS: dict[str, Callable[[af.Context[None]], Any]] = {
    "sleep": lambda ctx: ctx.sleep(NAN),
    "wait_event": lambda ctx: ctx.wait_event(poke, timeout=NAN),
    "wait_until": lambda ctx: ctx.wait_until(lambda: False, timeout=NAN),
    "wait_for timeout": lambda ctx: ctx.wait_for(truthy, timeout=NAN),
    "wait_for every": lambda ctx: ctx.wait_for(truthy, every=NAN),
    "step timeout": lambda ctx: ctx.step(double, 1, timeout=NAN),
    "retry initial": lambda ctx: ctx.step(double, 1, retry=af.Retry(initial=NAN)),
    "retry max_delay": lambda ctx: ctx.step(double, 1, retry=af.Retry(max_delay=NAN)),
    "retry backoff": lambda ctx: ctx.step(double, 1, retry=af.Retry(backoff=NAN)),
}


@af.workflow(name="timevals.nan")
async def nan_call(ctx: af.Context[None], which: str) -> str:
    try:
        NAN_CALLS[which](ctx)
    except ValueError as exc:
        assert "NaN" in str(exc)
        return "ValueError"
    return "accepted"


@pytest.mark.parametrize("which", sorted(NAN_CALLS))
async def test_nan_raises_value_error_at_the_call(runtime: Make, which: str) -> None:
    async with runtime() as rt:
        h = await rt.start(nan_call, which)
        assert await h.result(timeout=5) == "ValueError"


def test_retry_with_nan_raises_where_it_is_made() -> None:
    with pytest.raises(ValueError):
        af.Retry(initial=math.nan)


attempts: list[int] = []


def fails_thrice() -> str:
    attempts.append(1)
    if len(attempts) < 4:
        raise ConnectionError("down")
    return "up"


@af.workflow(name="timevals.retry_far")
async def retry_far(ctx: af.Context[None]) -> str:
    # A huge backoff overflows a float: the delay is then the cap.
    policy = af.Retry(attempts=4, initial=1.0, backoff=1e308, max_delay=5.0)
    return await ctx.step(fails_thrice, retry=policy)


async def test_retry_delays_that_overflow_are_capped(runtime: Make, clock: Clock) -> None:
    attempts.clear()
    async with runtime() as rt:
        h = await rt.start(retry_far)
        for _ in range(5):
            await clock.advance(5)
        assert await h.result(timeout=5) == "up"


# -- status and list never fail because of a stored deadline -----------------------------
async def _stored_with_deadline(db: Path, deadline: float) -> None:
    """A file (as an older version wrote it) whose instance waits with ``deadline``."""
    store = SQLiteStore(db)
    await store.open()
    now = 1_767_225_600.0
    await store.write(
        [
            Started("far", "timevals.wait_forever", [msgspec.msgpack.encode("inf")], now),
            Value("far", 1, "deadline", "deadline", msgspec.msgpack.encode(deadline), now),
            Waiting("far", [WaitSpec("event", poke.name, None, deadline)], now),
        ]
    )
    await store.close()


@pytest.mark.parametrize("deadline", [1e300, 1e18, math.inf, -1e300, -math.inf, math.nan])
async def test_a_stored_deadline_never_breaks_status_list_or_the_reader(
    db: Path, clock: Clock, deadline: float
) -> None:
    await _stored_with_deadline(db, deadline)
    reader = Reader(db)
    [listed] = reader.list()
    if not deadline < 0:
        assert listed.waiting_on[0].deadline is None
    assert reader.show("far").status.id == "far"
    async with af.Runtime(db, clock=clock) as rt:  # it replays the stored deadline
        await clock.advance(0)
        assert [s.id for s in await rt.list()] == ["far"]
        status = await rt.handle("far").status()
        if deadline < 0:  # long past: the wait timed out
            assert status.state == "failed"
        else:
            assert status.waiting_on == [af.Wait("event", poke.name, None, None)]


async def test_timedelta_max_leaves_status_and_list_working(runtime: Make, clock: Clock) -> None:
    async with runtime() as rt:
        h = await rt.start(wait_forever, "timedelta.max")
        await clock.advance(0)
        assert (await h.status()).waiting_on == [af.Wait("event", poke.name, None, None)]
        assert len(await rt.list()) == 1


def test_the_cli_shows_a_stored_far_deadline(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from actorflow import cli

    asyncio.run(_stored_with_deadline(db, 1e300))
    for argv in (["list", "--db", str(db)], ["show", "far", "--db", str(db)]):
        code = cli.main(argv)
        assert code in (0, None), capsys.readouterr()
        assert "far" in capsys.readouterr().out
