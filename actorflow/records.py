"""Every stored record, as msgspec Structs, and the fold that turns them into snapshots.

The write-ahead log holds a tagged union of these records. A :class:`Snapshot` is
what an instance's records fold into (:func:`apply`); the live actor, recovery and
checkpoints all use that one fold, so the in-memory view and the stored one cannot
drift apart.
"""

from __future__ import annotations

import bisect
from typing import Literal

import msgspec


class ErrorInfo(msgspec.Struct, array_like=True, frozen=True):
    """An error as stored: the exception's ``__qualname__``, its text, and a traceback."""

    type: str
    message: str
    traceback: str = ""


class Started(msgspec.Struct, tag="start", array_like=True):
    """An instance was started with these msgspec-encoded arguments."""

    wf: str
    workflow: str
    args: list[bytes]
    at: float


class Value(msgspec.Struct, tag="value", array_like=True):
    """A value a call produced synchronously (now, random, uuid4, a deadline, a token)."""

    wf: str
    seq: int
    kind: str
    name: str
    value: bytes
    at: float


class Outcome(msgspec.Struct, tag="outcome", array_like=True):
    """The outcome of call ``seq``: a value, an error, or the event it consumed."""

    wf: str
    seq: int
    kind: str
    name: str
    at: float
    value: bytes | None = None
    error: ErrorInfo | None = None
    event: int | None = None


class EventSent(msgspec.Struct, tag="event", array_like=True):
    """An event was durably accepted for instance ``wf`` (by name, or by ``token``)."""

    wf: str
    id: int
    name: str
    token: str | None
    payload: bytes | None
    error: str | None
    cancelled: bool
    created_at: float
    sent_at: float
    handled: bool = False


class EventHandled(msgspec.Struct, tag="handled", array_like=True):
    """A mailbox event went to its handler after all: it arrived while the instance's
    code was not loaded (or had no handler for it), and the code that has one went live."""

    wf: str
    id: int
    at: float


class EventReturned(msgspec.Struct, tag="returned", array_like=True):
    """An event bound to a wait that was cancelled before it saw it: back to the mailbox."""

    wf: str
    id: int


class CancelRequested(msgspec.Struct, tag="cancel", array_like=True):
    """Someone asked for the instance to be cancelled."""

    wf: str
    at: float


class AttemptFailed(msgspec.Struct, tag="attempt", array_like=True):
    """Attempt ``attempt`` of step call ``seq`` raised; it will be retried."""

    wf: str
    seq: int
    attempt: int
    error: ErrorInfo
    at: float


class WaitSpec(msgspec.Struct, array_like=True, frozen=True):
    """One thing an instance is parked on (or a step it is running), as stored."""

    kind: str  # event | timer | condition | query | step
    name: str | None
    token: str | None
    deadline: float | None
    topics: tuple[str, ...] = ()  # a query's: rt.notify of one of them re-runs it
    polls: bool = False  # a query re-run every ``every``: its instance stays loaded


class Waiting(msgspec.Struct, tag="waiting", array_like=True):
    """The instance paused: what it waits on now and its encoded ``ctx.state``
    (written when either changes), so other processes can show them."""

    wf: str
    waits: list[WaitSpec]
    at: float
    state: bytes | None = None


class Held(msgspec.Struct, tag="held", array_like=True):
    """The instance cannot run in the runtime that loaded it (``detail`` says why:
    its workflow is not defined there, or its code diverged from its journal);
    ``detail=None``: a runtime runs it again. Stored so that other processes see it."""

    wf: str
    detail: str | None


class Patched(msgspec.Struct, tag="patch", array_like=True):
    """``ctx.patched(patch_id)`` took its new branch on a fresh path: the marker that
    makes replays of this run take it again. It takes no call position."""

    wf: str
    patch_id: str
    at: float


class Finished(msgspec.Struct, tag="finish", array_like=True):
    """The instance ended: ``completed`` (with ``result``), ``failed`` or ``cancelled``."""

    wf: str
    status: Literal["completed", "failed", "cancelled"]
    at: float
    result: bytes | None = None
    error: ErrorInfo | None = None


class ContinuedAsNew(msgspec.Struct, tag="continued", array_like=True):
    """The run ended by ``ctx.continue_as_new``: a new run of the same workflow starts on
    the same instance with ``args``, an empty journal and ``state`` (the encoded
    ``ctx.state`` when it ended); its mailbox events not yet consumed carry over."""

    wf: str
    args: list[bytes]
    at: float
    state: bytes | None = None


Record = (
    Started
    | Value
    | Outcome
    | EventSent
    | EventHandled
    | EventReturned
    | CancelRequested
    | AttemptFailed
    | Waiting
    | Held
    | Finished
    | Patched
    | ContinuedAsNew
)
"""Anything the write-ahead log holds."""

# What replay feeds back to a workflow, in log order.
Effect = Outcome | EventSent | EventHandled | CancelRequested


class EventState(msgspec.Struct, array_like=True):
    """An event as an instance keeps it: its payload and when it was created, sent, consumed."""

    id: int
    name: str
    token: str | None
    payload: bytes | None
    error: str | None
    cancelled: bool
    created_at: float
    sent_at: float
    consumed_at: float | None = None
    consumed_by: int | None = None


class TokenState(msgspec.Struct, array_like=True):
    """A token made by ``ctx.create_event``: the event name, the call, when it was made."""

    name: str
    seq: int
    created_at: float


class Snapshot(msgspec.Struct):
    """Everything stored about one instance: the fold of all its records so far."""

    id: str
    workflow: str
    args: list[bytes]
    created_at: float
    updated_at: float
    status: str = "running"
    finished_at: float | None = None
    result: bytes | None = None
    error: ErrorInfo | None = None
    history: list[Effect] = msgspec.field(default_factory=list)
    values: dict[int, Value] = msgspec.field(default_factory=dict)
    events: list[EventState] = msgspec.field(default_factory=list)
    tokens: dict[str, TokenState] = msgspec.field(default_factory=dict)
    attempts: dict[int, int] = msgspec.field(default_factory=dict)
    cancel_requested: bool = False
    waiting: list[WaitSpec] = msgspec.field(default_factory=list)
    state: bytes | None = None
    held: str | None = None  # why the last runtime that loaded it could not run it
    patches: list[str] = msgspec.field(default_factory=list)  # this run's patch markers
    run: int = 1  # 1 for the first run; each ctx.continue_as_new adds one
    start_state: bytes | None = None  # the state a continued run starts from
    settled: int = 0
    """Every event before this index of ``events`` is consumed: what looks for events
    waiting in the mailbox starts there (:func:`unsettled`), so it costs what is
    unconsumed, not the whole history. Kept by :func:`apply` (a fold that rebuilds
    ``events`` should set it to 0; :func:`apply` resets it if it sees it was not)."""

    @property
    def finished(self) -> bool:
        """Whether the instance has ended (any status but ``running``)."""
        return self.status != "running"


def new_snapshot(record: Started) -> Snapshot:
    """The snapshot of an instance that has just been started."""
    return Snapshot(
        id=record.wf,
        workflow=record.workflow,
        args=record.args,
        created_at=record.at,
        updated_at=record.at,
    )


def find_event(snapshot: Snapshot, event_id: int) -> EventState:
    """Event ``event_id`` of ``snapshot``; ``KeyError`` when it has none.

    Events are kept in id order. Ids count up from 0 but may skip (a failed write
    burns one), so the event sits at index ``event_id`` or before it: found at once
    when none was skipped, else by binary search (replay looks up every consumed
    event, so a scan would make it quadratic in the history).
    """
    return snapshot.events[event_index(snapshot, event_id)]


def event_index(snapshot: Snapshot, event_id: int) -> int:
    """Where event ``event_id`` sits in ``snapshot.events`` (see :func:`find_event`);
    ``KeyError`` when it has none."""
    events = snapshot.events
    end = min(event_id + 1, len(events))
    if end > 0 and events[end - 1].id == event_id:
        return end - 1
    index = bisect.bisect_left(events, event_id, 0, end, key=_event_id)
    if index < end and events[index].id == event_id:
        return index
    raise KeyError(event_id)


def unsettled(snapshot: Snapshot) -> list[EventState]:
    """The events of ``snapshot`` from the first one not consumed on (those before it
    are all consumed): what may still wait in its mailbox."""
    return snapshot.events[snapshot.settled :]


def _settle(snapshot: Snapshot) -> None:
    # Amortised O(1) per record: each event is stepped over once (until given back).
    events = snapshot.events
    settled = min(snapshot.settled, len(events))
    while settled < len(events) and events[settled].consumed_at is not None:
        settled += 1
    snapshot.settled = settled


def _event_id(event: EventState) -> int:
    return event.id


def apply(snapshot: Snapshot, record: Record) -> None:
    """Fold one committed record (not a ``Started``) into its instance's snapshot."""
    match record:
        case Value():
            snapshot.values[record.seq] = record
            if record.kind == "create_event":
                token = msgspec.msgpack.decode(record.value, type=str)
                snapshot.tokens[token] = TokenState(record.name, record.seq, record.at)
        case Outcome():
            snapshot.history.append(record)
            snapshot.updated_at = record.at
            if record.event is not None:
                event = find_event(snapshot, record.event)
                event.consumed_at = record.at
                event.consumed_by = record.seq
                _settle(snapshot)
            if record.kind == "step":
                snapshot.attempts.pop(record.seq, None)
        case EventSent():
            state = EventState(
                record.id,
                record.name,
                record.token,
                record.payload,
                record.error,
                record.cancelled,
                record.created_at,
                record.sent_at,
            )
            if record.handled:
                state.consumed_at = record.sent_at
                snapshot.history.append(record)
            snapshot.events.append(state)
            if record.handled:
                _settle(snapshot)
            snapshot.updated_at = record.sent_at
        case EventHandled():
            find_event(snapshot, record.id).consumed_at = record.at
            _settle(snapshot)
            snapshot.history.append(record)
            snapshot.updated_at = record.at
        case EventReturned():
            index = event_index(snapshot, record.id)
            event = snapshot.events[index]
            event.consumed_at = None
            event.consumed_by = None
            snapshot.settled = min(snapshot.settled, index)
        case CancelRequested():
            snapshot.history.append(record)
            snapshot.cancel_requested = True
            snapshot.updated_at = record.at
        case AttemptFailed():
            snapshot.attempts[record.seq] = record.attempt
            snapshot.updated_at = record.at
        case Waiting():
            snapshot.waiting = record.waits
            snapshot.state = record.state
        case Held():
            snapshot.held = record.detail
        case Finished():
            snapshot.held = None
            snapshot.waiting = []
            snapshot.status = record.status
            snapshot.result = record.result
            snapshot.error = record.error
            snapshot.finished_at = record.at
            snapshot.updated_at = record.at
        case Patched():
            if record.patch_id not in snapshot.patches:
                snapshot.patches.append(record.patch_id)
        case ContinuedAsNew():
            _continue(snapshot, record)
        case Started():
            raise ValueError(f"instance {record.wf!r} started twice")
    settled = snapshot.settled
    if settled and (
        settled > len(snapshot.events) or snapshot.events[settled - 1].consumed_at is None
    ):
        snapshot.settled = 0  # the events were rebuilt (a new run keeps the unconsumed ones)


def _continue(snapshot: Snapshot, record: ContinuedAsNew) -> None:
    # A new run: an empty journal, the mailbox's unconsumed events carried over in their
    # order (those for tokens die with the run that made them), the state carried over.
    # A cancel asked for while the run was ending is not lost: the new run replays it.
    carried = [e for e in snapshot.events if e.consumed_at is None and e.token is None]
    for event in carried:
        event.consumed_by = None
    snapshot.run += 1
    snapshot.args = record.args
    snapshot.history = [CancelRequested(record.wf, record.at)] if snapshot.cancel_requested else []
    snapshot.values = {}
    snapshot.events = carried
    snapshot.settled = 0
    snapshot.tokens = {}
    snapshot.patches = []
    snapshot.attempts = {}
    snapshot.waiting = []
    snapshot.state = snapshot.start_state = record.state
    snapshot.held = None
    snapshot.updated_at = record.at


RECORD_ENCODER = msgspec.msgpack.Encoder()
RECORD_DECODER: msgspec.msgpack.Decoder[Record] = msgspec.msgpack.Decoder(Record)
BATCH_DECODER: msgspec.msgpack.Decoder[list[Record]] = msgspec.msgpack.Decoder(list[Record])
"""A write-ahead log row holds one committed batch: a list of records."""
SNAPSHOT_DECODER = msgspec.msgpack.Decoder(Snapshot)
