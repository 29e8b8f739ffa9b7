"""Running a step: one attempt after another until it succeeds or the policy gives up."""

from __future__ import annotations

import asyncio
import inspect
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from actorflow.clock import seconds
from actorflow.records import ErrorInfo


@dataclass(frozen=True, slots=True)
class Retry:
    """How a failing step is retried: up to ``attempts`` runs in all, waiting
    ``initial * backoff**n`` seconds (at most ``max_delay``) between them, for
    exceptions that are instances of ``retry_on``."""

    attempts: int = 3
    initial: float | timedelta = 1.0
    backoff: float = 2.0
    max_delay: float | timedelta = 60.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"Retry(attempts=...) must be at least 1, got {self.attempts}")

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after the ``failed_attempts``-th failure."""
        initial = seconds(self.initial, "Retry(initial=...)") or 0.0
        cap = seconds(self.max_delay, "Retry(max_delay=...)") or 0.0
        return float(min(initial * self.backoff ** (failed_attempts - 1), cap))

    def should_retry(self, failed_attempts: int, error: BaseException) -> bool:
        """Whether another attempt follows this failure."""
        return failed_attempts < self.attempts and isinstance(error, self.retry_on)


NO_RETRY = Retry(attempts=1)


def error_info(error: BaseException) -> ErrorInfo:
    """How an exception is stored: its ``__qualname__``, text and traceback.

    Never raises: an exception whose ``str()`` fails, or whose text holds lone
    surrogates (not storable as UTF-8), is stored with a readable stand-in.
    """
    try:
        message = str(error)
    except Exception:
        message = f"<{type(error).__qualname__}: str() failed>"
    return ErrorInfo(
        _storable(type(error).__qualname__),
        _storable(message),
        _storable("".join(traceback.format_exception(error))),
    )


def _storable(text: str) -> str:
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


async def attempt(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None) -> Any:
    """Run ``fn(*args)`` once: async functions on this loop, sync ones in a thread."""
    call = fn(*args) if inspect.iscoroutinefunction(fn) else asyncio.to_thread(fn, *args)
    if timeout is None:
        result = await call
    else:
        result = await asyncio.wait_for(call, timeout)
    if inspect.isawaitable(result):  # a sync callable that returned an awaitable
        result = await result
    return result
