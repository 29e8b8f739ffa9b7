"""An actor driven by committed records alone: fake services, no runtime, store or I/O.

The records an actor writes are its commands; a test commits them (or others) back in
log order, as the writer would, and checks what the actor writes and runs next.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

import actorflow as af
from actorflow import codec
from actorflow.actor import Actor, Phase, Services
from actorflow.loop import InstanceLoop
from actorflow.records import (
    EventSent,
    Finished,
    Held,
    Outcome,
    Record,
    Snapshot,
    Started,
    Waiting,
    WaitSpec,
    apply,
    new_snapshot,
)
from actorflow.waits import QueryWait, Step
from actorflow.workflow import lookup

go = af.Event("actor.go", int)


def charge(amount: int) -> int:
    raise AssertionError("the runtime runs steps; these tests only see them asked for")


CHARGE = f"{__name__}.charge"


@af.workflow(name="actor.order")
async def order(ctx: af.Context[None], n: int) -> int:
    got = await ctx.wait_event(go, timeout=60)
    return await ctx.step(charge, n + got)


class Writer:
    """Collects what the actor writes; nothing is committed until the test says so."""

    def __init__(self) -> None:
        self.queued: list[Record] = []
        self._loop = InstanceLoop("writer")  # type: ignore[abstract]

    def append(self, records: list[Record]) -> None:
        self.queued.extend(records)

    def append_acked(self, records: list[Record], marks: Any = ()) -> Any:
        self.queued.extend(records)
        return self._loop.create_future()

    def take(self) -> list[Record]:
        queued, self.queued = self.queued, []
        return queued


class Clock:
    def __init__(self) -> None:
        self.at = 100.0

    def now(self) -> float:
        return self.at


class Timers:
    def __init__(self) -> None:
        self.set: list[tuple[float, Callable[[], object]]] = []

    def schedule(self, when: float, callback: Callable[[], object]) -> Any:
        self.set.append((when, callback))
        return self

    def cancel(self) -> None:
        pass


class Harness:
    """One actor with fake services; ``commit()`` commits what it wrote, in order."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.writer = Writer()
        self.timers = Timers()
        self.steps: list[Step] = []
        self.queries: list[QueryWait] = []
        self.finished: list[Actor] = []
        services = Services(
            self.writer,  # type: ignore[arg-type]
            Clock(),  # type: ignore[arg-type]
            self.timers,  # type: ignore[arg-type]
            lambda actor, call: self.steps.append(call),
            lambda actor, call: self.queries.append(call),
            self.finished.append,
        )
        self.actor = Actor(services, snapshot, lookup(snapshot.workflow))
        self.log: list[Record] = []  # everything committed, in order

    def commit(self, records: list[Record] | None = None) -> list[Record]:
        records = self.writer.take() if records is None else records
        for record in records:
            self.log.append(record)
            self.actor.committed(record)
        return records


def started(instance_id: str = "o1", n: int = 2) -> Snapshot:
    return new_snapshot(Started(instance_id, "actor.order", [codec.ENCODER.encode(n)], 100.0))


def kinds(records: list[Record]) -> list[str]:
    return [type(r).__name__ for r in records]


def test_a_run_from_start_to_finish_is_records_in_and_records_out() -> None:
    h = Harness(started())
    h.actor.start()
    # The wait's deadline is a value call (#1) after the wait (#0); then it parks.
    wrote = h.commit()
    assert kinds(wrote) == ["Value", "Waiting"]
    assert wrote[1] == Waiting("o1", [WaitSpec("event", "actor.go", None, 160.0)], 100.0)
    assert [when for when, _ in h.timers.set] == [160.0]
    assert h.actor.parked and h.actor.status == "waiting"

    h.actor.offer("actor.go", None, codec.ENCODER.encode(3), None, False)
    sent = h.writer.queued
    assert kinds(sent) == ["EventSent", "Outcome"]  # the parked wait takes it at once
    assert isinstance(sent[1], Outcome) and (sent[1].seq, sent[1].event) == (0, 0)
    assert not h.actor.parked  # its outcome is being written
    h.commit()
    # The workflow resumed and made its step: the runtime is asked to run it.
    (step,) = h.steps
    assert (step.seq, step.name, step.spec[1]) == (2, CHARGE, (5,))
    assert kinds(h.commit()) == ["Waiting"]
    assert h.actor.status == "running" and not h.actor.parked

    h.commit([Outcome("o1", 2, "step", CHARGE, 101.0, value=codec.ENCODER.encode(50))])
    (finished,) = h.commit()
    assert isinstance(finished, Finished) and finished.status == "completed"
    assert msgspec.msgpack.decode(finished.result or b"") == 50
    assert h.actor.phase is Phase.FINISHED and h.finished == [h.actor]


def test_replaying_the_committed_records_reaches_the_same_point_writing_nothing() -> None:
    live = Harness(started())
    live.actor.start()
    live.commit()
    live.actor.offer("actor.go", None, codec.ENCODER.encode(3), None, False)
    live.commit()
    live.commit()
    snapshot = started()
    for record in live.log:
        apply(snapshot, record)

    again = Harness(snapshot)
    again.actor.start()
    assert again.writer.queued == []  # every call's outcome or value was stored
    (step,) = again.steps  # the step in flight runs again; nothing else does
    assert (step.seq, step.spec[1]) == (2, (5,))
    assert again.timers.set == []  # the wait that had its event sets no timer


def test_an_event_sent_early_waits_in_the_mailbox() -> None:
    snapshot = started()
    payload = codec.ENCODER.encode(1)
    apply(snapshot, EventSent("o1", 0, "actor.go", None, payload, None, False, 90.0, 90.0))
    h = Harness(snapshot)
    h.actor.start()
    wrote = h.writer.take()
    assert kinds(wrote) == ["Value", "Outcome"]  # taken at once: it never waited
    assert isinstance(wrote[1], Outcome) and wrote[1].event == 0
    h.commit(wrote)
    assert h.steps[0].spec[1] == (3,)


def test_a_journal_the_code_no_longer_matches_holds_the_instance() -> None:
    snapshot = started()
    apply(snapshot, Outcome("o1", 0, "timer", "sleep", 101.0))
    h = Harness(snapshot)
    h.actor.start()
    why = (
        "workflow 'o1' call #0: the journal holds timer 'sleep' but the code now makes "
        "event 'actor.go'; restore the code that started this instance"
    )
    assert h.writer.take() == [Held("o1", why)]
    assert h.actor.phase is Phase.HELD and h.actor.detail == why
    assert isinstance(h.actor.held, af.NonDeterminismError)
    assert not h.actor.parked and h.steps == []


def test_a_token_is_used_once_and_feeds_only_its_own_wait() -> None:
    h = Harness(started())
    h.actor.start()
    h.commit()
    assert h.actor.can_take("tok")
    h.actor.offer("actor.go", "tok", codec.ENCODER.encode(1), None, False)
    assert not h.actor.can_take("tok")
    assert kinds(h.writer.queued) == ["EventSent"]  # the wait by name does not take it
