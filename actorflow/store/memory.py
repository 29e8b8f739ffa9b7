"""In-memory storage for ``Runtime()`` without a path: same encoding, nothing durable."""

from __future__ import annotations

import builtins
from collections.abc import Collection, Sequence

from actorflow.records import BATCH_DECODER, RECORD_ENCODER, SNAPSHOT_DECODER, Record, Snapshot
from actorflow.store.base import InboxRow, Mark, finished_at


class MemoryStore:
    """A :class:`~actorflow.store.Store` that keeps encoded records in lists and dicts.

    Records and snapshots are encoded and decoded exactly as SQLite stores them, so a
    value that would not survive the database does not survive here either.
    """

    def __init__(self) -> None:
        self._wal: list[bytes] = []
        self._snapshots: dict[str, bytes] = {}
        self._finished: dict[str, tuple[float, str]] = {}  # id -> (finished_at, status)

    async def open(self) -> list[Snapshot]:
        """A new in-memory store has nothing to recover."""
        return []

    async def write(self, records: list[Record], marks: Sequence[Mark] = ()) -> None:
        """Append encoded ``records`` (there is no inbox in memory: no marks)."""
        if records:
            self._wal.append(RECORD_ENCODER.encode(records))

    async def inbox(
        self, everything: bool = False, max_bytes: int | None = None
    ) -> list[InboxRow] | None:
        """No other process can reach an in-memory store."""
        return None

    async def checkpoint(self, snapshots: list[Snapshot]) -> None:
        """Keep encoded snapshots, drop the log."""
        encode = RECORD_ENCODER.encode
        for s in snapshots:
            self._snapshots[s.id] = encode(s)
            if s.finished:
                self._finished[s.id] = (finished_at(s), s.status)
            else:
                self._finished.pop(s.id, None)
        self._wal.clear()

    async def purge(self, before: float, statuses: Collection[str], limit: int) -> int:
        """Delete up to ``limit`` finished instances whose status is in ``statuses`` and
        that finished at or before ``before``, oldest first; return how many were deleted."""
        due = sorted(
            (at, i)
            for i, (at, status) in self._finished.items()
            if at <= before and status in statuses
        )[:limit]
        for _, i in due:
            del self._finished[i], self._snapshots[i]
        return len(due)

    async def purge_inbox(self, before: float, limit: int) -> int:
        """There is no inbox in memory."""
        return 0

    async def oldest_done(self) -> float | None:
        """When the oldest stored finished instance finished (``None``: there is none)."""
        return min((at for at, _ in self._finished.values()), default=None)

    async def load(self, instance_id: str) -> Snapshot | None:
        """A stored snapshot, decoded anew."""
        blob = self._snapshots.get(instance_id)
        return SNAPSHOT_DECODER.decode(blob) if blob is not None else None

    async def workflows_of(self, instance_ids: Collection[str]) -> dict[str, str]:
        """The workflow name of each stored instance among ``instance_ids``."""
        found = {}
        for i in instance_ids:
            snapshot = await self.load(i)
            if snapshot is not None:
                found[i] = snapshot.workflow
        return found

    async def list(self, statuses: Collection[str] | None, workflow: str | None) -> list[Snapshot]:
        """Stored snapshots, filtered."""
        found = [SNAPSHOT_DECODER.decode(b) for b in self._snapshots.values()]
        return [
            s
            for s in found
            if (statuses is None or s.status in statuses)
            and (workflow is None or s.workflow == workflow)
        ]

    def records(self) -> builtins.list[Record]:
        """The log as stored (for tests)."""
        return [r for b in self._wal for r in BATCH_DECODER.decode(b)]

    async def close(self) -> None:
        """Nothing to release."""
