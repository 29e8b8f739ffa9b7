"""The directory of instances: which are loaded, which wait unloaded, and how each is found.

An instance is *loaded* (an :class:`~actorflow.actor.Actor`: its coroutine parked in
memory) or *unloaded* (its snapshot in the store, or here until the next checkpoint
writes it). At most ``max_loaded`` instances stay loaded: once more are, the least
recently active parked ones are unloaded (DESIGN §3.1). An unloaded instance is loaded
again, by replay, only when it has something to do: an event that its wait or a handler
takes, a cancel (both seen when their record commits, :meth:`Directory.committed`), its
deadline (one timer for all of them, :meth:`Directory.note_wake`), or a notify on a
topic of its query (the runtime asks :meth:`Directory.load`).

Invariant: an unfinished instance's current snapshot is the loaded actor's, else the one
in ``unsaved``, else the store's; records of an unloaded instance are written only while
its snapshot is pinned in ``unsaved`` (:meth:`Directory.pin`), so that they are folded
into it when they commit and reach the store with the next checkpoint.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

from actorflow.log import logger as _log
from actorflow.loop import host_loop
from actorflow.records import CancelRequested, EventSent, Record, Snapshot, apply
from actorflow.store.base import WORK_NOW, fold_log, wake_of

if TYPE_CHECKING:
    from actorflow.actor import Actor
    from actorflow.clock import Clock
    from actorflow.host.writer import GroupWriter
    from actorflow.store import Store
    from actorflow.timers import Timer, TimerWheel


class Directory:
    """Instances by id: loaded, unloaded-but-in-memory, finished since the last checkpoint.

    ``resume(snapshot)`` builds, registers (:meth:`add`) and starts the actor of a
    snapshot: the runtime's, which knows the services an actor needs.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        resume: Callable[[Snapshot], Actor],
        max_loaded: int | None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._writer: GroupWriter | None = None  # attached at open
        self._timers: TimerWheel | None = None
        self._resume = resume
        self.max_loaded = max_loaded
        self.loaded: dict[str, Actor] = {}  # least recently active first
        self.unsaved: dict[str, Snapshot] = {}  # unloaded, changed since the last checkpoint
        self.finished: dict[str, Snapshot] = {}  # ended since the last checkpoint
        self.dirty: set[str] = set()  # loaded instances changed since the last checkpoint
        self.tokens: dict[str, str] = {}  # event token -> id, for instances in memory
        self._pins: dict[str, int] = {}  # unloaded ids with records being written
        self._next_ids: dict[str, int] = {}  # ... and their next event id
        self._sent_tokens: dict[str, set[str]] = {}  # ... and tokens being resolved
        self._loading: dict[str, asyncio.Future[Actor | None]] = {}
        self._done: dict[str, asyncio.Future[None]] = {}  # h.result() callers, by id
        self._orphans: list[Record] = []  # committed for an instance nowhere in memory
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake_timer: Timer | None = None
        self._wake_at: float | None = None
        self._scanned = WORK_NOW  # stored wakes up to this time were loaded
        self._checkpoints = 0  # how many ended: a store read across one may be stale
        self._closed = False

    def attach(self, writer: GroupWriter, timers: TimerWheel) -> None:
        """The runtime opened: the writer and timer wheel the directory uses from now on."""
        self._writer = writer
        self._timers = timers

    # -- finding -------------------------------------------------------------------
    def in_memory(self, instance_id: str) -> Snapshot | None:
        """The instance's current snapshot if it is in memory (loaded or not)."""
        actor = self.loaded.get(instance_id)
        if actor is not None:
            return actor.snapshot
        found = self.unsaved.get(instance_id)
        return found if found is not None else self.finished.get(instance_id)

    async def lookup(self, instance_id: str) -> Snapshot | None:
        """The instance's current snapshot, from memory or the store; never loads it."""
        while True:
            found = self.in_memory(instance_id)
            if found is not None:
                return found
            checkpoints = self._checkpoints
            found = await self._store.load(instance_id)
            # A checkpoint that ended during the read may have stored a newer snapshot of
            # it (loaded, changed and let go of meanwhile) than the row the read saw.
            if self._checkpoints == checkpoints:
                return found

    async def token_owner(self, token: str) -> str | None:
        """The id of the instance that made event token ``token``, if any is known."""
        owner = self.tokens.get(token)
        return owner if owner is not None else await self._store.token_owner(token)

    def memory_snapshots(self) -> dict[str, Snapshot]:
        """The snapshots in memory (the store's may be older), by id."""
        found = {**self.unsaved, **self.finished}
        for instance_id, actor in self.loaded.items():
            found[instance_id] = actor.snapshot
        return found

    @property
    def loading(self) -> Collection[str]:
        """Ids being loaded now."""
        return self._loading.keys()

    @property
    def busy(self) -> bool:
        """Whether instances are being loaded."""
        return bool(self._tasks) or bool(self._loading)

    # -- loaded instances -----------------------------------------------------------
    def add(self, actor: Actor) -> None:
        """Register a loaded actor (most recently active)."""
        self.loaded[actor.id] = actor
        for token in actor.snapshot.tokens:
            self.tokens[token] = actor.id

    def touch(self, actor: Actor) -> None:
        """``actor`` was just active: it is unloaded last."""
        loaded = self.loaded
        del loaded[actor.id]
        loaded[actor.id] = actor

    def ended(self, actor: Actor) -> None:
        """A loaded instance finished: kept as a snapshot until the next checkpoint."""
        self.loaded.pop(actor.id, None)
        self.finished[actor.id] = actor.snapshot
        done = self._done.pop(actor.id, None)
        if done is not None and not done.done():
            done.set_result(None)

    def done(self, instance_id: str) -> asyncio.Future[None]:
        """A future resolved when the instance finishes (or the runtime closes)."""
        future = self._done.get(instance_id)
        if future is None:
            future = self._done[instance_id] = host_loop().create_future()
        return future

    async def load(self, instance_id: str) -> Actor | None:
        """The loaded actor of an unfinished instance, loading it by replay if need be;
        ``None`` if there is no such instance or it has finished."""
        actor = self.loaded.get(instance_id)
        if actor is not None:
            return actor
        loading = self._loading.get(instance_id)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[Actor | None] = host_loop().create_future()
        self._loading[instance_id] = future
        try:
            actor = await self._load(instance_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # the caller gets it; waiters too
            raise
        else:
            future.set_result(actor)
        finally:
            del self._loading[instance_id]
        return actor

    async def _load(self, instance_id: str) -> Actor | None:
        # Records of the instance still being written fold into its snapshot first, so
        # that replay sees them; sends meanwhile wait for the load (``loading``).
        while self._pins.get(instance_id) and self._writer is not None:
            barrier = self._writer.barrier()
            if barrier is None:
                break
            await asyncio.wait([barrier])
        actor = self.loaded.get(instance_id)
        if actor is not None or self._closed:
            return actor
        snapshot = self.in_memory(instance_id)
        if snapshot is None:
            snapshot = await self._store.load(instance_id)
            actor = self.loaded.get(instance_id)
            if actor is not None or self._closed:
                return actor
            snapshot = self.in_memory(instance_id) or snapshot
        if snapshot is None or snapshot.finished:
            return None
        if self.unsaved.pop(instance_id, None) is not None:
            self.dirty.add(instance_id)  # still to be checkpointed, now as the actor's
        next_id = self._next_ids.pop(instance_id, 0)
        self._sent_tokens.pop(instance_id, None)
        self._pins.pop(instance_id, None)
        actor = self._resume(snapshot)
        actor.next_event_id = max(actor.next_event_id, next_id)
        _log.debug("workflow.loaded", workflow_id=instance_id)
        return actor

    def load_soon(self, instance_id: str) -> None:
        """Load the instance in the background (it has something to do)."""
        if instance_id in self.loaded or instance_id in self._loading or self._closed:
            return
        self._spawn(self.load(instance_id))

    def _spawn(self, coro: Any) -> None:
        task = host_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("workflow.load_failed", error=repr(task.exception()))

    # -- unloading ----------------------------------------------------------------------
    def unload_idle(self, queued: Callable[[], set[str]]) -> None:
        """Unload the least recently active parked instances beyond ``max_loaded``;
        ``queued()``: ids with records still waiting to be written (not unloaded yet)."""
        limit = self.max_loaded
        if limit is None or len(self.loaded) <= limit:
            return
        excess = len(self.loaded) - limit
        # A bounded look at the oldest: busy ones ahead of them are skipped, not rescanned
        # without end.
        candidates = list(itertools.islice(self.loaded.values(), 2 * excess + 64))
        busy: set[str] | None = None
        for actor in candidates:
            if excess <= 0:
                break
            if not actor.parked:
                continue
            if busy is None:
                busy = queued()
            if actor.id in busy:
                continue
            self._unload(actor)
            excess -= 1

    def _unload(self, actor: Actor) -> None:
        wake = wake_of(actor.snapshot)
        if wake is not None and wake <= self._clock.now():
            # Work now (WORK_NOW), or a deadline come whose timer has not run yet: that
            # deadline may lie behind what _load_due has already looked for in the store.
            return
        actor.unload()
        instance_id = actor.id
        del self.loaded[instance_id]
        snapshot = actor.snapshot
        if instance_id in self.dirty:
            self.dirty.discard(instance_id)
            self.unsaved[instance_id] = snapshot
        else:  # the store has it all, tokens included
            for token in snapshot.tokens:
                self.tokens.pop(token, None)
        if wake is not None:
            self.note_wake(wake)
        _log.debug("workflow.unloaded", workflow_id=instance_id)

    # -- records of unloaded instances -------------------------------------------------
    def pin(self, snapshot: Snapshot) -> None:
        """Keep an unloaded instance's snapshot in memory until :meth:`unpin`: a record of
        it is being written, to be folded into it when committed."""
        instance_id = snapshot.id
        self.unsaved.setdefault(instance_id, snapshot)
        self._pins[instance_id] = self._pins.get(instance_id, 0) + 1

    def unpin(self, instance_id: str) -> None:
        """One record of an unloaded instance was written (or failed)."""
        left = self._pins.get(instance_id, 0) - 1
        if left > 0:
            self._pins[instance_id] = left
            return
        self._pins.pop(instance_id, None)
        self._next_ids.pop(instance_id, None)
        self._sent_tokens.pop(instance_id, None)

    def next_event_id(self, snapshot: Snapshot) -> int:
        """A new event id for an unloaded instance."""
        next_id = self._next_ids.get(snapshot.id)
        if next_id is None:
            next_id = snapshot.events[-1].id + 1 if snapshot.events else 0
        self._next_ids[snapshot.id] = next_id + 1
        return next_id

    def token_sent(self, snapshot: Snapshot, token: str) -> bool:
        """Whether an event was sent (or is being written) for ``token`` of an unloaded
        instance; marks it as being written if not."""
        sending = self._sent_tokens.setdefault(snapshot.id, set())
        if token in sending or any(e.token == token for e in snapshot.events):
            return True
        sending.add(token)
        return False

    def committed(self, record: Record, takes: Callable[[Snapshot, EventSent], bool]) -> bool:
        """Fold a committed record of an instance that is not loaded into its snapshot;
        load it if the record gives it something to do (``takes``: whether its wait or a
        handler takes an event). ``False`` if the instance is not in memory at all."""
        wf = record.wf
        snapshot = self.unsaved.get(wf)
        if snapshot is not None:
            apply(snapshot, record)
            if isinstance(record, CancelRequested) or (
                isinstance(record, EventSent) and takes(snapshot, record)
            ):
                self.load_soon(wf)
            return True
        snapshot = self.finished.get(wf)
        if snapshot is not None:
            apply(snapshot, record)
            return True
        # Never expected (records of unloaded instances are written pinned); kept, so that
        # the next checkpoint folds it into the stored snapshot rather than losing it.
        _log.warning("record.orphan", workflow_id=wf, record=type(record).__name__)
        self._orphans.append(record)
        return False

    # -- checkpoints -----------------------------------------------------------------------
    async def to_checkpoint(self) -> list[Snapshot]:
        """Every snapshot changed since the last checkpoint."""
        snapshots = [*self.finished.values(), *self.unsaved.values()]
        snapshots += [self.loaded[i].snapshot for i in self.dirty if i in self.loaded]
        if self._orphans:
            orphans, self._orphans = self._orphans, []
            by_id: dict[str, Snapshot] = {}
            await fold_log(by_id, orphans, self._store.load)
            snapshots += by_id.values()
        return snapshots

    def checkpointed(self) -> None:
        """The snapshots of :meth:`to_checkpoint` are stored: let go of what only they held."""
        self._checkpoints += 1
        for snapshot in self.finished.values():
            self.forget_tokens(snapshot)
        self.finished.clear()
        for instance_id in [i for i in self.unsaved if not self._pins.get(i)]:
            self.forget_tokens(self.unsaved.pop(instance_id))
        self.dirty.clear()

    def forget_tokens(self, snapshot: Snapshot) -> None:
        """Let go of the routes to ``snapshot``'s tokens (kept in the store, or void)."""
        for token in snapshot.tokens:
            if self.tokens.get(token) == snapshot.id:
                del self.tokens[token]

    # -- deadlines of unloaded instances ---------------------------------------------------
    def watch(self, now: float, next_wake: float | None) -> None:
        """Begin watching stored deadlines: those up to ``now`` were loaded at open."""
        self._scanned = now
        if next_wake is not None:
            self.note_wake(next_wake)

    def note_wake(self, wake: float) -> None:
        """An unloaded instance must be loaded at ``wake``."""
        if self._closed or self._timers is None:
            return
        if self._wake_at is not None and self._wake_at <= wake:
            return
        if self._wake_timer is not None:
            self._wake_timer.cancel()
        self._wake_at = wake
        self._wake_timer = self._timers.schedule(wake, self._wake_due)

    def _wake_due(self) -> None:
        self._wake_timer = None
        self._wake_at = None
        self._spawn(self._load_due())

    async def _load_due(self) -> None:
        now = self._clock.now()
        after, self._scanned = self._scanned, now
        # Those in memory are taken before and after the store is read: a checkpoint that
        # ends meanwhile moves them to the store, perhaps after the read saw their row.
        unsaved = self._unsaved_due(now)
        due: Iterable[str] = await self._store.due(after, now)
        for instance_id in dict.fromkeys(itertools.chain(due, unsaved, self._unsaved_due(now))):
            snapshot = self.unsaved.get(instance_id)
            if snapshot is not None and ((wake := wake_of(snapshot)) is None or wake > now):
                continue  # the stored wake is old: it changed while in memory
            self.load_soon(instance_id)
        upcoming = [w for s in self.unsaved.values() if (w := wake_of(s)) is not None and w > now]
        stored = await self._store.next_wake(now)
        if stored is not None:
            upcoming.append(stored)
        if upcoming:
            self.note_wake(min(upcoming))

    def listening(self, topics: Collection[str]) -> list[str]:
        """Unloaded instances in memory whose query listens on one of ``topics`` (the
        store finds the others)."""
        wanted = set(topics)
        return [
            i
            for i, s in self.unsaved.items()
            if any(w.kind == "query" and wanted.intersection(w.topics) for w in s.waiting)
        ]

    def _unsaved_due(self, now: float) -> list[str]:
        return [
            i
            for i, s in self.unsaved.items()
            if (wake := wake_of(s)) is not None and wake <= now and i not in self.loaded
        ]

    def close(self) -> None:
        """The runtime closes: stop loading; callers of ``h.result()`` are released."""
        self._closed = True
        if self._wake_timer is not None:
            self._wake_timer.cancel()
        for task in self._tasks:
            task.cancel()
        for future in self._done.values():
            if not future.done():
                future.set_result(None)
