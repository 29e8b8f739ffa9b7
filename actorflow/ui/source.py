"""Where the page gets its instances and sends what a person decides.

Two sources answer the same questions. :class:`LiveSource` is the runtime the page runs
in (``actorflow.ui.app(runtime)``): it reads with ``rt.list`` / ``status`` and acts with
``rt.send`` / ``resolve`` / ``reject`` / ``cancel``. :class:`FileSource` is a database
file (or a ``postgresql://`` URL) some other process owns (``actorflow ui --db FILE``):
it reads through
:class:`~actorflow.reader.Reader`, as ``actorflow list`` / ``show`` do, and acts through
the inbox, as ``actorflow send --wait`` does, so that the owner validates and its
verdict is what the page shows. Both raise :class:`ActorflowError` with a one-line
reason for anything the person can fix.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from actorflow.errors import ActorflowError, StoreError
from actorflow.events import check_name, lookup_name
from actorflow.inbox import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    CancelRequest,
    Request,
    ResolveRequest,
    SendRequest,
    check_payload_size,
    decode_payload,
    submit,
    wait_for_receipt,
)
from actorflow.reader import Details, Reader, details_of
from actorflow.runtime import Runtime
from actorflow.status import Status
from actorflow.store.sqlite import connect_outside
from actorflow.store.url import is_postgres_url, redact

if TYPE_CHECKING:
    from actorflow.ui.pg_watch import PgWatch

UNKNOWN_TYPE = object()
"""What :meth:`Source.event_type` returns when the page cannot know an event's type."""
VERDICT_WAIT = 10.0  # seconds an action waits for the owning runtime's verdict
WATCH_EVERY = 0.25  # seconds between two looks at a file's data_version (or a fingerprint)


class Action(msgspec.Struct, frozen=True):
    """What a person asked for: ``kind`` is ``send``, ``resolve``, ``reject`` or ``cancel``.

    ``payload`` is JSON text (``None``: no value); ``error`` the text a send or reject
    fails the wait with; ``cancelled`` makes a send cancel the wait.
    """

    kind: str
    instance: str = ""
    event: str = ""
    token: str = ""
    payload: str | None = None
    error: str | None = None
    cancelled: bool = False


class Source(Protocol):
    """What the page reads and how it acts."""

    label: str
    """What the page says it shows (a file name, or ``in-process runtime``)."""

    async def list(self) -> list[Status]:
        """Every instance (without events)."""

    async def show(self, instance_id: str) -> Details:
        """Everything about one instance; an unknown id raises :class:`ActorflowError`."""

    def event_type(self, name: str) -> Any:
        """The payload type of event ``name`` (``None`` for a gate), or :data:`UNKNOWN_TYPE`."""

    async def act(self, action: Action) -> str:
        """Do ``action``; return what happened in one line, or raise :class:`ActorflowError`."""

    async def changed(self) -> None:
        """Return once something may have changed since the last call."""


def checked(action: Action) -> Action:
    """``action`` with its names checked (as the CLI checks its arguments)."""
    if action.kind in ("send", "cancel"):
        check_name(action.instance, "an instance ID")
    if action.kind == "send":
        check_name(action.event, "an event name")
    if action.kind in ("resolve", "reject"):
        check_name(action.token, "a token")
    if action.kind not in ("send", "resolve", "reject", "cancel"):
        raise ActorflowError(f"unknown action {action.kind!r}; use send, resolve, reject or cancel")
    if action.payload is not None and (action.error is not None or action.cancelled):
        raise ActorflowError("give a payload, or an error / cancelled, not both")
    return action


class LiveSource:
    """The runtime this page runs beside, in the same process and event loop."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.label = runtime.path or "in-memory runtime"

    async def list(self) -> list[Status]:
        return await self.runtime.list()

    async def show(self, instance_id: str) -> Details:
        status = await self.runtime.handle(instance_id).status()
        if self.runtime._shared is not None:
            # The URL the page has is without its password: the runtime reads for it.
            snapshot = await self.runtime._snapshot_anywhere(instance_id)
            if snapshot is not None:
                return msgspec.structs.replace(details_of(snapshot), status=status)
        if self.runtime.path is not None:
            # Steps, arguments and state as committed, read the way `actorflow show` does.
            try:
                stored = await asyncio.to_thread(Reader(self.runtime.path).show, instance_id)
            except ActorflowError:
                stored = None  # started but not yet committed: the status is all there is
            if stored is not None:
                return msgspec.structs.replace(stored, status=status)
        return Details(status, args=[], state=None, result=None, traceback=None, steps=[])

    def event_type(self, name: str) -> Any:
        event = lookup_name(name)
        return UNKNOWN_TYPE if event is None else event.type

    async def act(self, action: Action) -> str:
        action = checked(action)
        rt = self.runtime
        value = _payload_value(action.payload, rt.max_payload_bytes)
        check_payload_size("the error text", action.error, rt.max_payload_bytes)
        match action.kind:
            case "send":
                await rt.send(
                    action.instance,
                    action.event,
                    value,
                    error=action.error,
                    cancelled=action.cancelled,
                )
                return f"sent {action.event} to {action.instance}"
            case "resolve":
                await rt.resolve(action.token, value)
                return "resolved the event"
            case "reject":
                await rt.reject(action.token, action.error or "rejected")
                return "rejected the event"
            case _:
                await rt.handle(action.instance).cancel()
                return f"asked {action.instance} to cancel"

    async def changed(self) -> None:
        await self.runtime.changed()


def _payload_value(text: str | None, max_payload_bytes: int) -> Any:
    check_payload_size("the payload", text, max_payload_bytes)
    return decode_payload("the payload", text)


class FileSource:
    """A database file (or a ``postgresql://`` URL) that another process owns (or none
    does): read, and the inbox. A URL is shown without its password."""

    def __init__(self, path: str | Path) -> None:
        self.db: str | Path = str(path) if is_postgres_url(path) else Path(path)
        self.label = redact(str(path)) if isinstance(self.db, str) else str(path)
        self._watch: sqlite3.Connection | None = None
        self._version: object = None
        self._pg: PgWatch | None = None

    async def list(self) -> list[Status]:
        return await asyncio.to_thread(Reader(self.db).list)

    async def show(self, instance_id: str) -> Details:
        return await asyncio.to_thread(Reader(self.db).show, instance_id)

    def event_type(self, name: str) -> Any:
        return UNKNOWN_TYPE  # the owner's code is not loaded here; it validates

    async def act(self, action: Action) -> str:
        return await asyncio.to_thread(self._deliver, checked(action))

    def _deliver(self, action: Action) -> str:
        # The cli's own checks and inbox calls, so the page fails exactly as `actorflow send`.
        from actorflow.cli import CommandError, _check_target, _owner

        request = _request(action)
        _payload_value(action.payload, DEFAULT_MAX_PAYLOAD_BYTES)  # bad JSON fails here
        try:
            _check_target(self.db, request)
        except CommandError as exc:
            raise ActorflowError(str(exc)) from None
        seq = submit(self.db, request)
        what = f"request #{seq} ({action.kind})"  # the CLI's words for the same verdicts
        owner = _owner(self.db)
        if owner is None:
            return f"{what} queued; it will be applied when a runtime starts on {self.label}"
        found = wait_for_receipt(self.db, seq, VERDICT_WAIT)
        if found.status == "rejected":
            raise ActorflowError(f"{what} rejected: {found.reason}")
        if found.status == "pending":
            return f"{what} queued; {owner} has not decided it yet"
        return f"{what} accepted by {owner}"

    async def changed(self) -> None:
        if isinstance(self.db, str):
            # PostgreSQL: no NOTIFY on commits, so a cheap fingerprint, polled.
            if self._pg is None:
                from actorflow.ui.pg_watch import PgWatch  # asyncpg: only for a URL

                self._pg = PgWatch(self.db)
            while not await self._pg.moved():
                await asyncio.sleep(WATCH_EVERY)
            return
        # One cheap PRAGMA on the event loop's thread (a sqlite3 connection stays on the
        # thread that made it); it only moves when another connection commits.
        while not self._moved():
            await asyncio.sleep(WATCH_EVERY)

    def _moved(self) -> bool:
        """Whether another connection committed since the last look (``data_version``)."""
        assert isinstance(self.db, Path)
        try:
            if self._watch is None:
                self._watch = connect_outside(self.db)
            version = self._watch.execute("PRAGMA data_version").fetchone()[0]
        except (sqlite3.Error, StoreError):
            self.close()
            return False
        moved = self._version is not None and version != self._version
        self._version = version
        return moved

    def close(self) -> None:
        """Close the watching connection of a file (it reopens on the next look)."""
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()


def _request(action: Action) -> Request:
    match action.kind:
        case "send":
            return SendRequest(
                action.instance, action.event, action.payload, action.error, action.cancelled
            )
        case "resolve":
            return ResolveRequest(action.token, action.payload)
        case "reject":
            return ResolveRequest(action.token, None, action.error or "rejected")
        case _:
            return CancelRequest(action.instance)
