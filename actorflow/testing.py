"""Test helpers: :class:`ManualClock`, a clock that moves only when told to."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from actorflow.clock import from_datetime, seconds
from actorflow.loop import host_loop

if TYPE_CHECKING:
    from actorflow.runtime import Runtime


class _Alarm:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock for tests: time stands still until :meth:`advance` moves it.

    Pass it as ``Runtime(..., clock=clock)``; one clock may serve successive runtimes
    (close, reopen) so that time keeps going forward across a restart.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = from_datetime(start, "start") if start is not None else 1_767_225_600.0
        self._alarms: list[tuple[float, int, _Alarm]] = []
        self._order = itertools.count()
        self._runtimes: weakref.WeakSet[Runtime] = weakref.WeakSet()

    def now(self) -> float:
        """The clock's current time (seconds since the epoch)."""
        return self._now

    def call_at(self, when: float, callback: Callable[[], object]) -> _Alarm:
        """Run ``callback`` once the clock reaches ``when`` (soon, if it already has)."""
        alarm = _Alarm(when, callback)
        if when <= self._now:
            host_loop().call_soon(self._ring, alarm)
        else:
            heapq.heappush(self._alarms, (when, next(self._order), alarm))
        return alarm

    @staticmethod
    def _ring(alarm: _Alarm) -> None:
        if not alarm.cancelled:
            alarm.cancelled = True
            alarm.callback()

    def attach(self, runtime: Runtime) -> None:
        """Let :meth:`advance` wait for ``runtime`` to settle (the runtime calls this)."""
        self._runtimes.add(runtime)

    async def advance(self, delta: float | timedelta) -> None:
        """Move time forward by ``delta``, firing every timer due on the way, in order;
        return once the instances they woke have run to their next pause."""
        step = seconds(delta, "delta") or 0.0
        if step < 0:
            raise ValueError("a clock only moves forward")
        target = self._now + step
        await self.settle()
        while self._alarms and self._alarms[0][0] <= target:
            when, _, alarm = heapq.heappop(self._alarms)
            self._now = max(self._now, when)
            self._ring(alarm)
            await self.settle()
        self._now = target
        await self.settle()

    async def settle(self) -> None:
        """Return once every attached runtime is idle (nothing written, run or due now)."""
        quiet_rounds = 0
        while quiet_rounds < 3:
            await asyncio.sleep(0)
            if all(rt.idle for rt in list(self._runtimes)):
                quiet_rounds += 1
            else:
                quiet_rounds = 0
                await asyncio.sleep(0.0005)
