"""The side effects instances ask for, run outside their code: steps and ``wait_for`` queries.

A step runs its attempts one after another (retry policy, timeouts, pauses by the
runtime's clock) and hands its outcome to the writer; a query runs when its wait starts,
again when a topic it listens on is notified, and every ``every=``. Nothing here applies
an outcome: an instance sees it once the writer has committed it.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from actorflow import codec
from actorflow.actor import Phase
from actorflow.errors import StoreError
from actorflow.log import logger as _log
from actorflow.loop import host_loop
from actorflow.queries import QueryWatch
from actorflow.records import AttemptFailed
from actorflow.steps import NO_RETRY, attempt, error_info

if TYPE_CHECKING:
    from actorflow.actor import Actor
    from actorflow.clock import Clock
    from actorflow.host.directory import Directory
    from actorflow.host.writer import GroupWriter
    from actorflow.timers import TimerWheel
    from actorflow.tracing import Tracing
    from actorflow.waits import QueryWait, Step

STEP_GRACE = 1.0  # seconds a closing runtime gives steps in flight


class _State(enum.Enum):
    OPEN = "open"  # steps and queries start
    CLOSING = "closing"  # none starts; the running ones are being settled
    CLOSED = "closed"  # settled


class Executor:
    """Runs the steps and queries of one runtime's instances, and its background work.

    :meth:`run_step` and :meth:`run_query` start work until :meth:`close`; from then on
    nothing starts, and a step with no stored outcome runs again at the next open.
    :meth:`settle` lets the steps running finish within :data:`STEP_GRACE` and stops the
    queries. A step's outcome is handed to the writer unless its instance has finished
    and left memory since.
    """

    def __init__(
        self,
        writer: GroupWriter,
        clock: Clock,
        timers: TimerWheel,
        directory: Directory,
        tracing: Tracing | None = None,
    ) -> None:
        self._writer = writer
        self._clock = clock
        self._timers = timers
        self._directory = directory
        self._tracing = tracing  # None unless Runtime(tracing=...): the hooks check only that
        self._state = _State.OPEN
        self._work: set[asyncio.Task[Any]] = set()
        self._steps: dict[asyncio.Task[None], tuple[Actor, Step]] = {}  # running, by task
        self._pauses: set[asyncio.Future[None]] = set()  # steps' waits between attempts
        self._topics: dict[str, set[QueryWatch]] = {}  # the queries waiting, by topic
        self._query_runs: set[asyncio.Task[None]] = set()
        self._busy = 0  # steps running an attempt now

    @property
    def idle(self) -> bool:
        """Whether no step attempt and no query runs now (a step that waits between
        attempts is idle: a clock decides when it goes on)."""
        return self._busy == 0 and not self._query_runs

    @property
    def running_steps(self) -> int:
        """How many steps are in progress: in an attempt, or waiting for the next."""
        return len(self._steps)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as background work of the runtime; :meth:`settle` waits for it
        within the grace, as for a step, then cancels it."""
        task = host_loop().create_task(coro)
        self._work.add(task)
        task.add_done_callback(self._work.discard)
        return task

    # -- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        """Start nothing from now on: a step or query asked for later runs at the next open."""
        if self._state is _State.OPEN:
            self._state = _State.CLOSING

    async def settle(self) -> None:
        """Close, then let the steps running finish within :data:`STEP_GRACE` (their
        outcomes are handed to the writer, which should still be open) and abandon,
        naming them in the log, those that do not: they are cancelled and their outcomes
        never handed over. Then stop the queries running (they only read: each wait runs
        its query again at the next open)."""
        self.close()
        for pause in self._pauses:  # between attempts: no next attempt starts now
            if not pause.done():
                pause.set_result(None)
        if self._work:
            _, pending = await asyncio.wait(self._work, timeout=STEP_GRACE)
            for task in pending:
                step = self._steps.get(task)
                if step is not None:
                    actor, call = step
                    _log.warning(
                        "step.abandoned", workflow_id=actor.id, step=call.name, seq=call.seq,
                        grace=STEP_GRACE,
                    )  # fmt: skip
                task.cancel()  # its result, should it come, is never stored
            if pending:
                # A cancelled step stops at once, unless its code swallows the cancellation:
                # that one is left behind (logged above) rather than holding the close forever.
                await asyncio.wait(pending, timeout=STEP_GRACE)
        if self._query_runs:
            runs = list(self._query_runs)
            for run in runs:
                run.cancel()
            await asyncio.wait(runs)
        self._state = _State.CLOSED

    def abort(self) -> Awaitable[Any]:
        """Cancel every step, query and background task now, with no grace, as a crash
        would stop them; the awaitable returned is done once they have stopped."""
        self._state = _State.CLOSED
        tasks = [*self._work, *self._query_runs]
        for task in tasks:
            task.cancel()
        return asyncio.gather(*tasks, return_exceptions=True)

    # -- steps -----------------------------------------------------------------------
    def run_step(self, actor: Actor, call: Step) -> None:
        """Run step ``call`` of ``actor`` in the background, then hand its outcome to
        the writer (nothing once closing: it runs at the next open)."""
        if self._state is not _State.OPEN:
            return
        running = self._step(actor, call)
        if self._tracing is not None:
            running = self._tracing.step(actor, call, running)
        task = self.spawn(running)
        self._steps[task] = (actor, call)
        task.add_done_callback(self._steps.pop)

    async def _step(self, actor: Actor, call: Step) -> None:
        """Run a step's attempts one after another, then write its outcome.

        Attempts never overlap (``attempt`` waits for a timed-out thread). None starts
        once the executor is closing or the instance is cancelled; the last failure is
        then its outcome (cancelled) or nothing is written (closing: it runs again at the
        next open, counting the attempts already failed).
        """
        fn, args, retry, timeout = call.spec
        # A step's side effects may use what the workflow recorded before it (a token,
        # a uuid): they must be durable before the step runs.
        barrier = self._writer.barrier()
        if barrier is not None:
            try:
                await barrier
            except StoreError:
                return
        if self._state is not _State.OPEN:
            return
        policy = retry or NO_RETRY
        failed = actor.snapshot.attempts.get(call.seq, 0)
        while True:
            value, error = await self._attempt(fn, args, timeout, call.name)
            if error is None:
                outcome = actor.outcome(call, value=value)
                _log.info("step.completed", workflow_id=actor.id, step=call.name)
                break
            failed += 1
            if not policy.should_retry(failed, error) or _abandoned(actor, call):
                outcome = actor.outcome(call, error=error_info(error))
                _log.info("step.failed", workflow_id=actor.id, step=call.name, error=repr(error))
                break
            if actor.phase is not Phase.LIVE:
                return  # frozen or finished: its replacement runs the step again
            delay = policy.delay(failed)
            _log.info(
                "step.retry", workflow_id=actor.id, step=call.name, attempt=failed,
                delay=delay, error=repr(error),
            )  # fmt: skip
            self._writer.append(
                [AttemptFailed(actor.id, call.seq, failed, error_info(error), self._clock.now())]
            )
            if self._tracing is not None:
                self._tracing.attempt_failed(failed, error)
            await self._pause(delay, actor, call)
            if self._state is not _State.OPEN:
                return  # the next attempt runs at the next open
            if _abandoned(actor, call):  # cancelled meanwhile: no attempt starts
                outcome = actor.outcome(call, error=error_info(error))
                _log.info("step.failed", workflow_id=actor.id, step=call.name, error=repr(error))
                break
        if self._tracing is not None:
            self._tracing.step_ended(failed, outcome)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            return  # abandoned at close: never stored
        # A step is not interrupted by its instance ending (cancelled while it ran): its
        # result is still stored, beside the instance's end, while that is in memory.
        if actor.phase in (Phase.LIVE, Phase.FINISHING) or actor.id in self._directory.finished:
            self._writer.append([outcome])

    async def _attempt(
        self, fn: Any, args: tuple[Any, ...], timeout: float | None, name: str
    ) -> tuple[bytes | None, BaseException | None]:
        """One attempt: its encoded result, or the error it failed with. A
        ``CancelledError`` of the step's own code is a failure; the executor cancelling
        this task (an abandoned step, at close) is not, and propagates."""
        self._busy += 1
        try:
            result = await attempt(fn, args, timeout)
            return codec.encode(result, f"the result of step {name!r}"), None
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return None, exc
        except Exception as exc:
            return None, exc
        finally:
            self._busy -= 1

    async def _pause(self, delay: float, actor: Actor, call: Step) -> None:
        """Wait ``delay`` seconds between attempts (by the runtime's clock); closing, or a
        cancel of the instance that stops the workflow awaiting the step, ends it early."""
        pause = self._sleep(delay)

        def cancelled(_: object) -> None:
            if _abandoned(actor, call) and not pause.done():
                pause.set_result(None)

        self._pauses.add(pause)
        call.future.add_done_callback(cancelled)
        try:
            await pause
        finally:
            self._pauses.discard(pause)
            call.future.remove_done_callback(cancelled)

    def _sleep(self, delay: float) -> asyncio.Future[None]:
        future: asyncio.Future[None] = host_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self._timers.schedule(self._clock.now() + delay, wake)
        future.add_done_callback(lambda _: timer.cancel())
        return future

    # -- queries ---------------------------------------------------------------------
    def run_query(self, actor: Actor, call: QueryWait) -> None:
        """Start query ``call`` of ``actor``: it runs now, again on :meth:`notify` of one
        of its topics and every ``every=``, until its wait ends (``call.watch.cancel()``).
        Nothing once closing: the wait runs its query again at the next open."""
        if self._state is not _State.OPEN:
            return
        call.watch = QueryWatch(actor, call, self._topics, self._query_runs)
        call.watch.trigger()

    async def notify(self, topics: Iterable[str]) -> None:
        """Run again the queries waiting on ``topics`` (a synchronous one here, at once);
        return after they ran."""
        runs = [
            run
            for topic in topics
            for watch in list(self._topics.get(topic, ()))
            if (run := watch.run_now()) is not None
        ]
        if runs:
            await asyncio.wait(runs)


def _abandoned(actor: Actor, call: Step) -> bool:
    """Whether the instance was cancelled and no longer awaits step ``call``: then no
    new attempt of it starts (a cleanup step started after the cancel is awaited, and
    retries as usual)."""
    return actor.snapshot.cancel_requested and call.future.cancelled()
