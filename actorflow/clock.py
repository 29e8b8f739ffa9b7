"""Clocks: where every runtime time comes from.

A clock tells the time (seconds since the epoch, UTC) and runs a callback at a
given time. The runtime never reads ``time.time()`` or calls ``loop.call_at``
directly, so a test can swap in :class:`actorflow.testing.ManualClock` and move
time without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from actorflow.loop import host_loop


class Cancellable(Protocol):
    """What ``Clock.call_at`` returns: something that can be cancelled."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The time source of a runtime."""

    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    def call_at(self, when: float, callback: Callable[[], object]) -> Cancellable:
        """Run ``callback`` on the running loop once ``now() >= when``."""
        ...


class SystemClock:
    """The real clock: wall time, callbacks through the running event loop."""

    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        return time.time()

    def call_at(self, when: float, callback: Callable[[], object]) -> Cancellable:
        """Run ``callback`` once the wall clock reaches ``when``."""
        loop = host_loop()
        return loop.call_later(max(0.0, when - time.time()), callback)


def seconds(value: float | timedelta | None, what: str) -> float | None:
    """A duration as seconds: a ``timedelta`` or a number of seconds (``None`` stays None)."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a timedelta or a number of seconds, got {value!r}")
    return float(value)


def to_datetime(timestamp: float) -> datetime:
    """An epoch timestamp as an aware UTC ``datetime``."""
    return datetime.fromtimestamp(timestamp, UTC)


def from_datetime(when: datetime, what: str) -> float:
    """An aware ``datetime`` as an epoch timestamp; a naive one is a ``ValueError``."""
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise ValueError(f"{what} must be an aware datetime (with tzinfo), got {when!r}")
    return when.timestamp()
