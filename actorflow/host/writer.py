"""Group commit: one task writes everything queued in a loop turn in one transaction."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from actorflow.errors import RuntimeClosed, StoreError
from actorflow.log import logger as _log
from actorflow.loop import host_loop
from actorflow.records import Record
from actorflow.store import Store
from actorflow.store.base import Mark


class GroupWriter:
    """Appends records to the store in batches, in order, and reports each commit.

    ``append`` queues records; ``append_acked`` also returns a future released once
    they are committed. After each commit ``on_commit(batch)`` runs, then the futures
    are released, so a caller that was acknowledged sees the effect already applied.
    A failed write calls ``on_failure(batch, error)`` and fails the batch's futures
    with :class:`StoreError`; nothing of that batch counts as written. ``on_commit``
    should not raise; if it does anyway, the log is no longer checkpointed (the
    checkpoint would delete records memory may lack), so the next open folds it.
    """

    def __init__(
        self,
        store: Store,
        on_commit: Callable[[list[Record]], None],
        on_failure: Callable[[list[Record], StoreError], None],
        checkpoint: Callable[[], Awaitable[None]],
        checkpoint_every: int,
    ) -> None:
        self._store = store
        self._on_commit = on_commit
        self._on_failure = on_failure
        self._checkpoint = checkpoint
        self._checkpoint_every = checkpoint_every
        self._since_checkpoint = 0
        self._pending: list[Record] = []
        self._marks: list[Mark] = []
        self._acks: list[asyncio.Future[None]] = []
        self._checkpoint_waiters: list[asyncio.Future[None]] = []
        self._wakeup = asyncio.Event()
        self._writing = False
        self._inflight: asyncio.Future[None] | None = None
        self._closed = False
        self._keep_log = False  # an on_commit raised: memory may lack committed records
        self._task = host_loop().create_task(self._run(), name="actorflow-writer")

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being written."""
        return (
            not self._pending and not self._marks and not self._writing
            and not self._checkpoint_waiters
        )  # fmt: skip

    def queued_instances(self) -> set[str]:
        """Ids of the instances with records queued and not yet being written."""
        return {record.wf for record in self._pending}

    def append(self, records: list[Record]) -> None:
        """Queue records to be written in order; no acknowledgement."""
        if self._closed:
            return  # the runtime is stopping: the tail is lost, as in a crash
        self._pending += records
        self._wakeup.set()

    def append_acked(
        self, records: list[Record], marks: Sequence[Mark] = ()
    ) -> asyncio.Future[None]:
        """Queue records (and inbox verdicts, written in the same transaction); the
        future resolves once they are committed (or fails)."""
        if self._closed:
            raise RuntimeClosed("the runtime is closed")
        future: asyncio.Future[None] = host_loop().create_future()
        self._pending += records
        self._marks += marks
        self._acks.append(future)
        self._wakeup.set()
        return future

    def barrier(self) -> asyncio.Future[None] | None:
        """A future for the commit of everything queued so far (``None``: nothing is)."""
        if self._pending or self._marks:
            return self.append_acked([])
        return self._inflight

    def checkpoint(self) -> asyncio.Future[None]:
        """Flush what is queued, then checkpoint; the future resolves when it is done."""
        future: asyncio.Future[None] = host_loop().create_future()
        self._checkpoint_waiters.append(future)
        self._wakeup.set()
        return future

    async def close(self) -> None:
        """Write what is queued, checkpoint, and stop."""
        done = self.checkpoint()
        self._closed = True
        try:
            await done
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def abort(self) -> Awaitable[object]:
        """Stop at once, as a crash would: nothing queued is written, later appends are
        dropped (a write already handed to the store completes or not). The awaitable
        returned is done once the writer's task has stopped."""
        self._closed = True
        self._task.cancel()
        return asyncio.gather(self._task, return_exceptions=True)

    @property
    def writing(self) -> bool:
        """Whether a batch is being written now."""
        return self._writing

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._pending or self._marks:
                await self._write()
            if self._checkpoint_waiters or self._since_checkpoint >= self._checkpoint_every:
                await self._run_checkpoint()

    async def _write(self) -> None:
        batch, self._pending = self._pending, []
        marks, self._marks = self._marks, []
        acks, self._acks = self._acks, []
        self._writing = True
        self._inflight = inflight = host_loop().create_future()
        acks.append(inflight)
        try:
            await self._store.write(batch, marks)
        except Exception as error:  # any failure to write is a store failure to callers
            exc = as_store_error(error)
            self._on_failure(batch, exc)
            for future in acks:
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # callers that await still get it; no stray warnings
            return
        finally:
            self._writing = False
            self._inflight = None
        self._since_checkpoint += len(batch)
        try:
            self._on_commit(batch)
        except Exception:  # a bug in applying must neither stop later commits nor lose these
            self._keep_log = True
            _log.exception("writer.apply_failed", records=len(batch), log="kept until reopen")
        for future in acks:
            if not future.done():
                future.set_result(None)

    async def _run_checkpoint(self) -> None:
        waiters, self._checkpoint_waiters = self._checkpoint_waiters, []
        if self._pending or self._marks:
            await self._write()
        try:
            if not self._keep_log:
                await self._checkpoint()
        except Exception as error:
            exc = as_store_error(error)
            for future in waiters:
                if not future.done():
                    future.set_exception(exc)
            return
        self._since_checkpoint = 0
        for future in waiters:
            if not future.done():
                future.set_result(None)


def as_store_error(error: Exception) -> StoreError:
    """``error`` as the :class:`StoreError` callers are promised."""
    if isinstance(error, StoreError):
        return error
    wrapped = StoreError(f"writing to the store failed: {type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return wrapped
