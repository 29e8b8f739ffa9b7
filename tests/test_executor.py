"""The executor alone: steps and queries of a stand-in instance, outcomes handed to a
list instead of a store, time moved by a manual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import actorflow as af
from actorflow import codec
from actorflow.actor import Phase
from actorflow.host import executor as executor_module
from actorflow.host.executor import Executor
from actorflow.records import AttemptFailed, Outcome, Record, Started, new_snapshot
from actorflow.timers import TimerWheel
from actorflow.waits import QueryWait, Step


class Writer:
    """Keeps what the executor hands over, in order; everything is durable at once."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def barrier(self) -> None:
        return None

    def append(self, records: list[Record]) -> None:
        self.records += records


class Instance:
    """What the executor and a query's watch use of an instance."""

    def __init__(self, clock: af.testing.ManualClock, timers: TimerWheel) -> None:
        self.id = "exec-1"
        self.snapshot = new_snapshot(Started(self.id, "exec.wf", [], clock.now()))
        self.phase = Phase.LIVE
        self.services = SimpleNamespace(clock=clock, timers=timers)
        self.bound: list[Outcome] = []

    def outcome(self, call: Any, **fields: Any) -> Outcome:
        return Outcome(self.id, call.seq, call.kind, call.name, self.services.clock.now(), **fields)

    def bind(self, call: Any, outcome: Outcome) -> None:
        if call.watch is not None:
            call.watch.cancel()
        self.bound.append(outcome)


class Host:
    def __init__(self) -> None:
        self.clock = af.testing.ManualClock()
        self.timers = TimerWheel(self.clock)
        self.writer = Writer()
        self.instance = Instance(self.clock, self.timers)
        directory: Any = SimpleNamespace(finished={})
        self.executor = Executor(self.writer, self.clock, self.timers, directory)
        self.seq = 0

    def call(self, kind: str, spec: tuple[Any, ...]) -> Any:
        self.seq += 1
        future = asyncio.get_running_loop().create_future()
        owner: Any = self.instance
        made = (Step if kind == "step" else QueryWait)(
            owner, self.seq, f"exec.{kind}{self.seq}", future
        )
        made.spec = spec  # type: ignore[assignment]
        return made


@pytest.fixture
def host() -> Iterator[Host]:
    made = Host()
    yield made
    made.timers.close()


async def until(predicate: Callable[[], bool]) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_a_step_is_retried_by_the_clock_and_its_outcome_handed_over_once(
    host: Host,
) -> None:
    attempts: list[int] = []

    async def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) < 3:
            raise ValueError(f"attempt {len(attempts)}")
        return x * 2

    retry = af.Retry(attempts=3, initial=10.0, backoff=2.0)
    call = host.call("step", (flaky, (21,), retry, None))
    host.executor.run_step(host.instance, call)
    await until(lambda: len(host.writer.records) == 1)
    await host.clock.advance(9)  # the first pause is 10 s
    assert attempts == [21]
    await host.clock.advance(1)
    await until(lambda: len(host.writer.records) == 2)
    await host.clock.advance(20)  # then 20 s
    await until(lambda: host.executor.running_steps == 0)

    first, second, outcome = host.writer.records
    assert isinstance(first, AttemptFailed) and (first.seq, first.attempt) == (call.seq, 1)
    assert isinstance(second, AttemptFailed) and second.attempt == 2
    assert second.error.message == "attempt 2"
    assert isinstance(outcome, Outcome) and outcome.error is None
    assert outcome.value is not None and codec.decoder(int).decode(outcome.value) == 42
    assert attempts == [21, 21, 21]
    assert host.executor.idle


async def test_a_query_runs_when_its_wait_starts_and_again_on_a_notify_of_its_topic(
    host: Host,
) -> None:
    runs: list[str] = []
    stock: dict[str, int] = {}

    def in_stock(item: str) -> int:
        runs.append(item)
        return stock.get(item, 0)

    call = host.call("query", (in_stock, ("apple",), ("stock",), None))
    host.executor.run_query(host.instance, call)
    await until(lambda: host.executor.idle)
    assert runs == ["apple"] and host.instance.bound == []  # falsy: it keeps waiting

    await host.executor.notify(["prices"])  # not its topic
    assert runs == ["apple"]
    stock["apple"] = 3
    await host.executor.notify(["prices", "stock"])  # returns after it ran
    assert runs == ["apple", "apple"]
    [outcome] = host.instance.bound
    assert outcome.value is not None and codec.decoder(int).decode(outcome.value) == 3

    await host.executor.notify(["stock"])  # its wait is over: it runs no more
    assert runs == ["apple", "apple"]
    assert host.writer.records == []  # the instance writes a query's outcome, not the executor


async def test_settle_waits_for_a_running_step_and_hands_over_its_outcome(host: Host) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        started.set()
        await release.wait()
        return "done"

    call = host.call("step", (slow, (), None, None))
    host.executor.run_step(host.instance, call)
    await started.wait()
    assert not host.executor.idle
    settling = asyncio.ensure_future(host.executor.settle())
    await asyncio.sleep(0.05)
    assert not settling.done()  # within the grace, the step is waited for
    late = host.call("step", (slow, (), None, None))
    host.executor.run_step(host.instance, late)
    assert host.executor.running_steps == 1  # closing: no step starts

    release.set()
    await settling
    [outcome] = host.writer.records
    assert isinstance(outcome, Outcome) and outcome.seq == call.seq
    assert outcome.value is not None and codec.decoder(str).decode(outcome.value) == "done"
    assert host.executor.running_steps == 0


async def test_settle_abandons_a_step_past_the_grace_and_hands_over_nothing(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor_module, "STEP_GRACE", 0.05)
    started = asyncio.Event()

    async def stuck() -> None:
        started.set()
        await asyncio.Event().wait()

    host.executor.run_step(host.instance, host.call("step", (stuck, (), None, None)))
    await started.wait()
    await asyncio.wait_for(host.executor.settle(), 5)
    assert host.writer.records == []  # abandoned: it runs again at the next open
    assert host.executor.running_steps == 0
