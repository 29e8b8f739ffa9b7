"""Each wait kind alone, against a stand-in for its instance: how it is armed, disarmed,
expires, shown, and what its outcome makes the workflow's ``await`` return (no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

import actorflow as af
from actorflow import codec
from actorflow.loop import InstanceLoop
from actorflow.mailbox import Mailbox
from actorflow.records import ErrorInfo, EventState, Outcome, WaitSpec
from actorflow.waits import Call, ConditionWait, EventWait, QueryWait, Step, TimerWait, Wait

ping = af.Event("waits.ping", int)


class Timer:
    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    def __init__(self) -> None:
        self.set: list[Timer] = []

    def schedule(self, when: float, callback: Callable[[], object]) -> Timer:
        self.set.append(Timer(when, callback))
        return self.set[-1]


class Services:
    """What waits use of their instance's services: timers, steps and queries run."""

    def __init__(self) -> None:
        self.tracing = None
        self.timers = Timers()
        self.steps: list[Call] = []
        self.queries: list[Call] = []

    def run_step(self, actor: Instance, call: Call) -> None:
        self.steps.append(call)

    def run_query(self, actor: Instance, call: Call) -> None:
        self.queries.append(call)


class Instance:
    """A stand-in for the actor: binding an outcome just records it."""

    def __init__(self) -> None:
        self.id = "wf"
        self.services = Services()
        self.mailbox = Mailbox()
        self.conditions: dict[int, ConditionWait] = {}
        self.bound: list[Outcome] = []
        self.events: dict[int, EventState] = {}
        self.gone: list[Call] = []

    def outcome(self, call: Call, **fields: Any) -> Outcome:
        return Outcome(self.id, call.seq, call.kind, call.name, 5.0, **fields)

    def bind(self, call: Call, outcome: Outcome) -> None:
        call.bound = True
        call.disarm()
        self.bound.append(outcome)

    def call_cancelled(self, call: Call) -> None:
        self.gone.append(call)

    def event(self, event_id: int) -> EventState:
        return self.events[event_id]


@pytest.fixture
def instance() -> Instance:
    return Instance()


def make(cls: type[Call], owner: Instance | None = None, name: str = "go", **attrs: Any) -> Any:
    loop = InstanceLoop("wf")  # type: ignore[abstract]
    call = cls(owner or Instance(), 0, name, loop.create_future())  # type: ignore[arg-type]
    for key, value in attrs.items():
        setattr(call, key, value)
    return call


def test_each_kind_is_stored_and_shown_by_its_own_string() -> None:
    assert [c.kind for c in (Step, EventWait, TimerWait, ConditionWait, QueryWait)] == [
        "step", "event", "timer", "condition", "query",
    ]  # fmt: skip
    assert make(Step, name="app.charge").describe() == WaitSpec("step", "app.charge", None, None)
    assert make(EventWait, token="t", deadline=9.0).describe() == WaitSpec("event", "go", "t", 9.0)
    assert make(TimerWait, name="sleep", deadline=9.0).describe() == WaitSpec(
        "timer", None, None, 9.0
    )
    assert make(ConditionWait, name="condition").describe() == WaitSpec(
        "condition", "condition", None, None
    )
    query = make(QueryWait, name="app.ready", spec=(len, (), ("orders",), 30.0))
    assert query.describe() == WaitSpec("query", "app.ready", None, None, ("orders",), True)


def test_only_steps_and_polling_queries_keep_an_instance_loaded() -> None:
    assert not make(Step).parks
    assert make(EventWait).parks and make(TimerWait).parks and make(ConditionWait).parks
    assert make(QueryWait, spec=(len, (), ("orders",), None)).parks
    assert not make(QueryWait, spec=(len, (), (), 1.0)).parks
    assert isinstance(make(TimerWait), Wait) and not isinstance(make(Step), Wait)


def test_an_event_wait_takes_the_oldest_event_from_the_mailbox(instance: Instance) -> None:
    instance.mailbox.put(EventState(4, "go", None, None, None, False, 1.0, 1.0))
    wait = make(EventWait, owner=instance)
    wait.arm()
    assert [o.event for o in instance.bound] == [4]
    assert instance.mailbox.reserved(4)


def test_an_event_wait_with_none_to_take_waits_in_the_mailbox(instance: Instance) -> None:
    wait = make(EventWait, owner=instance, token="tok")
    wait.arm()
    assert instance.bound == []
    assert instance.mailbox.waiting("go", "tok") is wait
    wait.disarm()
    assert instance.mailbox.waiting("go", "tok") is None


def test_a_deadline_sets_a_timer_that_times_the_wait_out(instance: Instance) -> None:
    wait = make(EventWait, owner=instance, deadline=7.0)
    wait.arm()
    (timer,) = instance.services.timers.set
    assert timer.when == 7.0
    timer.callback()
    (out,) = instance.bound
    assert out.error is not None
    assert (out.error.type, out.error.message) == (
        "WaitTimeout",
        "timed out waiting for event 'go'",
    )
    with pytest.raises(af.WaitTimeout, match="timed out waiting for event 'go'"):
        wait.result(out)
    assert wait.timer is None and instance.mailbox.waiting("go", None) is None


def test_disarming_cancels_the_deadline(instance: Instance) -> None:
    wait = make(ConditionWait, instance, name="condition", deadline=7.0, predicate=lambda: False)
    wait.arm()
    assert instance.conditions == {0: wait}
    wait.disarm()
    assert instance.services.timers.set[0].cancelled and instance.conditions == {}


def test_a_timer_fires_at_its_deadline(instance: Instance) -> None:
    wait = make(TimerWait, instance, name="sleep", deadline=3.0)
    wait.arm()
    instance.services.timers.set[0].callback()
    (out,) = instance.bound
    assert (out.kind, out.error, out.value, out.event) == ("timer", None, None, None)
    assert wait.result(out) is None  # type: ignore[arg-type]
    assert TimerWait.fulfilled == "fired" and ConditionWait.fulfilled == "met"


def test_a_wait_the_workflow_cancels_undecided_leaves_its_instance(instance: Instance) -> None:
    wait, decided = make(EventWait, owner=instance), make(EventWait, owner=instance)
    wait.future.add_done_callback(wait)  # as its instance opens it
    decided.future.add_done_callback(decided)
    decided.bound = True
    wait.future.cancel()
    decided.future.cancel()
    wait.future.get_loop().run()
    decided.future.get_loop().run()
    assert instance.gone == [wait]


def test_a_condition_is_met_once_its_predicate_is_true(instance: Instance) -> None:
    state = {"n": 0}
    wait = make(ConditionWait, instance, name="condition", predicate=lambda: state["n"] >= 2)
    wait.arm()
    wait.check()
    assert instance.bound == []
    state["n"] = 2
    wait.check()
    assert len(instance.bound) == 1 and instance.bound[0].error is None
    assert instance.conditions == {}


def test_a_predicate_that_raises_fails_the_wait(instance: Instance) -> None:
    wait = make(ConditionWait, instance, name="condition", predicate=lambda: 1 / 0)
    wait.arm()
    wait.check()
    (out,) = instance.bound
    assert out.error is not None and out.error.type == "ZeroDivisionError"
    with pytest.raises(af.ActorflowError, match="condition 'condition' failed: ZeroDivisionError"):
        wait.result(out)


def test_steps_and_queries_are_run_by_the_runtime(instance: Instance) -> None:
    step = make(Step, instance, name="app.charge")
    step.arm()
    query = make(QueryWait, instance, name="app.ready", spec=(len, (), (), None))
    query.arm()
    assert instance.services.steps == [step] and instance.services.queries == [query]

    class Watch:
        cancelled = False

        def cancel(self) -> None:
            self.cancelled = True

    query.watch = watch = Watch()
    query.disarm()
    assert watch.cancelled and query.watch is None


def test_a_step_outcome_decodes_to_its_return_type_or_raises_step_failed() -> None:
    step = make(Step, name="app.total", decoder=codec.decoder(int))
    value = Outcome("wf", 0, "step", "app.total", 1.0, value=msgspec.msgpack.encode(12))
    assert step.result(value) == 12
    failed = Outcome("wf", 0, "step", "app.total", 1.0, error=ErrorInfo("KeyError", "'sku'"))
    with pytest.raises(af.StepFailed) as caught:
        step.result(failed)
    assert (caught.value.step, caught.value.error_type) == ("app.total", "KeyError")
    timeout = Outcome("wf", 0, "step", "app.total", 1.0, error=ErrorInfo("WaitTimeout", "late"))
    with pytest.raises(af.WaitTimeout, match="late"):
        step.result(timeout)


def test_an_event_outcome_returns_the_events_payload_or_raises(instance: Instance) -> None:
    payload = msgspec.msgpack.encode(5)
    instance.events = {
        0: EventState(0, ping.name, None, payload, None, False, 1.0, 1.0),
        1: EventState(1, ping.name, None, None, "refused", False, 1.0, 1.0),
        2: EventState(2, ping.name, None, None, None, True, 1.0, 1.0),
    }
    wait = make(EventWait, instance, name=ping.name)

    def took(event_id: int) -> Outcome:
        return Outcome("wf", 0, "event", ping.name, 1.0, event=event_id)

    assert wait.result(took(0)) == 5
    with pytest.raises(af.EventFailed) as failed:
        wait.result(took(1))
    assert failed.value.error == "refused"
    with pytest.raises(af.EventCancelled):
        wait.result(took(2))
