"""What the writer reports, applied to the instances it concerns.

After each commit the writer hands over the batch (:meth:`Commits.committed`), and each
record is applied, in log order, to its instance: a loaded one folds it in and reacts
(its workflow code runs on to its next pause), an unloaded one's snapshot takes it (and
the directory loads the instance if that gives it something to do), and a ``Started``
record begins a new instance. A failed write freezes the instances it concerned
(:meth:`Commits.write_failed`); each is replaced by one replayed from what was committed,
as a restart would, once writes succeed again. The writer's checkpoints store the
snapshots changed since the last one (:meth:`Commits.checkpoint`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Protocol

from actorflow import codec
from actorflow.actor import Phase
from actorflow.errors import StoreError
from actorflow.log import logger as _log
from actorflow.loop import host_loop
from actorflow.records import (
    ContinuedAsNew,
    EventSent,
    Record,
    Snapshot,
    Started,
    Value,
    new_snapshot,
)
from actorflow.workflow import lookup as lookup_workflow

if TYPE_CHECKING:
    from actorflow.actor import Actor
    from actorflow.host.directory import Directory
    from actorflow.host.writer import GroupWriter
    from actorflow.store import Store

REPLAY_DELAY_MIN = 0.01  # seconds before an instance frozen by a failed write is replayed
REPLAY_DELAY_MAX = 1.0


class Resume(Protocol):
    """Builds, registers and starts the actor of ``snapshot`` (instead of ``replacing``;
    ``resumed``: an instance that ran before, not a new one)."""

    def __call__(
        self, snapshot: Snapshot, replacing: Actor | None = None, resumed: bool = True
    ) -> Actor: ...


class Commits:
    """Applies the writer's reports to the instances in memory; see the module docstring.

    ``resume`` is the runtime's, which knows what an actor needs. :meth:`committed`,
    :meth:`write_failed` and :meth:`checkpoint` are the writer's callbacks; it is
    attached (:meth:`attach`) once made.
    """

    def __init__(self, store: Store, directory: Directory, resume: Resume) -> None:
        self._store = store
        self._directory = directory
        self._resume = resume
        self._writer: GroupWriter  # attached at open
        self._frozen: set[str] = set()  # held after a failed write, to be replayed
        self._replayer: asyncio.Task[None] | None = None
        self._replay_delay = REPLAY_DELAY_MIN
        self._change = asyncio.Event()  # set, then replaced, after each commit: changed()
        self._closed = False

    def attach(self, writer: GroupWriter) -> None:
        """The writer whose reports these are (it queues records and gives barriers)."""
        self._writer = writer

    def close(self) -> None:
        """The runtime closes: no instance frozen by a failed write is replayed any more."""
        self._closed = True
        if self._replayer is not None:
            self._replayer.cancel()

    async def changed(self) -> None:
        """Return after the next commit of records of any instance (or :meth:`announce`)."""
        await self._change.wait()

    def announce(self) -> None:
        """Wake the callers of :meth:`changed`: instances changed, or were deleted."""
        self._change.set()
        self._change = asyncio.Event()

    # -- the writer's callbacks ------------------------------------------------------
    def committed(self, batch: list[Record]) -> None:
        """Apply a committed batch, record by record, in log order.

        A record that fails to apply holds its instance (its snapshot still has the
        record, so the checkpoint keeps it); the rest of the batch, other instances
        included, is applied as if nothing happened.
        """
        self._replay_delay = REPLAY_DELAY_MIN
        for record in batch:
            try:
                self._apply(record)
            except Exception as exc:
                self._apply_failed(record, exc)
        self._change.set()
        self._change = asyncio.Event()
        self._directory.unload_idle(self._writer.queued_instances)

    def _apply(self, record: Record) -> None:
        wf = record.wf
        directory = self._directory
        actor = directory.loaded.get(wf)
        if actor is not None:
            directory.dirty.add(wf)
            directory.touch(actor)
            if isinstance(record, ContinuedAsNew):
                directory.forget_tokens(actor.snapshot)  # the ending run's tokens are void
            actor.committed(record)
            if isinstance(record, Value) and record.kind == "create_event":
                directory.tokens[codec.decoder(str).decode(record.value)] = wf
        elif isinstance(record, Started):
            directory.dirty.add(wf)
            self._resume(new_snapshot(record), resumed=False)
            _log.info("workflow.started", workflow_id=wf, workflow=record.workflow)
        else:
            directory.committed(record, _takes)

    def _apply_failed(self, record: Record, error: Exception) -> None:
        what = f"a committed {type(record).__name__} record"
        _log.exception("workflow.apply_failed", workflow_id=record.wf, record=what)
        actor = self._directory.loaded.get(record.wf)
        if actor is not None:
            actor.apply_failed(what, error)

    def write_failed(self, batch: list[Record], error: StoreError) -> None:
        """Freeze the loaded instances with records in a batch that was not written;
        each is replayed from what was committed, backing off while writes keep failing."""
        _log.error("store.write_failed", error=str(error), records=len(batch))
        for wf in {r.wf for r in batch}:
            actor = self._directory.loaded.get(wf)
            if actor is not None:
                if actor.phase is not Phase.HELD:
                    self._frozen.add(wf)
                actor.write_failed(batch, error)
        if self._frozen and (self._replayer is None or self._replayer.done()):
            self._replayer = host_loop().create_task(self._replay_frozen())

    async def _replay_frozen(self) -> None:
        """Replace each instance frozen by a failed write with one replayed from what was
        committed, as a restart would, once everything queued before is written or
        failed; backs off while writes keep failing."""
        while self._frozen and not self._closed:
            await asyncio.sleep(self._replay_delay)
            self._replay_delay = min(self._replay_delay * 2, REPLAY_DELAY_MAX)
            frozen, self._frozen = self._frozen, set()
            barrier = self._writer.barrier()
            if barrier is not None:
                with contextlib.suppress(StoreError):
                    await barrier
            if self._closed:
                return
            for wf in frozen:
                actor = self._directory.loaded.get(wf)
                if actor is not None and actor.phase is Phase.HELD and actor.held is None:
                    _log.info("workflow.replayed", workflow_id=wf, reason="write failed")
                    self._resume(actor.snapshot, replacing=actor)

    async def checkpoint(self) -> None:
        """Store every snapshot changed since the last checkpoint."""
        await self._store.checkpoint(await self._directory.to_checkpoint())
        self._directory.checkpointed()


def _takes(snapshot: Snapshot, sent: EventSent) -> bool:
    """Whether an unloaded instance's wait, or a handler of its workflow, takes ``sent``."""
    definition = lookup_workflow(snapshot.workflow)
    if definition is not None and sent.name in definition.handlers:
        return True
    for wait in snapshot.waiting:
        if wait.kind == "event" and (
            wait.token == sent.token
            if sent.token is not None
            else wait.token is None and wait.name == sent.name
        ):
            return True
    return False
