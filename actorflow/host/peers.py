"""Instances that another runtime runs, on a store several runtimes share (PostgreSQL).

A runtime runs only the instances it owns. For any other instance of the database, it
reads the committed state (``status``, ``result``) and hands events and cancels to the
owner through the store's inbox (:class:`Elsewhere`); it hears from the other runtimes
(:class:`Peers`): instances it took over from a runtime that died or left, a notify,
and that its own lease was taken over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Protocol, runtime_checkable

from actorflow.errors import ActorflowError, WaitTimeout
from actorflow.inbox import CancelRequest, ForwardRequest, encode_request
from actorflow.log import logger as _log
from actorflow.records import Snapshot
from actorflow.store.base import Mark, Peers


@runtime_checkable
class SharedStore(Protocol):
    """What a store that several runtimes open at once adds to :class:`Store`."""

    owner: str
    """This runtime's id in the store."""

    async def claim(self, snapshot: Snapshot) -> str | None:
        """Store a new instance as this runtime's; if its id exists, its workflow name."""
        ...

    async def read(self, instance_id: str) -> Snapshot | None:
        """An instance as committed by whichever runtime runs it."""
        ...

    async def located(self, instance_id: str) -> str | None:
        """The stored status of an instance, whichever runtime runs it (cheap)."""
        ...

    async def forward(self, request: bytes, target: str | None, marks: Sequence[Mark]) -> int:
        """Queue ``request`` for the runtime that runs ``target``; durable on return.
        Returns its number, for :meth:`decided`."""
        ...

    async def decided(self, seq: int) -> str | None:
        """Wait for the verdict on forwarded request ``seq``: ``None`` (accepted) or
        the reason it was rejected."""
        ...

    async def tell_topics(self, topics: Collection[str]) -> None:
        """Have the other runtimes re-run their queries on ``topics``."""
        ...

    def ended(self, instance_id: str) -> asyncio.Future[None]:
        """Resolved when some runtime reports that ``instance_id`` ended."""
        ...

    def follow(self, peers: Peers) -> None:
        """Start keeping the lease; ``peers`` hears what the other runtimes do."""
        ...


class Elsewhere:
    """How this runtime reaches the instances other runtimes run."""

    def __init__(self, store: SharedStore, max_payload_bytes: int) -> None:
        self._store = store
        self._max_request = max_payload_bytes

    async def snapshot(self, instance_id: str) -> Snapshot | None:
        """The instance as committed (``None``: no such instance)."""
        return await self._store.read(instance_id)

    async def status_of(self, instance_id: str) -> str | None:
        """The instance's status as of its last checkpoint (``None``: no such instance):
        enough to refuse what its owner would refuse anyway, without reading its log."""
        return await self._store.located(instance_id)

    async def deliver(
        self,
        instance_id: str,
        name: str,
        token: str | None,
        payload: bytes | None,
        error: str | None,
        cancelled: bool,
        created_at: float | None,
        marks: Sequence[Mark],
    ) -> int:
        """Hand an event (checked and encoded here) to the runtime that runs instance
        ``instance_id``: durable when this returns (its place among the events
        for the instance is kept), offered by the owner as its own send would be.
        Returns the request's number: :meth:`applied` waits for the owner."""
        request = ForwardRequest(name, instance_id, token, payload, error, cancelled, created_at)
        seq = await self._store.forward(
            encode_request(request, self._max_request), instance_id, marks
        )
        _log.debug("event.forwarded", workflow_id=instance_id, name=name, seq=seq)
        return seq

    async def cancel(self, instance_id: str, marks: Sequence[Mark]) -> None:
        """Hand a cancel to the runtime that runs the instance; returns once applied (or,
        for a request of this runtime's inbox, decided by ``marks``, once handed over)."""
        request = encode_request(CancelRequest(instance_id))
        seq = await self._store.forward(request, instance_id, marks)
        if not marks:
            await self.applied(seq)

    async def applied(self, seq: int) -> None:
        """Return once the owner has applied forwarded request ``seq``, as its own call
        would have returned; raise what it would have raised (:class:`ActorflowError`
        with the owner's reason) if it refused it. A later call here therefore comes
        after it, and a token it spent cannot be spent again."""
        reason = await self._store.decided(seq)
        if reason is not None:
            raise ActorflowError(reason)

    async def result(self, instance_id: str, limit: float | None) -> Snapshot:
        """The instance once it has ended, as committed; woken by the ``NOTIFY`` of the
        runtime that ends it, never by polling. :class:`WaitTimeout` after ``limit``."""
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            ended = self._store.ended(instance_id)  # before the read: no end goes unheard
            snapshot = await self._store.read(instance_id)
            if snapshot is None:
                raise ActorflowError(f"no workflow instance with id {instance_id!r}")
            if snapshot.finished:
                ended.cancel()
                return snapshot
            left = None if deadline is None else deadline - time.monotonic()
            try:
                if left is not None and left <= 0:
                    raise TimeoutError
                await asyncio.wait_for(ended, left)
            except TimeoutError:
                raise WaitTimeout(
                    f"workflow {instance_id!r} did not finish within {limit} s"
                ) from None


class RuntimePeers:
    """The runtime's side of :class:`Peers`: what it does when the others tell it so."""

    def __init__(
        self,
        taking: Callable[[], Awaitable[None]],
        taken: Callable[[list[Snapshot] | None], None],
        lost: Callable[[Exception], None],
        notified: Callable[[list[str]], None],
    ) -> None:
        self.taking = taking
        self.taken = taken
        self.lost = lost
        self.notified = notified
