"""``ctx.wait_for``: re-running a query over outside data until it returns a truthy value."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from actorflow import codec
from actorflow.log import logger as _log
from actorflow.loop import host_loop
from actorflow.steps import error_info

if TYPE_CHECKING:
    from actorflow.actor import Actor
    from actorflow.timers import Timer
    from actorflow.waits import QueryWait


class QueryWatch:
    """Runs one waiting query: at the start, when a topic is notified, every ``every``.

    Triggers that arrive while the query runs make it run once more afterwards, so
    no notification is missed and none piles up.
    """

    __slots__ = (
        "_again", "_args", "_every", "_fn", "_running", "_stopped", "_timer", "_topics",
        "actor", "call", "index", "runs",
    )  # fmt: skip

    def __init__(
        self,
        actor: Actor,
        call: QueryWait,
        index: dict[str, set[QueryWatch]],
        runs: set[asyncio.Task[None]],
    ) -> None:
        assert call.spec is not None  # set when the wait was made, before it is armed
        fn, args, topics, every = call.spec
        self.actor = actor
        self.call = call
        self.index = index
        self.runs = runs  # every run in progress, whatever triggered it (see Runtime.idle)
        self._fn: Callable[..., Any] = fn
        self._args: tuple[Any, ...] = args
        self._topics: tuple[str, ...] = topics
        self._every: float | None = every
        self._running: asyncio.Task[None] | None = None
        self._again = False
        self._stopped = False
        self._timer: Timer | None = None
        for topic in topics:
            index.setdefault(topic, set()).add(self)

    def trigger(self) -> asyncio.Task[None] | None:
        """Run the query now, or once more after the run in progress."""
        if self._stopped:
            return None
        if self._running is not None:
            self._again = True
            return self._running
        return self._start(None)

    def run_now(self) -> asyncio.Task[None] | None:
        """Like :meth:`trigger`, but a synchronous query runs here, without a task;
        for callers on the host loop (``rt.notify``)."""
        if self._stopped or self._running is not None:
            return self.trigger()
        try:
            value = self._fn(*self._args)
        except Exception as exc:
            self._failed(exc)
        else:
            if inspect.isawaitable(value):
                return self._start(value)
            self._conclude(value)
        self._rearm()
        return None

    def _start(self, started: Awaitable[Any] | None) -> asyncio.Task[None]:
        self._running = run = host_loop().create_task(self._run(started))
        self.runs.add(run)
        run.add_done_callback(self.runs.discard)
        return run

    @property
    def running(self) -> bool:
        """Whether a run of the query is under way (or about to start)."""
        return self._running is not None

    def cancel(self) -> None:
        """Stop watching: the wait got its outcome or was cancelled."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        for topic in self._topics:
            watchers = self.index.get(topic)
            if watchers is not None:
                watchers.discard(self)
                if not watchers:
                    del self.index[topic]

    async def _run(self, started: Awaitable[Any] | None = None) -> None:
        # ``started``: the awaitable a first run, begun by run_now, returned.
        try:
            while not self._stopped:
                self._again = False
                await self._evaluate(started)
                started = None
                if not self._again:
                    break
        finally:
            self._running = None
        self._rearm()

    def _rearm(self) -> None:
        if not self._stopped and self._every is not None:
            services = self.actor.services
            if self._timer is not None:
                self._timer.cancel()
            self._timer = services.timers.schedule(services.clock.now() + self._every, self.trigger)

    async def _evaluate(self, started: Awaitable[Any] | None) -> None:
        try:
            value = self._fn(*self._args) if started is None else started
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            self._failed(exc)
            return
        self._conclude(value)

    def _failed(self, exc: Exception) -> None:
        _log.warning(
            "query.failed", workflow_id=self.actor.id, query=self.call.name, error=repr(exc)
        )

    def _conclude(self, value: Any) -> None:
        call = self.call
        if self._stopped or not value:
            return
        try:
            outcome = self.actor.outcome(call, value=codec.encode(value, f"query {call.name!r}"))
        except TypeError as exc:
            outcome = self.actor.outcome(call, error=error_info(exc))
        self.actor.bind(call, outcome)
