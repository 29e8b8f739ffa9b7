"""In-memory storage for ``Runtime()`` without a path: same encoding and layout (a base
and journal per instance, see :mod:`actorflow.store.layout`), nothing durable."""

from __future__ import annotations

import builtins
from collections.abc import Collection, Sequence

from actorflow.records import BATCH_DECODER, RECORD_ENCODER, SNAPSHOT_DECODER, Record, Snapshot
from actorflow.store import layout
from actorflow.store.base import (
    InboxRow,
    Mark,
    finished_at,
    query_topics,
    stored_state,
    waits_on_query,
    wake_of,
)


class MemoryStore:
    """A :class:`~actorflow.store.Store` that keeps encoded records in lists and dicts.

    Records and snapshots are encoded and decoded exactly as SQLite stores them, so a
    value that would not survive the database does not survive here either.
    """

    def __init__(self) -> None:
        self._wal: list[bytes] = []
        self._bases: dict[str, bytes] = {}
        self._journals: dict[str, list[bytes]] = {}
        self._heads: dict[str, bytes] = {}
        self._stored: dict[str, layout.Stored] = {}
        self._finished: dict[str, tuple[float, str]] = {}  # id -> (finished_at, status)
        # What finds an instance that is not loaded, as SQLite's columns and tables do.
        self._states: dict[str, tuple[str, str]] = {}  # id -> (state, workflow)
        self._wakes: dict[str, float] = {}
        self._queries: set[str] = set()
        self._tokens: dict[str, str] = {}  # token -> id
        self._tokens_of: dict[str, list[str]] = {}
        self._topics: dict[str, set[str]] = {}  # topic -> ids
        self._topics_of: dict[str, set[str]] = {}

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
        """Append each changed instance's records in the log to its journal (or rewrite
        its base, as :func:`layout.plan` says), update its index, drop the log."""
        records = self.records()
        changes = layout.plan(snapshots, records, self._stored)
        for c in changes:
            if c.base is not None:
                self._bases[c.id] = c.base
                self._journals[c.id] = []
            elif c.tail is not None:
                self._journals[c.id].append(c.tail)
            s = c.snapshot
            run = s.run if s is not None else self._stored[c.id].run
            self._stored[c.id] = layout.Stored(run, c.base_bytes, c.tail_bytes)
            if s is None or c.head is None:
                continue
            self._heads[c.id] = c.head
            self._index(s, c)
            if s.finished:
                self._finished[s.id] = (finished_at(s), s.status)
            else:
                self._finished.pop(s.id, None)
        self._wal.clear()

    def _index(self, s: Snapshot, change: layout.Change) -> None:
        self._states[s.id] = (stored_state(s), s.workflow)
        wake = wake_of(s)
        if wake is None:
            self._wakes.pop(s.id, None)
        else:
            self._wakes[s.id] = wake
        if waits_on_query(s):
            self._queries.add(s.id)
        else:
            self._queries.discard(s.id)
        for topic in self._topics_of.pop(s.id, ()):
            self._topics[topic].discard(s.id)
        if change.drop_tokens:
            self._drop_tokens(s.id)
        if not s.finished:
            topics = query_topics(s)
            if topics:
                self._topics_of[s.id] = topics
                for topic in topics:
                    self._topics.setdefault(topic, set()).add(s.id)
            if change.tokens:
                self._tokens_of.setdefault(s.id, []).extend(change.tokens)
                self._tokens.update(dict.fromkeys(change.tokens, s.id))

    def _drop_tokens(self, instance_id: str) -> None:
        for token in self._tokens_of.pop(instance_id, ()):
            if self._tokens.get(token) == instance_id:
                del self._tokens[token]

    async def due(self, after: float, upto: float) -> builtins.list[str]:
        """Unfinished instances whose wake lies in ``(after, upto]``."""
        return [i for i, wake in self._wakes.items() if after < wake <= upto]

    async def next_wake(self, after: float) -> float | None:
        """The earliest wake later than ``after``, if any."""
        return min((w for w in self._wakes.values() if w > after), default=None)

    async def token_owner(self, token: str) -> str | None:
        """The unfinished instance that made ``token``, if one is stored."""
        return self._tokens.get(token)

    async def listening(self, topics: Collection[str]) -> builtins.list[str]:
        """Unfinished instances that wait on a query on one of ``topics``."""
        return list({i for topic in topics for i in self._topics.get(topic, ())})

    async def purge(self, before: float, statuses: Collection[str], limit: int) -> int:
        """Delete up to ``limit`` finished instances whose status is in ``statuses`` and
        that finished at or before ``before``, oldest first; return how many were deleted."""
        due = sorted(
            (at, i)
            for i, (at, status) in self._finished.items()
            if at <= before and status in statuses
        )[:limit]
        for _, i in due:
            del self._finished[i], self._bases[i], self._journals[i], self._heads[i]
            del self._states[i], self._stored[i]
            self._wakes.pop(i, None)
            self._drop_tokens(i)
        return len(due)

    async def purge_inbox(self, before: float, limit: int) -> int:
        """There is no inbox in memory."""
        return 0

    async def oldest_done(self) -> float | None:
        """When the oldest stored finished instance finished (``None``: there is none)."""
        return min((at for at, _ in self._finished.values()), default=None)

    async def load(self, instance_id: str) -> Snapshot | None:
        """A stored instance, decoded anew: its base with its journal folded in."""
        base = self._bases.get(instance_id)
        return layout.restore(base, self._journals[instance_id]) if base is not None else None

    async def workflows_of(self, instance_ids: Collection[str]) -> dict[str, str]:
        """The workflow name of each stored instance among ``instance_ids``."""
        return {i: self._states[i][1] for i in instance_ids if i in self._states}

    async def list(self, states: Collection[str] | None, workflow: str | None) -> list[Snapshot]:
        """Stored instances without history, events, values and tokens
        (:func:`layout.head_of`), filtered by state and workflow before any is decoded."""
        return [
            SNAPSHOT_DECODER.decode(self._heads[i])
            for i, (state, name) in self._states.items()
            if (states is None or state in states) and (workflow is None or name == workflow)
        ]

    def records(self) -> builtins.list[Record]:
        """The log as stored (for tests)."""
        return [r for b in self._wal for r in BATCH_DECODER.decode(b)]

    async def close(self) -> None:
        """Nothing to release."""
