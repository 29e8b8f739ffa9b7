"""The ``Store`` protocol and the recovery fold every store shares."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import NamedTuple, Protocol

from actorflow.records import Record, Snapshot, Started, apply, new_snapshot, unsettled
from actorflow.workflow import lookup as lookup_workflow

WORK_NOW = float("-inf")
"""The ``wake`` of an instance that has something to do now (see :func:`wake_of`)."""

Mark = tuple[int, str, "str | None"]
"""An inbox verdict written with a batch: (request seq, accepted|rejected, reason)."""


class InboxRow(NamedTuple):
    """A pending inbox request as stored, judged by the runtime alone (it may be junk)."""

    seq: int
    size: int | None
    """Bytes of the stored request; ``None`` when the column holds NULL."""
    request: bytes | None
    """The request's raw bytes (JSON if well made); ``None`` when NULL or over the
    size limit the reader gave, so an oversized row is never read into memory."""


class Store(Protocol):
    """Where records and snapshots live. One runtime owns a store at a time."""

    async def open(self) -> list[Snapshot]:
        """Open (creating if new), recover, and return the unfinished instances that have
        something to do (:func:`wake_of` is due, or they wait on a query); the others stay
        in the store, found again through :meth:`due`, :meth:`token_owner` and
        :meth:`listening`."""
        ...

    async def due(self, after: float, upto: float) -> list[str]:
        """Unfinished instances whose stored :func:`wake_of` lies in ``(after, upto]``."""
        ...

    async def next_wake(self, after: float) -> float | None:
        """The earliest stored :func:`wake_of` later than ``after``, if any."""
        ...

    async def token_owner(self, token: str) -> str | None:
        """The unfinished instance that made event token ``token``, if one is stored."""
        ...

    async def listening(self, topics: Collection[str]) -> list[str]:
        """Unfinished instances whose stored waits include a query on one of ``topics``."""
        ...

    async def write(self, records: list[Record], marks: Sequence[Mark] = ()) -> None:
        """Append ``records`` to the log in one transaction, with verdicts on the inbox
        requests that produced them; durable when this returns."""
        ...

    async def inbox(
        self, everything: bool = False, max_bytes: int | None = None
    ) -> list[InboxRow] | None:
        """Pending requests from other processes, oldest first, if any arrived since
        the last call (``everything``: all pending ones, new or not); a request larger
        than ``max_bytes`` comes without its bytes. Never fails because of a row's
        content: each row is the runtime's to judge."""
        ...

    async def checkpoint(self, snapshots: list[Snapshot]) -> None:
        """Store ``snapshots`` (the fold of every committed record) and empty the log."""
        ...

    async def load(self, instance_id: str) -> Snapshot | None:
        """The stored snapshot of one instance, if any."""
        ...

    async def workflows_of(self, instance_ids: Collection[str]) -> dict[str, str]:
        """The workflow name of each stored instance among ``instance_ids``."""
        ...

    async def list(self, states: Collection[str] | None, workflow: str | None) -> list[Snapshot]:
        """Stored snapshots, optionally filtered (by the store, not by decoding them all) by
        :func:`stored_state` and workflow name."""
        ...

    async def purge(self, before: float, statuses: Collection[str], limit: int) -> int:
        """Delete up to ``limit`` finished instances whose status is in ``statuses`` and
        that finished at or before ``before`` (oldest first, one transaction); return how many
        were deleted. Unfinished instances are never deleted."""
        ...

    async def purge_inbox(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` inbox requests decided at or before ``before`` (oldest first,
        one transaction); return how many were deleted."""
        ...

    async def oldest_done(self) -> float | None:
        """The earliest time a stored finished instance finished or an inbox request was
        decided; ``None`` when there is neither."""
        ...

    async def close(self) -> None:
        """Release the file; the store cannot be used afterwards."""
        ...


class Peers(Protocol):
    """What a runtime hears from the other runtimes of a shared store (PostgreSQL)."""

    def taking(self) -> Awaitable[None]:
        """A takeover is about to be tried: hold this runtime's own sends (and return once
        those under way are written) until :meth:`taken`, so that none overtakes an
        earlier send held for the instances taken."""
        ...

    def taken(self, snapshots: list[Snapshot] | None) -> None:
        """The takeover ended: instances of a runtime that died or left are this runtime's
        now, ``snapshots`` being those that have something to do (``None``: none taken)."""
        ...

    def lost(self, error: Exception) -> None:
        """This runtime's lease was taken over: it must write nothing more."""
        ...

    def notified(self, topics: list[str]) -> None:
        """Another runtime notified ``topics``: re-run the queries listening on them."""
        ...


def stored_state(snapshot: Snapshot) -> str:
    """The state ``status()`` shows for a snapshot seen from the store: its final status,
    ``waiting`` when parked on waits only (no step running), else ``running``."""
    if snapshot.finished:
        return snapshot.status
    waiting = snapshot.waiting
    if waiting and all(w.kind != "step" for w in waiting):
        return "waiting"
    return "running"


def wake_of(snapshot: Snapshot) -> float | None:
    """When an instance that is not loaded must be loaded by itself: :data:`WORK_NOW` if
    it has something to do now (no pause reached, a step in flight, held, an event in its
    mailbox that a wait or a handler takes, or any if its workflow is not defined here),
    else its earliest deadline (``None``: only an
    event, a cancel or a notify brings it back)."""
    if snapshot.finished:
        return None
    if snapshot.held is not None or not snapshot.waiting:
        return WORK_NOW
    wake: float | None = None
    names: set[str] = set()
    tokens: set[str] = set()
    for wait in snapshot.waiting:
        if wait.kind == "step" or wait.polls:
            return WORK_NOW
        if wait.kind == "event":
            if wait.token is not None:
                tokens.add(wait.token)
            elif wait.name is not None:
                names.add(wait.name)
        if wait.deadline is not None and (wake is None or wait.deadline < wake):
            wake = wait.deadline
    # Where the workflow is not defined (this process does not know its handlers), any
    # event in the mailbox counts: the runtime that defines it decides.
    definition = lookup_workflow(snapshot.workflow)
    for event in unsettled(snapshot):  # those before are consumed: O(mailbox), not O(history)
        if event.consumed_at is None and (
            definition is None
            or event.name in definition.handlers
            or (event.token in tokens if event.token is not None else event.name in names)
        ):
            return WORK_NOW
    return wake


def query_topics(snapshot: Snapshot) -> set[str]:
    """The topics of the queries an unfinished instance waits on."""
    return {t for w in snapshot.waiting if w.kind == "query" for t in w.topics}


def waits_on_query(snapshot: Snapshot) -> bool:
    """Whether an unfinished instance waits on a query (which runs again at each open)."""
    return any(w.kind == "query" for w in snapshot.waiting)


def finished_at(snapshot: Snapshot) -> float:
    """When a finished instance finished (its last update: a finished snapshot changes
    no more, which is what lets SQLite index it by ``updated_at``)."""
    return snapshot.finished_at if snapshot.finished_at is not None else snapshot.updated_at


def fold(snapshots: dict[str, Snapshot], records: Iterable[Record]) -> set[str]:
    """Apply committed ``records`` to ``snapshots`` in order: the one fold that recovery,
    checkpoints and readers share. A record for an instance not in ``snapshots`` (whose
    start never committed, or that was purged) is skipped. Returns the ids touched."""
    touched: set[str] = set()
    for record in records:
        if isinstance(record, Started):
            snapshots[record.wf] = new_snapshot(record)
        else:
            snapshot = snapshots.get(record.wf)
            if snapshot is None:
                continue
            apply(snapshot, record)
        touched.add(record.wf)
    return touched


async def fold_log(
    snapshots: dict[str, Snapshot],
    records: Sequence[Record],
    load: Callable[[str], Awaitable[Snapshot | None]],
) -> set[str]:
    """:func:`fold`, first loading (by id) the instances the records name that are not
    in ``snapshots``."""
    for instance_id in {r.wf for r in records if not isinstance(r, Started)} - snapshots.keys():
        found = await load(instance_id)
        if found is not None:
            snapshots[instance_id] = found
    return fold(snapshots, records)
