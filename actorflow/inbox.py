"""The inbox: how other processes (the CLI, a web handler) reach a runtime.

A writer inserts a request row into the database's ``inbox`` table with plain
``sqlite3`` — no runtime needed, whether or not one runs. The owning runtime
notices new rows (``submit`` wakes it, :mod:`actorflow.store.wake`; it also polls
``PRAGMA data_version`` slowly, for writers that do not), applies each request
exactly once and marks the row ``accepted`` or ``rejected`` with the reason, in
the same transaction as the records the request produced. Requests wait in the
table while no runtime runs and are applied, in order, before the next ``open()``
returns.

Each row is judged alone: one that is not a request (NULL, too large, not UTF-8, not
JSON, the wrong shape) is rejected with its reason and the rows after it go on. A
payload is measured before it is decoded, and a resolve's token is checked before its
payload is even measured. Reasons name types and sizes, never a row's content.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any, Literal, cast

import msgspec

from actorflow.errors import ActorflowError, InvalidPayload
from actorflow.events import describe_invalid
from actorflow.store.base import InboxRow
from actorflow.store.sqlite import connect_outside
from actorflow.store.url import is_postgres_url
from actorflow.store.wake import ring

DEFAULT_MAX_PAYLOAD_BYTES = 1_048_576
"""``Runtime``'s default ``max_payload_bytes``, which ``submit`` applies by default."""
MAX_REASON = 500
"""Characters of a rejection reason kept in the inbox row (and the log)."""


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


class PurgeRequest(msgspec.Struct, tag="purge"):
    """``rt.purge(older_than, status=statuses)``: delete finished instances (and, without
    ``statuses``, decided requests) older than ``older_than`` seconds by the runtime's
    clock. Accepted with a reason that says how many were deleted."""

    older_than: float
    statuses: list[str] | None = None


class ForwardRequest(msgspec.Struct, tag="forward"):
    """An event that another runtime of a shared database accepted for an instance this
    one runs: checked and encoded there (``payload`` is its stored encoding), offered
    here as the sender's ``rt.send`` / ``resolve`` / ``reject`` would have."""

    event: str
    instance: str
    token: str | None = None
    payload: bytes | None = None
    error: str | None = None
    cancelled: bool = False
    created_at: float | None = None


Request = (
    SendRequest | ResolveRequest | CancelRequest | NotifyRequest | PurgeRequest | ForwardRequest
)
"""Anything the inbox carries."""

REQUEST_DECODER = msgspec.json.Decoder(Request)
Verdict = Literal["pending", "accepted", "rejected"]


def max_request_bytes(max_payload_bytes: int) -> int:
    """The largest inbox row worth reading when payloads are limited to
    ``max_payload_bytes``: a payload or error text at that limit, JSON-escaped
    (at worst 6 bytes a character), plus room for the other fields."""
    return 6 * max_payload_bytes + 65_536


class BadRequest(ActorflowError):
    """An inbox row that is not a request: rejected with this reason, never retried."""


def parse_row(row: InboxRow, max_payload_bytes: int) -> Request:
    """The request stored in ``row``; raises :class:`BadRequest` saying what is wrong
    with it (NULL, too large, not UTF-8, not JSON, not a request) without quoting it."""
    limit = max_request_bytes(max_payload_bytes)
    if row.size is None:
        raise BadRequest("the request is NULL; write the JSON of a request (see actorflow.inbox)")
    if row.size > limit or row.request is None:
        raise BadRequest(f"the request is {row.size} bytes, over the limit of {limit}")
    try:
        row.request.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the request is not valid UTF-8 (byte {exc.start})") from None
    try:
        return REQUEST_DECODER.decode(row.request)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"the request is not a valid request: {describe_invalid(exc)}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the request is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the request is nested too deeply") from None


def check_payload_size(what: str, text: str | None, max_payload_bytes: int) -> None:
    """Raise :class:`InvalidPayload` if ``text`` (JSON of a payload, or an error text)
    is larger than ``max_payload_bytes`` in UTF-8 — before anyone decodes it."""
    if text is None:
        return
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_payload_bytes:
        raise InvalidPayload(
            f"{what} is {size} bytes, over the limit of {max_payload_bytes} (max_payload_bytes)"
        )


def decode_payload(what: str, text: str | None) -> Any:
    """The builtins (dicts, lists, ...) of a payload's JSON text, which the runtime
    then validates against the event's type as it validates a value from ``rt.send``.

    The standard library's parser is used because msgspec's takes seconds per MB on
    numbers such as ``1e300`` while holding the GIL; NaN, infinities and numbers out of
    a float's range are refused as msgspec refuses them."""
    if text is None:
        return None
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidPayload(f"{what} is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or a number out of range
        raise InvalidPayload(f"{what} is not valid JSON: {_json_error(exc)}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("a number is out of range")
    return value


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):  # its msg and position, never the document
        return f"{exc.msg} (char {exc.pos})"
    return str(exc).split(":")[0]


def bounded_reason(reason: str) -> str:
    """``reason`` cut to :data:`MAX_REASON` characters, for the inbox row and the log."""
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."


class Receipt(msgspec.Struct, frozen=True):
    """What became of an inbox request."""

    seq: int
    status: Verdict
    reason: str | None


def encode_request(request: Request, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """The inbox row of ``request``; a payload or error text larger than
    ``max_payload_bytes`` raises :class:`InvalidPayload`."""
    if isinstance(request, SendRequest | ResolveRequest):
        check_payload_size("the payload", request.payload, max_payload_bytes)
        check_payload_size("the error text", request.error, max_payload_bytes)
    row = msgspec.json.encode(request)
    if len(row) > max_request_bytes(max_payload_bytes):
        raise InvalidPayload(
            f"the request is {len(row)} bytes, over the limit of "
            f"{max_request_bytes(max_payload_bytes)}"
        )
    return row


def submit(
    path: str | Path, request: Request, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> int:
    """Put ``request`` in the inbox of the database at ``path`` (a file, or a
    ``postgresql://`` URL); return its sequence number.

    A payload or error text larger than ``max_payload_bytes`` (the runtime's default
    unless given) raises :class:`InvalidPayload` and nothing is queued.
    Once the request is committed, the owning runtime (if one runs) is woken to apply it.
    Synchronous: not for a thread that runs an event loop when ``path`` is a URL.
    """
    row = encode_request(request, max_payload_bytes)
    if is_postgres_url(path):
        from actorflow.store import pg_outside  # asyncpg: only for a URL

        target = request.instance if isinstance(request, SendRequest | CancelRequest) else None
        token = request.token if isinstance(request, ResolveRequest) else None
        return pg_outside.submit(str(path), row, target, token)
    conn = connect_outside(path)
    try:
        cur = conn.execute(
            "INSERT INTO inbox (created_at, request) VALUES (?, ?)",
            (time.time(), row.decode()),
        )
        seq = int(cur.lastrowid or 0)
    finally:
        conn.close()
    ring(path)  # committed: wake the owner (if one runs) instead of waiting for its poll
    return seq


def receipt(path: str | Path, seq: int) -> Receipt:
    """The current state of inbox request ``seq``."""
    if is_postgres_url(path):
        return wait_for_receipt(path, seq, 0)
    conn = connect_outside(path)
    try:
        return _receipt(conn, path, seq)
    finally:
        conn.close()


def wait_for_receipt(path: str | Path, seq: int, timeout: float) -> Receipt:
    """Poll request ``seq`` until a runtime decided it, or ``timeout`` seconds passed
    (at ``path``: a file, or a ``postgresql://`` URL)."""
    if is_postgres_url(path):
        from actorflow.store import pg_outside  # asyncpg: only for a URL

        status, reason = pg_outside.wait_for_receipt(str(path), seq, timeout)
        return Receipt(seq, cast(Verdict, status), reason)
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
