"""Running a step: one attempt after another until it succeeds or the policy gives up."""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from actorflow.clock import seconds
from actorflow.errors import ActorflowError
from actorflow.records import ErrorInfo


class NameRequired(ActorflowError, TypeError):
    """A step or query has no stable name of its own: it needs ``name=``."""


def call_name(fn: object, what: str) -> str:
    """The default name of a step or query function: stable across processes.

    Its module and qualified name; a ``functools.partial`` is named by its function.
    An object with no qualified name (a callable instance) raises
    :class:`NameRequired` (also a ``TypeError``): pass ``name=``.
    """
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    qualname = getattr(target, "__qualname__", None)
    if not isinstance(qualname, str):
        raise NameRequired(
            f"{what} {type(fn).__qualname__} object has no stable name (no __qualname__); "
            "pass name=..., a name that stays the same across restarts"
        )
    module = getattr(target, "__module__", None)
    if not isinstance(module, str):
        owner = getattr(target, "__objclass__", None)  # a method of a builtin type
        module = getattr(owner, "__module__", None)
    return f"{module}.{qualname}" if isinstance(module, str) else qualname


# Names older versions stored: a bare qualified name, or a partial's repr.
_OLD_PARTIAL = re.compile(r"functools\.partial\(<(?:bound method|function) (\S+?)(?: of .*)? at 0x")


def same_call(stored_kind: str, stored_name: str, kind: str, name: str) -> bool:
    """Whether a journal entry (``stored_*``) is the call the code makes now.

    A step or query stored under the name older versions gave it (the bare qualified
    name, or a ``functools.partial``'s repr) is the same call as one named now by module
    and qualified name, so that histories written before keep replaying.
    """
    if stored_kind != kind:
        return False
    if stored_name == name:
        return True
    if kind not in ("step", "query"):
        return False
    old = _OLD_PARTIAL.match(stored_name)
    if old is not None:
        stored_name = old[1]
    return name.endswith("." + stored_name)


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
        # Checked here, at the call, rather than at the first retry (NaN: ValueError).
        seconds(self.initial, "Retry(initial=...)")
        seconds(self.max_delay, "Retry(max_delay=...)")
        seconds(self.backoff, "Retry(backoff=...)")

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after the ``failed_attempts``-th failure (``inf``: forever)."""
        initial = seconds(self.initial, "Retry(initial=...)") or 0.0
        cap = seconds(self.max_delay, "Retry(max_delay=...)") or 0.0
        try:
            grown = initial * self.backoff ** (failed_attempts - 1)
        except OverflowError:
            grown = math.inf
        return 0.0 if math.isnan(grown) else float(min(grown, cap))

    def should_retry(self, failed_attempts: int, error: BaseException) -> bool:
        """Whether another attempt follows this failure. A ``CancelledError`` raised by the
        step's own code is a failure like any error: ``retry_on=(Exception,)`` covers it."""
        if failed_attempts >= self.attempts:
            return False
        if isinstance(error, self.retry_on):
            return True
        return isinstance(error, asyncio.CancelledError) and any(
            issubclass(Exception, kind) for kind in self.retry_on
        )


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
    """Run ``fn(*args)`` once: async functions on this loop, sync ones in a thread.

    ``timeout`` (seconds) bounds the attempt: it raises ``TimeoutError``. A sync
    attempt that times out is waited for all the same (a thread cannot be stopped) and
    its result discarded, so that attempts of one step never overlap.
    """
    if inspect.iscoroutinefunction(fn):
        call = fn(*args)
        result = await (call if timeout is None else asyncio.wait_for(call, timeout))
    else:
        result = await _in_thread(fn, args, timeout)
    if inspect.isawaitable(result):  # a sync callable that returned an awaitable
        result = await result
    return result


async def _in_thread(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None) -> Any:
    if timeout is None:
        return await asyncio.to_thread(fn, *args)
    running = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    # Read its outcome even when nobody awaits it any more (timed out, abandoned).
    running.add_done_callback(_discard)
    done, _ = await asyncio.wait([running], timeout=timeout)
    if not done:
        await asyncio.wait([running])
        raise TimeoutError(f"the attempt took longer than its timeout of {timeout} seconds")
    return running.result()


def _discard(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
