"""Reads asked for one key at a time and made together: every key asked for in one loop
turn is read by one call (one query, one thread hop or round trip, not one per key)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TurnBatch(Generic[K, V]):
    """Collects the keys asked for (:meth:`get`) in one loop turn, then reads them with one
    call of ``read`` (which returns the values found, by key). ``stopped`` makes the error
    callers get when the read itself was interrupted (by a ``BaseException``)."""

    def __init__(
        self,
        read: Callable[[Collection[K]], Awaitable[dict[K, V]]],
        stopped: Callable[[], Exception],
    ) -> None:
        self._read = read
        self._stopped = stopped
        self._pending: dict[K, asyncio.Future[V | None]] = {}
        self._reads: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V | None:
        """The value read for ``key`` (``None``: none was found)."""
        found = self._pending.get(key)
        if found is None:
            loop = asyncio.get_running_loop()
            if not self._pending:
                loop.call_soon(self._start)
            found = self._pending[key] = loop.create_future()
        # Shielded: one caller cancelled leaves the read to the others.
        return await asyncio.shield(found)

    def _start(self) -> None:
        pending, self._pending = self._pending, {}
        task = asyncio.get_running_loop().create_task(self._read_all(pending))
        self._reads.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._reads.discard)

    async def _read_all(self, pending: dict[K, asyncio.Future[V | None]]) -> None:
        try:
            found = await self._read(pending.keys())
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else self._stopped()
            for future in pending.values():
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved: a cancelled caller does not warn
            if not isinstance(exc, Exception):
                raise
            return
        for key, future in pending.items():
            if not future.done():
                future.set_result(found.get(key))
