"""``ctx.continue_as_new`` (DESIGN §3.2): a fresh run on the same instance, with the
mailbox's unconsumed events, the state and the instance's identity carried over and
everything else of the old run gone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

import actorflow as af

Make = Callable[..., af.Runtime]


class Tally(msgspec.Struct):
    total: int = 0
    bumps: int = 0


msg = af.Event("can.msg", int)
bump = af.Event("can.bump", int)
approve = af.Event("can.approve", str)
go = af.Event("can.go", None)
taken: list[tuple[int, int]] = []  # (run's start, message): what each run saw


@af.workflow(name="can.counter", state=Tally)
async def counter(ctx: af.Context[Tally], start: int, per_run: int) -> int:
    """Take ``per_run`` messages into the state, then continue; stop at a negative one."""
    for _ in range(per_run):
        value = await ctx.wait_event(msg)
        taken.append((start, value))
        if value < 0:
            return ctx.state.total + 1000 * ctx.state.bumps
        ctx.state.total += value
    ctx.continue_as_new(start + per_run, per_run)


@counter.on(bump)
def _bump(state: Tally, by: int) -> None:
    state.bumps += by


@pytest.fixture(autouse=True)
def _clear() -> None:
    taken.clear()


async def test_runs_follow_each_other_with_state_and_result(runtime: Make) -> None:
    async with runtime() as rt:
        h = await rt.start(counter, 0, 2, id="c")
        for value in (1, 2, 3, 4, 5):
            await rt.send("c", msg, value)
        await rt.send("c", msg, -1)
        assert await h.result() == 15
        status = await h.status()
        assert status.run == 3
        assert status.state == "completed"
        assert taken == [(0, 1), (0, 2), (2, 3), (2, 4), (4, 5), (4, -1)]


async def test_events_sent_before_and_while_continuing_carry_over_in_order(
    runtime: Make,
) -> None:
    # All sent in one go: most arrive while a run ends and the next starts.
    async with runtime() as rt:
        h = await rt.start(counter, 0, 1, id="c")
        await asyncio.gather(*(rt.send("c", msg, v) for v in range(1, 30)))
        await rt.send("c", msg, -1)
        assert await h.result() == sum(range(1, 30))
        assert [v for _, v in taken] == [*range(1, 30), -1]
        assert (await h.status()).run == 30


async def test_a_close_between_runs_loses_nothing(db: Path) -> None:
    for value in (1, 2, 3):
        async with af.Runtime(db) as rt:
            if value == 1:
                await rt.start(counter, 0, 1, id="c")
            await rt.send("c", msg, value)  # the run takes it and continues as new
    async with af.Runtime(db) as rt:
        h = rt.handle("c")
        status = await h.status()
        assert status.run == 4
        await rt.send("c", msg, -1)
        assert await h.result() == 6


async def test_state_carries_over_and_history_starts_empty(runtime: Make) -> None:
    async with runtime() as rt:
        h = await rt.start(counter, 0, 2, id="c")
        await rt.send("c", bump, 10)
        await rt.send("c", msg, 1)
        await rt.send("c", msg, 2)  # continues: a new run
        await rt.send("c", bump, 5)
        status = await h.status()
        assert status.run == 2
        # The events of the old run are gone with it; the new run's are listed.
        assert [e.name for e in status.events] == ["can.bump"]
        await rt.send("c", msg, -1)
        assert await h.result() == 3 + 1000 * 15


@af.workflow(name="can.asker")
async def asker(ctx: af.Context[None], rounds: int) -> str:
    """Make a token, hand it out through a step, continue without waiting for it."""
    ref = await ctx.create_event(approve)
    await ctx.step(hand_out, ref.id)
    if rounds > 0:
        await ctx.wait_event(go)
        ctx.continue_as_new(rounds - 1)
    return await ctx.wait_event(ref)


handed: list[str] = []


async def hand_out(token: str) -> None:
    handed.append(token)


async def test_tokens_of_an_old_run_are_void(runtime: Make) -> None:
    handed.clear()
    async with runtime() as rt:
        h = await rt.start(asker, 1, id="a")
        while len(handed) < 1:
            await asyncio.sleep(0)
        await rt.send("a", go, None)
        while len(handed) < 2:
            await asyncio.sleep(0)
        old, new = handed
        with pytest.raises(af.ActorflowError) as raised:
            await rt.resolve(old, "late")
        with pytest.raises(af.ActorflowError) as unknown:
            await rt.resolve("no-such-token-0000000000000000", "x")
        assert str(raised.value) == str(unknown.value)
        await rt.resolve(new, "yes")
        assert await h.result() == "yes"
        assert (await h.status()).run == 2


@af.workflow(name="can.sleeper")
async def sleeper(ctx: af.Context[None], rounds: int) -> int:
    """Arm a long timer, then continue as new at the first message: the timer must end."""
    if rounds == 0:
        await ctx.sleep(5)
        return 0
    task = asyncio.ensure_future(ctx.sleep(1))
    await ctx.wait_event(go)
    task.cancel()
    ctx.continue_as_new(rounds - 1)


async def test_waits_and_timers_of_the_old_run_end(
    runtime: Make, clock: af.testing.ManualClock
) -> None:
    async with runtime() as rt:
        h = await rt.start(sleeper, 1, id="s")
        await rt.send("s", go, None)
        await clock.advance(2)
        status = await h.status()
        assert status.run == 2
        assert [w.kind for w in status.waiting_on] == ["timer"]
        await clock.advance(5)
        assert await h.result() == 0


async def test_continue_checks_its_arguments(runtime: Make) -> None:
    @af.workflow(name="can.bad_args")
    async def bad(ctx: af.Context[None], n: int) -> None:
        ctx.continue_as_new("not an int")

    async with runtime() as rt:
        h = await rt.start(bad, 1, id="b")
        with pytest.raises(af.WorkflowFailed) as failed:
            await h.result()
        assert failed.value.error_type == "InvalidPayload"


async def test_except_exception_does_not_swallow_it(runtime: Make) -> None:
    @af.workflow(name="can.swallow")
    async def swallow(ctx: af.Context[None], n: int) -> int:
        if n == 0:
            return 0
        try:
            ctx.continue_as_new(n - 1)
        except Exception:
            return -1
        return -2

    async with runtime() as rt:
        h = await rt.start(swallow, 3, id="w")
        assert await h.result() == 0
        assert (await h.status()).run == 4


async def test_a_cancel_while_continuing_cancels_the_next_run(runtime: Make) -> None:
    async with runtime() as rt:
        h = await rt.start(counter, 0, 1, id="c")
        send = asyncio.ensure_future(rt.send("c", msg, 1))
        await asyncio.sleep(0)
        await asyncio.gather(send, h.cancel())
        with pytest.raises(af.WorkflowCancelled):
            await h.result()
        assert (await h.status()).state == "cancelled"


# -- kill -9 at every point of the switch ---------------------------------------------------

CHILD = Path(__file__).parent / "continue_child.py"
POINTS = ["write-before", "write-after", "next-write", "checkpoint-before", "checkpoint-after"]


def _lines(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize("point", POINTS)
async def test_a_kill_at_any_point_of_the_switch_loses_nothing(tmp_path: Path, point: str) -> None:
    import subprocess
    import sys

    sys.path.insert(0, str(CHILD.parent))
    import continue_child

    db = tmp_path / "app.db"
    child = subprocess.run(
        [sys.executable, str(CHILD), str(db), str(tmp_path), point],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -9, child.stderr.decode()  # it reached the point and died
    tries, acks = _lines(tmp_path / "tries.log"), _lines(tmp_path / "acks.log")
    assert acks, "no send was acknowledged before the kill"
    async with af.Runtime(db) as rt:
        h = rt.handle("c")
        before = (await h.status()).run
        await rt.send("c", continue_child.message, -1)
        values = await h.result()
        run = (await h.status()).run
    # Every acknowledged message was taken exactly once, in the order sent; a message
    # sent but not acknowledged may have been taken (once) or not at all.
    assert values == sorted(set(values))
    assert set(acks) <= set(values) <= set(tries)
    assert run >= 2 and run >= before
    # A step whose result was stored does not run again: at most the one in flight did.
    steps = _lines(tmp_path / "steps.log")
    assert len(steps) - len(set(steps)) <= 1
    assert set(steps) >= set(values)


async def test_a_long_conversation_stays_flat(db: Path) -> None:
    """100,000 messages, a new run every 1,000: the instance's memory (history, events,
    objects the collector tracks) and the stored snapshot do not grow with the count."""
    import gc

    async with af.Runtime(db) as rt:
        h = await rt.start(counter, 0, 1_000, id="long")
        sizes: list[tuple[int, int, int]] = []
        for chunk in range(100):
            await asyncio.gather(*(rt.send("long", msg, 1) for _ in range(1_000)))
            # A message is taken per commit: let the conversation catch up.
            while any(e.consumed_at is None for e in rt._directory.loaded["long"].snapshot.events):
                await asyncio.sleep(0.001)
            if chunk % 20 == 19:
                await rt.checkpoint()
                actor = rt._directory.loaded["long"]
                history = len(actor.snapshot.history) + len(actor.snapshot.events)
                gc.collect()
                sizes.append((history, len(gc.get_objects()), db.stat().st_size))
        await rt.send("long", msg, -1)
        assert await h.result() == 100_000
        assert (await h.status()).run >= 100
    histories, objects, files = zip(*sizes, strict=True)
    assert max(histories) <= 2 * 1_000 * 2  # one run's messages, in history and events
    assert max(objects) <= objects[0] * 1.2
    assert max(files) <= files[0] * 1.5 + 1_000_000


def test_the_fold_of_a_switch_keeps_only_what_carries_over() -> None:
    from actorflow.records import (
        CancelRequested,
        ContinuedAsNew,
        EventSent,
        Outcome,
        Patched,
        Started,
        Value,
        apply,
        new_snapshot,
    )

    s = new_snapshot(Started("i", "wf", [b"\x01"], 1.0))
    for record in (
        Value("i", 0, "create_event", "e", codec_token("tok"), 2.0),
        Patched("i", "p1", 2.0),
        EventSent("i", 0, "a", None, b"\x01", None, False, 3.0, 3.0),  # consumed below
        EventSent("i", 1, "b", None, b"\x02", None, False, 3.0, 3.0),  # carried
        EventSent("i", 2, "e", "tok", b"\x03", None, False, 3.0, 3.0),  # its token dies
        EventSent("i", 3, "a", None, b"\x04", None, False, 3.0, 3.0),  # carried
        Outcome("i", 1, "event", "a", 4.0, event=0),
        CancelRequested("i", 5.0),
        ContinuedAsNew("i", [b"\x02"], 6.0, b"state"),
    ):
        apply(s, record)
    assert (s.run, s.args, s.state, s.start_state) == (2, [b"\x02"], b"state", b"state")
    assert [e.id for e in s.events] == [1, 3]
    assert all(e.consumed_at is None and e.consumed_by is None for e in s.events)
    assert (s.values, s.tokens, s.patches, s.attempts, s.waiting) == ({}, {}, [], {}, [])
    assert s.history == [CancelRequested("i", 6.0)]  # the cancel is not lost
    assert (s.created_at, s.updated_at, s.status) == (1.0, 6.0, "running")


def codec_token(token: str) -> bytes:
    return msgspec.msgpack.encode(token)
