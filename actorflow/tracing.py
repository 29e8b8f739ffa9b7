"""OpenTelemetry spans for one runtime: ``Runtime(..., tracing=True)``.

Spans (names, then what they carry; never a payload, a token or an error's text):

- ``workflow.run <workflow>``: one per run of an instance in this process, from when it
  starts or resumes here to when it finishes or the runtime closes. A root span (a run
  lasts as long as it waits) linked to the span that called ``rt.start``, if any.
  ``actorflow.resumed`` says whether it resumed an instance stored by an earlier
  runtime; ``actorflow.status`` how it ended (``completed``, ``failed``,
  ``cancelled``, or ``suspended`` when the runtime closed first); ERROR when failed.
- ``step <name>``: a child of the run, one per step that runs here, covering all its
  attempts. ``actorflow.attempt`` is the number of the last attempt (counting those
  failed before a restart); each failed attempt that is retried adds an
  ``attempt.failed`` event; a final failure sets ``error.type`` and ERROR.
- ``wait <kind> <name>``: a child of the run, one per wait the workflow parks on here
  (``event``, ``condition``, ``query``; a sleep is ``wait timer``).
  ``actorflow.wait.ended`` says how it ended: ``event``, ``timeout``, ``fired``,
  ``met``, ``value``, ``error``, ``cancelled`` or ``closed``. A wait that takes an
  event links to that event's ``send`` span, and so does its run.
- ``send <event>``: made by ``rt.send``, ``rt.resolve`` and ``rt.reject`` in the
  caller's current span, ending once the event is durable; linked to the run of the
  instance it is sent to. ERROR (with ``error.type``) when the send is refused.

Links from a send to the wait that consumes it are kept in memory: they are made when
the event is consumed by the runtime that accepted it, not after a restart, and not
for requests from other processes (the CLI's inbox), which have no send span.

OpenTelemetry is imported only when tracing is on: the default install has none.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from actorflow.errors import ActorflowError

if TYPE_CHECKING:
    from opentelemetry.trace import Span, SpanContext, Tracer

    from actorflow.actor import Actor
    from actorflow.records import Outcome
    from actorflow.waits import Call, Step, Wait

T = TypeVar("T")

INSTRUMENTATION = "actorflow"


class TracerProvider(Protocol):
    """What ``tracing=`` accepts besides ``True``: an OpenTelemetry ``TracerProvider``."""

    def get_tracer(
        self, instrumenting_module_name: str, instrumenting_library_version: str | None = ...
    ) -> Any:
        """A tracer for the named instrumentation."""


# The send span of the ``rt.send`` running in this context, for the actor to note which
# event it sent (a span made by the app is not one to link to).
_sending: contextvars.ContextVar[Span | None] = contextvars.ContextVar(
    "actorflow_sending", default=None
)


MAX_KEPT_SENDS = 10_000
"""How many unloaded instances' unconsumed sends are remembered for their next run."""


@dataclass(slots=True, eq=False)
class _Run:
    """The spans of one instance's run in this process."""

    span: Span
    waits: dict[int, Span] = field(default_factory=dict)  # by call sequence number
    sends: dict[int, SpanContext] = field(default_factory=dict)  # by event id, unconsumed


def tracer_for(tracing: bool | TracerProvider) -> Tracing | None:
    """The runtime's tracing for its ``tracing=`` argument (``None`` when off).

    ``True`` uses the global tracer provider the application configured; a
    ``TracerProvider`` is used as given. Raises :class:`ActorflowError` naming the
    extra to install when OpenTelemetry is missing.
    """
    if tracing is False or tracing is None:
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        raise ActorflowError(
            "tracing=True needs OpenTelemetry, which is not installed: "
            "pip install 'actorflow[otel]'"
        ) from None
    from actorflow import __version__

    if tracing is True:
        return Tracing(trace.get_tracer(INSTRUMENTATION, __version__))
    if not callable(getattr(tracing, "get_tracer", None)):
        raise TypeError(
            f"tracing= takes True, False or an OpenTelemetry TracerProvider, "
            f"got {type(tracing).__qualname__}"
        )
    return Tracing(tracing.get_tracer(INSTRUMENTATION, __version__))


class Tracing:
    """The spans of one runtime; the runtime and its actors call it only when tracing
    is on. See the module docstring for the spans and their attributes."""

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry import context, trace

        self._tracer = tracer
        self._trace = trace
        self._context = context
        self._runs: dict[str, _Run] = {}
        self._starters: dict[str, SpanContext] = {}  # by instance ID, until its run starts
        # Sends to instances not loaded, by instance ID then event id, until a run of it
        # starts here (bounded: the oldest are forgotten first).
        self._sends: dict[str, dict[int, SpanContext]] = {}

    # -- runs --------------------------------------------------------------------------
    def starting(self, instance_id: str) -> None:
        """``rt.start`` is about to store ``instance_id``: link its run to the caller."""
        caller = self._trace.get_current_span().get_span_context()
        if caller.is_valid:
            self._starters[instance_id] = caller

    def run_started(self, instance_id: str, workflow: str, *, resumed: bool) -> None:
        """Instance ``instance_id`` starts (or resumes) running in this process."""
        if instance_id in self._runs:
            return  # replayed in place after a failed write: the same run goes on
        starter = self._starters.pop(instance_id, None)
        links = [self._trace.Link(starter)] if starter is not None else None
        span = self._tracer.start_span(
            f"workflow.run {workflow}",
            context=self._context.Context(),  # a root: not a child of whoever opened
            kind=self._trace.SpanKind.INTERNAL,
            attributes={
                "actorflow.workflow_id": instance_id,
                "actorflow.workflow": workflow,
                "actorflow.resumed": resumed,
            },
            links=links,
        )
        self._runs[instance_id] = _Run(span, sends=self._sends.pop(instance_id, {}))

    def run_suspended(self, instance_id: str) -> None:
        """Instance ``instance_id`` was unloaded (passivated): its run in this process
        ends ``suspended``; the sends it has not consumed wait for its next run."""
        run = self._runs.pop(instance_id, None)
        if run is None:
            return
        self._end_waits(run, "unloaded")
        if run.sends:
            self._keep_sends(instance_id, run.sends)
        run.span.set_attribute("actorflow.status", "suspended")
        run.span.end()

    def _keep_sends(self, instance_id: str, sends: dict[int, SpanContext]) -> None:
        self._sends[instance_id] = sends
        while len(self._sends) > MAX_KEPT_SENDS:
            del self._sends[next(iter(self._sends))]

    def run_ended(self, instance_id: str, status: str, error_type: str | None) -> None:
        """Instance ``instance_id`` finished with ``status``."""
        run = self._runs.pop(instance_id, None)
        if run is None:
            return
        self._end_waits(run, "cancelled")
        run.span.set_attribute("actorflow.status", status)
        if error_type is not None:
            run.span.set_attribute("error.type", error_type)
            run.span.set_status(self._trace.StatusCode.ERROR, error_type)
        run.span.end()

    def close(self) -> None:
        """The runtime closed: end every open span (the instances are suspended)."""
        runs, self._runs = self._runs, {}
        for run in runs.values():
            self._end_waits(run, "closed")
            run.span.set_attribute("actorflow.status", "suspended")
            run.span.end()
        self._starters.clear()
        self._sends.clear()

    def _end_waits(self, run: _Run, how: str) -> None:
        for span in run.waits.values():
            span.set_attribute("actorflow.wait.ended", how)
            span.end()
        run.waits.clear()

    def _child_context(self, instance_id: str) -> Any:
        run = self._runs.get(instance_id)
        if run is None:
            return self._context.Context()
        return self._trace.set_span_in_context(run.span)

    # -- steps -------------------------------------------------------------------------
    async def step(self, actor: Actor, call: Step, running: Awaitable[T]) -> T:
        """Run a step (``running``) inside its span, current for the step's own code."""
        span = self._tracer.start_span(
            f"step {call.name}",
            context=self._child_context(actor.id),
            attributes={
                "actorflow.workflow_id": actor.id,
                "actorflow.step": call.name,
                "actorflow.seq": call.seq,
            },
        )
        with self._trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                return await running
            except asyncio.CancelledError:  # abandoned at close: it runs again at the next open
                span.set_attribute("actorflow.step.abandoned", True)
                raise

    def attempt_failed(self, attempt: int, error: BaseException) -> None:
        """Attempt number ``attempt`` of the current step failed; another follows."""
        self._trace.get_current_span().add_event(
            "attempt.failed",
            {"actorflow.attempt": attempt, "error.type": type(error).__qualname__},
        )

    def step_ended(self, failed: int, outcome: Outcome) -> None:
        """The current step ended with ``outcome`` after ``failed`` failed attempts."""
        span = self._trace.get_current_span()
        error = outcome.error
        span.set_attribute("actorflow.attempt", failed if error is not None else failed + 1)
        if error is not None:
            span.set_attribute("error.type", error.type)
            span.set_status(self._trace.StatusCode.ERROR, error.type)

    # -- waits -------------------------------------------------------------------------
    def wait_started(self, instance_id: str, call: Wait) -> None:
        """The workflow parks on wait ``call`` (live)."""
        run = self._runs.get(instance_id)
        if run is None or call.seq in run.waits:
            return
        shown = call.describe()  # a timer has no name to show
        name = f"wait {shown.kind}" if shown.name is None else f"wait {shown.kind} {shown.name}"
        attributes: dict[str, Any] = {
            "actorflow.workflow_id": instance_id,
            "actorflow.wait.kind": shown.kind,
            "actorflow.seq": call.seq,
        }
        if shown.name is not None:
            attributes["actorflow.wait.name"] = shown.name
        if shown.token is not None:
            attributes["actorflow.wait.by_token"] = True
        run.waits[call.seq] = self._tracer.start_span(
            name, context=self._trace.set_span_in_context(run.span), attributes=attributes
        )

    def wait_ended(self, instance_id: str, call: Call, outcome: Outcome | None) -> None:
        """Wait ``call`` ended with ``outcome`` (``None``: the workflow cancelled it)."""
        run = self._runs.get(instance_id)
        span = run.waits.pop(call.seq, None) if run is not None else None
        if span is None:
            return  # a step, or a wait that ended in an earlier run (replayed)
        assert run is not None
        if outcome is None or call.future.done():
            how = "cancelled"
        elif outcome.error is not None:
            how = "timeout" if outcome.error.type == "WaitTimeout" else "error"
        elif outcome.event is not None:
            how = "event"
            sent = run.sends.pop(outcome.event, None)
            if sent is not None:  # both the wait and its run name the send that fed them
                span.add_link(sent, {"actorflow.link": "sent by"})
                run.span.add_link(sent, {"actorflow.link": "consumed"})
        else:
            how = call.fulfilled
        span.set_attribute("actorflow.wait.ended", how)
        span.end()

    # -- sends -------------------------------------------------------------------------
    async def send(
        self, instance_id: str | None, event: Any, sending: Callable[[], Awaitable[T]]
    ) -> T:
        """Run a send (``sending``) inside a ``send <event>`` span."""
        # A resolve (``instance_id`` None) learns its event and instance in event_sent.
        name = event if isinstance(event, str) else getattr(event, "name", None)
        run = self._runs.get(instance_id) if isinstance(instance_id, str) else None
        links = [self._trace.Link(run.span.get_span_context())] if run is not None else None
        attributes: dict[str, Any] = {}
        if isinstance(name, str):
            attributes["actorflow.event"] = name
        if isinstance(instance_id, str):
            attributes["actorflow.workflow_id"] = instance_id
        with (
            self._tracer.start_as_current_span(
                f"send {name}" if isinstance(name, str) else "send",
                kind=self._trace.SpanKind.PRODUCER,
                attributes=attributes,
                links=links,
                record_exception=False,
                set_status_on_exception=False,
            ) as span,
            self._sending_span(span),
        ):
            try:
                return await sending()
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                span.set_status(self._trace.StatusCode.ERROR, type(exc).__qualname__)
                raise

    @contextmanager
    def _sending_span(self, span: Span) -> Iterator[None]:
        token = _sending.set(span)
        try:
            yield
        finally:
            _sending.reset(token)

    def event_sent(self, instance_id: str, event_id: int, name: str, by_token: bool) -> None:
        """Event ``event_id`` of ``instance_id`` was accepted: remember the send span
        current here (if this is a ``rt.send``), for the wait that will consume it."""
        span = _sending.get()
        if span is None:
            return
        run = self._runs.get(instance_id)
        if by_token:  # a resolve learns its event and instance only now
            span.update_name(f"send {name}")
            span.set_attributes(
                {"actorflow.event": name, "actorflow.workflow_id": instance_id,
                 "actorflow.by_token": True}
            )  # fmt: skip
            if run is not None:
                span.add_link(run.span.get_span_context())
        if run is not None:
            run.sends[event_id] = span.get_span_context()
        else:  # stored for an unloaded instance: its next run links to this send
            kept = self._sends.pop(instance_id, {})
            kept[event_id] = span.get_span_context()
            self._keep_sends(instance_id, kept)
