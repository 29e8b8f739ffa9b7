"""How an instance is stored: a base snapshot, then the records of each checkpoint since.

A checkpoint appends to each changed instance's journal the records committed for it
since the last one (one row: it costs what is new, not the instance's history) and
replaces its head (the snapshot without history, events, values and tokens: what
``list()`` shows). The base is written anew only when the instance is new, began a new
run, finished, or when its journal outgrew it (by more than :data:`SLACK`): bases grow
geometrically, so rewrites cost amortised O(1) per record, and a load (the base, then
its journal folded in order) stays linear in the history. Both stores follow the
:func:`plan` made here; the readers use :func:`restore`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import msgspec

from actorflow.log import logger as _log
from actorflow.records import (
    BATCH_DECODER,
    RECORD_ENCODER,
    SNAPSHOT_DECODER,
    Record,
    Snapshot,
    Started,
    Value,
    apply,
)

SLACK = 64 * 1024
"""Journal bytes an instance may hold beyond its base's size before the base is rewritten."""

_TOKEN = msgspec.msgpack.Decoder(str)


class Stored(NamedTuple):
    """What a checkpoint needs to know of an instance's stored row."""

    run: int
    base_bytes: int
    tail_bytes: int
    """Bytes of its journal rows."""


class Change(NamedTuple):
    """What a checkpoint writes for one instance."""

    id: str
    snapshot: Snapshot | None
    """The instance as committed (``None``: not given, only its journal grows)."""
    base: bytes | None
    """A new base (its journal rows go), or ``None``: the base stays."""
    tail: bytes | None
    """A journal row to append: its records since the last checkpoint."""
    head: bytes | None
    """The encoded :func:`head_of` the snapshot (``None`` when it was not given)."""
    base_bytes: int
    tail_bytes: int
    """Bytes of its journal once written."""
    tokens: list[str]
    """Event tokens to index (made since, or all of a new run's)."""
    drop_tokens: bool
    """Whether every indexed token of the instance goes first (finished, or a new run)."""


def head_of(snapshot: Snapshot) -> Snapshot:
    """``snapshot`` without history, events, values and tokens: enough for ``list()``."""
    return msgspec.structs.replace(snapshot, history=[], values={}, events=[], tokens={}, settled=0)


def made_tokens(records: Iterable[Record]) -> list[str]:
    """The event tokens ``records`` made (``ctx.create_event``)."""
    return [
        _TOKEN.decode(r.value) for r in records if isinstance(r, Value) and r.kind == "create_event"
    ]


def plan(
    snapshots: Iterable[Snapshot], records: Iterable[Record], stored: Mapping[str, Stored]
) -> list[Change]:
    """What a checkpoint writes, given the changed ``snapshots`` (the fold of everything
    committed), the ``records`` committed since the last checkpoint (in log order) and
    the stored rows of the instances either names. Records of an instance neither given
    nor stored are skipped, as :func:`~actorflow.store.base.fold` skips them."""
    encode = RECORD_ENCODER.encode
    new: dict[str, list[Record]] = {}
    for record in records:
        new.setdefault(record.wf, []).append(record)
    given = {s.id: s for s in snapshots}
    changes: list[Change] = []
    for wf in dict.fromkeys([*given, *new]):
        s = given.get(wf)
        old = stored.get(wf)
        mine = new.get(wf, [])
        tail = encode(mine) if mine else None
        if s is None:  # never expected: the snapshots given are all that changed
            if old is None or tail is None:
                continue
            changes.append(
                Change(wf, None, None, tail, None, old.base_bytes,
                       old.tail_bytes + len(tail), [], False)
            )  # fmt: skip
            continue
        head = encode(head_of(s))
        tail_bytes = (old.tail_bytes if old is not None else 0) + (len(tail) if tail else 0)
        fresh = old is None or s.run != old.run or any(isinstance(r, Started) for r in mine)
        grown = old is not None and tail_bytes > old.base_bytes + SLACK
        if fresh or s.finished or grown:
            base = encode(s)
            tokens = [] if s.finished else list(s.tokens) if fresh else made_tokens(mine)
            changes.append(
                Change(wf, s, base, None, head, len(base), 0, tokens,
                       s.finished or (fresh and old is not None))
            )  # fmt: skip
        else:
            assert old is not None
            changes.append(
                Change(wf, s, None, tail, head, old.base_bytes, tail_bytes,
                       made_tokens(mine), False)
            )  # fmt: skip
    return changes


def restore(base: bytes, tail: Iterable[bytes]) -> Snapshot:
    """An instance as stored: its ``base`` with its journal rows (``tail``) folded in
    order. A record that does not apply is skipped (and logged), as the runtime that
    committed it went on without it."""
    snapshot = SNAPSHOT_DECODER.decode(base)
    for blob in tail:
        for record in BATCH_DECODER.decode(blob):
            try:
                apply(snapshot, record)
            except Exception:
                what = f"a stored {type(record).__name__} record"
                _log.exception("store.apply_failed", workflow_id=snapshot.id, record=what)
    return snapshot
