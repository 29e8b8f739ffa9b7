"""Timers for waits, sleeps and retries, driven by one armed clock callback.

Interim implementation (a heap); the hierarchical wheel replaces it with the same API.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from actorflow.clock import Cancellable, Clock


class Timer:
    """A scheduled callback; ``cancel()`` is O(1) and idempotent."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Never fire."""
        self.cancelled = True


class TimerWheel:
    """Runs callbacks at absolute deadlines with one armed ``clock.call_at`` at a time."""

    def __init__(self, clock: Clock, tick: float = 0.001) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._armed: Cancellable | None = None
        self._armed_at = 0.0

    def schedule(self, when: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` once the clock reaches ``when``."""
        timer = Timer(when, callback)
        heapq.heappush(self._heap, (when, next(self._order), timer))
        self._arm()
        return timer

    def __len__(self) -> int:
        return sum(1 for _, _, t in self._heap if not t.cancelled)

    def close(self) -> None:
        """Stop: no timer fires afterwards."""
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None
        self._heap.clear()

    def _arm(self) -> None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        if not heap:
            return
        when = heap[0][0]
        if self._armed is not None:
            if self._armed_at <= when:
                return
            self._armed.cancel()
        self._armed_at = when
        self._armed = self._clock.call_at(when, self._fire)

    def _fire(self) -> None:
        self._armed = None
        now = self._clock.now()
        heap = self._heap
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback()
        self._arm()
