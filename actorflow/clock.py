"""Clocks: where every runtime time comes from.

A clock tells the time (seconds since the epoch, UTC) and runs a callback at a
given time. The runtime never reads ``time.time()`` or calls ``loop.call_at``
directly, so a test can swap in :class:`actorflow.testing.ManualClock` and move
time without sleeping.
"""

from __future__ import annotations

import math
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


LAST_DEADLINE = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
"""The latest deadline there is: one past the year 9999 is no deadline (never comes)."""
_FIRST_DEADLINE = datetime(1, 1, 1, tzinfo=UTC).timestamp()  # anything earlier: due as this


def seconds(value: float | timedelta | None, what: str) -> float | None:
    """A duration as seconds: a ``timedelta`` or a number of seconds (``None`` stays None).

    ``math.inf`` stays ``inf`` (callers read it as "no deadline"); NaN is a ``ValueError``.
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a timedelta or a number of seconds, got {value!r}")
    if math.isnan(value):
        raise ValueError(f"{what} must be a number of seconds, not NaN; use math.inf for no limit")
    return float(value)


def deadline(when: float | None) -> float | None:
    """``when`` as a deadline: ``None`` (never comes) when it is not finite or past the
    year 9999, so that no far-off or damaged stored value can break a timer or a date.
    One before the year 1 (``-inf`` included) is due at once, as that first moment."""
    if when is None or not when <= LAST_DEADLINE:  # NaN compares false: no deadline
        return None
    return max(when, _FIRST_DEADLINE)


def deadline_datetime(when: float | None) -> datetime | None:
    """A stored deadline as an aware UTC ``datetime``; ``None`` when it is no deadline."""
    when = deadline(when)
    if when is None:
        return None
    try:
        return to_datetime(when)
    except (OverflowError, OSError, ValueError):  # before the year 1: shown as none
        return None


def to_datetime(timestamp: float) -> datetime:
    """An epoch timestamp as an aware UTC ``datetime``."""
    return datetime.fromtimestamp(timestamp, UTC)


def from_datetime(when: datetime, what: str) -> float:
    """An aware ``datetime`` as an epoch timestamp; a naive one is a ``ValueError``."""
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise ValueError(f"{what} must be an aware datetime (with tzinfo), got {when!r}")
    return when.timestamp()
