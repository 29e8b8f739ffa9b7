"""A deterministic event loop for the code of one workflow instance.

Workflow code runs on its own tiny loop, stepped by its actor: ``run()`` executes
ready callbacks until none is left, then returns. Nothing else schedules work on
it, so the order in which the workflow's tasks (``asyncio.gather``, ``ctx.first``)
wake up depends only on the order in which outcomes are delivered; replay delivers
them in log order, so a workflow makes the same calls in the same order every
time. Side effects (steps, queries) run on the host loop, never here.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from actorflow.errors import ActorflowError
from actorflow.log import logger as _log

T = TypeVar("T")

_get_running_loop = asyncio.events._get_running_loop
_set_running_loop = asyncio.events._set_running_loop


class InstanceLoop(asyncio.AbstractEventLoop):
    """The loop a workflow's tasks and futures belong to; see the module docstring."""

    def __init__(self, name: str) -> None:
        # A list made when a callback is queued, dropped once run: a parked instance keeps
        # no list (one object less for every pass of the garbage collector over it).
        self._ready: list[asyncio.Handle] | None = None
        self._running = False
        self._next = 0  # while running: the index in _ready of the next callback
        self._name = name
        self._outer: asyncio.AbstractEventLoop | None = None

    # -- what Futures and Tasks need ---------------------------------------------------
    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        """Queue ``callback`` to run at the next ``run()``."""
        handle = asyncio.Handle(callback, args, self, context)
        ready = self._ready
        if ready is None:
            self._ready = [handle]
        else:
            ready.append(handle)
        return handle

    def create_future(self) -> asyncio.Future[Any]:
        """A future bound to this loop."""
        return asyncio.Future(loop=self)

    def create_task(  # type: ignore[override]
        self,
        coro: Coroutine[Any, Any, T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        """A task bound to this loop (``asyncio.gather`` and ``ensure_future`` land here)."""
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return False

    def time(self) -> float:
        raise ActorflowError(
            f"workflow {self._name!r}: workflow code has no loop clock; use ctx.now()"
        )

    def call_later(self, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:  # type: ignore[override]
        raise ActorflowError(
            f"workflow {self._name!r}: asyncio.sleep and asyncio timeouts are not durable in "
            "a workflow; use ctx.sleep(...) or the timeout= of a ctx wait"
        )

    call_at = call_later  # type: ignore[assignment]

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        _log.error(
            "workflow.callback_error", workflow_id=self._name, message=context.get("message")
        )

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.call_exception_handler(context)

    # -- driving -----------------------------------------------------------------------
    def run(self) -> None:
        """Run ready callbacks until there are none; re-entrant calls return at once."""
        ready = self._ready
        if self._running or ready is None:
            return
        self._running = True
        self._outer = outer = _get_running_loop()
        _set_running_loop(self)
        index = 0
        try:
            while index < len(ready):  # callbacks queued meanwhile are appended: FIFO
                handle = ready[index]
                index += 1
                self._next = index
                if not handle._cancelled:
                    handle._run()
        finally:
            if index < len(ready):  # SystemExit or KeyboardInterrupt: keep the rest queued
                del ready[:index]
            elif self._ready is ready:
                self._ready = None
            _set_running_loop(outer)
            self._running = False

    @property
    def quiet(self) -> bool:
        """Whether no callback is queued but the one running now (if any)."""
        ready = self._ready
        if ready is None:
            return True
        return len(ready) <= self._next if self._running else not ready

    @property
    def outer(self) -> asyncio.AbstractEventLoop | None:
        """The host loop this loop is being run from (while it runs)."""
        return self._outer

    def drop(self) -> None:
        """Forget every queued callback: the instance is frozen and will not run again."""
        if self._ready is not None:
            self._ready.clear()  # in place: a run() under way stops at once


def host_loop() -> asyncio.AbstractEventLoop:
    """The real running loop, also when called from workflow code on an instance loop."""
    loop = asyncio.get_running_loop()
    if isinstance(loop, InstanceLoop) and loop.outer is not None:
        return loop.outer
    return loop
