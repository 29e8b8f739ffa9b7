"""State and handlers, wait_until, wait_for + notify + every, ctx.first, asyncio.gather
and cancellation, end to end and across close + reopen (time via ManualClock)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

import actorflow as af
from actorflow.host import writer as writer_module
from actorflow.records import EventReturned

Make = Callable[..., af.Runtime]
Clock = af.testing.ManualClock


def at(clock: Clock, offset: float = 0.0) -> datetime:
    return datetime.fromtimestamp(clock.now() + offset, UTC)


async def state_of(h: af.Handle[Any]) -> str:
    return (await h.status()).state


async def eventually(check: Callable[[], bool], within: float = 2.0) -> None:
    """Poll ``check`` (for work that runs in real time, e.g. a step in a thread)."""
    for _ in range(int(within / 0.002)):
        if check():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("the condition did not become true in time")


executions: list[str] = []


def effect(name: str) -> str:
    executions.append(name)
    return name


# -- state and handlers ----------------------------------------------------------------


class Tally(msgspec.Struct):
    n: int = 0
    seen: list[str] = msgspec.field(default_factory=list)


class Vote(msgspec.Struct):
    who: str
    yes: bool = True


bump = af.Event("cond.bump", int)
vote = af.Event("cond.vote", Vote)
go = af.Event("cond.go")
handler_runs: list[str] = []


@af.workflow(name="cond.counter", state=Tally)
async def counter(ctx: af.Context[Tally], threshold: int) -> int:
    await ctx.wait_until(lambda: ctx.state.n >= threshold)
    return ctx.state.n


@counter.on(bump)
def _add(state: Tally, by: int) -> None:
    handler_runs.append(f"bump {by}")
    state.n += by


async def test_handlers_update_state_and_wait_until_resumes(runtime: Make, clock: Clock) -> None:
    async with runtime() as rt:
        h = await rt.start(counter, 5)
        await clock.advance(0)
        st = await h.status()
        assert st.state == "waiting"
        assert st.waiting_on == [af.Wait("condition", "condition", None, None)]
        for by in (1, 2, 1):
            await rt.send(h.id, bump, by)
        await clock.advance(0)
        assert await state_of(h) == "waiting"
        await rt.send(h.id, bump, 3)
        assert await h.result(timeout=1) == 7
        events = (await h.status()).events
        # a handled event is consumed when it arrives
        assert [e.consumed_at == e.sent_at for e in events] == [True] * 4


async def test_handler_payload_is_validated_at_the_sender(runtime: Make) -> None:
    async with runtime() as rt:
        h = await rt.start(counter, 1)
        with pytest.raises(af.InvalidPayload):
            await rt.send(h.id, bump, "one")
        await rt.send(h.id, bump, 1)
        assert await h.result(timeout=1) == 1


async def test_handled_event_never_feeds_wait_event(runtime: Make, clock: Clock) -> None:
    @af.workflow(name="cond.handled_vs_wait", state=Tally)
    async def handled(ctx: af.Context[Tally]) -> tuple[int, Any]:
        return await ctx.first(ctx.wait_event(bump), ctx.wait_until(lambda: ctx.state.n >= 2))

    @handled.on(bump)
    def _h(state: Tally, by: int) -> None:
        state.n += by

    async with runtime() as rt:
        h = await rt.start(handled)
        await rt.send(h.id, bump, 1)
        await rt.send(h.id, bump, 1)
        assert await h.result(timeout=1) == (1, None)


def test_on_needs_a_state_type() -> None:
    @af.workflow(name="cond.stateless")
    async def stateless(ctx: af.Context[None]) -> None:
        pass

    with pytest.raises(af.ActorflowError, match="state"):
        stateless.on(bump)


async def test_state_starts_fresh_and_the_workflow_may_change_it(
    runtime: Make, clock: Clock
) -> None:
    @af.workflow(name="cond.self_change", state=Tally)
    async def self_change(ctx: af.Context[Tally]) -> list[str]:
        assert ctx.state == Tally()

        async def setter() -> None:
            await ctx.step(effect, "set")
            ctx.state.n = 10  # a change made by the workflow itself

        await asyncio.gather(ctx.wait_until(lambda: ctx.state.n >= 10), setter())
        return ctx.state.seen

    async with runtime() as rt:
        h = await rt.start(self_change)
        assert await h.result(timeout=1) == []


@af.workflow(name="cond.ordered", state=Tally)
async def ordered(ctx: af.Context[Tally]) -> list[str]:
    await ctx.step(effect, "ordered:start")
    await ctx.wait_until(lambda: len(ctx.state.seen) >= 2)
    first_two = list(ctx.state.seen)
    await ctx.wait_event(go)
    await ctx.wait_until(lambda: len(ctx.state.seen) >= 5)
    return [*first_two, "|", *ctx.state.seen]


@ordered.on(vote)
def _record(state: Tally, v: Vote) -> None:
    state.seen.append(v.who)


async def test_state_is_rebuilt_on_replay_in_the_same_order(db: Path, clock: Clock) -> None:
    executions.clear()
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(ordered, id="ord")
        for who in ("a", "b", "c"):  # c arrives after the condition was met
            await rt.send("ord", vote, Vote(who))
        await clock.advance(0)
        assert (await h.status()).waiting_on == [af.Wait("event", "cond.go", None, None)]
    async with af.Runtime(db, clock=clock) as rt:
        await rt.send("ord", vote, Vote("d"))
        await rt.send("ord", go)
        await clock.advance(0)
        assert (await rt.handle("ord").status()).waiting_on[0].kind == "condition"
    async with af.Runtime(db, clock=clock) as rt:
        await rt.send("ord", vote, Vote("e"))
        result = await rt.handle("ord").result(timeout=1)
    assert result == ["a", "b", "|", "a", "b", "c", "d", "e"]
    assert executions == ["ordered:start"]


async def test_state_survives_a_checkpoint(db: Path, clock: Clock) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(counter, 10, id="cp")
        for _ in range(4):
            await rt.send("cp", bump, 2)
        await rt.checkpoint()
        await rt.send("cp", bump, 1)
    async with af.Runtime(db, clock=clock) as rt:
        await clock.advance(0)
        assert await state_of(rt.handle("cp")) == "waiting"
        await rt.send("cp", bump, 1)
        assert await rt.handle("cp").result(timeout=1) == 10


# -- wait_until ------------------------------------------------------------------------


async def test_wait_until_true_at_once_returns_at_once(runtime: Make, clock: Clock) -> None:
    @af.workflow(name="cond.already", state=Tally)
    async def already(ctx: af.Context[Tally]) -> str:
        await ctx.wait_until(lambda: True)
        return "done"

    async with runtime() as rt:
        h = await rt.start(already)
        assert await h.result(timeout=1) == "done"


async def test_wait_until_never_polls(runtime: Make, clock: Clock) -> None:
    checks: list[int] = []

    @af.workflow(name="cond.no_poll", state=Tally)
    async def no_poll(ctx: af.Context[Tally]) -> int:
        def ready() -> bool:
            checks.append(ctx.state.n)
            return ctx.state.n >= 2

        await ctx.wait_until(ready)
        return ctx.state.n

    @no_poll.on(bump)
    def _b(state: Tally, by: int) -> None:
        state.n += by

    async with runtime() as rt:
        h = await rt.start(no_poll)
        await clock.advance(0)
        checked = len(checks)
        assert checked >= 1 and set(checks) == {0}
        await clock.advance(3600)
        await asyncio.sleep(0.02)
        assert len(checks) == checked  # time alone does not re-check it
        await rt.send(h.id, bump, 1)
        await clock.advance(0)
        assert 1 in checks and await state_of(h) == "waiting"
        await rt.send(h.id, bump, 1)
        assert await h.result(timeout=1) == 2


async def test_wait_until_in_parallel_branches(runtime: Make, clock: Clock) -> None:
    @af.workflow(name="cond.branches", state=Tally)
    async def branches(ctx: af.Context[Tally]) -> list[str]:
        done: list[str] = []

        async def at_least(k: int) -> None:
            await ctx.wait_until(lambda: ctx.state.n >= k)
            done.append(f"{k}@{ctx.state.n}")

        await asyncio.gather(at_least(3), at_least(1), at_least(2))
        return done

    @branches.on(bump)
    def _b(state: Tally, by: int) -> None:
        state.n += by

    async with runtime() as rt:
        h = await rt.start(branches)
        await clock.advance(0)
        assert len((await h.status()).waiting_on) == 3
        await rt.send(h.id, bump, 1)
        await clock.advance(0)
        assert len((await h.status()).waiting_on) == 2
        await rt.send(h.id, bump, 5)
        # both remaining conditions are met by one change: they resume in call order
        assert await h.result(timeout=1) == ["1@1", "3@6", "2@6"]


async def test_wait_until_resumes_across_restart(db: Path, clock: Clock) -> None:
    handler_runs.clear()
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(counter, 3, id="wu")
        await rt.send("wu", bump, 1)
        await rt.send("wu", bump, 1)
    async with af.Runtime(db, clock=clock) as rt:
        h = rt.handle("wu")
        await clock.advance(0)
        st = await h.status()
        assert st.state == "waiting" and st.waiting_on[0].kind == "condition"
        await rt.send("wu", bump, 1)
        assert await h.result(timeout=1) == 3
    # the handler ran once per event live, and again for the first two on replay
    assert handler_runs == ["bump 1", "bump 1", "bump 1", "bump 1", "bump 1"]


async def test_wait_until_met_before_close_replays_to_the_same_place(
    db: Path, clock: Clock
) -> None:
    @af.workflow(name="cond.met_then_sleep", state=Tally)
    async def met_then_sleep(ctx: af.Context[Tally]) -> int:
        await ctx.wait_until(lambda: ctx.state.n >= 2)
        at_met = ctx.state.n
        await ctx.sleep(60)
        return at_met * 100 + ctx.state.n

    @met_then_sleep.on(bump)
    def _b(state: Tally, by: int) -> None:
        state.n += by

    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(met_then_sleep, id="mts")
        await rt.send("mts", bump, 2)
        await rt.send("mts", bump, 3)  # while sleeping
        await clock.advance(10)
    async with af.Runtime(db, clock=clock) as rt:
        await clock.advance(50)
        assert await rt.handle("mts").result(timeout=1) == 205


# -- wait_for ------------------------------------------------------------------------

inventory: dict[str, int] = {}
calls: list[str] = []


def stock(sku: str) -> int:
    calls.append(sku)
    return inventory.get(sku, 0)


async def stock_async(sku: str) -> int:
    await asyncio.sleep(0.001)
    calls.append(sku)
    return inventory.get(sku, 0)


@af.workflow(name="cond.restock")
async def restock(ctx: af.Context[None], sku: str, use_async: bool) -> list[Any]:
    query = stock_async if use_async else stock
    n = await ctx.wait_for(query, sku, on=("inventory", "other"))
    await ctx.step(effect, f"restocked:{sku}")
    await ctx.wait_event(go)
    return [n]


@pytest.mark.parametrize("use_async", [False, True])
async def test_wait_for_runs_at_start_and_on_notify(
    runtime: Make, clock: Clock, use_async: bool
) -> None:
    inventory.clear()
    calls.clear()
    async with runtime() as rt:
        h = await rt.start(restock, "sku1", use_async)
        await clock.advance(0)
        assert calls == ["sku1"]  # once when the wait starts
        name = f"{__name__}.{(stock_async if use_async else stock).__qualname__}"
        assert (await h.status()).waiting_on == [af.Wait("query", name, None, None)]
        await rt.notify("unrelated")
        assert calls == ["sku1"]
        await rt.notify("inventory")
        assert calls == ["sku1"] * 2
        inventory["sku1"] = 4
        await rt.notify("other")
        await clock.advance(0)
        assert calls == ["sku1"] * 3
        assert [w.kind for w in (await h.status()).waiting_on] == ["event"]
        inventory["sku1"] = 99
        await rt.notify("inventory")  # the wait is over: not run again
        assert calls == ["sku1"] * 3
        await rt.send(h.id, go)
        assert await h.result(timeout=1) == [4]


async def test_wait_for_true_at_start_returns_without_notify(runtime: Make) -> None:
    inventory.clear()
    inventory["ready"] = 1
    async with runtime() as rt:
        h = await rt.start(restock, "ready", False)
        await rt.send(h.id, go)
        assert await h.result(timeout=1) == [1]


async def test_wait_for_every_reruns_on_the_clock(runtime: Make, clock: Clock) -> None:
    inventory.clear()
    calls.clear()

    @af.workflow(name="cond.every")
    async def every(ctx: af.Context[None], sku: str) -> int:
        return await ctx.wait_for(stock_async, sku, every=60)

    async with runtime() as rt:
        h = await rt.start(every, "e1")
        await clock.advance(0)
        assert calls == ["e1"]
        await clock.advance(59)
        assert calls == ["e1"]
        await clock.advance(1)
        assert calls == ["e1"] * 2
        await clock.advance(120)
        assert calls == ["e1"] * 4
        inventory["e1"] = 3
        await clock.advance(60)
        assert await state_of(h) == "completed"
        assert await h.result(timeout=1) == 3
        await clock.advance(600)
        assert calls == ["e1"] * 5


async def test_wait_for_query_errors_are_retried_not_fatal(runtime: Make, clock: Clock) -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("db down")
        return "up"

    @af.workflow(name="cond.flaky")
    async def flaky_wf(ctx: af.Context[None]) -> str:
        return await ctx.wait_for(flaky, on="db", every=30)

    async with runtime() as rt:
        h = await rt.start(flaky_wf)
        await clock.advance(0)
        assert len(attempts) == 1 and await state_of(h) == "waiting"
        await rt.notify("db")  # raises again: logged, still waiting
        assert len(attempts) == 2 and await state_of(h) == "waiting"
        await clock.advance(30)  # every= still runs after errors
        assert await h.result(timeout=1) == "up"


class Order(msgspec.Struct):
    id: str
    paid: bool


orders: dict[str, Order] = {}


async def find_paid(order_id: str) -> Order | None:
    calls.append(order_id)
    order = orders.get(order_id)
    return order if order is not None and order.paid else None


@af.workflow(name="cond.paid")
async def paid(ctx: af.Context[None], order_id: str) -> list[Any]:
    order = await ctx.wait_for(find_paid, order_id, on="orders")
    assert isinstance(order, Order)
    await ctx.step(effect, f"ship:{order.id}")
    await ctx.wait_event(go)
    return [order.id, order.paid, type(order).__name__]


async def test_wait_for_value_is_stored_and_not_recomputed_on_replay(
    db: Path, clock: Clock
) -> None:
    orders.clear()
    calls.clear()
    executions.clear()
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(paid, "o1", id="paid")
        orders["o1"] = Order("o1", True)
        await rt.notify("orders")
        await clock.advance(0)
        assert [w.kind for w in (await h.status()).waiting_on] == ["event"]
    assert calls == ["o1", "o1"]
    orders.clear()  # the data changed since: replay must not look again
    async with af.Runtime(db, clock=clock) as rt:
        await clock.advance(0)
        await rt.send("paid", go)
        assert await rt.handle("paid").result(timeout=1) == ["o1", True, "Order"]
    assert calls == ["o1", "o1"]
    assert executions == ["ship:o1"]


async def test_wait_for_parked_across_restart_runs_again_and_resumes(
    db: Path, clock: Clock
) -> None:
    orders.clear()
    calls.clear()
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(paid, "o2", id="parked")
        await rt.notify("orders")
        assert calls == ["o2", "o2"]
    orders["o2"] = Order("o2", True)  # paid while the process was down
    async with af.Runtime(db, clock=clock) as rt:
        await clock.advance(0)
        assert calls == ["o2", "o2", "o2"]  # the wait starts again: the query runs once
        h = rt.handle("parked")
        assert [w.kind for w in (await h.status()).waiting_on] == ["event"]
        await rt.send("parked", go)
        assert await h.result(timeout=1) == ["o2", True, "Order"]


async def test_wait_for_every_survives_restart(db: Path, clock: Clock) -> None:
    inventory.clear()
    calls.clear()

    @af.workflow(name="cond.every_restart")
    async def every(ctx: af.Context[None], sku: str) -> int:
        return await ctx.wait_for(stock, sku, every=60)

    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(every, "r1", id="er")
        await clock.advance(61)
        assert calls == ["r1"] * 2
    async with af.Runtime(db, clock=clock) as rt:
        await clock.advance(0)
        assert calls == ["r1"] * 3
        inventory["r1"] = 1
        await clock.advance(60)
        assert await rt.handle("er").result(timeout=1) == 1


# -- first -----------------------------------------------------------------------------

a_ev = af.Event("cond.a", str)
b_ev = af.Event("cond.b", str)


@af.workflow(name="cond.race")
async def race(ctx: af.Context[None]) -> list[Any]:
    await ctx.step(effect, "race:start")
    index, value = await ctx.first(ctx.wait_event(a_ev), ctx.wait_event(b_ev), ctx.sleep(60))
    # the losers consumed nothing: a later wait gets what arrives next
    rest = await ctx.first(ctx.wait_event(a_ev), ctx.wait_event(b_ev))
    return [index, value, *rest]


async def test_first_returns_the_first_and_cancels_the_others(runtime: Make, clock: Clock) -> None:
    async with runtime() as rt:
        h = await rt.start(race)
        await clock.advance(0)
        waits = (await h.status()).waiting_on
        assert [(w.kind, w.name) for w in waits] == [
            ("event", "cond.a"),
            ("event", "cond.b"),
            ("timer", None),
        ]
        assert waits[2].deadline == at(clock, 60)
        await rt.send(h.id, b_ev, "bee")
        await clock.advance(0)
        assert [(w.kind, w.name) for w in (await h.status()).waiting_on] == [
            ("event", "cond.a"),
            ("event", "cond.b"),
        ]
        await clock.advance(120)  # the cancelled timer does not fire into anything
        await rt.send(h.id, a_ev, "ay")
        assert await h.result(timeout=1) == [1, "bee", 0, "ay"]


async def test_first_timer_wins_and_a_late_event_waits(runtime: Make, clock: Clock) -> None:
    async with runtime() as rt:
        h = await rt.start(race)
        await clock.advance(60)
        await rt.send(h.id, a_ev, "late")
        assert await h.result(timeout=1) == [2, None, 0, "late"]


async def test_first_loser_bound_in_the_same_batch_gives_its_event_back(
    runtime: Make, clock: Clock
) -> None:
    async with runtime() as rt:
        h = await rt.start(race)
        await clock.advance(0)
        # both sends are accepted in one loop turn: both waits get an event bound
        await asyncio.gather(rt.send(h.id, a_ev, "one"), rt.send(h.id, b_ev, "two"))
        result = await h.result(timeout=1)
        assert result in ([0, "one", 1, "two"], [1, "two", 0, "one"])
        assert all(e.consumed_at is not None for e in (await h.status()).events)


async def test_first_with_a_timeout_error_raises_it(runtime: Make, clock: Clock) -> None:
    @af.workflow(name="cond.first_error")
    async def first_error(ctx: af.Context[None]) -> str:
        try:
            await ctx.first(ctx.wait_event(a_ev, timeout=10), ctx.sleep(20))
        except af.WaitTimeout:
            return f"timeout, then {await ctx.wait_event(b_ev)}"
        return "?"

    async with runtime() as rt:
        h = await rt.start(first_error)
        await clock.advance(10)
        await rt.send(h.id, b_ev, "b")
        assert await h.result(timeout=1) == "timeout, then b"


async def test_first_of_a_step_and_a_wait(runtime: Make, clock: Clock) -> None:
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return "slow"

    @af.workflow(name="cond.first_step")
    async def first_step(ctx: af.Context[None]) -> list[Any]:
        index, value = await ctx.first(ctx.step(slow), ctx.wait_event(a_ev))
        return [index, value, await ctx.wait_event(a_ev, timeout=5)]

    async with runtime() as rt:
        h = await rt.start(first_step)
        await rt.send(h.id, a_ev, "a1")
        await rt.send(h.id, a_ev, "a2")
        gate.set()
        assert await h.result(timeout=1) == [1, "a1", "a2"]


async def test_first_needs_a_wait(runtime: Make) -> None:
    @af.workflow(name="cond.first_empty")
    async def first_empty(ctx: af.Context[None]) -> str:
        try:
            await ctx.first()
        except ValueError:
            return "ValueError"
        return "?"

    async with runtime() as rt:
        assert await (await rt.start(first_empty)).result(timeout=1) == "ValueError"


async def test_first_parked_across_restart_event_wins(db: Path, clock: Clock) -> None:
    executions.clear()
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(race, id="r1")
        await clock.advance(30)
    async with af.Runtime(db, clock=clock) as rt:
        h = rt.handle("r1")
        await clock.advance(0)
        assert [w.kind for w in (await h.status()).waiting_on] == ["event", "event", "timer"]
        await rt.send("r1", a_ev, "x")
        await clock.advance(40)  # past the timer's deadline: it was cancelled
        await rt.send("r1", b_ev, "y")
        assert await h.result(timeout=1) == [0, "x", 1, "y"]
    assert executions == ["race:start"]


async def test_first_timer_overdue_at_restart_wins(db: Path, clock: Clock) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(race, id="r2")
        await clock.advance(1)
    await clock.advance(100)
    async with af.Runtime(db, clock=clock) as rt:
        await clock.settle()
        await rt.send("r2", b_ev, "after")
        assert await rt.handle("r2").result(timeout=1) == [2, None, 1, "after"]


async def test_first_outcome_replays_to_the_same_result(db: Path, clock: Clock) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(race, id="r3")
        await rt.send("r3", b_ev, "won")
        await rt.send("r3", b_ev, "queued")  # buffered for the second first()
        await clock.advance(0)
    for _ in range(2):
        async with af.Runtime(db, clock=clock) as rt:
            await clock.advance(100)
            h = rt.handle("r3")
            assert await h.result(timeout=1) == [1, "won", 1, "queued"]


async def test_first_loser_event_is_not_lost_by_a_crash_before_its_return(
    db: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Crash right after a loser's event outcome was committed, before the record that
    # gives its event back was written: replay must still give the event back.
    # The live instance takes the given-back event at once (a later wait's outcome is
    # written after the return), so the crash loses everything from the return on.
    append = writer_module.GroupWriter.append
    crashed = False

    def lose_returns(self: writer_module.GroupWriter, records: list[Any]) -> None:
        nonlocal crashed
        crashed = crashed or any(isinstance(r, EventReturned) for r in records)
        if not crashed:
            append(self, records)

    async def crash_keeps_the_log(snapshots: object) -> None:
        pass  # the close below then leaves the log unfolded, as a crash does

    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(race, id="r4")
        await clock.advance(0)
        monkeypatch.setattr(rt._store, "checkpoint", crash_keeps_the_log)
        monkeypatch.setattr(writer_module.GroupWriter, "append", lose_returns)
        await asyncio.gather(rt.send("r4", a_ev, "one"), rt.send("r4", b_ev, "two"))
        await clock.advance(0)
        assert crashed and (await h.status()).finished_at is None
    monkeypatch.undo()
    async with af.Runtime(db, clock=clock) as rt:
        result = await rt.handle("r4").result(timeout=1)
        assert result in ([0, "one", 1, "two"], [1, "two", 0, "one"])


# -- gather ----------------------------------------------------------------------------

approval = af.Event("cond.approval", Vote)


@af.workflow(name="cond.three")
async def three_approvals(ctx: af.Context[None], doc: str) -> list[str]:
    await ctx.step(effect, f"draft:{doc}")
    votes = await asyncio.gather(*(ctx.wait_event(approval, timeout=3600) for _ in range(3)))
    return [f"{v.who}:{'yes' if v.yes else 'no'}" for v in votes]


async def test_gather_three_approvals(runtime: Make, clock: Clock) -> None:
    async with runtime() as rt:
        h = await rt.start(three_approvals, "d")
        await clock.advance(0)
        waits = (await h.status()).waiting_on
        assert [(w.kind, w.name) for w in waits] == [("event", "cond.approval")] * 3
        assert all(w.deadline == at(clock, 3600) for w in waits)
        for who in ("ann", "bob", "cy"):
            await rt.send(h.id, approval, Vote(who, who != "bob"))
        assert await h.result(timeout=1) == ["ann:yes", "bob:no", "cy:yes"]


async def test_gather_three_approvals_across_restarts(db: Path, clock: Clock) -> None:
    executions.clear()
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(three_approvals, "d2", id="g")
        await rt.send("g", approval, Vote("ann"))
    async with af.Runtime(db, clock=clock) as rt:
        await clock.advance(0)
        assert len((await rt.handle("g").status()).waiting_on) == 2
        await rt.send("g", approval, Vote("bob"))
    async with af.Runtime(db, clock=clock) as rt:
        await rt.send("g", approval, Vote("cy", False))
        assert await rt.handle("g").result(timeout=1) == ["ann:yes", "bob:yes", "cy:no"]
    assert executions == ["draft:d2"]


async def test_gather_of_a_timeout_and_approvals_across_restart(db: Path, clock: Clock) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(three_approvals, "d3", id="gt")
        await rt.send("gt", approval, Vote("ann"))
        await clock.advance(1800)
    async with af.Runtime(db, clock=clock) as rt:
        await clock.advance(1800)
        with pytest.raises(af.WorkflowFailed) as info:
            await rt.handle("gt").result(timeout=1)
        assert info.value.error_type == "WaitTimeout"
    del h


@af.workflow(name="cond.mixed", state=Tally)
async def mixed(ctx: af.Context[Tally], sku: str) -> list[Any]:
    got = await asyncio.gather(
        ctx.step(effect, f"mixed:{sku}"),
        ctx.wait_event(a_ev),
        ctx.sleep(100),
        ctx.wait_until(lambda: ctx.state.n >= 2),
        ctx.wait_for(stock, sku, on="inventory"),
    )
    return list(got)


@mixed.on(bump)
def _mixed_bump(state: Tally, by: int) -> None:
    state.n += by


async def test_gather_of_every_kind_of_wait_across_restarts(db: Path, clock: Clock) -> None:
    executions.clear()
    inventory.clear()
    calls.clear()
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(mixed, "m", id="mix")
        await clock.advance(0)
        kinds = [w.kind for w in (await h.status()).waiting_on]
        assert kinds == ["event", "timer", "condition", "query"]
        await rt.send("mix", bump, 1)
        await clock.advance(40)
    async with af.Runtime(db, clock=clock) as rt:
        await rt.send("mix", a_ev, "a")
        inventory["m"] = 5
        await rt.notify("inventory")
        await clock.advance(0)
        kinds = [w.kind for w in (await rt.handle("mix").status()).waiting_on]
        assert kinds == ["timer", "condition"]
    async with af.Runtime(db, clock=clock) as rt:
        await rt.send("mix", bump, 1)
        await clock.advance(60)
        assert await rt.handle("mix").result(timeout=1) == ["mixed:m", "a", None, None, 5]
    assert executions == ["mixed:m"]
    # at the start, when the reopened runtime resumed the wait, on notify; never once stored
    assert calls == ["m", "m", "m"]


# -- cancellation ----------------------------------------------------------------------


@af.workflow(name="cond.cancel_sleep")
async def cancel_sleep(ctx: af.Context[None]) -> str:
    try:
        await ctx.sleep(3600)
    except asyncio.CancelledError:
        await ctx.step(effect, "cleanup:1")
        await ctx.sleep(10)  # cleanup may wait too
        await ctx.step(effect, "cleanup:2")
        raise
    return "slept"


async def test_cancel_during_sleep_runs_cleanup_and_ends_cancelled(
    runtime: Make, clock: Clock
) -> None:
    executions.clear()
    async with runtime() as rt:
        h = await rt.start(cancel_sleep)
        await clock.advance(5)
        await h.cancel()
        await clock.advance(0)
        assert executions == ["cleanup:1"]
        assert (await h.status()).waiting_on == [af.Wait("timer", None, None, at(clock, 10))]
        await clock.advance(10)
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=1)
        assert executions == ["cleanup:1", "cleanup:2"]
        st = await h.status()
        assert st.state == "cancelled" and st.waiting_on == []
        await clock.advance(7200)  # the cancelled 3600 s timer is gone


async def test_cancel_is_durable_across_restart(db: Path, clock: Clock) -> None:
    executions.clear()
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(cancel_sleep, id="cs")
        await h.cancel()
        await clock.advance(3)
    async with af.Runtime(db, clock=clock) as rt:
        h = rt.handle("cs")
        await clock.advance(0)
        assert (await h.status()).waiting_on == [af.Wait("timer", None, None, at(clock, 7))]
        await clock.advance(7)
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=1)
    assert executions == ["cleanup:1", "cleanup:2"]


async def test_cancel_stops_queries_and_conditions(runtime: Make, clock: Clock) -> None:
    calls.clear()
    inventory.clear()

    @af.workflow(name="cond.cancel_waits", state=Tally)
    async def cancel_waits(ctx: af.Context[Tally]) -> None:
        await ctx.first(
            ctx.wait_for(stock, "c", on="inventory", every=10),
            ctx.wait_until(lambda: ctx.state.n > 0),
            ctx.wait_event(a_ev),
        )

    async with runtime() as rt:
        h = await rt.start(cancel_waits)
        await clock.advance(0)
        assert calls == ["c"]
        await h.cancel()
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=1)
        await rt.notify("inventory")
        await clock.advance(100)
        assert calls == ["c"]
        assert (await h.status()).state == "cancelled"
        with pytest.raises(af.ActorflowError, match="finished"):
            await rt.send(h.id, a_ev, "late")


async def test_cancel_during_gather_cancels_every_branch(runtime: Make, clock: Clock) -> None:
    @af.workflow(name="cond.cancel_gather")
    async def cancel_gather(ctx: af.Context[None]) -> str:
        try:
            await asyncio.gather(ctx.wait_event(a_ev), ctx.sleep(50))
        except asyncio.CancelledError:
            return f"cancelled, then {await ctx.wait_event(a_ev)}"
        return "?"

    async with runtime() as rt:
        h = await rt.start(cancel_gather)
        await clock.advance(0)
        await h.cancel()
        await clock.advance(0)
        assert [w.kind for w in (await h.status()).waiting_on] == ["event"]
        await clock.advance(60)
        await rt.send(h.id, a_ev, "z")
        assert await h.result(timeout=1) == "cancelled, then z"


async def test_cancel_of_a_wait_with_a_bound_event_gives_the_event_back(
    runtime: Make, clock: Clock
) -> None:
    @af.workflow(name="cond.cancel_bound")
    async def cancel_bound(ctx: af.Context[None]) -> str:
        try:
            await ctx.wait_event(a_ev)
        except asyncio.CancelledError:
            return f"cleanup got {await ctx.wait_event(a_ev)}"
        return "not cancelled"

    async with runtime() as rt:
        h = await rt.start(cancel_bound)
        await clock.advance(0)
        # the event and the cancel are accepted in the same loop turn
        await asyncio.gather(rt.send(h.id, a_ev, "x"), h.cancel())
        assert await h.result(timeout=1) in ("cleanup got x", "not cancelled")


async def test_cancel_while_parked_in_first_across_restart(db: Path, clock: Clock) -> None:
    @af.workflow(name="cond.cancel_first")
    async def cancel_first(ctx: af.Context[None]) -> None:
        try:
            await ctx.first(ctx.wait_event(a_ev), ctx.sleep(100))
        finally:
            await ctx.step(effect, "cf:cleanup")

    executions.clear()
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(cancel_first, id="cf")
        await clock.advance(0)
    async with af.Runtime(db, clock=clock) as rt:
        await rt.cancel("cf")
        with pytest.raises(af.WorkflowCancelled):
            await rt.handle("cf").result(timeout=1)
    async with af.Runtime(db, clock=clock) as rt:
        assert (await rt.handle("cf").status()).state == "cancelled"
    assert executions == ["cf:cleanup"]


# -- status ----------------------------------------------------------------------------


async def test_status_lists_every_kind_of_wait_and_persists_it(db: Path, clock: Clock) -> None:
    inventory.clear()
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(mixed, "s", id="st")
        await clock.advance(0)
        expected = [
            af.Wait("event", "cond.a", None, None),
            af.Wait("timer", None, None, at(clock, 100)),
            af.Wait("condition", "condition", None, None),
            af.Wait("query", f"{__name__}.{stock.__qualname__}", None, None),
        ]
        st = await h.status()
        assert st.state == "waiting" and st.waiting_on == expected
        [listed] = await rt.list(status="waiting")
        assert listed.waiting_on == expected
    async with af.Runtime(db, clock=clock) as rt:
        assert (await rt.handle("st").status()).waiting_on == expected


async def test_close_does_not_run_cleanup_of_parked_instances(db: Path, clock: Clock) -> None:
    # Close leaves instances parked; their abandoned coroutines are later closed by the
    # garbage collector, which runs `finally` blocks: no step may start from there.
    @af.workflow(name="cond.finally")
    async def with_finally(ctx: af.Context[None]) -> str:
        try:
            return await ctx.wait_event(a_ev)
        finally:
            await ctx.step(effect, "finally")

    executions.clear()
    rt = af.Runtime(db, clock=clock)
    async with rt:
        await rt.start(with_finally, id="fin")
        await clock.advance(0)
    del rt
    gc.collect()
    await asyncio.sleep(0.01)
    assert executions == []
    async with af.Runtime(db, clock=clock) as rt2:
        await rt2.send("fin", a_ev, "a")
        assert await rt2.handle("fin").result(timeout=1) == "a"
    assert executions == ["finally"]


async def test_second_cancel_does_not_interrupt_cleanup(runtime: Make, clock: Clock) -> None:
    executions.clear()
    async with runtime() as rt:
        h = await rt.start(cancel_sleep)
        await h.cancel()
        await clock.advance(5)
        await h.cancel()  # already requested: the cleanup's own sleep goes on
        await clock.advance(0)
        assert [w.kind for w in (await h.status()).waiting_on] == ["timer"]
        await clock.advance(5)
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=1)
        assert executions == ["cleanup:1", "cleanup:2"]


# -- more composition ----------------------------------------------------------------


async def test_first_loser_of_a_finished_workflow_leaves_its_event_unconsumed(
    runtime: Make, clock: Clock
) -> None:
    @af.workflow(name="cond.first_then_end")
    async def first_then_end(ctx: af.Context[None]) -> tuple[int, Any]:
        return await ctx.first(ctx.wait_event(a_ev), ctx.wait_event(b_ev))

    async with runtime() as rt:
        h = await rt.start(first_then_end)
        await clock.advance(0)
        await asyncio.gather(rt.send(h.id, a_ev, "a"), rt.send(h.id, b_ev, "b"))
        assert await h.result(timeout=1) == (0, "a")
        await clock.advance(0)
        events = {e.name: e.consumed_at for e in (await h.status()).events}
        assert events["cond.a"] is not None
        assert events["cond.b"] is None  # taken by a cancelled wait: given back


async def test_first_of_composite_branches(runtime: Make, clock: Clock) -> None:
    @af.workflow(name="cond.first_composite")
    async def first_composite(ctx: af.Context[None]) -> list[Any]:
        async def both() -> list[str]:
            return [await ctx.wait_event(a_ev), await ctx.wait_event(b_ev)]

        index, value = await ctx.first(both(), ctx.sleep(30))
        return [index, value, await ctx.wait_event(b_ev)]

    async with runtime() as rt:
        h = await rt.start(first_composite)
        await rt.send(h.id, a_ev, "a")  # the composite branch is half way...
        await clock.advance(30)  # ...when the timer wins: its pending wait is cancelled
        await rt.send(h.id, b_ev, "b")
        assert await h.result(timeout=1) == [1, None, "b"]


async def test_notify_during_a_running_query_is_not_missed(runtime: Make, clock: Clock) -> None:
    gate = asyncio.Event()
    data = {"ready": False}
    seen: list[bool] = []

    async def slow_check() -> bool:
        value = data["ready"]  # read before the pause: a change during it is missed...
        await gate.wait()
        seen.append(value)
        return value

    @af.workflow(name="cond.slow_query")
    async def slow_query(ctx: af.Context[None]) -> bool:
        return await ctx.wait_for(slow_check, on="t")

    async with runtime() as rt:
        h = await rt.start(slow_query)
        await asyncio.sleep(0.005)
        data["ready"] = True
        notified = asyncio.ensure_future(rt.notify("t"))  # ...unless it runs once more
        await asyncio.sleep(0.005)
        gate.set()
        await notified
        assert await h.result(timeout=1) is True
        assert seen == [False, True]


async def test_event_and_timeout_in_the_same_turn_lose_nothing(runtime: Make, clock: Clock) -> None:
    @af.workflow(name="cond.same_turn")
    async def same_turn(ctx: af.Context[None]) -> list[Any]:
        try:
            first = await ctx.wait_event(a_ev, timeout=30)
        except af.WaitTimeout:
            first = "timeout"
        try:
            second = await ctx.wait_event(a_ev, timeout=30)
        except af.WaitTimeout:
            second = "timeout"
        return [first, second]

    async with runtime() as rt:
        h = await rt.start(same_turn)
        await clock.advance(0)
        await asyncio.gather(clock.advance(30), rt.send(h.id, a_ev, "x"))
        await clock.advance(30)
        assert await h.result(timeout=1) in (["x", "timeout"], ["timeout", "x"])


async def test_wait_for_every_as_timedelta_and_timeout_is_a_timeout_error(
    runtime: Make, clock: Clock
) -> None:
    from datetime import timedelta

    calls.clear()
    inventory.clear()

    @af.workflow(name="cond.every_td")
    async def every_td(ctx: af.Context[None]) -> str:
        try:
            await ctx.wait_for(
                stock, "td", every=timedelta(minutes=1), timeout=timedelta(minutes=60.5)
            )
        except TimeoutError:
            return f"gave up after {len(calls)} checks"
        return "?"

    async with runtime() as rt:
        h = await rt.start(every_td)
        await clock.advance(timedelta(hours=2))
        assert await h.result(timeout=1) == "gave up after 61 checks"


# -- restart at every point of one scenario ----------------------------------------------


@af.workflow(name="cond.script", state=Tally)
async def script(ctx: af.Context[Tally]) -> list[Any]:
    await ctx.step(effect, "script:start")
    index, value = await ctx.first(ctx.wait_event(a_ev), ctx.sleep(100))
    votes = await asyncio.gather(
        ctx.wait_event(approval),
        ctx.wait_event(approval),
        ctx.wait_until(lambda: ctx.state.n >= 2),
    )
    found = await ctx.wait_for(stock, "script", on="inventory", timeout=50)
    await ctx.step(effect, "script:end")
    return [index, value, [v.who for v in votes[:2]], ctx.state.n, found]


@script.on(bump)
def _script_bump(state: Tally, by: int) -> None:
    state.n += by


async def _restock(rt: af.Runtime) -> None:
    inventory["script"] = 3
    await rt.notify("inventory")


SCRIPT: list[Callable[[af.Runtime, Clock], Any]] = [
    lambda rt, clock: rt.send("sc", a_ev, "x"),
    lambda rt, clock: rt.send("sc", approval, Vote("ann")),
    lambda rt, clock: rt.send("sc", bump, 1),
    lambda rt, clock: clock.advance(150),  # past the cancelled timer's deadline
    lambda rt, clock: rt.send("sc", approval, Vote("bob")),
    lambda rt, clock: rt.send("sc", bump, 1),
    lambda rt, clock: clock.advance(10),
    lambda rt, clock: _restock(rt),
    lambda rt, clock: clock.advance(0),
]


@pytest.mark.parametrize("restart_after", range(len(SCRIPT) + 1))
async def test_restart_at_any_point_replays_to_the_same_outcome(
    db: Path, clock: Clock, restart_after: int
) -> None:
    executions.clear()
    inventory.clear()
    rt = af.Runtime(db, clock=clock)
    await rt.open()
    await rt.start(script, id="sc")
    for i, op in enumerate(SCRIPT):
        if i == restart_after:
            await clock.advance(0)
            await rt.close()
            rt = af.Runtime(db, clock=clock)
            await rt.open()
        await op(rt, clock)
        await clock.advance(0)
    try:
        assert await rt.handle("sc").result(timeout=1) == [0, "x", ["ann", "bob"], 2, 3]
    finally:
        await rt.close()
    assert executions == ["script:start", "script:end"]


async def test_handler_runs_for_an_event_sent_while_the_workflow_was_unknown(
    db: Path, clock: Clock
) -> None:
    import importlib

    @af.workflow(name="cond.unknown_handler", state=Tally)
    async def unknown_handler(ctx: af.Context[Tally]) -> int:
        await ctx.wait_until(lambda: ctx.state.n >= 2)
        return ctx.state.n

    @unknown_handler.on(bump)
    def _b(state: Tally, by: int) -> None:
        state.n += by

    registry = importlib.import_module("actorflow.workflow")
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(unknown_handler, id="uh")
        await rt.send("uh", bump, 1)
    del registry._registry["cond.unknown_handler"]
    try:
        async with af.Runtime(db, clock=clock) as rt:
            await rt.send("uh", bump, 1)  # accepted into the mailbox all the same
    finally:
        registry._registry["cond.unknown_handler"] = unknown_handler
    async with af.Runtime(db, clock=clock) as rt:
        await clock.advance(0)
        assert (await rt.handle("uh").status()).state == "completed"
        assert await rt.handle("uh").result() == 2


async def test_cancel_during_a_step_lets_it_finish_and_never_reruns_it(
    db: Path, clock: Clock
) -> None:
    gate = asyncio.Event()

    async def charge() -> str:
        await gate.wait()
        executions.append("charged")
        return "receipt"

    @af.workflow(name="cond.cancel_step")
    async def cancel_step(ctx: af.Context[None]) -> None:
        try:
            await ctx.step(charge)
        except asyncio.CancelledError:
            await ctx.step(effect, "refund")
            await ctx.wait_event(go)  # parked in cleanup across the restart
            raise

    executions.clear()
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(cancel_step, id="cst")
        await asyncio.sleep(0.005)
        await h.cancel()
        await eventually(lambda: executions == ["refund"])  # cleanup runs during the step
        gate.set()  # the step was not interrupted: it completes and its result is stored
        await eventually(lambda: executions == ["refund", "charged"])
        await clock.advance(0)
    async with af.Runtime(db, clock=clock) as rt:
        await rt.send("cst", go)
        with pytest.raises(af.WorkflowCancelled):
            await rt.handle("cst").result(timeout=1)
    assert sorted(executions) == ["charged", "refund"]


async def test_a_late_handled_event_replays_in_its_place(db: Path, clock: Clock) -> None:
    import importlib

    @af.workflow(name="cond.late_handler", state=Tally)
    async def late(ctx: af.Context[Tally]) -> int:
        await ctx.wait_until(lambda: ctx.state.n >= 3)
        return ctx.state.n

    @late.on(bump)
    def _b(state: Tally, by: int) -> None:
        state.n += by

    registry = importlib.import_module("actorflow.workflow")
    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(late, id="late")
        await rt.send("late", bump, 1)
    del registry._registry["cond.late_handler"]
    try:
        async with af.Runtime(db, clock=clock) as rt:
            await rt.send("late", bump, 1)  # kept in the mailbox: no code to handle it
    finally:
        registry._registry["cond.late_handler"] = late
    async with af.Runtime(db, clock=clock) as rt:
        await clock.advance(0)  # the handler takes the kept event at go-live
        assert (await rt.handle("late").status()).state == "waiting"
    async with af.Runtime(db, clock=clock) as rt:  # replay: both handled, in order
        await rt.send("late", bump, 1)
        assert await rt.handle("late").result(timeout=1) == 3
        events = (await rt.handle("late").status()).events
        assert [e.consumed_at is not None for e in events] == [True, True, True]
