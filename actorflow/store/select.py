"""Which store a ``Runtime`` target selects: memory, an SQLite file or PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Callable

from actorflow.errors import StoreError
from actorflow.store.base import Store
from actorflow.store.memory import MemoryStore
from actorflow.store.sqlite import Durability, SQLiteStore
from actorflow.store.url import is_postgres_url, redact

EXTRA = "pip install 'actorflow[postgres]'"


def check_lease(lease: float) -> float:
    """``lease`` as seconds, checked: a finite number above 0."""
    if isinstance(lease, bool) or not isinstance(lease, int | float):
        raise TypeError(f"lease must be a number of seconds, got {lease!r}")
    if not 0 < lease < float("inf"):
        raise ValueError(f"lease must be more than 0 seconds, got {lease!r}")
    return float(lease)


def store_for(
    target: str | os.PathLike[str] | None,
    durability: Durability,
    now: Callable[[], float],
    lease: float,
) -> Store:
    """The store ``target`` names: ``None`` in memory, a ``postgresql://`` (or
    ``postgres://``) URL on PostgreSQL (:class:`StoreError` without asyncpg), else an
    SQLite file."""
    if target is None:
        return MemoryStore()
    if is_postgres_url(target):
        assert isinstance(target, str)
        try:
            from actorflow.store.postgres import PostgresStore
        except ImportError as exc:
            if exc.name is None or not exc.name.startswith("asyncpg"):
                raise
            raise StoreError(
                f"{redact(target)} needs asyncpg, which is not installed: {EXTRA}"
            ) from None
        return PostgresStore(target, now, lease)
    return SQLiteStore(target, durability, now)
