"""``Context``: the calls a workflow makes. Each gets the next sequence number; its
outcome is read back from the journal on replay, so no side effect runs twice."""

from __future__ import annotations

import asyncio
import math
import random as _random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar, overload

from actorflow import codec
from actorflow.clock import deadline, from_datetime, seconds, to_datetime
from actorflow.errors import ContinueAsNew
from actorflow.events import Event, EventRef, new_token
from actorflow.steps import Retry, call_name
from actorflow.waits import ConditionWait, EventWait, QueryWait, Step, TimerWait, Wait

if TYPE_CHECKING:
    from actorflow.actor import Actor

S = TypeVar("S")
T = TypeVar("T")
W = TypeVar("W", bound=Wait)

_float = codec.decoder(float)
_str = codec.decoder(str)
_bytes = codec.decoder(bytes)


class Context(Generic[S]):
    """What a workflow is given: durable steps, waits, timers, state and deterministic values.

    Every method must be called from the workflow's own code (its task or tasks it
    started): the order of the calls is what replay checks against the journal.
    """

    __slots__ = ("_actor",)

    def __init__(self, actor: Actor) -> None:
        self._actor = actor

    @property
    def workflow_id(self) -> str:
        """The instance ID."""
        return self._actor.id

    @property
    def state(self) -> S:
        """The instance's state (the ``state=`` Struct), rebuilt on replay by its handlers."""
        return self._actor.state  # type: ignore[no-any-return]

    # -- steps -----------------------------------------------------------------------
    @overload
    def step(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        retry: Retry | None = None,
        timeout: float | timedelta | None = None,
        name: str | None = None,
    ) -> asyncio.Future[T]: ...
    @overload
    def step(
        self,
        fn: Callable[..., T],
        *args: Any,
        retry: Retry | None = None,
        timeout: float | timedelta | None = None,
        name: str | None = None,
    ) -> asyncio.Future[T]: ...
    def step(
        self,
        fn: Callable[..., Any],
        *args: Any,
        retry: Retry | None = None,
        timeout: float | timedelta | None = None,
        name: str | None = None,
    ) -> asyncio.Future[Any]:
        """Run ``fn(*args)`` once and store its result (or final error, raised here as
        :class:`StepFailed`); on replay the stored outcome is returned without running it.
        ``timeout`` bounds each attempt (real time; ``math.inf``: none); ``retry`` says how
        failures are retried. ``name`` defaults to ``fn``'s module and qualified name (a
        ``functools.partial``'s function's); an ``fn`` without one needs ``name=``.
        """
        step_name = name or call_name(fn, "step")
        limit = _finite(seconds(timeout, "timeout"))
        call = self._actor.open_call(Step, step_name, codec.decoder(codec.return_type(fn)))
        call.spec = (fn, args, retry, limit)
        self._actor.start_call(call)
        return call.future

    # -- waits -----------------------------------------------------------------------
    def wait_event(
        self, event: Event[T] | EventRef[T], timeout: float | timedelta | None = None
    ) -> asyncio.Future[T]:
        """Pause until ``event`` (by name, or the event of a token) is delivered to this
        instance; return its payload. An event sent earlier waits in the mailbox.
        Raises :class:`WaitTimeout`, :class:`EventFailed` or :class:`EventCancelled`."""
        if isinstance(event, EventRef):
            call = self._wait(EventWait, event.event.name, timeout)
            call.token = event.id
        elif isinstance(event, Event):
            call = self._wait(EventWait, event.name, timeout)
        else:
            raise TypeError(f"wait_event takes an af.Event or an EventRef, got {event!r}")
        self._actor.start_call(call)
        return call.future

    async def create_event(self, event: Event[T]) -> EventRef[T]:
        """Make an event ahead of time; its ``id`` is a single-use token anyone holding it
        can resolve with ``rt.resolve``. A token may be resolved before it is awaited."""
        seq, stored = self._actor.recorded_value("create_event", event.name)
        if stored is not None:
            return EventRef(_str.decode(stored), event)
        token = new_token()
        self._actor.record_value(seq, "create_event", event.name, codec.ENCODER.encode(token))
        return EventRef(token, event)

    def wait_until(
        self, predicate: Callable[[], object], timeout: float | timedelta | None = None
    ) -> asyncio.Future[None]:
        """Pause until ``predicate()`` (pure, over ``ctx.state``) is true; it is checked
        now and after every change of this instance's state, never by polling."""
        call = self._wait(ConditionWait, "condition", timeout)
        call.predicate = predicate
        self._actor.start_call(call)
        return call.future

    def wait_for(
        self,
        query: Callable[..., Awaitable[T] | T],
        *args: Any,
        on: tuple[str, ...] | list[str] | str = (),
        every: float | timedelta | None = None,
        timeout: float | timedelta | None = None,
        name: str | None = None,
    ) -> asyncio.Future[T]:
        """Pause until ``query(*args)`` returns a truthy value, and return it. The query
        runs now, whenever ``rt.notify`` names one of the ``on`` topics, and every
        ``every``; errors it raises are logged and it is tried again on the next trigger.
        ``name`` defaults to ``query``'s module and qualified name (as for ``step``)."""
        query_name = name or call_name(query, "query")
        period = _finite(seconds(every, "every"))
        call = self._wait(QueryWait, query_name, timeout)
        call.decoder = codec.decoder(codec.return_type(query))
        topics = (on,) if isinstance(on, str) else tuple(on)
        call.spec = (query, args, topics, period)
        self._actor.start_call(call)
        return call.future

    def sleep(self, delay: float | timedelta) -> asyncio.Future[None]:
        """A durable timer: resume after ``delay`` (seconds or timedelta), across restarts."""
        if delay is None:
            raise TypeError("delay must be a timedelta or a number of seconds, got None")
        return self._timer(self._deadline(seconds(delay, "delay")))

    def sleep_until(self, when: datetime) -> asyncio.Future[None]:
        """A durable timer: resume at the aware datetime ``when``."""
        return self._timer(self._deadline(None, from_datetime(when, "sleep_until(when)")))

    def _timer(self, when: tuple[int, float]) -> asyncio.Future[None]:
        call = self._actor.open_call(TimerWait, "sleep")
        call.deadline = deadline(when[1])  # none (sleep forever) for inf
        self._actor.start_call(call)
        return call.future

    def _wait(self, cls: type[W], name: str, timeout: float | timedelta | None) -> W:
        limit = seconds(timeout, "timeout")
        call = self._actor.open_call(cls, name)
        if limit is not None:
            call.deadline = deadline(self._deadline(limit)[1])  # none (forever) for inf
        return call

    def _deadline(self, delay: float | None, at: float | None = None) -> tuple[int, float]:
        seq, stored = self._actor.recorded_value("deadline", "deadline")
        if stored is not None:
            return seq, _float.decode(stored)
        when = at if at is not None else self._actor.services.clock.now() + (delay or 0.0)
        self._actor.record_value(seq, "deadline", "deadline", codec.ENCODER.encode(when))
        return seq, when

    # -- composition -----------------------------------------------------------------
    async def first(self, *waits: Awaitable[Any]) -> tuple[int, Any]:
        """Wait for the first of ``waits`` to finish; return ``(index, value)`` (or raise
        its error) and cancel the others. A cancelled event wait consumes nothing."""
        if not waits:
            raise ValueError("ctx.first() needs at least one wait")
        futures = [asyncio.ensure_future(w) for w in waits]
        try:
            await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        except GeneratorExit:
            raise  # a stopped instance being discarded: nothing left to cancel durably
        except BaseException:  # cancelled: the waits are cancelled too, then it propagates
            await _cancel_losers(futures)
            raise
        winner = await _cancel_losers(futures)
        assert winner is not None
        return winner, futures[winner].result()

    # -- long lives ------------------------------------------------------------------
    def continue_as_new(self, *args: Any) -> NoReturn:
        """End this run and start a fresh one of the same workflow on the same instance,
        with ``args`` and an empty journal (as Temporal's continue-as-new), so that a
        workflow that lives for months keeps a short history.

        The new run keeps ``ctx.state`` and the mailbox's events not yet consumed (in
        their order, including ones sent while it starts); the old run's waits and timers
        end, and its tokens are void. ``h.result()`` gives the last run's result and
        ``status().run`` counts the runs. ``args`` are checked against the workflow's
        parameters here (:class:`InvalidPayload`). Raises :class:`ContinueAsNew`, a
        ``BaseException``: call it from the workflow's own code and let it propagate.
        """
        definition = self._actor.definition
        assert definition is not None  # the code runs, so the workflow is defined here
        raise ContinueAsNew(definition.encode_args(args))

    # -- deterministic values --------------------------------------------------------
    def now(self) -> datetime:
        """The current time (aware UTC), the same on replay."""
        seq, stored = self._actor.recorded_value("now", "now")
        if stored is not None:
            return to_datetime(_float.decode(stored))
        now = self._actor.services.clock.now()
        self._actor.record_value(seq, "now", "now", codec.ENCODER.encode(now))
        return to_datetime(now)

    def random(self) -> float:
        """A random float in [0, 1), the same on replay."""
        seq, stored = self._actor.recorded_value("random", "random")
        if stored is not None:
            return float(_float.decode(stored))
        value = _random.random()
        self._actor.record_value(seq, "random", "random", codec.ENCODER.encode(value))
        return value

    def uuid4(self) -> uuid.UUID:
        """A random UUID, the same on replay."""
        seq, stored = self._actor.recorded_value("uuid4", "uuid4")
        if stored is not None:
            return uuid.UUID(bytes=_bytes.decode(stored))
        value = uuid.uuid4()
        self._actor.record_value(seq, "uuid4", "uuid4", codec.ENCODER.encode(value.bytes))
        return value

    # -- code changes ----------------------------------------------------------------
    def patched(self, patch_id: str) -> bool:
        """Whether this instance takes the new branch of a code change named ``patch_id``
        (``if ctx.patched("x"):`` the new code, ``else:`` the old code).

        On a fresh path it records a marker and returns ``True``; replaying a history that
        went past this point before the patch existed returns ``False``, so instances
        started under the old code keep the old branch and new ones take the new one. The
        marker takes no call position: histories written before the patch replay
        unchanged. One answer per run: later calls with the same ``patch_id`` repeat the
        first. Markers of patches the code no longer asks about are ignored. Retire a
        patch with :meth:`deprecate_patch` once no instance that predates it remains.
        """
        if not isinstance(patch_id, str):
            raise TypeError(f"patch_id must be a str, got {patch_id!r}")
        return self._actor.patched(patch_id)

    def deprecate_patch(self, patch_id: str) -> None:
        """Mark ``patch_id`` as retired: only its new branch remains in the code.

        Once no running instance was started before the patch was deployed (none can
        take the old branch any more), replace the ``if ctx.patched(patch_id):`` branch
        and its ``else:`` by this call and the new code. It records nothing and checks
        nothing: histories with or without the marker replay. It marks the patch as
        retired in the code; remove the call later (markers no code asks about are
        ignored on replay).
        """
        if not isinstance(patch_id, str):
            raise TypeError(f"patch_id must be a str, got {patch_id!r}")

    @property
    def history_length(self) -> int:
        """The number of entries in this run's journal so far: the calls the code has made
        in this run (each step, wait, timer and value call takes one; ``patched`` takes
        none). Deterministic: the same at the same point of the code on replay as on the
        first run, so a workflow may branch on it (e.g. to start a new run)."""
        return self._actor.journal.made


def _finite(value: float | None) -> float | None:
    """A limit in seconds, ``None`` when there is none (``math.inf``)."""
    return None if value is None or value == math.inf else value


async def _cancel_losers(futures: Sequence[asyncio.Future[Any]]) -> int | None:
    """Cancel every wait but the first finished one; return its index."""
    winner = next((i for i, f in enumerate(futures) if f.done()), None)
    losers = [f for i, f in enumerate(futures) if i != winner and not f.done()]
    for f in losers:
        f.cancel()
    if losers:
        await asyncio.wait(losers)
    return winner
