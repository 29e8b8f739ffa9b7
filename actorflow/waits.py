"""What a workflow's call waits on, one small class per kind: a step's outcome, an event,
a timer, a condition, a query.

Each call is opened by its instance, its *owner* (which gives it its position in the
journal and a future on the instance's loop) and then, live, *armed*: a step starts
running, an event wait takes an event from the mailbox or waits there, a condition is
checked at each change of state, a query starts being run, and a wait with a deadline
sets a timer. *Disarming* undoes that once the call has its outcome or is cancelled.
Its ``kind`` is what records and ``status()`` store and show; what a kind does is here,
not in ``kind == ...`` branches elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from actorflow import codec
from actorflow.errors import ActorflowError, EventCancelled, EventFailed, StepFailed, WaitTimeout
from actorflow.events import lookup_name
from actorflow.log import logger as _log
from actorflow.records import ErrorInfo, Outcome, WaitSpec
from actorflow.steps import Retry, error_info

if TYPE_CHECKING:
    from actorflow.actor import Actor
    from actorflow.queries import QueryWatch
    from actorflow.timers import Timer

_ANY = codec.decoder(Any)


class Call:
    """A call the workflow made that waits for its outcome (see the subclasses).

    A call is its future's done callback: one that the workflow cancels before its
    outcome was decided leaves its owner (no ``functools.partial`` per call, so that a
    parked instance holds fewer objects).
    """

    __slots__ = ("bound", "decoder", "future", "name", "owner", "seq")

    kind: ClassVar[str]
    """As stored in records and shown by ``status()``."""
    fulfilled: ClassVar[str] = "value"
    """How a trace says it ended with an outcome of its own (no event, no error)."""

    def __init__(
        self,
        owner: Actor,
        seq: int,
        name: str,
        future: asyncio.Future[Any],
        decoder: msgspec.msgpack.Decoder[Any] | None = None,
    ) -> None:
        self.owner = owner
        self.seq = seq
        self.name = name
        self.future = future
        self.decoder = decoder  # of its stored value (a step's or query's return type)
        self.bound = False  # its outcome is decided and being written

    @property
    def parks(self) -> bool:
        """Whether its instance, waiting on it alone, can leave memory and be replayed
        to this same point later."""
        return True

    def __call__(self, future: asyncio.Future[Any]) -> None:
        """Its future is done: if the workflow cancelled it undecided, it leaves its owner."""
        if future.cancelled() and not self.bound:
            self.owner.call_cancelled(self)

    def arm(self) -> None:
        """Take effect: the workflow made this call live (not on replay)."""

    def disarm(self) -> None:
        """Stop taking effect: the call got its outcome, was cancelled, or its owner
        stops."""

    def decide(self, **fields: Any) -> None:
        """Its outcome (an :class:`~actorflow.records.Outcome` with ``fields``) is decided:
        the owner writes it, and the workflow sees it once committed."""
        owner = self.owner
        owner.bind(self, owner.outcome(self, **fields))

    def describe(self) -> WaitSpec:
        """The call as its instance's ``waiting`` list stores it."""
        return WaitSpec(self.kind, self.name, None, None)

    def result(self, outcome: Outcome) -> Any:
        """What the workflow's ``await`` of the call returns for ``outcome``, or raises."""
        error = outcome.error
        if error is not None:
            if error.type == "WaitTimeout":
                raise WaitTimeout(error.message)
            raise self.failure(error)
        return self._value(outcome)

    def failure(self, error: ErrorInfo) -> Exception:
        """The exception a stored ``error`` outcome raises in the workflow."""
        return ActorflowError(f"{self.kind} {self.name!r} failed: {error.type}: {error.message}")

    def _value(self, outcome: Outcome) -> Any:
        if outcome.value is None:
            return None
        return (self.decoder or _ANY).decode(outcome.value)


class Step(Call):
    """``ctx.step``: a side effect run once, on the host loop, by the runtime."""

    __slots__ = ("spec",)
    kind = "step"
    spec: tuple[Callable[..., Any], tuple[Any, ...], Retry | None, float | None]
    """What running it needs, set by the context once opened: the function, its
    arguments, the retry policy, the timeout of each attempt."""

    @property
    def parks(self) -> bool:
        """A step runs: its instance stays."""
        return False

    def arm(self) -> None:
        """Start running it."""
        self.owner.services.run_step(self.owner, self)

    def failure(self, error: ErrorInfo) -> Exception:
        """:class:`StepFailed`."""
        return StepFailed(self.name, error.type, error.message)


class Wait(Call):
    """A pause: something that comes from outside the workflow, with an optional
    deadline (absolute, by the runtime's clock) after which it times out."""

    __slots__ = ("deadline", "timer")

    def __init__(
        self,
        owner: Actor,
        seq: int,
        name: str,
        future: asyncio.Future[Any],
        decoder: msgspec.msgpack.Decoder[Any] | None = None,
    ) -> None:
        super().__init__(owner, seq, name, future, decoder)
        self.deadline: float | None = None
        self.timer: Timer | None = None

    def arm(self) -> None:
        """Trace it, set its deadline's timer, then start waiting."""
        services = self.owner.services
        if services.tracing is not None:
            services.tracing.wait_started(self.owner.id, self)
        if self.deadline is not None:
            self.timer = services.timers.schedule(self.deadline, self.expire)
        self._wait()

    def _wait(self) -> None:
        """Start waiting (the kind's own part of :meth:`arm`)."""

    def disarm(self) -> None:
        """Cancel its deadline's timer."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def expire(self) -> None:
        """Its deadline passed: it times out (:class:`WaitTimeout`)."""
        self.timer = None
        what = f"{self.kind} {self.name!r}"
        _log.info("wait.timeout", workflow_id=self.owner.id, kind=self.kind, name=self.name)
        self.decide(error=error_info(WaitTimeout(f"timed out waiting for {what}")))

    def describe(self) -> WaitSpec:
        """Its kind, name and deadline."""
        return WaitSpec(self.kind, self.name, None, self.deadline)


class EventWait(Wait):
    """``ctx.wait_event``: takes an event of its name (or its token's) from the mailbox."""

    __slots__ = ("token",)
    kind = "event"

    def __init__(
        self,
        owner: Actor,
        seq: int,
        name: str,
        future: asyncio.Future[Any],
        decoder: msgspec.msgpack.Decoder[Any] | None = None,
    ) -> None:
        super().__init__(owner, seq, name, future, decoder)
        self.token: str | None = None  # waits on this token's event, not on its name

    def _wait(self) -> None:
        event = self.owner.mailbox.take(self)
        if event is not None:
            self.decide(event=event.id)

    def disarm(self) -> None:
        """Cancel its timer; leave the mailbox."""
        timer = self.timer  # not super(): this is on every event's path
        if timer is not None:
            timer.cancel()
            self.timer = None
        self.owner.mailbox.remove(self)

    def describe(self) -> WaitSpec:
        """Its name, token and deadline."""
        return WaitSpec(self.kind, self.name, self.token, self.deadline)

    def result(self, outcome: Outcome) -> Any:
        """The payload of the event it took, or :class:`EventFailed`,
        :class:`EventCancelled`; :class:`WaitTimeout` if it timed out."""
        if outcome.event is None:  # timed out (an outcome has an event or an error)
            return super().result(outcome)
        event = self.owner.event(outcome.event)
        if event.error is not None:
            raise EventFailed(event.name, event.error)
        if event.cancelled:
            raise EventCancelled(event.name)
        definition = lookup_name(event.name)
        if definition is None:
            return _ANY.decode(event.payload) if event.payload else None
        return definition.decode(event.payload)


class TimerWait(Wait):
    """``ctx.sleep`` and ``ctx.sleep_until``: its deadline passing is its outcome."""

    __slots__ = ()
    kind = "timer"
    fulfilled = "fired"

    def expire(self) -> None:
        """It fires."""
        self.timer = None
        self.decide()

    def describe(self) -> WaitSpec:
        """Its deadline (a timer has no name to show)."""
        return WaitSpec(self.kind, None, None, self.deadline)


class ConditionWait(Wait):
    """``ctx.wait_until``: met once its predicate over the state is true, checked by its
    instance after every change, never by polling."""

    __slots__ = ("predicate",)
    kind = "condition"
    fulfilled = "met"
    predicate: Callable[[], object]
    """Set by the context once opened."""

    def _wait(self) -> None:
        self.owner.conditions[self.seq] = self

    def disarm(self) -> None:
        """Cancel its timer; no longer checked."""
        super().disarm()
        self.owner.conditions.pop(self.seq, None)

    def check(self) -> None:
        """Check the predicate: met if true; an error it raises is the wait's outcome."""
        try:
            met = bool(self.predicate())
        except Exception as exc:
            self.decide(error=error_info(exc))
            return
        if met:
            self.decide()


class QueryWait(Wait):
    """``ctx.wait_for``: a query over outside data, run by the runtime (a
    :class:`~actorflow.queries.QueryWatch`) until it returns a truthy value."""

    __slots__ = ("spec", "watch")
    kind = "query"

    def __init__(
        self,
        owner: Actor,
        seq: int,
        name: str,
        future: asyncio.Future[Any],
        decoder: msgspec.msgpack.Decoder[Any] | None = None,
    ) -> None:
        super().__init__(owner, seq, name, future, decoder)
        # Set by the context once opened (``None`` if making it failed): the query, its
        # arguments, the topics that re-run it, the period that does.
        self.spec: (
            tuple[Callable[..., Any], tuple[Any, ...], tuple[str, ...], float | None] | None
        ) = None
        self.watch: QueryWatch | None = None  # running it, while armed

    @property
    def parks(self) -> bool:
        """Unless it polls (``every=``: a timer in memory re-runs it) or its query runs
        now (its value would be lost)."""
        if self.watch is not None and self.watch.running:
            return False
        return self.spec is None or self.spec[3] is None

    def _wait(self) -> None:
        self.owner.services.run_query(self.owner, self)

    def disarm(self) -> None:
        """Cancel its timer; stop running the query."""
        super().disarm()
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None

    def describe(self) -> WaitSpec:
        """Its name, deadline, topics, and whether it polls."""
        if self.spec is None:
            return WaitSpec(self.kind, self.name, None, self.deadline)
        _, _, topics, every = self.spec
        return WaitSpec(self.kind, self.name, None, self.deadline, topics, every is not None)
