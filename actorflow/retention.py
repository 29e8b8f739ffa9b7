"""Retention: deleting finished instances and decided inbox requests once they are old.

``purge`` deletes, on demand, what finished (or was decided) by a given time, in
small transactions with a pause between them, so the runtime's own writes and the
event loop carry on meanwhile. :class:`Retention` runs it in the background: it sleeps
on the runtime's clock (a :class:`~actorflow.testing.ManualClock` moves it too) until
the oldest finished thing passes the retention period, purges, and sleeps again.

Unfinished instances are never deleted. A deleted instance is unknown from then on,
exactly as if it had never existed: its status raises, and its ID can start anew.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Collection
from datetime import timedelta
from typing import NamedTuple

from actorflow.clock import Cancellable, Clock, seconds
from actorflow.log import logger as _log
from actorflow.loop import host_loop
from actorflow.store import Store

FINISHED_STATES = frozenset({"completed", "failed", "cancelled"})
BATCH = 500
"""Rows deleted per transaction: each one holds the file's write lock only briefly."""
MIN_GAP = 0.01
MAX_GAP = 1.0
"""Bounds, in clock seconds, of the pause between two background passes (1% of the
retention period): where instances finish all the time, they are purged about once a
second, not after each one."""


class Purged(NamedTuple):
    """What a purge deleted."""

    instances: int
    requests: int

    def __str__(self) -> str:
        return f"purged {self.instances} finished instance(s) and {self.requests} inbox request(s)"


def retention_seconds(value: float | timedelta | None) -> float | None:
    """``Runtime(retention=)`` as seconds; ``None`` (and infinity) keep forever."""
    keep = seconds(value, "retention")
    if keep is None or keep == math.inf:
        return None
    if math.isnan(keep) or keep < 0:
        raise ValueError(f"retention must be a duration of 0 or more, got {keep!r} seconds")
    return keep


def purge_statuses(status: str | Collection[str] | None) -> frozenset[str]:
    """The finished states a purge may delete (all of them for ``None``); an unfinished
    or unknown state raises ``ValueError``: unfinished instances are never purged."""
    wanted = FINISHED_STATES if status is None else {status} if isinstance(status, str) else status
    if not isinstance(wanted, Collection) or not all(isinstance(s, str) for s in wanted):
        raise ValueError(f"status must be a state name or a collection of them, got {status!r}")
    unfinished = sorted(set(wanted) - FINISHED_STATES)
    if unfinished:
        raise ValueError(
            f"cannot purge instances in state {', '.join(map(repr, unfinished))}: only "
            f"finished instances are purged (use {', '.join(sorted(FINISHED_STATES))})"
        )
    if not wanted:
        raise ValueError("status is empty; name at least one of completed, failed, cancelled")
    return frozenset(wanted)


async def purge(
    store: Store,
    checkpoint: Callable[[], Awaitable[None]],
    before: float,
    statuses: Collection[str] = FINISHED_STATES,
    requests: bool = True,
) -> Purged:
    """Delete finished instances with a status in ``statuses`` that finished at or
    before ``before`` and (``requests``) inbox requests decided by then, ``BATCH`` rows
    per transaction.

    ``checkpoint`` runs first: it folds the log into snapshots, so that no finished
    instance lives only in the log or in memory, where a later checkpoint or a
    recovery would bring it back after its row was deleted."""
    await checkpoint()
    instances = await _in_batches(lambda: store.purge(before, statuses, BATCH))
    decided = await _in_batches(lambda: store.purge_inbox(before, BATCH)) if requests else 0
    return Purged(instances, decided)


async def _in_batches(delete: Callable[[], Awaitable[int]]) -> int:
    total = 0
    while True:
        deleted = await delete()
        total += deleted
        if deleted < BATCH:
            return total
        await asyncio.sleep(0)  # let queued commits of the runtime go first


class Retention:
    """Purges, in the background, what finished more than ``keep`` seconds ago.

    A pass runs when the oldest finished instance or decided request passes ``keep``
    (by ``clock``); ``schedule(when, callback)`` is the runtime's timer, so a manual
    clock advanced past that time runs the pass at once. With nothing finished there
    is no pass: :meth:`noticed` tells it when something finishes."""

    def __init__(
        self,
        keep: float,
        clock: Clock,
        schedule: Callable[[float, Callable[[], object]], Cancellable],
        run: Callable[[float], Awaitable[Purged]],
        oldest: Callable[[], Awaitable[float | None]],
    ) -> None:
        self._keep = keep
        self._clock = clock
        self._schedule = schedule
        self._run = run
        self._oldest = oldest
        self._gap = min(max(keep * 0.01, MIN_GAP), MAX_GAP)
        self._retry = self._gap  # after a failed pass; doubles while passes fail
        self._alarm: Cancellable | None = None
        self._alarm_at = math.inf
        self._noticed = math.inf  # the earliest due time noticed during a pass
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def busy(self) -> bool:
        """Whether a pass is running (a manual clock's ``advance`` waits for it)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Run a first pass now (for what finished before the runtime opened)."""
        self._arm(self._clock.now())

    def noticed(self, finished_at: float) -> None:
        """Something finished (or was decided) at ``finished_at``: purge it when due."""
        due = finished_at + self._keep
        if self.busy:
            self._noticed = min(self._noticed, due)
        elif due < self._alarm_at:
            self._arm(due)

    async def stop(self) -> None:
        """Stop for good, abandoning a pass midway (each batch is its own transaction)."""
        self._stopped = True
        self._disarm()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    def _arm(self, when: float) -> None:
        self._disarm()
        if not self._stopped and when < math.inf:
            self._alarm_at = when
            self._alarm = self._schedule(when, self._ring)

    def _disarm(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
        self._alarm, self._alarm_at = None, math.inf

    def _ring(self) -> None:
        self._alarm, self._alarm_at = None, math.inf
        if not self._stopped and not self.busy:
            self._task = host_loop().create_task(self._pass(), name="actorflow-retention")

    async def _pass(self) -> None:
        now = self._clock.now()
        self._noticed = math.inf
        try:
            purged = await self._run(now - self._keep)
            oldest = await self._oldest()
        except Exception as exc:  # the store failed: try again, less often while it fails
            _log.warning("retention.failed", error=str(exc), retry_in=self._retry)
            self._arm(now + self._retry)
            self._retry = min(self._retry * 2, max(self._keep, self._gap))
            return
        self._retry = self._gap
        if purged.instances or purged.requests:
            _log.info("retention.purged", instances=purged.instances, requests=purged.requests)
        # What is stored is due at oldest + keep; what finished meanwhile was noticed.
        due = min(math.inf if oldest is None else oldest + self._keep, self._noticed)
        self._arm(max(due, now + self._gap) if due < math.inf else due)
