"""The ``Store`` protocol and the recovery fold every store shares."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import NamedTuple, Protocol

from actorflow.records import Record, Snapshot, Started, apply, new_snapshot

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
        """Open (creating if new), recover, and return the unfinished instances."""
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

    async def list(self, statuses: Collection[str] | None, workflow: str | None) -> list[Snapshot]:
        """Stored snapshots, optionally filtered by status and workflow name."""
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


def finished_at(snapshot: Snapshot) -> float:
    """When a finished instance finished (its last update: a finished snapshot changes
    no more, which is what lets SQLite index it by ``updated_at``)."""
    return snapshot.finished_at if snapshot.finished_at is not None else snapshot.updated_at


async def fold_log(
    snapshots: dict[str, Snapshot],
    records: Iterable[Record],
    load: Callable[[str], Awaitable[Snapshot | None]],
) -> set[str]:
    """Apply logged ``records`` to ``snapshots`` in order (loading others by id as
    needed); return the ids of the instances the records touched."""
    touched: set[str] = set()
    for record in records:
        if isinstance(record, Started):
            snapshots[record.wf] = new_snapshot(record)
        else:
            snapshot = snapshots.get(record.wf)
            if snapshot is None:
                snapshot = await load(record.wf)
                if snapshot is None:
                    continue  # a record for an instance whose start never committed
                snapshots[record.wf] = snapshot
            apply(snapshot, record)
        touched.add(record.wf)
    return touched
