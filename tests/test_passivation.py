"""Passivation (DESIGN §3.1): every behaviour of §1 holds for an instance that is not
loaded. Each test keeps ``max_loaded`` small so that the instance under test really is
unloaded (checked through ``rt.loaded`` and the ``workflow.loaded`` / ``workflow.unloaded``
debug events) before it is acted on, and then checks that it is loaded only when it has
something to do, and does it exactly as a loaded one would. Time moves by ManualClock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

import actorflow as af
from actorflow.records import EventSent

Make = Callable[..., af.Runtime]
Clock = af.testing.ManualClock


# -- the log: which instances were loaded and unloaded -------------------------------------


class Log(logging.Handler):
    """actorflow's events, decoded, as they are logged (JSON at debug level)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(json.loads(record.getMessage()))

    def count(self, event: str, workflow_id: str | None = None) -> int:
        return sum(
            1
            for e in self.events
            if e["event"] == event and (workflow_id is None or e.get("workflow_id") == workflow_id)
        )

    def loads(self, workflow_id: str | None = None) -> int:
        """How many times instances (or one) were loaded again by replay."""
        return self.count("workflow.loaded", workflow_id)

    def unloads(self, workflow_id: str | None = None) -> int:
        return self.count("workflow.unloaded", workflow_id)

    def unloaded(self, workflow_id: str) -> bool:
        """Whether the instance's latest load or unload was an unload."""
        for e in reversed(self.events):
            if e.get("workflow_id") == workflow_id and e["event"] in (
                "workflow.loaded",
                "workflow.unloaded",
            ):
                return bool(e["event"] == "workflow.unloaded")
        return False

    def recovered(self) -> int:
        """How many instances the latest open replayed."""
        return int([e for e in self.events if e["event"] == "recovery.done"][-1]["instances"])


@pytest.fixture
def log() -> Iterator[Log]:
    af.configure_logging("DEBUG", json=True)
    stdlib = logging.getLogger("actorflow")
    for handler in [h for h in stdlib.handlers if not isinstance(h, logging.NullHandler)]:
        stdlib.removeHandler(handler)  # the lines go to the test only
    collected = Log()
    stdlib.addHandler(collected)
    yield collected
    stdlib.removeHandler(collected)
    stdlib.setLevel(logging.NOTSET)
    stdlib.propagate = True


def at(clock: Clock, offset: float = 0.0) -> datetime:
    return datetime.fromtimestamp(clock.now() + offset, UTC)


def outcomes(status: af.Status) -> list[tuple[str, str | None, bool]]:
    """An instance's events as (name, outcome, consumed), in the order they were sent."""
    return [(e.name, e.outcome, e.consumed_at is not None) for e in status.events]


async def unloaded(clock: Clock, log: Log, *ids: str) -> None:
    """Let the runtime settle, then check that ``ids`` are unloaded."""
    await clock.settle()
    for instance_id in ids:
        assert log.unloaded(instance_id), f"{instance_id} is loaded"


# -- the workflows ---------------------------------------------------------------------------

ping = af.Event("pas.ping", int)
other = af.Event("pas.other", int)
go = af.Event("pas.go")
reply = af.Event("pas.reply", int)


@af.workflow(name="pas.collect")
async def collect(ctx: af.Context[None], n: int) -> list[int]:
    """Takes ``n`` pings, in order."""
    return [await ctx.wait_event(ping) for _ in range(n)]


@af.workflow(name="pas.gated")
async def gated(ctx: af.Context[None], n: int) -> list[int]:
    """Waits for ``go``, then takes ``n`` of ``other``: those sent before are kept."""
    await ctx.wait_event(go)
    return [await ctx.wait_event(other) for _ in range(n)]


# -- events by name ----------------------------------------------------------------------


async def test_an_event_its_wait_takes_loads_an_unloaded_instance(
    runtime: Make, clock: Clock, log: Log
) -> None:
    async with runtime(max_loaded=0) as rt:
        h = await rt.start(collect, 3, id="c")
        await unloaded(clock, log, "c")
        assert rt.loaded == 0
        for k in range(3):
            await rt.send("c", ping, k)
            await clock.settle()
            assert log.loads("c") == k + 1  # one load per event it takes
            if k < 2:
                assert log.unloaded("c") and rt.loaded == 0  # parked again: unloaded again
        assert await h.result(timeout=5) == [0, 1, 2]
        assert outcomes(await h.status()) == [("pas.ping", "value", True)] * 3


async def test_events_its_wait_does_not_take_are_kept_in_order_without_loading_it(
    runtime: Make, clock: Clock, log: Log
) -> None:
    async with runtime(max_loaded=0) as rt:
        h = await rt.start(gated, 3, id="g")
        await unloaded(clock, log, "g")
        for k in range(4):
            await rt.send("g", other, k)
            if k == 1 and rt.path is not None:
                await rt.checkpoint()  # the snapshot moves to the store meanwhile
        await clock.settle()
        assert log.loads("g") == 0 and rt.loaded == 0
        status = await h.status()
        assert status.state == "waiting"
        assert status.waiting_on == [af.Wait("event", "pas.go")]
        assert outcomes(status) == [("pas.other", "value", False)] * 4
        assert [s.id for s in await rt.list(status="waiting")] == ["g"]
        await rt.send("g", go)
        assert await h.result(timeout=5) == [0, 1, 2]  # oldest first, each once
        assert log.loads("g") == 1
        status = await h.status()
        assert outcomes(status) == [
            *[("pas.other", "value", True)] * 3,
            ("pas.other", "value", False),  # left over: stays recorded, unconsumed
            ("pas.go", "value", True),
        ]
        assert status.events[1].consumed_at == status.events[0].consumed_at == at(clock)


async def test_the_least_recently_active_parked_instance_is_unloaded_first(
    runtime: Make, clock: Clock, log: Log
) -> None:
    async with runtime(max_loaded=2) as rt:
        for name in "abc":
            await rt.start(collect, 2, id=name)
            await clock.settle()
        assert rt.loaded == 2
        assert log.unloaded("a") and log.unloads() == 1
        await rt.send("a", ping, 1)  # a is active again; b is now the oldest
        await clock.settle()
        assert log.loads("a") == 1 and not log.unloaded("a")
        assert log.unloaded("b") and not log.unloaded("c")
        assert rt.loaded == 2
        await rt.send("c", ping, 2)  # loaded: no load, and a stays loaded as well
        await clock.settle()
        assert log.loads() == 1 and rt.loaded == 2
        for name in "abcb":
            await rt.send(name, ping, 9)
        assert [await rt.handle(n).result(timeout=5) for n in "abc"] == [[1, 9], [9, 9], [2, 9]]
        assert log.loads("b") == 1


async def test_concurrent_sends_to_an_unloaded_instance_are_each_taken_once(
    runtime: Make, clock: Clock, log: Log
) -> None:
    async with runtime(max_loaded=0) as rt:
        h = await rt.start(collect, 20, id="c")
        await unloaded(clock, log, "c")
        if rt.path is not None:
            await rt.checkpoint()  # found in the store, not in memory
        # The first send loads it while the others are still being written.
        await asyncio.gather(*(rt.send("c", ping, k) for k in range(10)))
        await asyncio.gather(*(rt.send("c", ping, k) for k in range(10, 20)))
        assert await h.result(timeout=5) == list(range(20))  # each once, in call order
        status = await h.status()
        assert outcomes(status) == [("pas.ping", "value", True)] * 20


async def test_sends_are_queued_in_call_order_whether_loaded_or_not(
    runtime: Make, clock: Clock, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A send to an unloaded instance may have to read it from the store first; the
    # sends called after it, to it or to a loaded instance, must not overtake it (they
    # would not overtake a send to a loaded instance): its mailbox keeps the call order,
    # and a crash keeps a prefix of the calls.
    async with runtime(max_loaded=1) as rt:
        for instance_id in ("u", "l"):
            await rt.start(collect, 4, id=instance_id)
            await clock.settle()
        await unloaded(clock, log, "u")
        if rt.path is not None:
            await rt.checkpoint()  # u is in the store only
        queued: list[tuple[str, str, bytes | None]] = []
        write = rt._store.write

        async def spy(records: list[Any], marks: Any = ()) -> None:
            queued.extend((r.wf, r.name, r.payload) for r in records if isinstance(r, EventSent))
            await write(records, marks)

        monkeypatch.setattr(rt._store, "write", spy)
        calls = [(instance_id, k) for k in range(4) for instance_id in ("u", "l")]
        await asyncio.gather(*(rt.send(i, ping, k) for i, k in calls))
        assert [(wf, ping.decode(payload)) for wf, _, payload in queued] == calls
        assert [await rt.handle(i).result(timeout=5) for i in "ul"] == [[0, 1, 2, 3]] * 2
        handles = [await rt.start(tokened, True, id=f"t{i}") for i in range(2)]
        await unloaded(clock, log, "t0")
        tokens = [await token_of(h) for h in handles]
        if rt.path is not None:
            await rt.checkpoint()  # t0's token is found in the store
        queued.clear()
        await asyncio.gather(
            rt.resolve(tokens[0], 1), rt.send("t1", go), rt.resolve(tokens[1], 2), rt.send("t0", go)
        )
        assert [(wf, name) for wf, name, _ in queued] == [
            ("t0", "pas.reply"), ("t1", "pas.go"), ("t1", "pas.reply"), ("t0", "pas.go")
        ]  # fmt: skip
        assert [await rt.handle(f"t{i}").result(timeout=5) for i in range(2)] == [
            "value:1",
            "value:2",
        ]


# -- tokens ------------------------------------------------------------------------------


@af.workflow(name="pas.token")
async def tokened(ctx: af.Context[None], gated: bool) -> str:
    """Makes a token; if ``gated`` waits for ``go`` first; then waits on the token."""
    ref = await ctx.create_event(reply)
    if gated:
        await ctx.wait_event(go)
    try:
        return f"value:{await ctx.wait_event(ref)}"
    except af.EventFailed as exc:
        return f"failed:{exc.error}"


async def token_of(h: af.Handle[Any]) -> str:
    [made] = [e for e in (await h.status()).events if e.token is not None]
    assert made.token is not None
    return made.token


UNUSABLE = "unknown, already used, or its workflow has finished"


@pytest.mark.parametrize("how", ["resolve", "reject"])
async def test_a_token_loads_the_unloaded_instance_that_waits_on_it(
    runtime: Make, clock: Clock, log: Log, how: str
) -> None:
    async with runtime(max_loaded=0) as rt:
        h = await rt.start(tokened, False, id="t")
        await unloaded(clock, log, "t")
        token = await token_of(h)
        assert (await h.status()).waiting_on == [af.Wait("event", "pas.reply", token)]
        if how == "resolve":
            await rt.resolve(token, 5)
        else:
            await rt.reject(token, "no")
        assert await h.result(timeout=5) == ("value:5" if how == "resolve" else "failed:no")
        assert log.loads("t") == 1
        assert outcomes(await h.status()) == [
            ("pas.reply", "value" if how == "resolve" else "failed", True)
        ]
        with pytest.raises(af.ActorflowError, match=UNUSABLE):
            await rt.resolve(token, 6)  # its workflow has finished


async def test_a_token_resolved_before_its_wait_is_kept_without_loading_and_used_once(
    runtime: Make, clock: Clock, log: Log
) -> None:
    async with runtime(max_loaded=0) as rt:
        h = await rt.start(tokened, True, id="t")
        await unloaded(clock, log, "t")
        token = await token_of(h)
        await rt.resolve(token, 7)
        await clock.settle()
        assert log.loads("t") == 0 and rt.loaded == 0  # it waits on go, not on the token
        for again in (rt.resolve(token, 8), rt.reject(token, "late")):
            with pytest.raises(af.ActorflowError, match=UNUSABLE) as info:
                await again  # single use, even while the instance is unloaded
            assert not isinstance(info.value, af.InvalidPayload)
        if rt.path is not None:
            await rt.checkpoint()  # now the store's snapshot says it was used
            with pytest.raises(af.ActorflowError, match=UNUSABLE):
                await rt.resolve(token, 9)
        status = await h.status()
        assert outcomes(status) == [("pas.reply", "value", False)]
        assert status.waiting_on == [af.Wait("event", "pas.go")]
        await rt.send("t", go)
        assert await h.result(timeout=5) == "value:7"
        assert log.loads("t") == 1
        assert outcomes(await h.status()) == [
            ("pas.reply", "value", True),
            ("pas.go", "value", True),
        ]


async def test_a_token_resolved_twice_at_once_while_unloaded_is_taken_once(
    runtime: Make, clock: Clock, log: Log
) -> None:
    async with runtime(max_loaded=0) as rt:
        handles = [await rt.start(tokened, gate, id=f"t{gate}") for gate in (False, True)]
        await unloaded(clock, log, "tFalse", "tTrue")
        for h in handles:
            token = await token_of(h)
            tries = await asyncio.gather(
                rt.resolve(token, 1), rt.resolve(token, 2), rt.reject(token, "x"),
                return_exceptions=True,
            )  # fmt: skip
            assert sum(t is None for t in tries) == 1, tries
            for t in tries:
                assert t is None or (isinstance(t, af.ActorflowError) and UNUSABLE in str(t))
        await rt.send("tTrue", go)
        for h in handles:
            assert await h.result(timeout=5) in ("value:1", "value:2", "failed:x")
            tokens = [e for e in (await h.status()).events if e.token is not None]
            assert len(tokens) == 1 and tokens[0].consumed_at is not None


async def test_unknown_and_finished_tokens_of_unloaded_instances_are_unusable(
    runtime: Make, clock: Clock, log: Log
) -> None:
    async with runtime(max_loaded=0) as rt:
        done = await rt.start(tokened, True, id="done")
        waiting = await rt.start(tokened, True, id="waiting")
        await unloaded(clock, log, "done", "waiting")
        done_token = await token_of(done)
        await done.cancel()
        with pytest.raises(af.WorkflowCancelled):
            await done.result(timeout=5)
        if rt.path is not None:
            await rt.checkpoint()  # the finished one is in the store only
        loads = log.loads()
        for token in (done_token, "tno-such-token-here", "t" + (await token_of(waiting))[1:-1]):
            with pytest.raises(af.ActorflowError, match=UNUSABLE):
                await rt.resolve(token, 1)
            with pytest.raises(af.ActorflowError, match=UNUSABLE):
                await rt.reject(token, "no")
        await clock.settle()
        assert log.loads() == loads and rt.loaded == 0  # refused without loading anyone
        assert outcomes(await rt.handle("waiting").status()) == [("pas.reply", None, False)]


# -- time: timeouts and sleeps -------------------------------------------------------------


@af.workflow(name="pas.patient")
async def patient(ctx: af.Context[None], seconds: float) -> str:
    """Waits for a ping, ``seconds`` at most."""
    try:
        return f"got:{await ctx.wait_event(ping, timeout=seconds)}"
    except af.WaitTimeout:
        return "timeout"


@af.workflow(name="pas.naps")
async def naps(ctx: af.Context[None], delays: list[float]) -> list[float]:
    """Sleeps each delay in turn (the last one until a date); returns when it woke."""
    woke = []
    for n, delay in enumerate(delays):
        if n == len(delays) - 1:
            await ctx.sleep_until(datetime.fromtimestamp(ctx.now().timestamp() + delay, UTC))
        else:
            await ctx.sleep(delay)
        woke.append(ctx.now().timestamp())
    return woke


async def test_a_timeout_fires_on_time_while_the_instance_is_unloaded(
    runtime: Make, clock: Clock, log: Log
) -> None:
    async with runtime(max_loaded=0) as rt:
        began = clock.now()
        h = await rt.start(patient, 60, id="p")
        other_h = await rt.start(patient, 90, id="q")
        await unloaded(clock, log, "p", "q")
        status = await h.status()
        assert status.waiting_on == [af.Wait("event", "pas.ping", None, at(clock, 60))]
        await rt.send("p", other, 1)  # not what it waits for: no load
        await clock.advance(30)
        if rt.path is not None:
            await rt.checkpoint()  # the deadline is then the store's to find
        await clock.advance(29.75)
        assert log.loads() == 0 and rt.loaded == 0
        assert (await h.status()).state == "waiting"
        await clock.advance(0.25)
        assert await h.result(timeout=5) == "timeout"
        status = await h.status()
        assert status.finished_at == datetime.fromtimestamp(began + 60, UTC)
        assert outcomes(status) == [("pas.other", "value", False)]
        assert log.loads("p") == 1 and log.loads("q") == 0
        await rt.send("q", ping, 4)  # q's deadline is still watched after p's fired
        assert await other_h.result(timeout=5) == "got:4"
        r = await rt.start(patient, 10, id="r")
        await unloaded(clock, log, "r")
        await clock.advance(10)
        assert await r.result(timeout=5) == "timeout"
        assert (await r.status()).finished_at == at(clock)


async def test_an_instance_loaded_for_its_deadline_is_not_unloaded_before_it_fires(
    runtime: Make, clock: Clock, log: Log
) -> None:
    # Loaded because its deadline came, its timer fires at the next loop iteration; a
    # commit of another instance (here: lowering max_loaded, at the very moment of the
    # load) must not unload it first: its deadline, past, would never be seen again.
    async with runtime(max_loaded=0) as rt:
        h = await rt.start(patient, 10, id="p")
        await unloaded(clock, log, "p")
        await rt.checkpoint()  # nothing of it is left in memory

        class UnloadAtLoad(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "workflow.loaded" in record.getMessage():
                    rt.max_loaded = 0

        hook = UnloadAtLoad()
        logging.getLogger("actorflow").addHandler(hook)
        try:
            await clock.advance(10)
        finally:
            logging.getLogger("actorflow").removeHandler(hook)
        assert (await h.status()).state == "completed"
        assert await h.result(timeout=5) == "timeout"


async def test_many_unloaded_deadlines_fire_in_order_each_at_its_time(
    runtime: Make, clock: Clock, log: Log
) -> None:
    async with runtime(max_loaded=2) as rt:
        began = clock.now()
        plans = {f"n{i}": [5.0 + i, 7.0 * (i % 3) + 1, 2.5] for i in range(8)}
        for instance_id, delays in plans.items():
            await rt.start(naps, delays, id=instance_id)
        await unloaded(clock, log, "n0", "n1", "n2", "n3", "n4", "n5")
        for _ in range(12):
            await clock.advance(2.5)
            assert rt.loaded <= 2
            if rt.path is not None:
                await rt.checkpoint()
        for instance_id, delays in plans.items():
            woke = await rt.handle(instance_id).result(timeout=5)
            expected = [began + delays[0]]
            for delay in delays[1:]:
                expected.append(expected[-1] + delay)
            assert woke == expected, instance_id
            assert log.loads(instance_id) >= 1


# -- cancel ------------------------------------------------------------------------------

effects: Counter[str] = Counter()
"""Side effects of steps: how many times each ran."""


def effect(what: str) -> str:
    effects[what] += 1
    return what


@af.workflow(name="pas.tidy")
async def tidy(ctx: af.Context[None], mode: str) -> str:
    """Waits for a ping; cancelled, runs a cleanup step, and (``ack``) waits for ``go``
    and runs another before ending cancelled, or (``swallow``) returns."""
    try:
        await ctx.wait_event(ping)
        return "pinged"
    except asyncio.CancelledError:
        await ctx.step(effect, f"{ctx.workflow_id}/cleanup")
        if mode == "ack":
            await ctx.wait_event(go)  # parks again, mid-cleanup
            await ctx.step(effect, f"{ctx.workflow_id}/acked")
        if mode == "swallow":
            return "swallowed"
        raise


@pytest.mark.parametrize("mode", ["raise", "swallow"])
async def test_cancel_loads_an_unloaded_instance_and_runs_its_cleanup_once(
    runtime: Make, clock: Clock, log: Log, mode: str
) -> None:
    effects.clear()
    async with runtime(max_loaded=0) as rt:
        h = await rt.start(tidy, mode, id=f"x-{mode}")
        await unloaded(clock, log, h.id)
        await asyncio.gather(h.cancel(), h.cancel())  # two at once are one cancel
        if mode == "raise":
            with pytest.raises(af.WorkflowCancelled):
                await h.result(timeout=5)
            assert (await h.status()).state == "cancelled"
        else:
            assert await h.result(timeout=5) == "swallowed"
            assert (await h.status()).state == "completed"
        await h.cancel()  # a no-op once finished
        assert log.loads(h.id) == 1
    assert effects == {f"x-{mode}/cleanup": 1}


async def test_a_cleanup_that_parks_is_unloaded_and_finishes_when_its_event_comes(
    runtime: Make, clock: Clock, log: Log
) -> None:
    effects.clear()
    async with runtime(max_loaded=0) as rt:
        h = await rt.start(tidy, "ack", id="x")
        await unloaded(clock, log, "x")
        await h.cancel()
        await unloaded(clock, log, "x")  # parked on go, after its first cleanup step
        status = await h.status()
        assert status.state == "waiting" and status.waiting_on == [af.Wait("event", "pas.go")]
        await rt.send("x", ping, 1)  # the cancelled wait is gone: kept, no load
        await clock.settle()
        assert log.loads("x") == 1 and rt.loaded == 0
        await h.cancel()  # cancelled already: nothing to do, no load
        await clock.settle()
        assert log.loads("x") == 1 and rt.loaded == 0
        await rt.send("x", go)  # replayed through the cancel and the stored step
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=5)
        assert log.loads("x") == 2
        assert outcomes(await h.status()) == [
            ("pas.ping", "value", False),
            ("pas.go", "value", True),
        ]
    assert effects == {"x/cleanup": 1, "x/acked": 1}


async def test_cancel_of_an_unloaded_sleeper(runtime: Make, clock: Clock, log: Log) -> None:
    async with runtime(max_loaded=0) as rt:
        h = await rt.start(naps, [100.0, 5.0], id="s")
        await clock.advance(50)
        await unloaded(clock, log, "s")
        await h.cancel()
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=5)
        assert (await h.status()).finished_at == at(clock)
        await clock.advance(100)  # its old deadline loads nothing
        assert log.loads("s") == 1 and rt.loaded == 0


@pytest.mark.parametrize("what", ["cancel", "send"])
async def test_what_is_acknowledged_while_closing_takes_effect_after_reopen(
    db: Path, clock: Clock, log: Log, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    # The write of a cancel (or of the event that ends the workflow) is still in flight
    # when the runtime closes: it commits and is acknowledged, but the instance's end,
    # written after it, is not (closing drops it, as a crash would). The snapshot the
    # close checkpoints must still say that the instance has something to do, so that
    # the next open loads it, rather than show it parked on the wait it has left.
    async with af.Runtime(db, clock=clock, max_loaded=None) as rt:
        h = await rt.start(collect, 1, id="c")
        await rt.start(collect, 1, id="idle")  # parked throughout: not loaded at reopen
        await clock.settle()
        release = asyncio.Event()
        write = rt._store.write

        async def slow_write(records: list[Any], marks: Any = ()) -> None:
            await release.wait()  # a slow disk
            await write(records, marks)

        monkeypatch.setattr(rt._store, "write", slow_write)
        acting = asyncio.ensure_future(h.cancel() if what == "cancel" else rt.send("c", ping, 1))
        closing = asyncio.ensure_future(rt.close())
        while not rt._writer._closed:  # closing has begun: later records are dropped
            await asyncio.sleep(0)
        release.set()
        await closing
        await acting  # acknowledged
    monkeypatch.undo()
    async with af.Runtime(db, clock=clock, max_loaded=0) as rt:
        await clock.settle()
        assert log.recovered() == 1  # c has something to do, idle has not
        status = await rt.handle("c").status()
        assert status.state == ("cancelled" if what == "cancel" else "completed"), status
        assert (await rt.handle("idle").status()).state == "waiting"
        assert log.loads("idle") == 0


# -- wait_for and notify --------------------------------------------------------------------

BOARD: dict[str, int] = {}
"""Outside data that the queries read."""
TOPIC = "pas.board"
query_runs: Counter[str] = Counter()


def read_board(key: str) -> int:
    query_runs[key] += 1
    return BOARD.get(key, 0)


class Gate:
    """Holds an async query until the test opens it."""

    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.open = asyncio.Event()


gates: dict[str, Gate] = {}


async def read_board_slowly(key: str) -> int:
    gate = gates[key]
    gate.running.set()
    await gate.open.wait()
    return BOARD.get(key, 0)


@af.workflow(name="pas.watch")
async def watch(ctx: af.Context[None], key: str, slow: bool) -> int:
    """Waits until the board holds a value under ``key`` (re-read on a notify of TOPIC)."""
    query = read_board_slowly if slow else read_board
    return await ctx.wait_for(query, key, on=TOPIC, timeout=3600)


@af.workflow(name="pas.poll")
async def poll(ctx: af.Context[None], key: str) -> int:
    """Polls the board every minute: it never parks, so it is never unloaded."""
    return await ctx.wait_for(read_board, key, every=60)


@pytest.fixture
def board() -> Iterator[dict[str, int]]:
    BOARD.clear()
    query_runs.clear()
    gates.clear()
    yield BOARD
    BOARD.clear()


async def test_notify_loads_the_unloaded_instances_that_listen_on_its_topic(
    runtime: Make, clock: Clock, log: Log, board: dict[str, int]
) -> None:
    async with runtime(max_loaded=0) as rt:
        handles = [await rt.start(watch, f"k{i}", False, id=f"w{i}") for i in range(3)]
        await clock.settle()
        # Parked once its query ran, but unloaded at the next commit (none came after the
        # last one ran) or when max_loaded is set again.
        rt.max_loaded = 0
        await unloaded(clock, log, "w0", "w1", "w2")
        assert query_runs == {"k0": 1, "k1": 1, "k2": 1}  # once at the start
        status = await handles[0].status()
        assert status.waiting_on == [
            af.Wait("query", f"{__name__}.read_board", None, at(clock, 3600))
        ]
        board["k1"] = 5
        await rt.notify("pas.elsewhere")  # nobody listens: nothing is loaded
        await clock.settle()
        assert log.loads() == 0 and rt.loaded == 0
        if rt.path is not None:
            await rt.checkpoint()  # the listeners are then found in the store
        await rt.notify(TOPIC)
        assert await handles[1].result(timeout=5) == 5
        rt.max_loaded = 0
        await clock.settle()
        assert [log.loads(h.id) for h in handles] == [1, 1, 1]
        assert query_runs == {"k0": 2, "k1": 2, "k2": 2}  # the notify ran them, once each
        assert log.unloaded("w0") and log.unloaded("w2") and rt.loaded == 0
        board["k0"] = 7
        await rt.notify(TOPIC, "pas.elsewhere")
        assert await handles[0].result(timeout=5) == 7
        await clock.advance(3600)  # w2's deadline, unloaded
        with pytest.raises(af.WorkflowFailed, match="WaitTimeout"):
            await handles[2].result(timeout=5)


async def test_a_polling_query_is_never_unloaded(
    runtime: Make, clock: Clock, log: Log, board: dict[str, int]
) -> None:
    async with runtime(max_loaded=0) as rt:
        h = await rt.start(poll, "p", id="p")
        await rt.start(collect, 1, id="c")
        await unloaded(clock, log, "c")
        assert rt.loaded == 1 and log.unloads("p") == 0
        await clock.advance(120)
        assert query_runs["p"] == 3 and log.unloads("p") == 0
        board["p"] = 1
        await clock.advance(60)
        assert await h.result(timeout=5) == 1


async def test_a_query_running_when_its_instance_would_be_unloaded_is_not_lost(
    runtime: Make, clock: Clock, log: Log, board: dict[str, int]
) -> None:
    async with runtime(max_loaded=0) as rt:
        gates["s"] = gate = Gate()
        gate.open.set()
        h = await rt.start(watch, "s", True, id="s")
        await clock.settle()
        rt.max_loaded = 0
        await unloaded(clock, log, "s")
        gate.running.clear()
        gate.open.clear()
        board["s"] = 3
        notifying = asyncio.ensure_future(rt.notify(TOPIC))
        await gate.running.wait()  # loaded, its query runs (and waits on outside data)
        await rt.start(collect, 1, id="other")  # commits meanwhile
        await rt.send("other", other, 1)
        gate.open.set()
        await notifying
        await clock.settle()
        assert (await h.status()).state == "completed"  # not lost, then found by a reload
        assert await h.result(timeout=5) == 3
        assert log.loads("s") == 1


@pytest.mark.parametrize("wake", ["deadline", "notify"])
async def test_unloaded_instances_are_found_while_a_checkpoint_moves_them_to_the_store(
    runtime: Make,
    clock: Clock,
    log: Log,
    board: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    wake: str,
) -> None:
    # Its deadline (or a notify) makes the runtime look for the unloaded instance in the
    # store, then in memory; a checkpoint that ends in between moves it from memory to
    # the store after the read saw its old row, and it was found in neither: the timeout
    # never fired, the notify was lost (found by the model: a store read takes several
    # hops to its thread, and a checkpoint can end between them).
    async with runtime(max_loaded=0) as rt:
        h: af.Handle[Any]
        if wake == "deadline":
            h = await rt.start(patient, 10, id="p")
        else:
            h = await rt.start(watch, "k", False, id="w")
        await clock.settle()
        rt.max_loaded = 0
        await unloaded(clock, log, h.id)  # in memory only: never checkpointed
        reading, resume = asyncio.Event(), asyncio.Event()

        def late(read: Callable[..., Any]) -> Callable[..., Any]:
            async def read_then_wait(*args: Any) -> Any:
                found = await read(*args)  # the store as it was
                reading.set()
                await resume.wait()
                return found

            return read_then_wait

        name = "due" if wake == "deadline" else "listening"
        monkeypatch.setattr(rt._store, name, late(getattr(rt._store, name)))
        board["k"] = 5
        waking = asyncio.ensure_future(
            clock.advance(10) if wake == "deadline" else rt.notify(TOPIC)
        )
        await reading.wait()
        await rt.checkpoint()  # ends while the runtime looks
        resume.set()
        await waking
        await clock.settle()
        assert (await h.status()).state == "completed"
        assert await h.result(timeout=5) == ("timeout" if wake == "deadline" else 5)


async def test_a_send_reading_an_instance_from_the_store_sees_its_latest_snapshot(
    runtime: Make, clock: Clock, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A send to an instance found only in the store reads its snapshot; meanwhile the
    # instance wakes for its deadline, moves on, is unloaded and checkpointed. The send
    # must not then store its event on the snapshot it read, older than the one stored
    # since: the instance would lose what it did meanwhile.
    async with runtime(max_loaded=0) as rt:
        began = clock.now()
        h = await rt.start(naps, [10.0, 100.0], id="n")
        await unloaded(clock, log, "n")
        await rt.checkpoint()  # in the store only
        reading, resume = asyncio.Event(), asyncio.Event()
        load = rt._store.load
        reads = 0

        async def first_read_waits(instance_id: str) -> Any:
            nonlocal reads
            reads += 1
            found = await load(instance_id)
            if reads == 1:
                reading.set()
                await resume.wait()
            return found

        monkeypatch.setattr(rt._store, "load", first_read_waits)
        sending = asyncio.ensure_future(rt.send("n", other, 1))  # not taken: kept
        await reading.wait()
        await clock.advance(10)  # it wakes, sleeps again, is unloaded
        await rt.checkpoint()
        resume.set()
        await sending
        await clock.advance(100)
        assert (await h.status()).state == "completed"
        assert await h.result(timeout=5) == [began + 10, began + 110]
        assert outcomes(await h.status()) == [("pas.other", "value", False)]


# -- state, handlers and wait_until ----------------------------------------------------------

vote = af.Event("pas.vote", int)


class Tally(msgspec.Struct):
    votes: list[int] = msgspec.field(default_factory=list)
    rounds: int = 0


@af.workflow(name="pas.tally", state=Tally)
async def tally(ctx: af.Context[Tally], need: int) -> list[int]:
    """Counts votes (a handler, while parked) until ``need`` came, a day at most."""
    ctx.state.rounds += 1  # state the code changes, rebuilt by replay
    await ctx.wait_until(lambda: len(ctx.state.votes) >= need, timeout=86400)
    ctx.state.rounds += 1
    await ctx.wait_event(go)
    return [*ctx.state.votes, ctx.state.rounds]


@tally.on(vote)
def _count(state: Tally, v: int) -> None:
    state.votes.append(v)


async def test_a_handler_event_loads_an_unloaded_instance_and_updates_its_state(
    runtime: Make, clock: Clock, log: Log
) -> None:
    async with runtime(max_loaded=0) as rt:
        h = await rt.start(tally, 3, id="v")
        await unloaded(clock, log, "v")
        assert (await h.status()).waiting_on == [
            af.Wait("condition", "condition", None, at(clock, 86400))
        ]
        for k in range(2):
            await rt.send("v", vote, 10 + k)
            await clock.settle()
            assert log.loads("v") == k + 1  # a handler takes it: loaded to run it
            assert log.unloaded("v") and rt.loaded == 0  # condition still false: parked
            if rt.path is not None:
                await rt.checkpoint()
        assert (await h.status()).state == "waiting"
        await rt.send("v", vote, 12)  # the third: the condition holds
        await unloaded(clock, log, "v")  # now parked on go
        assert (await h.status()).waiting_on == [af.Wait("event", "pas.go")]
        await rt.send("v", vote, 13)  # handled although nobody waits on it
        await unloaded(clock, log, "v")
        await rt.send("v", go)
        assert await h.result(timeout=5) == [10, 11, 12, 13, 2]
        assert outcomes(await h.status()) == [
            *[("pas.vote", "value", True)] * 4,
            ("pas.go", "value", True),
        ]


async def test_votes_sent_at_once_to_an_unloaded_instance_are_each_counted_once(
    runtime: Make, clock: Clock, log: Log
) -> None:
    async with runtime(max_loaded=0) as rt:
        h = await rt.start(tally, 8, id="v")
        await unloaded(clock, log, "v")
        await asyncio.gather(*(rt.send("v", vote, k) for k in range(8)))
        await rt.send("v", go)
        got = await h.result(timeout=5)
        assert sorted(got[:8]) == list(range(8)) and got[8] == 2


async def test_wait_until_times_out_on_time_while_unloaded(
    runtime: Make, clock: Clock, log: Log
) -> None:
    async with runtime(max_loaded=0) as rt:
        began = clock.now()
        h = await rt.start(tally, 2, id="v")
        await unloaded(clock, log, "v")
        await rt.send("v", vote, 1)
        await unloaded(clock, log, "v")
        await clock.advance(86399.5)
        assert (await h.status()).state == "waiting" and log.loads("v") == 1
        await clock.advance(0.5)
        with pytest.raises(af.WorkflowFailed, match="WaitTimeout"):
            await h.result(timeout=5)
        assert (await h.status()).finished_at == datetime.fromtimestamp(began + 86400, UTC)


# -- steps: exactly once across unloads and reloads ---------------------------------------


class Progress(msgspec.Struct):
    done: list[str] = msgspec.field(default_factory=list)


@af.workflow(name="pas.stepper", state=Progress)
async def stepper(ctx: af.Context[Progress], n: int) -> list[str]:
    """A step, then a wait, ``n`` times; the state records each step's result."""
    for k in range(n):
        ctx.state.done.append(await ctx.step(effect, f"{ctx.workflow_id}/{k}"))
        if k % 2:
            await ctx.wait_event(ping)
        else:
            await ctx.sleep(10)
    return ctx.state.done


async def test_steps_run_once_and_state_survives_unloads_and_reloads(
    runtime: Make, clock: Clock, log: Log
) -> None:
    effects.clear()
    ids = [f"s{i}" for i in range(6)]
    async with runtime(max_loaded=1) as rt:
        for instance_id in ids:
            await rt.start(stepper, 6, id=instance_id)
        for _ in range(3):
            await clock.advance(10)  # the sleepers wake (loaded) and park on ping
            assert rt.loaded <= 1 and sum(map(log.unloaded, ids)) >= len(ids) - 1
            for instance_id in reversed(ids):
                await rt.send(instance_id, ping, 0)
                await clock.settle()
            if rt.path is not None:
                await rt.checkpoint()
        for instance_id in ids:
            expected = [f"{instance_id}/{k}" for k in range(6)]
            assert await rt.handle(instance_id).result(timeout=5) == expected
            assert log.loads(instance_id) >= 3  # replayed past stored steps each time
    assert effects == {f"{i}/{k}": 1 for i in ids for k in range(6)}


# -- status and list ---------------------------------------------------------------------


async def test_status_and_list_never_load_and_show_unloaded_instances_as_they_are(
    runtime: Make, clock: Clock, log: Log
) -> None:
    async with runtime(max_loaded=0) as rt:
        began = at(clock)
        await rt.start(collect, 2, id="a")
        await rt.start(gated, 2, id="g")
        await rt.start(patient, 30, id="p")
        t = await rt.start(tokened, False, id="t")
        await rt.start(tally, 5, id="v")
        done = await rt.start(collect, 1, id="done")
        gone = await rt.start(tidy, "raise", id="gone")
        await clock.settle()
        rt.max_loaded = 0
        await rt.send("done", ping, 1)
        await gone.cancel()
        await done.result(timeout=5)
        await unloaded(clock, log, "a", "g", "p", "t", "v")
        await rt.send("g", other, 1)  # kept in the mailbox of the unloaded instance
        await rt.send("a", other, 2)
        token = await token_of(t)
        loads = log.loads()
        await clock.settle()
        assert rt.loaded == 0

        expected_waits = {
            "a": [af.Wait("event", "pas.ping")],
            "g": [af.Wait("event", "pas.go")],
            "p": [af.Wait("event", "pas.ping", None, at(clock, 30))],
            "t": [af.Wait("event", "pas.reply", token)],
            "v": [af.Wait("condition", "condition", None, at(clock, 86400))],
        }
        for _ in range(2):  # from memory, then (SQLite) from the store
            for instance_id, waits in expected_waits.items():
                status = await rt.handle(instance_id).status()
                assert (status.state, status.waiting_on) == ("waiting", waits), status
                assert status.created_at == began and status.finished_at is None
            assert outcomes(await rt.handle("g").status()) == [("pas.other", "value", False)]
            assert outcomes(await rt.handle("a").status()) == [("pas.other", "value", False)]
            assert outcomes(await t.status()) == [("pas.reply", None, False)]
            assert (await done.status()).state == "completed"
            assert (await gone.status()).state == "cancelled"

            listed = {s.id: s for s in await rt.list()}
            assert {i: s.state for i, s in listed.items()} == {
                **dict.fromkeys(expected_waits, "waiting"),
                "done": "completed",
                "gone": "cancelled",
            }
            assert all(listed[i].waiting_on == w for i, w in expected_waits.items())
            assert all(s.events == [] for s in listed.values())
            assert [s.id for s in await rt.list(status="waiting")] == list(expected_waits)
            finished = await rt.list(status=["completed", "cancelled"])
            assert [s.id for s in finished] == ["done", "gone"]
            assert [s.id for s in await rt.list(status="running")] == []
            assert [s.id for s in await rt.list(workflow=collect)] == ["a", "done"]
            assert [s.id for s in await rt.list(workflow="pas.gated")] == ["g"]
            both = await rt.list(status="waiting", workflow="pas.collect")
            assert [s.id for s in both] == ["a"]
            assert log.loads() == loads and rt.loaded == 0  # none of it loaded anything
            if rt.path is None:
                break
            await rt.checkpoint()


# -- opening a file with many parked instances --------------------------------------------

step_gate: dict[str, asyncio.Event] = {}


async def held_step(key: str) -> str:
    """A step that runs until the test lets it end."""
    effects[f"{key}/began"] += 1
    await step_gate[key].wait()
    return key


@af.workflow(name="pas.busy")
async def busy(ctx: af.Context[None], key: str) -> str:
    return await ctx.step(held_step, key)


async def test_opening_loads_only_the_instances_with_something_to_do(
    db: Path,
    clock: Clock,
    log: Log,
    board: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    effects.clear()
    step_gate["b"] = asyncio.Event()
    monkeypatch.setattr("actorflow.host.executor.STEP_GRACE", 0.01)
    began = clock.now()
    async with af.Runtime(db, clock=clock, max_loaded=None) as rt:
        for i in range(40):
            await rt.start(collect, 1, id=f"c{i}")  # nothing to do until a ping
        for i in range(5):
            await rt.start(patient, 10, id=f"p{i}")  # due while the file is closed
        for i in range(3):
            await rt.start(naps, [1000.0], id=f"n{i}")  # not due yet
            await rt.start(watch, f"w{i}", False, id=f"w{i}")  # a query: runs at open
        await rt.start(gated, 1, id="g")
        await rt.send("g", other, 1)  # an event its wait does not take
        await rt.start(tidy, "ack", id="x")
        await rt.handle("x").cancel()  # parked in its cleanup, cancel stored
        await clock.settle()
        await rt.start(busy, "b", id="b")  # its step is in flight at close: abandoned
        while not effects["b/began"]:
            await asyncio.sleep(0)
        assert rt.loaded == 54 and log.unloads() == 0
    assert effects == {"b/began": 1, "x/cleanup": 1}
    await clock.advance(20)  # no runtime runs meanwhile

    async with af.Runtime(db, clock=clock, max_loaded=None) as rt:
        reopened = at(clock)
        assert log.recovered() == 5 + 3 + 1  # the due ones, the queries, the step
        step_gate["b"].set()
        assert await rt.handle("b").result(timeout=5) == "b"
        for i in range(5):
            assert await rt.handle(f"p{i}").result(timeout=5) == "timeout"
            assert (await rt.handle(f"p{i}").status()).finished_at == reopened
        await clock.settle()
        assert rt.loaded == 3 and log.loads() == 0  # the queries, parked; none loaded since
        assert query_runs == {"w0": 2, "w1": 2, "w2": 2}
        waiting = await rt.list(status="waiting")
        assert len(waiting) == 40 + 3 + 3 + 1 + 1 and log.loads() == 0
        await rt.send("c7", ping, 7)
        assert await rt.handle("c7").result(timeout=5) == [7]
        assert log.loads("c7") == 1
        await clock.advance(1000)
        for i in range(3):
            assert await rt.handle(f"n{i}").result(timeout=5) == [began + 1000]
        assert log.loads() == 1 + 3
        await rt.send("g", go)
        assert await rt.handle("g").result(timeout=5) == [1]
        rt.max_loaded = 0
        assert rt.loaded == 0
    assert effects == {"b/began": 2, "x/cleanup": 1}  # the abandoned step ran again

    async with af.Runtime(db, clock=clock, max_loaded=2) as rt:
        assert log.recovered() == 3  # the queries only
        await clock.settle()
        assert rt.loaded <= 2


# -- max_loaded ------------------------------------------------------------------------


async def test_max_loaded_none_never_unloads_and_can_be_changed_at_run_time(
    runtime: Make, clock: Clock, log: Log
) -> None:
    assert af.Runtime().max_loaded == 10_000
    async with runtime(max_loaded=None) as rt:
        ids = [f"c{i}" for i in range(12)]
        for instance_id in ids:
            await rt.start(collect, 2, id=instance_id)
        await clock.advance(3600)
        assert rt.loaded == 12 and log.unloads() == 0
        rt.max_loaded = 5  # the least recently active go now
        assert rt.max_loaded == 5 and rt.loaded == 5
        assert [log.unloaded(i) for i in ids] == [True] * 7 + [False] * 5
        rt.max_loaded = None
        for instance_id in ids[:7]:
            await rt.send(instance_id, ping, 1)  # each loads one, and all stay loaded
        await clock.settle()
        assert rt.loaded == 12 and log.loads() == 7 and log.unloads() == 7
        rt.max_loaded = 0
        assert rt.loaded == 0 and log.unloads() == 19
        rt.max_loaded = 3
        await asyncio.gather(*(rt.send(i, ping, 2) for i in ids))
        await asyncio.gather(*(rt.send(i, ping, 3) for i in ids[7:]))
        for instance_id in ids:
            got = await rt.handle(instance_id).result(timeout=5)
            assert got == ([1, 2] if instance_id in ids[:7] else [2, 3])
        for bad in (-1, 1.5, "3"):
            with pytest.raises(ValueError, match="max_loaded"):
                rt.max_loaded = bad  # type: ignore[assignment]
        with pytest.raises(ValueError, match="max_loaded"):
            runtime(max_loaded=-1)
        assert rt.max_loaded == 3


async def test_lowering_max_loaded_while_events_are_written_loses_none_of_them(
    runtime: Make, clock: Clock, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The limit drops while a resolve and a handled send to loaded instances are being
    # written. Those instances must not be unloaded before the events are folded in:
    # the vote was never handled and the token could be used twice.
    async with runtime(max_loaded=None) as rt:
        t = await rt.start(tokened, True, id="t")
        v = await rt.start(tally, 1, id="v")
        await clock.settle()
        token = await token_of(t)
        await rt.checkpoint()  # nothing changed since: unloading them would write nothing
        writing, release = asyncio.Event(), asyncio.Event()
        write = rt._store.write

        async def slow_write(records: list[Any], marks: Any = ()) -> None:
            writing.set()
            await release.wait()
            await write(records, marks)

        monkeypatch.setattr(rt._store, "write", slow_write)
        sends = [
            asyncio.ensure_future(rt.resolve(token, 7)),
            asyncio.ensure_future(rt.send("v", vote, 1)),
        ]
        await writing.wait()
        rt.max_loaded = 0
        release.set()
        await asyncio.gather(*sends)
        monkeypatch.undo()
        await clock.settle()
        assert rt.loaded == 0 and log.count("record.orphan") == 0
        assert (await v.status()).waiting_on == [af.Wait("event", "pas.go")]  # the vote counted
        with pytest.raises(af.ActorflowError, match=UNUSABLE):
            await rt.resolve(token, 8)
        await rt.send("t", go)
        await rt.send("v", go)
        assert await t.result(timeout=5) == "value:7"
        assert await v.result(timeout=5) == [1, 2]


async def test_changing_max_loaded_under_traffic_loses_and_repeats_nothing(
    runtime: Make, clock: Clock, log: Log
) -> None:
    effects.clear()
    ids = [f"s{i}" for i in range(10)]
    async with runtime(max_loaded=4) as rt:
        for instance_id in ids:
            await rt.start(stepper, 6, id=instance_id)

        async def traffic(instance_id: str) -> None:
            await rt.send(instance_id, other, 0)  # never taken
            await asyncio.sleep(0)
            await rt.send(instance_id, ping, 0)

        async def limits() -> None:
            for limit in (0, None, 1, 3, 0, 2, None, 0):
                rt.max_loaded = limit
                await asyncio.sleep(0)
                await asyncio.sleep(0)

        for _ in range(3):
            await clock.advance(10)
            await asyncio.gather(*(traffic(i) for i in ids), limits())
            await clock.settle()
        for instance_id in ids:
            done = await rt.handle(instance_id).result(timeout=5)
            assert done == [f"{instance_id}/{k}" for k in range(6)]
            events = outcomes(await rt.handle(instance_id).status())
            assert (
                sorted(events)
                == [("pas.other", "value", False)] * 3 + [("pas.ping", "value", True)] * 3
            )
        assert log.loads() > 0 and log.unloads() > 0
    assert effects == {f"{i}/{k}": 1 for i in ids for k in range(6)}


# -- more of §1 on unloaded instances ------------------------------------------------------


@af.workflow(name="pas.race")
async def race(ctx: af.Context[None]) -> list[Any]:
    """``ctx.first`` of a ping and a sleep, twice; then one more ping."""
    out: list[Any] = []
    for _ in range(2):
        out.append(list(await ctx.first(ctx.wait_event(ping), ctx.sleep(60))))
    out.append(await ctx.wait_event(ping))
    return out


async def test_first_of_an_event_and_a_timer_while_unloaded(
    runtime: Make, clock: Clock, log: Log
) -> None:
    async with runtime(max_loaded=0) as rt:
        h = await rt.start(race, id="r")
        await unloaded(clock, log, "r")
        await clock.advance(60)  # the timer wins; the event wait takes nothing
        await unloaded(clock, log, "r")
        await rt.send("r", ping, 1)  # the event wins the second round
        await unloaded(clock, log, "r")
        assert log.loads("r") == 2
        await clock.advance(60)  # the second round's timer was cancelled: loads nothing
        assert log.loads("r") == 2
        await rt.send("r", ping, 2)
        assert await h.result(timeout=5) == [[1, None], [0, 1], 2]


async def test_errors_for_unloaded_instances_are_those_of_loaded_ones(
    runtime: Make, clock: Clock, log: Log
) -> None:
    async with runtime(max_loaded=0) as rt:
        h = await rt.start(collect, 1, id="c")
        done = await rt.start(collect, 1, id="done")
        await rt.send("done", ping, 0)
        await done.result(timeout=5)
        await unloaded(clock, log, "c")
        if rt.path is not None:
            await rt.checkpoint()
        loads = log.loads()
        with pytest.raises(af.InvalidPayload):
            await rt.send("c", ping, "not an int")
        with pytest.raises(af.ActorflowError, match="has finished"):
            await rt.send("done", ping, 1)
        with pytest.raises(af.ActorflowError, match="no workflow instance"):
            await rt.send("nobody", ping, 1)
        with pytest.raises(af.ActorflowError, match="already exists"):
            await rt.start(gated, 1, id="c")
        again = await rt.start(collect, 5, id="c")  # idempotent: the same instance
        assert again.id == "c" and again.workflow == "pas.collect"
        await clock.settle()
        assert log.loads() == loads and rt.loaded == 0
        assert (await h.status()).events == []  # nothing was stored
        with pytest.raises(af.WaitTimeout):
            await rt.handle("c").result(timeout=0.01)  # whoever waits loads it
        assert log.loads("c") == 1
        await rt.send("c", ping, 3)
        assert await h.result(timeout=5) == [3]


async def test_inbox_requests_reach_unloaded_instances(
    db: Path, clock: Clock, log: Log, board: dict[str, int]
) -> None:
    from actorflow.inbox import (
        CancelRequest,
        NotifyRequest,
        ResolveRequest,
        SendRequest,
        receipt,
        submit,
    )

    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(collect, 1, id="c")
        await rt.start(gated, 1, id="g")
        t = await rt.start(tokened, False, id="t")
        await rt.start(tidy, "raise", id="x")
        await rt.start(watch, "wk", False, id="w")
        await rt.start(collect, 1, id="idle")
        await clock.settle()
        token = await token_of(t)
    board["wk"] = 4
    requests = [
        SendRequest("c", "pas.ping", "1"),
        SendRequest("g", "pas.other", "2"),  # not taken: kept, no load
        ResolveRequest(token, "3"),
        ResolveRequest(token, "5"),  # used: rejected
        CancelRequest("x"),
        NotifyRequest(["pas.board"]),
        SendRequest("nobody", "pas.ping", "6"),
    ]
    seqs = [submit(db, r) for r in requests]
    async with af.Runtime(db, clock=clock, max_loaded=0) as rt:
        # Applied, in order, before open returned.
        verdicts = [receipt(db, s).status for s in seqs]
        assert verdicts == ["accepted"] * 3 + ["rejected"] + ["accepted"] * 2 + ["rejected"]
        assert await rt.handle("c").result(timeout=5) == [1]
        assert await rt.handle("t").result(timeout=5) == "value:3"
        with pytest.raises(af.WorkflowCancelled):
            await rt.handle("x").result(timeout=5)
        assert await rt.handle("w").result(timeout=5) == 4
        await clock.settle()
        assert [log.loads(i) for i in ("c", "t", "x", "g", "idle")] == [1, 1, 1, 0, 0]
        assert outcomes(await rt.handle("g").status()) == [("pas.other", "value", False)]
        assert rt.loaded == 0


@af.workflow(name="pas.guarded")
async def guarded(ctx: af.Context[None]) -> int:
    """A ``finally`` that runs a step: on its way out, never when it is unloaded."""
    try:
        return await ctx.wait_event(ping)
    finally:
        await ctx.step(effect, f"{ctx.workflow_id}/finally")


@pytest.mark.parametrize("end", ["ping", "cancel"])
async def test_a_finally_block_runs_when_the_workflow_ends_not_when_it_is_unloaded(
    runtime: Make, clock: Clock, log: Log, end: str
) -> None:
    effects.clear()
    async with runtime(max_loaded=0) as rt:
        h = await rt.start(guarded, id="f")
        for n in range(3):
            await unloaded(clock, log, "f")
            with pytest.raises(af.WaitTimeout):
                await h.result(timeout=0.01)  # whoever waits for it loads it
            assert log.loads("f") == n + 1
            rt.max_loaded = 0  # unloads it again at once
        await unloaded(clock, log, "f")
        assert effects == {}
        if end == "ping":
            await rt.send("f", ping, 3)
            assert await h.result(timeout=5) == 3
        else:
            await h.cancel()
            with pytest.raises(af.WorkflowCancelled):
                await h.result(timeout=5)
    assert effects == {"f/finally": 1}


# -- kill -9 -----------------------------------------------------------------------------

CHILD = Path(__file__).with_name("passivation_child.py")
KILL_INSTANCES = 16
KILL_PINGS = 16


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def run_child(db: Path, work: Path, kill: random.Random | None) -> None:
    """Run the child to the end, or (``kill``) SIGKILL it a random moment after its
    traffic has begun (some sends acknowledged in this run)."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(db), str(work), str(KILL_INSTANCES), str(KILL_PINGS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if kill is not None:
        acks = len(lines(work / "acks.log"))
        deadline = time.monotonic() + 60
        while len(lines(work / "acks.log")) <= acks + kill.randrange(1, 40):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the child makes no progress"
            time.sleep(0.005)
        time.sleep(kill.uniform(0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "DONE" in out, err


def test_kill_9_with_most_instances_unloaded_loses_and_repeats_nothing(tmp_path: Path) -> None:
    db = tmp_path / "kill.db"
    rng = random.Random(int(os.environ.get("CRASH_SEED", "11")))
    for _ in range(4):
        run_child(db, tmp_path, rng)
    run_child(db, tmp_path, None)

    finished = json.loads((tmp_path / "results.json").read_text())
    results = finished["results"]
    assert finished["loads"] > 0  # instances were unloaded and loaded again
    assert len(results) == KILL_INSTANCES
    runs: dict[str, list[str]] = {}
    for line in lines(tmp_path / "steps.log"):
        instance, nonce = line.split()
        runs.setdefault(instance, []).append(nonce)
    tried: dict[str, list[int]] = {}
    for line in lines(tmp_path / "tries.log"):
        instance, payload = line.split()
        tried.setdefault(instance, []).append(int(payload))
    for line in lines(tmp_path / "acks.log"):  # no acknowledged ping was lost
        instance, payload = line.split()
        assert int(payload) in results[instance]["got"], (instance, payload)
    for instance, result in results.items():
        got = result["got"]
        assert len(got) == KILL_PINGS == len(set(got)), (instance, got)
        order = [p for p in tried[instance] if p in got]  # each taken once, in send order
        assert got == order, (instance, got, tried[instance])
        stored = [result["first"], *result["middle"], result["last"]]
        assert len(stored) == 2 + KILL_PINGS // 4
        for nonce in stored:
            kind = nonce.split("-")[0]
            executions = [n for n in runs[instance] if n.split("-")[0] == kind]
            assert executions[-1] == nonce, f"{instance}: step {kind} ran after it was stored"
    asyncio.run(check_stored_events(db))


async def check_stored_events(db: Path) -> None:
    """Every instance holds its pings, each consumed once, and its noise, kept unconsumed."""
    async with af.Runtime(db, max_loaded=0) as rt:
        listed = await rt.list()
        assert [s.state for s in listed] == ["completed"] * KILL_INSTANCES
        for s in listed:
            events = outcomes(await rt.handle(s.id).status())
            assert (
                sorted(events)
                == [("passchild.noise", "value", False)]
                + [("passchild.ping", "value", True)] * KILL_PINGS
            ), s.id
