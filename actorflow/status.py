"""What the status API returns: msgspec Structs built from an instance's snapshot."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

import msgspec

from actorflow.clock import deadline_datetime, to_datetime
from actorflow.records import Snapshot, WaitSpec

if TYPE_CHECKING:
    from actorflow.actor import Actor

State = Literal["running", "waiting", "completed", "failed", "cancelled"]
STATES: frozenset[str] = frozenset({"running", "waiting", "completed", "failed", "cancelled"})


class Wait(msgspec.Struct, frozen=True):
    """Something an instance is parked on. A sleep is a ``timer`` wait."""

    kind: Literal["event", "timer", "condition", "query"]
    name: str | None = None
    token: str | None = None
    deadline: datetime | None = None


class EventRecord(msgspec.Struct, frozen=True):
    """One event of an instance: when it was created, sent and consumed.

    ``outcome`` is ``value``, ``failed`` or ``cancelled``; ``None`` for a token that
    has not been resolved yet.
    """

    name: str
    token: str | None
    outcome: Literal["value", "failed", "cancelled"] | None
    created_at: datetime
    sent_at: datetime | None
    consumed_at: datetime | None


class Status(msgspec.Struct, frozen=True):
    """An instance as the status API shows it."""

    id: str
    workflow: str
    state: State
    waiting_on: list[Wait]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    error: str | None
    detail: str | None
    events: list[EventRecord]
    run: int = 1
    """Which run this is: 1, plus one for each ``ctx.continue_as_new``. ``events`` and
    ``waiting_on`` are the current run's; ``created_at`` is the first run's."""


def _maybe(ts: float | None) -> datetime | None:
    return None if ts is None else to_datetime(ts)


def _wait(spec: WaitSpec) -> Wait:
    """A wait as shown; a stored deadline that is no date (too far, damaged) shows as none."""
    kind = spec.kind  # stored as a str: one of Wait.kind's (a step is not shown)
    return Wait(kind, spec.name, spec.token, deadline_datetime(spec.deadline))  # type: ignore[arg-type]


def events_of(snapshot: Snapshot) -> list[EventRecord]:
    """The event history: every event sent, plus tokens made and not yet resolved."""
    records = []
    sent_tokens = set()
    for e in snapshot.events:
        outcome: Literal["value", "failed", "cancelled"] = (
            "failed" if e.error is not None else "cancelled" if e.cancelled else "value"
        )
        if e.token is not None:
            sent_tokens.add(e.token)
        records.append(
            EventRecord(
                e.name, e.token, outcome, to_datetime(e.created_at), to_datetime(e.sent_at),
                _maybe(e.consumed_at),
            )
        )  # fmt: skip
    for token, made in snapshot.tokens.items():
        if token not in sent_tokens:
            records.append(
                EventRecord(made.name, token, None, to_datetime(made.created_at), None, None)
            )
    return records


def status_of(
    snapshot: Snapshot, actor: Actor | None = None, *, with_events: bool = True
) -> Status:
    """The :class:`Status` of an instance, live from its actor when it has one.

    A held instance (its actor's ``held`` is set, or, seen from the store, its stored
    ``held``) shows the stored view: the waits it was parked on when its code last
    ran, and in ``detail`` why it does not run now.
    """
    waits = [_wait(w) for w in snapshot.waiting if w.kind != "step"]
    state = snapshot.status
    if state == "running" and waits and len(waits) == len(snapshot.waiting):
        state = "waiting"
    detail = None if snapshot.finished else snapshot.held
    if actor is not None:
        detail = actor.detail
    if actor is not None and actor.held is None:  # runs here (or replays after a failed write)
        state = actor.status
        waits = [_wait(c.describe()) for c in actor.open_waits()]
    error = None
    if snapshot.error is not None:  # "Type: message", then the traceback when there is one
        info = snapshot.error
        error = f"{info.type}: {info.message}"
        if info.traceback:
            error += "\n\n" + info.traceback.rstrip("\n")
    return Status(
        id=snapshot.id,
        workflow=snapshot.workflow,
        state=state,  # type: ignore[arg-type]
        waiting_on=waits,
        created_at=to_datetime(snapshot.created_at),
        updated_at=to_datetime(snapshot.updated_at),
        finished_at=_maybe(snapshot.finished_at),
        error=error,
        detail=detail,
        events=events_of(snapshot) if with_events else [],
        run=snapshot.run,
    )
