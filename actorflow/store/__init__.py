"""Storage behind a small protocol: append records, checkpoint snapshots, load, list."""

from actorflow.store.base import Store
from actorflow.store.memory import MemoryStore
from actorflow.store.sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "Store"]
