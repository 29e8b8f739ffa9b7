"""Reading a database from outside its runtime: what the CLI's ``list`` and ``show`` see.

A reader never takes ownership and never writes. It reads the instances' bases and
journals and the write-ahead log tail in one read transaction (so a checkpoint
running meanwhile cannot make it miss or double a record) and folds them the same
way recovery does. What it sees is everything the owning runtime has committed.
It reads an SQLite file or, given a ``postgresql://`` URL, a PostgreSQL database
(:mod:`actorflow.store.pg_outside`), whose password it never shows.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from actorflow import codec
from actorflow.clock import to_datetime
from actorflow.errors import ActorflowError, StoreError
from actorflow.records import Outcome, Snapshot
from actorflow.status import STATES, Status, status_of
from actorflow.store.sqlite import connect_outside, read_committed
from actorflow.store.url import is_postgres_url, redact

_ANY = codec.decoder(Any)


class StepRecord(msgspec.Struct, frozen=True):
    """A step whose outcome is stored: its result, or the error it finally raised."""

    seq: int
    name: str
    finished_at: datetime
    result: Any = None
    error: str | None = None


class Details(msgspec.Struct, frozen=True):
    """Everything stored about one instance, decoded to plain values for display."""

    status: Status
    args: list[Any]
    state: Any
    result: Any
    traceback: str | None
    steps: list[StepRecord]


def _decode(blob: bytes | None) -> Any:
    if blob is None:
        return None
    try:
        return _ANY.decode(blob)
    except msgspec.DecodeError:
        return f"<{len(blob)} undecodable bytes>"


class Reader:
    """A read-only view of the actorflow database at ``path`` (a file, or a
    ``postgresql://`` URL)."""

    def __init__(self, path: str | Path) -> None:
        self.url = str(path) if is_postgres_url(path) else None
        self.path = Path(path)
        self.label = redact(self.url) if self.url is not None else str(self.path)
        """The database as messages name it (a URL without its password)."""

    def snapshots(self, instance_id: str | None = None, heads: bool = False) -> dict[str, Snapshot]:
        """Every instance (or just ``instance_id``) as committed: bases, journals and log
        tail (``heads``: those the log does not touch without their history, see
        :func:`~actorflow.store.sqlite.read_committed`)."""
        if self.url is not None:
            from actorflow.store import pg_outside  # asyncpg: only for a URL

            return pg_outside.read_committed(self.url, instance_id, heads=heads)
        conn = connect_outside(self.path)
        try:
            return read_committed(conn, instance_id, heads=heads)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} could not be read: {exc}") from None
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StoreError(
                f"{self.path} holds a record this actorflow cannot read: {exc}"
            ) from None
        finally:
            conn.close()

    def list(self, states: set[str] | None = None, workflow: str | None = None) -> list[Status]:
        """Instances (optionally only in ``states`` / of ``workflow``), oldest first."""
        if states is not None and not states <= STATES:
            raise ActorflowError(f"unknown status in {sorted(states)}; use {sorted(STATES)}")
        found = self.snapshots(heads=True).values()  # no history: status_of needs none
        statuses = [status_of(s, with_events=False) for s in found]
        return sorted(
            (
                s
                for s in statuses
                if (states is None or s.state in states)
                and (workflow is None or s.workflow == workflow)
            ),
            key=lambda s: (s.created_at, s.id),
        )

    def show(self, instance_id: str) -> Details:
        """Everything about instance ``instance_id``; unknown ids are an error."""
        snapshot = self.snapshots(instance_id).get(instance_id)
        if snapshot is None:
            raise ActorflowError(f"no workflow instance with id {instance_id!r} in {self.label}")
        return details_of(snapshot)


def details_of(snapshot: Snapshot) -> Details:
    """Everything about the instance of ``snapshot``, as ``actorflow show`` prints it."""
    steps = [
        StepRecord(
            seq=o.seq,
            name=o.name,
            finished_at=to_datetime(o.at),
            result=_decode(o.value),
            error=None if o.error is None else f"{o.error.type}: {o.error.message}",
        )
        for o in snapshot.history
        if isinstance(o, Outcome) and o.kind == "step"
    ]
    error = snapshot.error
    return Details(
        status=status_of(snapshot),
        args=[_decode(a) for a in snapshot.args],
        state=_decode(snapshot.state),
        result=_decode(snapshot.result),
        traceback=error.traceback or None if error is not None else None,
        steps=steps,
    )
