"""The inbox: how other processes (the CLI, a web handler) reach a runtime.

A writer inserts a request row into the database's ``inbox`` table with plain
``sqlite3`` — no runtime needed, whether or not one runs. The owning runtime
notices new rows (it watches ``PRAGMA data_version``), applies each request
exactly once and marks the row ``accepted`` or ``rejected`` with the reason, in
the same transaction as the records the request produced. Requests wait in the
table while no runtime runs and are applied at the next open.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Literal

import msgspec

from actorflow.errors import ActorflowError
from actorflow.store.sqlite import connect_outside


class SendRequest(msgspec.Struct, tag="send"):
    """``rt.send(instance, event, payload, error=, cancelled=)``; payload is JSON text."""

    instance: str
    event: str
    payload: str | None = None
    error: str | None = None
    cancelled: bool = False


class ResolveRequest(msgspec.Struct, tag="resolve"):
    """``rt.resolve(token, payload)`` or, with ``error``, ``rt.reject(token, error)``."""

    token: str
    payload: str | None = None
    error: str | None = None


class CancelRequest(msgspec.Struct, tag="cancel"):
    """``rt.cancel(instance)``."""

    instance: str


class NotifyRequest(msgspec.Struct, tag="notify"):
    """``rt.notify(*topics)``."""

    topics: list[str]


Request = SendRequest | ResolveRequest | CancelRequest | NotifyRequest
"""Anything the inbox carries."""

REQUEST_DECODER = msgspec.json.Decoder(Request)
Verdict = Literal["pending", "accepted", "rejected"]


class Receipt(msgspec.Struct, frozen=True):
    """What became of an inbox request."""

    seq: int
    status: Verdict
    reason: str | None


def submit(path: str | Path, request: Request) -> int:
    """Put ``request`` in the inbox of the database at ``path``; return its sequence number."""
    conn = connect_outside(path)
    try:
        cur = conn.execute(
            "INSERT INTO inbox (created_at, request) VALUES (?, ?)",
            (time.time(), msgspec.json.encode(request).decode()),
        )
        return int(cur.lastrowid or 0)
    finally:
        conn.close()


def receipt(path: str | Path, seq: int) -> Receipt:
    """The current state of inbox request ``seq``."""
    conn = connect_outside(path)
    try:
        return _receipt(conn, path, seq)
    finally:
        conn.close()


def wait_for_receipt(path: str | Path, seq: int, timeout: float) -> Receipt:
    """Poll request ``seq`` until a runtime decided it, or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    conn = connect_outside(path)
    try:
        while True:
            found = _receipt(conn, path, seq)
            if found.status != "pending" or time.monotonic() >= deadline:
                return found
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
    finally:
        conn.close()


def _receipt(conn: sqlite3.Connection, path: str | Path, seq: int) -> Receipt:
    row = conn.execute("SELECT status, reason FROM inbox WHERE seq = ?", (seq,)).fetchone()
    if row is None:
        raise ActorflowError(f"no inbox request {seq} in {path}")
    return Receipt(seq, row[0], row[1])
