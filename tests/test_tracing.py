"""OpenTelemetry tracing: ``Runtime(..., tracing=provider_or_True)``.

Spans are read back from the SDK's in-memory exporter: one ``workflow.run`` per run,
with ``step`` and ``wait`` children; ``send`` spans in the caller's span, linked to the
wait that consumes the event. Tracing off emits nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import actorflow as af

Make = Callable[..., af.Runtime]


class Answer(msgspec.Struct):
    ok: bool


answer = af.Event("tr.answer", Answer)
poke = af.Event("tr.poke")


class Traced:
    """A tracer provider whose finished spans the test reads back."""

    def __init__(self, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
        self.provider = provider
        self.exporter = exporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, (name, [s.name for s in self.spans()])
        return found[0]


@pytest.fixture
def traced() -> Iterator[Traced]:
    """A provider passed to the runtime explicitly (the global one can be set only once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Traced(provider, exporter)
    provider.shutdown()


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def linked_ids(span: ReadableSpan) -> list[int]:
    return [link.context.span_id for link in span.links]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def fetch(order: str) -> str:
    return f"fetched {order}"


@af.workflow(name="tr.order")
async def order_flow(ctx: af.Context[None], order: str) -> str:
    fetched = await ctx.step(fetch, order)
    got = await ctx.wait_event(answer)
    await ctx.sleep(60)
    return f"{fetched} {got.ok}"


async def test_run_has_step_and_wait_children(
    runtime: Make, traced: Traced, clock: af.testing.ManualClock
) -> None:
    async with runtime(tracing=traced.provider) as rt:
        h = await rt.start(order_flow, "o-1", id="order-1")
        await rt.send("order-1", answer, Answer(ok=True))
        await clock.settle()
        await clock.advance(60)
        assert await h.result(timeout=5) == "fetched o-1 True"

    run = traced.one("workflow.run tr.order")
    assert run.parent is None  # a root: a run lasts as long as it waits
    assert attrs(run) == {
        "actorflow.workflow_id": "order-1",
        "actorflow.workflow": "tr.order",
        "actorflow.resumed": False,
        "actorflow.status": "completed",
    }
    assert run.status.status_code is StatusCode.UNSET
    step = traced.one(f"step {__name__}.fetch")
    event_wait = traced.one("wait event tr.answer")
    timer_wait = traced.one("wait timer")
    for child in (step, event_wait, timer_wait):
        assert parent_id(child) == span_id(run)
        assert child.context is not None and run.context is not None
        assert child.context.trace_id == run.context.trace_id
        assert attrs(child)["actorflow.workflow_id"] == "order-1"
    assert attrs(step)["actorflow.attempt"] == 1
    assert attrs(event_wait)["actorflow.wait.ended"] == "event"
    assert attrs(timer_wait)["actorflow.wait.ended"] == "fired"
    # In order: the step, then the event wait, then the timer; the run ends last.
    assert step.end_time <= event_wait.start_time  # type: ignore[operator]
    assert event_wait.end_time <= timer_wait.start_time  # type: ignore[operator]
    assert timer_wait.end_time <= run.end_time  # type: ignore[operator]


async def test_step_attempts_and_final_error(runtime: Make, traced: Traced) -> None:
    calls: list[int] = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return len(calls)

    def broken() -> None:
        raise ValueError("secret detail")

    @af.workflow(name="tr.retry")
    async def retrying(ctx: af.Context[None]) -> int:
        n = await ctx.step(flaky, retry=af.Retry(attempts=5, initial=0), name="flaky")
        await ctx.step(broken, retry=af.Retry(attempts=2, initial=0), name="broken")
        return n

    async with runtime(tracing=traced.provider) as rt:
        h = await rt.start(retrying, id="retry-1")
        with pytest.raises(af.WorkflowFailed):
            await h.result(timeout=5)

    flaky_span = traced.one("step flaky")
    assert attrs(flaky_span)["actorflow.attempt"] == 3
    assert flaky_span.status.status_code is StatusCode.UNSET
    failures = [e for e in flaky_span.events if e.name == "attempt.failed"]
    assert [dict(e.attributes or {}) for e in failures] == [
        {"actorflow.attempt": 1, "error.type": "ConnectionError"},
        {"actorflow.attempt": 2, "error.type": "ConnectionError"},
    ]
    broken_span = traced.one("step broken")
    assert attrs(broken_span)["actorflow.attempt"] == 2
    assert attrs(broken_span)["error.type"] == "ValueError"
    assert broken_span.status.status_code is StatusCode.ERROR
    run = traced.one("workflow.run tr.retry")
    assert attrs(run)["actorflow.status"] == "failed"
    assert attrs(run)["error.type"] == "StepFailed"
    assert run.status.status_code is StatusCode.ERROR
    assert {parent_id(flaky_span), parent_id(broken_span)} == {span_id(run)}
    # Error texts (which may hold anything) never reach a span.
    assert not any("secret detail" in str(s.to_json()) for s in traced.spans())


async def test_step_code_runs_inside_its_span(runtime: Make, traced: Traced) -> None:
    app_tracer = traced.provider.get_tracer("app")

    async def call_api() -> str:
        with app_tracer.start_as_current_span("http GET"):
            return "ok"

    def sync_work() -> str:
        with app_tracer.start_as_current_span("db query"):
            return "ok"

    @af.workflow(name="tr.nested")
    async def nested(ctx: af.Context[None]) -> str:
        return await ctx.step(call_api, name="api") + await ctx.step(sync_work, name="db")

    async with runtime(tracing=traced.provider) as rt:
        h = await rt.start(nested)
        assert await h.result(timeout=5) == "okok"

    assert parent_id(traced.one("http GET")) == span_id(traced.one("step api"))
    assert parent_id(traced.one("db query")) == span_id(traced.one("step db"))


@pytest.mark.parametrize("send_first", [False, True], ids=["wait-first", "send-first"])
async def test_send_in_a_request_links_to_the_consuming_wait(
    runtime: Make, traced: Traced, clock: af.testing.ManualClock, send_first: bool
) -> None:
    @af.workflow(name="tr.gate")
    async def gate(ctx: af.Context[None]) -> str:
        if send_first:
            await ctx.sleep(10)  # the event arrives before the wait: from the mailbox
        await ctx.wait_event(poke)
        return "done"

    app_tracer = traced.provider.get_tracer("app")
    async with runtime(tracing=traced.provider) as rt:
        h = await rt.start(gate, id="gate-1")
        await clock.settle()
        with app_tracer.start_as_current_span("POST /poke") as request:
            await rt.send("gate-1", poke)
        if send_first:
            await clock.advance(10)
        assert await h.result(timeout=5) == "done"

    send = traced.one("send tr.poke")
    run = traced.one("workflow.run tr.gate")
    wait = traced.one("wait event tr.poke")
    assert parent_id(send) == request.get_span_context().span_id  # the caller's span
    assert attrs(send) == {"actorflow.event": "tr.poke", "actorflow.workflow_id": "gate-1"}
    assert linked_ids(send) == [span_id(run)]  # to the workflow it is sent to
    assert linked_ids(wait) == [span_id(send)]  # the wait names the send that fed it
    assert linked_ids(run) == [span_id(send)]  # and so does the workflow's run
    assert attrs(wait)["actorflow.wait.ended"] == "event"
    if send_first:  # the event waited in the mailbox: the send had ended before the wait
        assert send.end_time <= wait.start_time  # type: ignore[operator]


async def test_each_event_links_to_its_own_send(runtime: Make, traced: Traced) -> None:
    @af.workflow(name="tr.two")
    async def two(ctx: af.Context[None]) -> list[bool]:
        return [(await ctx.wait_event(answer)).ok for _ in range(2)]

    async with runtime(tracing=traced.provider) as rt:
        h = await rt.start(two, id="two-1")
        await rt.send("two-1", answer, {"ok": True})
        await rt.send("two-1", answer, {"ok": False})
        assert await h.result(timeout=5) == [True, False]

    sends = sorted(traced.named("send tr.answer"), key=lambda s: s.start_time or 0)
    waits = sorted(traced.named("wait event tr.answer"), key=lambda s: s.start_time or 0)
    assert [linked_ids(w) for w in waits] == [[span_id(s)] for s in sends]


async def test_resolve_names_its_event_but_never_the_token(runtime: Make, traced: Traced) -> None:
    made: dict[str, str] = {}

    def publish(token: str) -> None:
        made["token"] = token

    @af.workflow(name="tr.token")
    async def by_token(ctx: af.Context[None]) -> bool:
        ref = await ctx.create_event(answer)
        await ctx.step(publish, ref.id, name="publish")
        return (await ctx.wait_event(ref)).ok

    async with runtime(tracing=traced.provider) as rt:
        h = await rt.start(by_token, id="tok-1")
        while "token" not in made:
            await asyncio.sleep(0.001)
        await rt.resolve(made["token"], {"ok": True})
        assert await h.result(timeout=5) is True

    send = traced.one("send tr.answer")
    assert attrs(send) == {
        "actorflow.event": "tr.answer",
        "actorflow.workflow_id": "tok-1",
        "actorflow.by_token": True,
    }
    assert linked_ids(send) == [span_id(traced.one("workflow.run tr.token"))]
    wait = traced.one("wait event tr.answer")
    assert linked_ids(wait) == [span_id(send)]
    assert attrs(wait)["actorflow.wait.by_token"] is True
    assert not any(made["token"] in str(s.to_json()) for s in traced.spans())


async def test_refused_send_is_an_error_span_without_the_payload(
    runtime: Make, traced: Traced
) -> None:
    async with runtime(tracing=traced.provider) as rt:
        h = await rt.start(order_flow, "o-2", id="order-2")
        with pytest.raises(af.InvalidPayload):
            await rt.send(h.id, answer, {"ok": "very-private-value"})
        with pytest.raises(af.ActorflowError):
            await rt.send("no-such-instance", answer, {"ok": True})

    refused, unknown = sorted(traced.named("send tr.answer"), key=lambda s: s.start_time or 0)
    assert attrs(refused)["error.type"] == "InvalidPayload"
    assert refused.status.status_code is StatusCode.ERROR
    assert attrs(unknown)["error.type"] == "ActorflowError"
    assert not any("very-private-value" in str(s.to_json()) for s in traced.spans())


async def test_waits_say_how_they_ended(
    runtime: Make, traced: Traced, clock: af.testing.ManualClock
) -> None:
    @af.workflow(name="tr.ends")
    async def ends(ctx: af.Context[None]) -> str:
        with contextlib.suppress(af.WaitTimeout):
            await ctx.wait_event(answer, timeout=5)
        index, _ = await ctx.first(ctx.wait_event(poke), ctx.sleep(5))
        await ctx.wait_event(answer)  # cancelled with the instance
        return str(index)

    async with runtime(tracing=traced.provider) as rt:
        h = await rt.start(ends, id="ends-1")
        await clock.advance(5)  # the first wait times out
        await clock.advance(5)  # the timer wins over the poke
        await clock.settle()
        await h.cancel()
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=5)

    ended = [
        (s.name, attrs(s)["actorflow.wait.ended"])
        for s in sorted(traced.spans(), key=lambda s: s.start_time or 0)
        if s.name.startswith("wait ")
    ]
    assert sorted(ended) == sorted(
        [
            ("wait event tr.answer", "timeout"),
            ("wait event tr.poke", "cancelled"),  # the loser of ctx.first
            ("wait timer", "fired"),
            ("wait event tr.answer", "cancelled"),
        ]
    )
    # The loser of ctx.first ends when it is cancelled, before the next wait begins.
    loser = traced.one("wait event tr.poke")
    last = max(traced.named("wait event tr.answer"), key=lambda s: s.start_time or 0)
    assert loser.end_time <= last.start_time  # type: ignore[operator]
    run = traced.one("workflow.run tr.ends")
    assert attrs(run)["actorflow.status"] == "cancelled"


async def test_a_run_resumed_after_restart_is_a_new_span(
    db: Path, traced: Traced, clock: af.testing.ManualClock
) -> None:
    async with af.Runtime(db, clock=clock, tracing=traced.provider) as rt:
        await rt.start(order_flow, "o-3", id="order-3")
        await clock.settle()

    first = traced.one("workflow.run tr.order")
    assert attrs(first)["actorflow.status"] == "suspended"
    assert attrs(first)["actorflow.resumed"] is False
    [closed_wait] = traced.named("wait event tr.answer")
    assert attrs(closed_wait)["actorflow.wait.ended"] == "closed"
    traced.exporter.clear()

    async with af.Runtime(db, clock=clock, tracing=traced.provider) as rt:
        await rt.send("order-3", answer, {"ok": True})
        await clock.settle()
        await clock.advance(60)
        assert await rt.handle("order-3").result(timeout=5) == "fetched o-3 True"

    second = traced.one("workflow.run tr.order")
    assert attrs(second)["actorflow.resumed"] is True
    assert attrs(second)["actorflow.status"] == "completed"
    # The step's result was stored by the first run: no step span now; the wait that
    # was pending at the restart is a new span of the resumed run.
    assert traced.named(f"step {__name__}.fetch") == []
    wait = traced.one("wait event tr.answer")
    assert parent_id(wait) == span_id(second)
    assert linked_ids(wait) == [span_id(traced.one("send tr.answer"))]


async def test_start_in_a_span_links_the_run_to_it(
    runtime: Make, traced: Traced, clock: af.testing.ManualClock
) -> None:
    app_tracer = traced.provider.get_tracer("app")
    async with runtime(tracing=traced.provider) as rt:
        with app_tracer.start_as_current_span("POST /orders") as request:
            h = await rt.start(order_flow, "o-4", id="order-4")
        await rt.send(h.id, answer, {"ok": True})
        await clock.settle()  # consumed (and parked on its timer) before the close

    run = traced.one("workflow.run tr.order")
    assert run.parent is None
    assert linked_ids(run) == [
        request.get_span_context().span_id,  # who started it
        span_id(traced.one("send tr.answer")),  # what it consumed
    ]


def _global_exporter() -> InMemorySpanExporter:
    """An exporter on the global provider (set once per process, whoever sets it)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def _names(spans: Sequence[ReadableSpan]) -> list[str]:
    return sorted(s.name for s in spans)


async def test_true_uses_the_global_provider_and_off_emits_nothing(
    runtime: Make, clock: af.testing.ManualClock
) -> None:
    exporter = _global_exporter()
    async with runtime() as rt:  # tracing off (the default)
        h = await rt.start(order_flow, "o-5")
        await rt.send(h.id, answer, {"ok": True})
        await clock.settle()  # parked on its timer
    assert exporter.get_finished_spans() == ()

    async with runtime(tracing=True) as rt:  # (on SQLite, it resumes the first one too)
        h = await rt.start(order_flow, "o-6", id="global-6")
        await rt.send(h.id, answer, {"ok": True})
        await clock.settle()  # parked on its timer, which the close ends
    spans = exporter.get_finished_spans()
    assert _names([s for s in spans if attrs(s).get("actorflow.workflow_id") == "global-6"]) == [
        "send tr.answer",
        f"step {__name__}.fetch",
        "wait event tr.answer",
        "wait timer",
        "workflow.run tr.order",
    ]
    exporter.shutdown()


def test_tracing_without_opentelemetry_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    with pytest.raises(af.ActorflowError, match=r"pip install 'actorflow\[otel\]'"):
        af.Runtime(tracing=True)
    af.Runtime()  # off: no OpenTelemetry needed


def test_tracing_takes_a_provider_or_a_bool() -> None:
    with pytest.raises(TypeError, match="tracing= takes True, False or an OpenTelemetry"):
        af.Runtime(tracing="yes")  # type: ignore[arg-type]
