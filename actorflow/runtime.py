"""``Runtime``: the public API and the lifecycle; it opens a store, wires the host
(:mod:`actorflow.host`) together, and routes events by instance ID and token."""

from __future__ import annotations

import asyncio
import builtins
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import timedelta
from functools import partial
from typing import Any, Literal, TypeVar

from actorflow.actor import Actor, Phase, Services
from actorflow.backup import backup
from actorflow.clock import Clock, SystemClock, seconds
from actorflow.errors import ActorflowError, InvalidPayload, RuntimeClosed, StoreError
from actorflow.events import Event, check_name, lookup, type_name
from actorflow.handle import Handle
from actorflow.host.commits import Commits
from actorflow.host.directory import Directory
from actorflow.host.executor import Executor
from actorflow.host.peers import Elsewhere, RuntimePeers, SharedStore
from actorflow.host.writer import GroupWriter
from actorflow.inbox import (
    CancelRequest,
    ForwardRequest,
    NotifyRequest,
    PurgeRequest,
    ResolveRequest,
    SendRequest,
    bounded_reason,
    check_payload_size,
    decode_payload,
    max_request_bytes,
    parse_row,
)
from actorflow.log import logger as _log
from actorflow.loop import host_loop
from actorflow.records import CancelRequested, EventSent, Record, Snapshot, Started, new_snapshot
from actorflow.retention import (
    FINISHED_STATES,
    Purged,
    Retention,
    purge,
    purge_statuses,
    retention_seconds,
)
from actorflow.status import STATES, Status, status_of
from actorflow.store import Store
from actorflow.store.base import InboxRow, Mark
from actorflow.store.select import check_lease, store_for
from actorflow.store.url import is_postgres_url, redact
from actorflow.store.wake import InboxBell
from actorflow.timers import TimerWheel
from actorflow.tracing import TracerProvider, tracer_for
from actorflow.workflow import Workflow
from actorflow.workflow import lookup as lookup_workflow

R = TypeVar("R")
T = TypeVar("T")

Durability = Literal["normal", "full"]
INBOX_POLL_MIN = 0.005  # seconds between inbox polls when no wake socket could be bound
INBOX_POLL_MAX = 0.05
INBOX_FALLBACK_MIN = 1.0  # ... and with one: a datagram wakes the watcher, polls are a fallback
INBOX_FALLBACK_MAX = 2.0


class Runtime:
    """Runs workflow instances on one database file (or in memory without a path).

    Use as ``async with Runtime("app.db") as rt``. Opening resumes every unfinished
    instance; leaving stops the actors without cancelling instances, which resume at
    the next open. ``durability="full"`` syncs every commit to disk; ``"normal"``
    survives a crash of the process. ``clock`` governs every runtime time.
    ``retention`` (a ``timedelta`` or seconds; ``None`` keeps forever): finished
    instances and decided inbox requests older than that are deleted in the background.
    ``tracing=True`` (extra ``actorflow[otel]``) emits OpenTelemetry spans through the
    global tracer provider, or through the ``TracerProvider`` given instead of ``True``
    (see :mod:`actorflow.tracing`). ``max_loaded``: at most this many instances stay
    loaded (their coroutine in memory); the least recently active parked ones beyond it
    are unloaded and replayed when they have something to do (``None``: never unload).
    Which instances are loaded is invisible but for memory and :attr:`loaded`.
    ``path`` may be a ``postgresql://user:password@host:port/db`` URL (also
    ``postgres://``; extra ``actorflow[postgres]``): the same API on PostgreSQL, where
    several runtimes (processes, machines) share one database. Each runs the instances
    it started; any reaches any instance. ``lease`` (seconds, above 0, real time): how
    long the others wait before taking over the instances of a runtime that died; it
    means nothing where one process owns the database file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        durability: Durability = "normal",
        clock: Clock | None = None,
        max_payload_bytes: int = 1_048_576,
        checkpoint_every: int = 50_000,
        retention: float | timedelta | None = None,
        tracing: bool | TracerProvider = False,
        max_loaded: int | None = 10_000,
        lease: float = 10.0,
    ) -> None:
        if durability not in ("normal", "full"):
            raise ValueError(f"durability must be 'normal' or 'full', got {durability!r}")
        _check_max_loaded(max_loaded)
        self.lease = check_lease(lease)
        self._postgres = is_postgres_url(path)
        # A URL is shown (logs, errors) without its password.
        self.path = (
            None if path is None else redact(str(path)) if self._postgres else os.fspath(path)
        )
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.max_payload_bytes = max_payload_bytes
        self.retention = retention_seconds(retention)
        self._store: Store = store_for(path, durability, self.clock.now, self.lease)
        # A store other runtimes share: instances they run are reached through it.
        self._shared = self._store if isinstance(self._store, SharedStore) else None
        self._elsewhere = (
            None if self._shared is None else Elsewhere(self._shared, max_payload_bytes)
        )
        self._retention: Retention | None = None
        self._checkpoint_every = checkpoint_every
        self._directory = Directory(self._store, self.clock, self._resume, max_loaded)
        self._commits = Commits(self._store, self._directory, self._resume)
        self._starting: dict[str, asyncio.Future[None]] = {}
        self._lookups: dict[str, list[asyncio.Future[str | None]]] = {}
        # Applied requests the store may still list as pending; trimmed to what each
        # fresh read lists, so it never holds more than one read's rows.
        self._inbox_done: set[int] = set()
        self._closer: asyncio.Task[None] | None = None
        self._cancelling: dict[str, asyncio.Future[None]] = {}  # CancelRequested being written
        self._accepting: asyncio.Future[None] | None = None  # the latest send not yet queued
        # Set after a takeover until the inbox held for the instances taken is applied:
        # this runtime's own sends to them wait, so that none overtakes an earlier one.
        self._draining: asyncio.Future[None] | None = None
        self._inbox_lock = asyncio.Lock()  # one pass over the inbox at a time
        # Instances another runtime ran when last reached: events go to it without a
        # look in the store. Only a takeover makes one this runtime's: it forgets them.
        self._remote: set[str] = set()
        self._state: Literal["new", "open", "closing", "closed"] = "new"
        self._tracing = tracer_for(tracing)  # None when off: every hook checks only that

    # -- lifecycle -------------------------------------------------------------------
    async def __aenter__(self) -> Runtime:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def max_loaded(self) -> int | None:
        """At most this many instances stay loaded (``None``: no limit); settable, and
        lowering it unloads parked instances down to it (at once, or once the records
        being written are committed)."""
        return self._directory.max_loaded

    @max_loaded.setter
    def max_loaded(self, value: int | None) -> None:
        _check_max_loaded(value)
        self._directory.max_loaded = value
        # Not while records are written: their instance must be there when they commit.
        if self._state == "open" and self._writer.idle:
            self._directory.unload_idle(self._writer.queued_instances)

    @property
    def loaded(self) -> int:
        """How many instances are loaded now (their coroutine in memory)."""
        return len(self._directory.loaded)

    async def open(self) -> None:
        """Open the store and resume the unfinished instances that have something to do
        (the others are loaded when they do)."""
        if self._state != "new":
            raise ActorflowError(f"a runtime opens once; this one is {self._state}")
        began = time.perf_counter()
        snapshots = await self._store.open()
        # Listening before the first read: a request submitted after it rings the bell.
        # PostgreSQL's is rung by NOTIFY; SQLite's by a datagram beside the file.
        store_bell = getattr(self._store, "inbox_bell", None)
        self._inbox_bell: InboxBell = (
            store_bell() if store_bell is not None else InboxBell.listen(self.path)
        )
        self._timers = TimerWheel(self.clock)
        commits = self._commits
        self._writer = GroupWriter(
            self._store, commits.committed, commits.write_failed, commits.checkpoint,
            self._checkpoint_every,
        )  # fmt: skip
        commits.attach(self._writer)
        self._executor = Executor(
            self._writer, self.clock, self._timers, self._directory, self._tracing
        )
        self._services = Services(
            self._writer, self.clock, self._timers, self._executor.run_step,
            self._executor.run_query, self._instance_finished, self._tracing,
            self._instance_continued,
        )  # fmt: skip
        self._directory.attach(self._writer, self._timers)
        self._state = "open"
        attach = getattr(self.clock, "attach", None)
        if attach is not None:
            attach(self)
        for snapshot in snapshots:
            self._resume(snapshot)
        now = self.clock.now()
        self._directory.watch(now, await self._store.next_wake(now))
        if self._writer.idle:  # else when what the resumed instances wrote commits
            self._directory.unload_idle(self._writer.queued_instances)
        # Requests queued while no runtime ran are applied, in order, before open()
        # returns: the app's own send right after open must not overtake them.
        _, retry = await self._apply_inbox(everything=True)
        if self.path is not None:  # no other process can reach a store in memory
            self._executor.spawn(self._watch_inbox(retry))
        if self._shared is not None:
            peers = RuntimePeers(
                self._taking_over, self._taken_over, self._lease_lost, self._notified_by_peer
            )
            self._shared.follow(peers)
        if self.retention is not None:
            self._retention = Retention(
                self.retention, self.clock, self._timers.schedule, self._purge_before,
                self._store.oldest_done,
            )  # fmt: skip
            self._retention.start()
        _log.info(
            "recovery.done",
            path=self.path,
            instances=len(snapshots),
            seconds=round(time.perf_counter() - began, 4),
        )

    def _resume(
        self, snapshot: Snapshot, replacing: Actor | None = None, resumed: bool = True
    ) -> Actor:
        actor = Actor(self._services, snapshot, lookup_workflow(snapshot.workflow))
        if self._tracing is not None:  # (a replacement goes on with the same run)
            self._tracing.run_started(actor.id, snapshot.workflow, resumed=resumed)
        if replacing is not None:
            # Event ids of sends still being written to the old actor stay unique.
            replacing.stop()
            actor.next_event_id = max(actor.next_event_id, replacing.next_event_id)
        self._directory.add(actor)
        try:
            actor.start()
        except Exception as exc:  # registered first: held, its records still checkpointed
            _log.exception("workflow.start_failed", workflow_id=actor.id)
            actor.apply_failed("its stored records", exc)
        return actor

    async def close(self) -> None:
        """Stop: give steps in flight a short grace, write what is queued, checkpoint.

        Instances are not cancelled; they resume at the next open. No step starts once
        closing began; a step that finishes within the grace
        (:data:`~actorflow.host.executor.STEP_GRACE`) has its result stored, one that
        does not is abandoned (logged as ``step.abandoned``) and runs again at the next
        open. Pending ``h.result()`` calls raise :class:`RuntimeClosed`. Closing
        finishes even when the caller is cancelled (as ``asyncio.run`` does on Ctrl-C);
        the cancellation is raised afterwards.
        """
        if self._state == "closed":
            return
        if self._closer is None:
            if self._state != "open":
                self._state = "closed"
                return
            self._state = "closing"
            self._executor.close()  # no step or query starts from now on,
            self._commits.close()  # nor a replay of an instance a failed write froze
            self._closer = host_loop().create_task(self._close(), name="actorflow-close")
        closer = self._closer
        try:
            await asyncio.shield(closer)
        except asyncio.CancelledError:
            if not closer.done():  # cancelled while closing: finish first (a second cancel
                await asyncio.wait([closer])  # gives up waiting; the closing still goes on)
            raise

    async def _close(self) -> None:
        self._inbox_bell.ring()  # the inbox watcher ends now, not at its next poll
        if self._retention is not None:
            await self._retention.stop()
        await self._executor.settle()  # steps in flight are written before the writer closes
        try:
            await self._writer.close()
        finally:
            self._timers.close()
            self._state = "closed"
            for actor in self._directory.loaded.values():
                actor.stop()
            self._directory.close()
            self._inbox_bell.close()  # while still the owner: the socket is the owner's
            if self._tracing is not None:
                self._tracing.close()
            await self._store.close()

    async def _reading(self, read: Awaitable[T]) -> T:
        """A read of the store; one that fails because the runtime closed meanwhile (its
        connection is gone) raises :class:`RuntimeClosed`, as any call on a closed runtime."""
        try:
            return await read
        except StoreError:
            if self._state != "open":
                raise RuntimeClosed(f"the runtime is {self._state}") from None
            raise

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeClosed(f"the runtime is {self._state}; open it with `async with`")

    @property
    def closed(self) -> bool:
        """Whether the runtime has been closed."""
        return self._state in ("closing", "closed")

    # -- starting --------------------------------------------------------------------
    async def start(self, wf: Workflow[R], *args: Any, id: str | None = None) -> Handle[R]:
        """Start an instance of ``wf`` (durably) and return its handle.

        ``args`` are converted to the workflow's parameter annotations; ones that do not
        bind or convert raise :class:`InvalidPayload` and nothing is stored. Starting an
        existing ``id`` of the same workflow returns its handle and ignores ``args``; an
        ``id`` of another workflow raises :class:`ActorflowError`.
        """
        self._check_open()
        if not isinstance(wf, Workflow):
            raise TypeError(f"start() takes a @workflow, got {wf!r}")
        if id is None:
            id = uuid.uuid4().hex  # random: cannot exist yet
        else:
            check_name(id, "an instance ID")
        while (pending := self._starting.get(id)) is not None:
            await asyncio.wait([pending])
        claim: asyncio.Future[None] = host_loop().create_future()
        self._starting[id] = claim
        try:
            existing = await self._workflow_of(id)
            if existing is not None:
                if existing != wf.name:
                    raise ActorflowError(
                        f"instance {id!r} already exists and runs workflow {existing!r}, "
                        f"not {wf.name!r}; pick another id"
                    )
                return Handle(self, id, wf.name)
            encoded = wf.encode_args(args)  # InvalidPayload before anything is stored
            started = Started(id, wf.name, encoded, self.clock.now())
            if self._shared is not None:  # the id is this runtime's, unless another has it
                existing = await self._reading(self._shared.claim(new_snapshot(started)))
                if existing is not None:
                    if existing != wf.name:
                        raise ActorflowError(
                            f"instance {id!r} already exists and runs workflow {existing!r}, "
                            f"not {wf.name!r}; pick another id"
                        )
                    return Handle(self, id, wf.name)
            if self._tracing is not None:
                self._tracing.starting(id)
            await self._writer.append_acked([started])
            return Handle(self, id, wf.name)
        finally:
            del self._starting[id]
            claim.set_result(None)

    async def _workflow_of(self, instance_id: str) -> str | None:
        """The workflow of an existing instance; store look-ups of one loop turn are batched."""
        found = self._directory.in_memory(instance_id)
        if found is not None:
            return found.workflow
        future: asyncio.Future[str | None] = host_loop().create_future()
        if not self._lookups:
            host_loop().call_soon(self._flush_lookups)
        self._lookups.setdefault(instance_id, []).append(future)
        return await future

    def _flush_lookups(self) -> None:
        lookups, self._lookups = self._lookups, {}

        async def flush() -> None:
            try:
                found = await self._reading(self._store.workflows_of(lookups))
            except Exception as exc:
                for futures in lookups.values():
                    for future in futures:
                        if not future.done():  # its caller may have been cancelled
                            future.set_exception(exc)
                return
            for instance_id, futures in lookups.items():
                for future in futures:
                    if not future.done():
                        future.set_result(found.get(instance_id))

        self._executor.spawn(flush())

    def _held(self, instance_id: str) -> ActorflowError | None:
        """The error of a loaded instance held by its runtime (``None``: not held)."""
        actor = self._directory.loaded.get(instance_id)
        return actor.held if actor is not None else None

    async def _lookup(self, instance_id: str) -> Snapshot | None:
        """An instance's current snapshot, wherever it is; never loads it."""
        return await self._reading(self._directory.lookup(instance_id))

    # -- events ----------------------------------------------------------------------
    async def send(
        self,
        workflow_id: str,
        event: Event[Any] | str,
        value: Any = None,
        *,
        error: str | BaseException | None = None,
        cancelled: bool = False,
    ) -> None:
        """Deliver ``event`` to instance ``workflow_id``; returns once it is durable.

        ``value`` is validated against the event's type (:class:`InvalidPayload`, and
        nothing stored, if it does not fit). ``error=`` makes the waiter raise
        :class:`EventFailed`; ``cancelled=True`` makes it raise :class:`EventCancelled`.
        """
        if self._tracing is not None:
            sending = partial(self._send, workflow_id, event, value, error, cancelled, ())
            return await self._tracing.send(workflow_id, event, sending)
        await self._send(workflow_id, event, value, error, cancelled, ())

    async def _send(
        self,
        workflow_id: str,
        event: Event[Any] | str,
        value: Any,
        error: str | BaseException | None,
        cancelled: bool,
        marks: Sequence[Mark],
    ) -> None:
        self._check_open()
        definition = lookup(event)
        payload, error_text = self._payload(definition, value, error, cancelled)
        check_name(workflow_id, "an instance ID")
        if self._draining is not None and not marks:
            await asyncio.shield(self._draining)
        actor = self._directory.loaded.get(workflow_id)
        if actor is not None and self._accepting is None:
            # The hot path: a loaded instance and no send still being queued ahead of
            # this one; offering it now keeps the call order (what _deliver would do).
            name = definition.name
            await actor.offer(name, None, payload, error_text, cancelled, None, marks)
        else:
            deliver = partial(
                self._deliver,
                workflow_id, definition.name, None, payload, error_text, cancelled, None, marks,
            )  # fmt: skip
            await self._in_call_order(deliver)
        _log.info("event.sent", workflow_id=workflow_id, name=definition.name)

    async def resolve(self, event_id: str, value: Any = None) -> None:
        """Deliver the pre-created event whose token is ``event_id`` (single use)."""
        if self._tracing is not None:
            return await self._tracing.send(
                None, None, partial(self._resolve, event_id, value, None, ())
            )
        await self._resolve(event_id, value, None, ())

    async def reject(self, event_id: str, error: str | BaseException) -> None:
        """Fail the pre-created event ``event_id``: its waiter raises :class:`EventFailed`."""
        if self._tracing is not None:
            return await self._tracing.send(
                None, None, partial(self._resolve, event_id, None, error, ())
            )
        await self._resolve(event_id, None, error, ())

    async def _resolve(
        self, token: str, value: Any, error: str | BaseException | None, marks: Sequence[Mark]
    ) -> None:
        self._check_open()
        if self._draining is not None and not marks:
            await asyncio.shield(self._draining)
        owner = name = ""

        async def accept() -> asyncio.Future[None]:
            nonlocal owner, name
            snapshot = await self._token_owner(token)
            made = snapshot.tokens[token]
            owner, name = snapshot.id, made.name
            payload, error_text = self._payload(lookup(name), value, error, False)
            return await self._deliver(
                owner, name, token, payload, error_text, False, made.created_at, marks
            )

        await self._in_call_order(accept)
        _log.info("event.resolved", workflow_id=owner, name=name)

    async def _token_owner(self, token: str) -> Snapshot:
        """The snapshot of the unfinished instance that can still take ``token``; one
        error, naming no token, for every token that cannot be used, so that it tells
        nothing about tokens. (Checked again, atomically, when the event is offered.)"""
        if not isinstance(token, str):
            raise ActorflowError(f"an event token is a string, got {type_name(token)}")
        if not token.isascii():  # no token is: not worth a look in the store
            raise ActorflowError(_UNUSABLE_TOKEN)
        owner = await self._reading(self._directory.token_owner(token))
        snapshot = None if owner is None else await self._lookup(owner)
        if snapshot is None and owner is not None:
            snapshot = await self._elsewhere_snapshot(owner)
        if snapshot is None or snapshot.finished or token not in snapshot.tokens:
            raise ActorflowError(_UNUSABLE_TOKEN)
        actor = self._directory.loaded.get(snapshot.id)
        if actor is not None and not actor.can_take(token):
            raise ActorflowError(_UNUSABLE_TOKEN)
        if actor is None and any(e.token == token for e in snapshot.events):
            raise ActorflowError(_UNUSABLE_TOKEN)
        return snapshot

    async def _deliver(
        self,
        workflow_id: str,
        name: str,
        token: str | None,
        payload: bytes | None,
        error: str | None,
        cancelled: bool,
        created_at: float | None,
        marks: Sequence[Mark],
    ) -> asyncio.Future[None]:
        """Offer an event to its instance, loaded or not; returns its write, resolved once
        it is durable. An unloaded instance gets it in its mailbox without being loaded;
        once committed, the instance is loaded if its wait (or a handler) takes it."""
        directory = self._directory
        while True:
            actor = directory.loaded.get(workflow_id)
            if actor is not None:
                if token is not None and not actor.can_take(token):
                    raise ActorflowError(_UNUSABLE_TOKEN)
                return actor.offer(name, token, payload, error, cancelled, created_at, marks)
            if (pending := self._starting.get(workflow_id)) is not None:
                await asyncio.wait([pending])
                continue
            if workflow_id in directory.loading:
                await directory.load(workflow_id)
                continue
            if workflow_id in self._remote:  # run elsewhere when last seen: still is
                return await self._deliver_elsewhere(
                    workflow_id, name, token, payload, error, cancelled, created_at, marks
                )
            snapshot = directory.in_memory(workflow_id)
            if snapshot is None:
                snapshot = await self._lookup(workflow_id)
                if workflow_id in directory.loaded or directory.in_memory(workflow_id):
                    continue  # it changed while being read: look again
            if snapshot is None and self._elsewhere is not None:  # another runtime's?
                return await self._deliver_elsewhere(
                    workflow_id, name, token, payload, error, cancelled, created_at, marks
                )
            if snapshot is None:
                raise ActorflowError(f"no workflow instance with id {workflow_id!r}")
            if snapshot.finished:
                raise _finished(workflow_id, snapshot.status)
            if token is not None and directory.token_sent(snapshot, token):
                raise ActorflowError(_UNUSABLE_TOKEN)
            now = self.clock.now()
            sent = EventSent(
                workflow_id, directory.next_event_id(snapshot), name, token, payload, error,
                cancelled, now if created_at is None else created_at, now,
            )  # fmt: skip
            written = self._write_unloaded(snapshot, [sent], marks)
            if self._tracing is not None:
                self._tracing.event_sent(workflow_id, sent.id, name, token is not None)
            return written

    async def _deliver_elsewhere(
        self,
        workflow_id: str,
        name: str,
        token: str | None,
        payload: bytes | None,
        error: str | None,
        cancelled: bool,
        created_at: float | None,
        marks: Sequence[Mark],
    ) -> asyncio.Future[None]:
        """Hand an event to the runtime that runs its instance (checked there, as it
        would check its own send); returns the wait for that runtime to take it."""
        assert self._elsewhere is not None
        if marks:  # from this inbox, whose verdict is "handed over": refused here if need be
            status = await self._reading(self._elsewhere.status_of(workflow_id))
            if status is None:
                raise ActorflowError(f"no workflow instance with id {workflow_id!r}")
            if status != "running":
                raise _finished(workflow_id, status)
        forwarding = self._elsewhere.deliver(
            workflow_id, name, token, payload, error, cancelled, created_at, marks
        )
        seq = await self._reading(forwarding)
        if len(self._remote) >= _REMOTE_MAX:
            self._remote.clear()
        self._remote.add(workflow_id)
        if marks:  # (no two inboxes ever wait on each other)
            return _handed_over()
        # Its place is kept: the wait for the owner to take it is not in call order.
        return asyncio.ensure_future(self._reading(self._elsewhere.applied(seq)))

    async def _in_call_order(self, accept: Callable[[], Awaitable[asyncio.Future[None]]]) -> None:
        """Queue an event (``accept`` queues it and returns its write) after every event
        sent or resolved before this call was queued, then wait until it is durable.

        Events reach the writer in the order of the calls, as they do for loaded
        instances, even when one must first be read from the store (an unloaded
        instance): the calls after it wait meanwhile. The wait for durability is not
        ordered, so that events of one loop turn still share a commit."""
        ahead, turn = self._accepting, host_loop().create_future()
        self._accepting = turn
        try:
            if ahead is not None and not ahead.done():
                await asyncio.wait([ahead])
            written = await accept()
        finally:
            turn.set_result(None)
            if self._accepting is turn:
                self._accepting = None
        await written

    def _write_unloaded(
        self, snapshot: Snapshot, records: builtins.list[Record], marks: Sequence[Mark]
    ) -> asyncio.Future[None]:
        """Write records of an unloaded instance, its snapshot pinned in memory meanwhile."""
        self._directory.pin(snapshot)
        try:
            written = self._writer.append_acked(records, marks)
        except BaseException:
            self._directory.unpin(snapshot.id)
            raise
        written.add_done_callback(lambda _: self._directory.unpin(snapshot.id))
        return written

    def _payload(
        self, event: Event[Any], value: Any, error: str | BaseException | None, cancelled: bool
    ) -> tuple[bytes | None, str | None]:
        if error is not None or cancelled:
            if error is not None and cancelled:
                raise InvalidPayload("give either error= or cancelled=True, not both")
            if value is not None:
                raise InvalidPayload(
                    f"event {event.name!r}: a failed or cancelled event carries no value"
                )
            if error is not None and not isinstance(error, str | BaseException):
                raise InvalidPayload(f"error= takes a str or an exception, got {type_name(error)}")
            text = None if error is None else str(error)
            if text is not None:
                try:
                    size = len(text.encode("utf-8"))
                except UnicodeEncodeError:
                    raise InvalidPayload(
                        f"event {event.name!r}: the error text is not valid Unicode"
                    ) from None
                if size > self.max_payload_bytes:
                    raise InvalidPayload(
                        f"event {event.name!r}: the error text is {size} bytes, over the "
                        f"limit of {self.max_payload_bytes} (max_payload_bytes)"
                    )
            return None, text
        return event.encode(value, self.max_payload_bytes), None

    async def notify(self, *topics: str) -> None:
        """Re-run the ``ctx.wait_for`` queries listening on ``topics``; returns after they
        ran (those of this runtime: on a shared database, the other runtimes are told and
        re-run theirs as the notice reaches them)."""
        self._check_open()
        await self._notify_here(topics)
        if self._shared is not None:
            await self._reading(self._shared.tell_topics(topics))

    async def _notify_here(self, topics: Collection[str]) -> None:
        # Unloaded instances listening on them are loaded (their query runs as they go live):
        # those in memory are taken before and after the store is read, as a checkpoint
        # that ends meanwhile moves them to the store, perhaps after the read saw their row.
        directory = self._directory
        unloaded = directory.listening(topics)
        unloaded += await self._reading(self._store.listening(topics))
        unloaded += directory.listening(topics)
        for instance_id in unloaded:
            if instance_id not in self._directory.loaded:
                await self._directory.load(instance_id)
        await self._executor.notify(topics)

    # -- the inbox: requests from other processes -------------------------------------
    async def _watch_inbox(self, retry: bool) -> None:
        # Sleeps until inbox.submit's datagram rings the bell (store.wake), then reads
        # the inbox at once. Polling one cheap PRAGMA (data_version), backing off while
        # nothing changes, is only the fallback: slow with a wake socket (a lost
        # datagram, a raw writer), fast as before without one.
        bell = self._inbox_bell
        least, most = (
            (INBOX_FALLBACK_MIN, INBOX_FALLBACK_MAX)
            if bell.listening
            else (INBOX_POLL_MIN, INBOX_POLL_MAX)
        )
        delay = least
        while self._state == "open":
            bell.clear()  # rings from now on announce rows this read may miss
            try:
                found, retry = await self._apply_inbox(everything=retry)
            except Exception:  # a bug must not stop the inbox for good: log, try again
                _log.exception("inbox.failed")
                found, retry = False, True
            delay = least if found else min(delay * 2, most)
            await bell.wait(delay)

    async def _apply_inbox(self, everything: bool) -> tuple[bool, bool]:
        """Apply the pending inbox requests, in order, if any arrived (``everything``:
        read all pending ones again). Returns whether there were any, and whether a
        store failure left one pending (then read them all again next time)."""
        async with self._inbox_lock:
            return await self._apply_inbox_now(everything)

    async def _apply_inbox_now(self, everything: bool) -> tuple[bool, bool]:
        try:
            rows = await self._store.inbox(everything, max_request_bytes(self.max_payload_bytes))
        except StoreError as exc:
            _log.error("inbox.unreadable", error=str(exc))
            return False, everything
        if not rows:
            return False, False
        self._inbox_done.intersection_update(row.seq for row in rows)
        retry = False
        forwarded: builtins.list[InboxRow] = []
        for row in rows:
            if self._state != "open":
                break
            if row.seq in self._inbox_done:
                continue
            if row.request is not None and row.request.startswith(_FORWARDED):
                forwarded.append(row)
                continue
            retry |= not await self._apply_together(forwarded)
            forwarded = []
            retry |= not await self._apply_request(row)
        retry |= not await self._apply_together(forwarded)
        return True, retry

    async def _apply_together(self, rows: builtins.list[InboxRow]) -> bool:
        """Apply events other runtimes handed over (consecutive rows) in one go: each is
        offered in turn, in order, and they share a commit. ``False`` if one stays."""
        if not rows:
            return True
        return all(await asyncio.gather(*(self._apply_request(row) for row in rows)))

    async def _apply_request(self, row: InboxRow) -> bool:
        """Apply inbox request ``row`` and record the verdict with its effects; ``False``
        when a store failure left it pending, to be tried again. Each row is judged
        alone: a malformed one is rejected with its reason."""
        seq = row.seq
        accepted: Sequence[Mark] = ((seq, "accepted", None),)
        try:
            request = parse_row(row, self.max_payload_bytes)
            match request:
                case SendRequest():
                    event = await self._inbox_event(request.event, request.instance)
                    what = f"payload for event {event.name!r}"
                    value = self._inbox_payload(what, request.payload)
                    await self._send(
                        request.instance, event, value, request.error, request.cancelled, accepted
                    )
                case ResolveRequest():
                    # The token first: an unusable one gets the same error whatever the
                    # payload, and no payload is decoded for it.
                    await self._token_owner(request.token)
                    value = self._inbox_payload("the payload", request.payload)
                    await self._resolve(request.token, value, request.error, accepted)
                case CancelRequest():
                    check_name(request.instance, "an instance ID")
                    await self._cancel(request.instance, accepted)
                case ForwardRequest():  # from another runtime, which checked it
                    check_name(request.instance, "an instance ID")
                    deliver = partial(
                        self._deliver, request.instance, request.event, request.token,
                        request.payload, request.error, request.cancelled, request.created_at,
                        accepted,
                    )  # fmt: skip
                    await self._in_call_order(deliver)
                case NotifyRequest():
                    await self.notify(*request.topics)
                    await self._writer.append_acked([], accepted)
                case PurgeRequest():
                    summary = await self._purge_request(request)
                    await self._writer.append_acked([], ((seq, "accepted", summary),))
            _log.info("inbox.accepted", seq=seq)
            self._decided()
        except (StoreError, RuntimeClosed) as exc:  # not the request's fault: it stays
            _log.warning("inbox.deferred", seq=seq, error=str(exc))
            return False
        except Exception as exc:  # the request's fault, or a bug: rejected, saying why
            if self._state != "open":
                return False
            if isinstance(exc, ActorflowError):
                reason = bounded_reason(str(exc) or type(exc).__name__)
            else:  # a bug's text may quote the request: the log has the details
                _log.exception("inbox.failed", seq=seq)
                reason = f"the runtime failed on it ({type(exc).__name__}); see its log"
            _log.info("inbox.rejected", seq=seq, reason=reason)
            try:
                await self._writer.append_acked([], ((seq, "rejected", reason),))
            except (StoreError, RuntimeClosed):
                return False
            self._decided()
        self._inbox_done.add(seq)
        return True

    def _decided(self) -> None:
        """An inbox request was just decided: retention deletes it once old."""
        if self._retention is not None:
            self._retention.noticed(self.clock.now())

    async def _purge_request(self, request: PurgeRequest) -> str:
        """Apply a purge from the inbox; the verdict says what it deleted."""
        try:
            statuses = purge_statuses(request.statuses)
            if not (request.older_than >= 0 and math.isfinite(request.older_than)):
                raise ValueError(f"older_than must be 0 or more seconds, got {request.older_than}")
        except ValueError as exc:
            raise ActorflowError(str(exc)) from None
        before = self.clock.now() - request.older_than
        purged = await self._purge_before(before, statuses, request.statuses is None)
        return str(purged)

    def _inbox_payload(self, what: str, text: str | None) -> Any:
        """A payload's JSON text from the inbox as builtins, refused before it is decoded
        when over ``max_payload_bytes``; the event's type is checked as for ``send``."""
        check_payload_size(what, text, self.max_payload_bytes)
        return decode_payload(what, text)

    async def _inbox_event(self, name: str, instance_id: str) -> Event[Any]:
        """The event named by an inbox send; an unknown name is rejected saying which
        events by name the instance waits on, as the sender may have misspelt it."""
        try:
            return lookup(name)
        except ActorflowError:
            check_name(name, "an event name")
        snapshot = await self._lookup(instance_id)
        if snapshot is not None and snapshot.finished:
            snapshot = None
        waits = sorted(
            {w.name for w in snapshot.waiting if w.kind == "event" and w.name and not w.token}
            if snapshot is not None
            else ()
        )
        text = f"no event named {name!r} is defined in the process that runs this database"
        if snapshot is not None:
            text += f"; instance {instance_id!r} waits on " + (
                ", ".join(f"event {w!r}" for w in waits) if waits else "no event by name"
            )
        raise ActorflowError(text)

    # -- following instances ---------------------------------------------------------
    def handle(self, workflow_id: str) -> Handle[Any]:
        """A handle on instance ``workflow_id`` (cheap; an unknown id fails on first use)."""
        check_name(workflow_id, "an instance ID")
        found = self._directory.in_memory(workflow_id)
        return Handle(self, workflow_id, found.workflow if found else None)

    async def list(
        self,
        status: str | Collection[str] | None = None,
        workflow: Workflow[Any] | str | None = None,
    ) -> builtins.list[Status]:
        """Instances with their status and what each waits on (``events`` left empty)."""
        self._check_open()
        wanted = {status} if isinstance(status, str) else None if status is None else set(status)
        if wanted is not None and not wanted <= STATES:
            raise ActorflowError(f"unknown status in {sorted(wanted)}; use {sorted(STATES)}")
        name = workflow.name if isinstance(workflow, Workflow) else workflow
        # The store filters what it holds; instances in memory (whose stored row may be
        # older) are shown as they are now. Snapshots in memory change in place, so those
        # taken before the read are never older than what it returns, even if a
        # checkpoint meanwhile let go of them.
        directory = self._directory
        in_memory = directory.memory_snapshots()
        found: dict[str, Status] = {}
        for snapshot in await self._reading(self._store.list(wanted, name)):
            if snapshot.id not in in_memory:
                found[snapshot.id] = status_of(snapshot, with_events=False)
        for snapshot in in_memory.values():
            found[snapshot.id] = status_of(snapshot, with_events=False)
        for actor in directory.loaded.values():
            found[actor.id] = status_of(actor.snapshot, actor, with_events=False)
        return sorted(
            (
                s
                for s in found.values()
                if (wanted is None or s.state in wanted) and (name is None or s.workflow == name)
            ),
            key=lambda s: (s.created_at, s.id),
        )

    async def status(self, workflow_id: str) -> Status:
        """The status of one instance (used by handles)."""
        self._check_open()
        actor = self._directory.loaded.get(workflow_id)
        if actor is not None:
            return status_of(actor.snapshot, actor)
        snapshot = None if workflow_id in self._remote else await self._lookup(workflow_id)
        if snapshot is None:
            snapshot = await self._elsewhere_snapshot(workflow_id)
        if snapshot is None:
            raise ActorflowError(f"no workflow instance with id {workflow_id!r}")
        return status_of(snapshot)

    async def cancel(self, workflow_id: str) -> None:
        """Ask instance ``workflow_id`` to cancel (durable, idempotent; no-op once finished)."""
        await self._cancel(workflow_id, ())

    async def _cancel(self, workflow_id: str, marks: Sequence[Mark]) -> None:
        self._check_open()
        if self._draining is not None and not marks:
            await asyncio.shield(self._draining)
        directory = self._directory
        actor = directory.loaded.get(workflow_id)
        snapshot = actor.snapshot if actor is not None else await self._lookup(workflow_id)
        if snapshot is None and self._elsewhere is not None:
            status = await self._reading(self._elsewhere.status_of(workflow_id))
            if status is not None:  # another runtime runs it: its owner decides
                if status != "running":
                    if marks:
                        await self._writer.append_acked([], marks)
                    return
                await self._reading(self._elsewhere.cancel(workflow_id, marks))
                return
        if snapshot is None:
            raise ActorflowError(f"no workflow instance with id {workflow_id!r}")
        # An unloaded instance is loaded first: its code (or, held, its runtime) ends it
        # exactly as a loaded one's would; one whose cancel is stored has nothing to do.
        if snapshot.finished or (actor is None and snapshot.cancel_requested):
            actor = None
        else:
            actor = await directory.load(workflow_id)
        # A cancel while another is being written is that one: a second CancelRequested
        # would interrupt the cleanup the first one starts.
        pending = self._cancelling.get(workflow_id)
        if pending is None and actor is not None and self._cancellable(actor):
            pending, marks = self._request_cancel(workflow_id, marks), ()
        if marks:  # nothing (more) to write for the instance: only the inbox verdict
            await self._writer.append_acked([], marks)
        if pending is not None:
            await asyncio.shield(pending)

    @staticmethod
    def _cancellable(actor: Actor) -> bool:
        if actor.phase in (Phase.FINISHING, Phase.FINISHED):
            return False
        # A held instance ends at a cancel, even one whose code had been cancelled before.
        return not actor.snapshot.cancel_requested or actor.held is not None

    def _request_cancel(self, workflow_id: str, marks: Sequence[Mark]) -> asyncio.Future[None]:
        """Write the instance's one CancelRequested; cancels until it is committed share it."""
        written = self._writer.append_acked([CancelRequested(workflow_id, self.clock.now())], marks)
        self._cancelling[workflow_id] = written

        def forget(done: asyncio.Future[None]) -> None:
            if self._cancelling.get(workflow_id) is done:
                del self._cancelling[workflow_id]

        written.add_done_callback(forget)
        return written

    async def checkpoint(self) -> None:
        """Fold the log into snapshots now (it also happens on its own, and at close)."""
        self._check_open()
        await self._writer.checkpoint()

    async def purge(
        self, older_than: float | timedelta, *, status: str | Collection[str] | None = None
    ) -> int:
        """Delete the finished instances that finished more than ``older_than`` ago (by
        the runtime's clock) and return how many; without ``status`` also the inbox
        requests decided that long ago. ``status`` (``"completed"``, ``"failed"``,
        ``"cancelled"`` or a collection of them) limits which instances; unfinished
        ones are never deleted (``ValueError`` if named). A deleted instance is unknown
        from then on: its status raises :class:`ActorflowError`, its ID starts anew.
        """
        self._check_open()
        age = seconds(older_than, "older_than")
        if age is None or math.isnan(age) or age < 0:
            raise ValueError(f"older_than must be a duration of 0 or more, got {older_than!r}")
        statuses = purge_statuses(status)
        purged = await self._purge_before(self.clock.now() - age, statuses, status is None)
        return purged.instances

    async def backup(self, out: str | os.PathLike[str], *, force: bool = False) -> int:
        """Write a consistent copy of this runtime's database to ``out`` while it keeps
        running (see :func:`actorflow.backup`, run in a thread); returns its size in
        bytes. An in-memory runtime has no file: :class:`StoreError`."""
        self._check_open()
        if self.path is None:
            raise StoreError("an in-memory runtime has no database file to back up")
        if self._postgres:
            raise StoreError("a PostgreSQL runtime has no database file to back up; use pg_dump")
        return await asyncio.to_thread(backup, self.path, out, force=force)

    async def _purge_before(
        self, before: float, statuses: Collection[str] = FINISHED_STATES, requests: bool = True
    ) -> Purged:
        purged = await purge(self._store, self._writer.checkpoint, before, statuses, requests)
        if purged.instances or purged.requests:
            _log.info("store.purged", instances=purged.instances, requests=purged.requests)
            self._commits.announce()  # followers (the web page) see the deleted instances go
        return purged

    async def changed(self) -> None:
        """Return after the next commit of records of any instance: a seam for code that
        follows the runtime, such as the web page of ``actorflow.ui``."""
        await self._commits.changed()

    def _instance_continued(self, actor: Actor) -> None:
        # Its ContinuedAsNew is committed: the snapshot holds the new run's start.
        if self._tracing is not None:
            self._tracing.run_ended(actor.id, "continued", None)
        snapshot = actor.snapshot
        _log.info("workflow.continued", workflow_id=actor.id, run=snapshot.run)
        self._resume(snapshot, replacing=actor, resumed=False)

    def _instance_finished(self, actor: Actor) -> None:
        if self._tracing is not None:
            error = actor.snapshot.error
            error_type = None if error is None else error.type
            self._tracing.run_ended(actor.id, actor.snapshot.status, error_type)
        actor.release()
        self._directory.ended(actor)
        snapshot = actor.snapshot
        if self._retention is not None:
            self._retention.noticed(snapshot.finished_at or self.clock.now())
        error = snapshot.error
        _log.info(
            "workflow." + snapshot.status,
            workflow_id=actor.id,
            workflow=snapshot.workflow,
            seconds=round(snapshot.updated_at - snapshot.created_at, 6),
            **({"error": f"{error.type}: {error.message}"} if error is not None else {}),
        )

    # -- the other runtimes of a shared database ------------------------------------
    async def _elsewhere_snapshot(self, instance_id: str) -> Snapshot | None:
        """An instance another runtime runs, as committed (``None``: none, or no store
        shared with other runtimes)."""
        if self._elsewhere is None:
            return None
        return await self._reading(self._elsewhere.snapshot(instance_id))

    async def _snapshot_anywhere(self, instance_id: str) -> Snapshot | None:
        """The instance's current snapshot, run here or by another runtime."""
        found = await self._lookup(instance_id)
        return found if found is not None else await self._elsewhere_snapshot(instance_id)

    async def _taking_over(self) -> None:
        # Sends to instances taken over must not overtake the ones held for them in the
        # inbox: this runtime's own wait (from now until the inbox is applied), and those
        # under way are written first (whichever way they go).
        if self._state != "open" or self._draining is not None:
            return
        self._draining = host_loop().create_future()
        self._remote.clear()
        while (ahead := self._accepting) is not None and not ahead.done():
            await asyncio.wait([ahead])

    def _taken_over(self, snapshots: builtins.list[Snapshot] | None) -> None:
        # Instances of a runtime that died or left: this runtime's now, resumed as at open.
        draining = self._draining
        if self._state != "open" or snapshots is None:
            self._draining = None
            if draining is not None:
                draining.set_result(None)
            return
        self._remote.clear()  # some are this runtime's now
        for snapshot in snapshots:
            if snapshot.id not in self._directory.loaded:
                self._resume(snapshot)
        self._executor.spawn(self._watch_taken())
        if draining is not None:
            self._executor.spawn(self._drain(draining))

    async def _drain(self, draining: asyncio.Future[None]) -> None:
        try:
            await self._apply_inbox(everything=True)
        finally:
            self._draining = None
            draining.set_result(None)

    async def _watch_taken(self) -> None:
        now = self.clock.now()
        wake = await self._reading(self._store.next_wake(now))
        if wake is not None:
            self._directory.note_wake(wake)

    def _notified_by_peer(self, topics: builtins.list[str]) -> None:
        if self._state == "open":
            self._executor.spawn(self._notify_here(topics))

    def _lease_lost(self, error: Exception) -> None:
        # Another runtime took this one's instances over: it stops as a crash would, so
        # that it writes nothing more (the store refuses its writes anyway).
        if self._state != "open":
            return
        _log.error("runtime.closed", reason=str(error))
        self._state = "closing"
        self._closer = host_loop().create_task(self._abandon(), name="actorflow-lease-lost")

    async def _abandon(self) -> None:
        self._commits.close()
        writer = self._writer.abort()
        self._timers.close()
        executor = self._executor.abort()
        await asyncio.gather(writer, executor)
        if self._retention is not None:
            await self._retention.stop()
        self._state = "closed"
        for actor in self._directory.loaded.values():
            actor.stop()
        self._directory.close()
        self._inbox_bell.close()
        if self._tracing is not None:
            self._tracing.close()
        await self._store.close()

    # -- for tests (ManualClock) -----------------------------------------------------
    @property
    def idle(self) -> bool:
        """Nothing being written, no step or query running."""
        return self._state != "open" or (
            self._writer.idle
            and self._executor.idle
            and not (self._retention is not None and self._retention.busy)
            and not self._directory.busy
        )


def _finished(workflow_id: str, status: str) -> ActorflowError:
    return ActorflowError(
        f"workflow instance {workflow_id!r} has finished ({status}); it takes no more events"
    )


def _handed_over() -> asyncio.Future[None]:
    """The write of an event handed to the runtime that runs its instance."""
    done: asyncio.Future[None] = host_loop().create_future()
    done.set_result(None)
    return done


_REMOTE_MAX = 100_000
"""Instances remembered as run elsewhere (forgotten all at once beyond)."""
_FORWARDED = b'{"type":"forward"'
"""How every inbox row of an event handed over by another runtime begins."""

_UNUSABLE_TOKEN = "this event token is unknown, already used, or its workflow has finished"


def _check_max_loaded(value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 0):
        raise ValueError(f"max_loaded must be a whole number of 0 or more, or None; got {value!r}")
