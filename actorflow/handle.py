"""``Handle``: follow one instance from outside — its result, status, cancellation."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from actorflow import codec
from actorflow.clock import seconds
from actorflow.errors import (
    ActorflowError,
    RuntimeClosed,
    WaitTimeout,
    WorkflowCancelled,
    WorkflowFailed,
)
from actorflow.records import Snapshot
from actorflow.status import Status
from actorflow.workflow import lookup

if TYPE_CHECKING:
    from actorflow.runtime import Runtime

R = TypeVar("R")


class Handle(Generic[R]):
    """A handle on instance ``id`` of workflow ``workflow`` (its name)."""

    __slots__ = ("_runtime", "_workflow", "id")

    def __init__(self, runtime: Runtime, id: str, workflow: str | None) -> None:
        self._runtime = runtime
        self.id = id
        self._workflow = workflow

    def __repr__(self) -> str:
        return f"<Handle {self.id!r} of {self._workflow!r}>"

    @property
    def workflow(self) -> str | None:
        """The workflow's name (``None`` until known for a handle made by id)."""
        return self._workflow

    async def result(self, timeout: float | timedelta | None = None) -> R:
        """Wait for the instance to end and return its result (real-time ``timeout``).

        Raises :class:`WorkflowFailed`, :class:`WorkflowCancelled`, :class:`WaitTimeout`,
        :class:`RuntimeClosed`, or :class:`NonDeterminismError` for a held instance.
        """
        rt = self._runtime
        rt._check_open()
        limit = seconds(timeout, "timeout")
        held = rt._held(self.id)
        if held is not None:
            raise held
        found = None if self.id in rt._remote else await rt._lookup(self.id)
        if found is None and rt._elsewhere is not None:  # another runtime runs it
            found = await rt._reading(rt._elsewhere.result(self.id, limit))
        if found is None:
            raise ActorflowError(f"no workflow instance with id {self.id!r}")
        snapshot = found
        if not snapshot.finished:
            # Whoever waits for the result wants the instance running: an unloaded one
            # is loaded, so that code that no longer replays its history says so.
            await rt._directory.load(self.id)
            held = rt._held(self.id)
            if held is not None:
                raise held
            done = rt._directory.done(self.id)
            try:
                if limit is None:  # no wait_for: it would cost a task per caller
                    await asyncio.shield(done)
                else:
                    await asyncio.wait_for(asyncio.shield(done), limit)
            except TimeoutError:
                raise WaitTimeout(f"workflow {self.id!r} did not finish within {limit} s") from None
            held = rt._held(self.id)
            if held is not None:
                raise held
            current = rt._directory.in_memory(self.id)
            if current is None and not rt.closed:  # checkpointed meanwhile
                current = await rt._lookup(self.id)
            if current is None or not current.finished:
                raise RuntimeClosed(f"the runtime closed before {self.id!r} finished")
            snapshot = current
        self._workflow = snapshot.workflow
        return self._outcome(snapshot)

    def _outcome(self, snapshot: Snapshot) -> R:
        if snapshot.status == "completed":
            definition = lookup(snapshot.workflow)
            decoder = definition.result_decoder if definition else codec.decoder(Any)
            if snapshot.result is None:
                return None  # type: ignore[return-value]
            return decoder.decode(snapshot.result)  # type: ignore[no-any-return]
        error = snapshot.error
        if snapshot.status == "cancelled":
            raise WorkflowCancelled(f"workflow {self.id!r} was cancelled")
        assert error is not None
        raise WorkflowFailed(self.id, error.type, error.message)

    async def status(self) -> Status:
        """The instance's :class:`Status`, live."""
        found = await self._runtime.status(self.id)
        self._workflow = found.workflow
        return found

    async def cancel(self) -> None:
        """Ask the instance to cancel; durable and idempotent, no-op once it has ended."""
        await self._runtime.cancel(self.id)
