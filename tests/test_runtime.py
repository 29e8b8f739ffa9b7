"""End-to-end: starting, sending, resolving, results, status, on SQLite and in memory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import actorflow as af


class Decision(msgspec.Struct):
    approved: bool
    note: str = ""


class Order(msgspec.Struct):
    id: str
    total: float


approval = af.Event("rt.approval", Decision)
ping = af.Event("rt.ping", int)
go = af.Event("rt.go")

Make = Callable[..., af.Runtime]
runs: dict[str, int] = {}


def count(name: str) -> str:
    runs[name] = runs.get(name, 0) + 1
    return name


@af.workflow(name="rt.review")
async def review(ctx: af.Context[None], doc_id: str) -> str:
    draft = await ctx.step(count, f"draft:{doc_id}")
    d = await ctx.wait_event(approval)
    return f"{draft} {'published' if d.approved else 'rejected'} {d.note}".strip()


@af.workflow(name="rt.collect")
async def collect(ctx: af.Context[None], n: int) -> list[int]:
    return [await ctx.wait_event(ping) for _ in range(n)]


@af.workflow(name="rt.token")
async def token_flow(ctx: af.Context[None]) -> str:
    ref = await ctx.create_event(approval)
    await ctx.step(publish_token, ctx.workflow_id, ref.id)
    d = await ctx.wait_event(ref)
    return "yes" if d.approved else "no"


tokens: dict[str, str] = {}


def publish_token(wf: str, token: str) -> None:
    tokens[wf] = token


async def test_start_send_result(runtime: Make) -> None:
    async with runtime() as rt:
        h = await rt.start(review, "d1", id="r1")
        await rt.send("r1", approval, Decision(approved=True, note="ok"))
        assert await h.result(timeout=5) == "draft:d1 published ok"
        st = await h.status()
        assert st.state == "completed" and st.finished_at is not None
        [event] = st.events
        assert event.name == "rt.approval" and event.outcome == "value"
        assert event.created_at <= event.sent_at <= event.consumed_at  # type: ignore[operator]


async def test_payload_from_builtins_reaches_waiter_as_struct(runtime: Make) -> None:
    async with runtime() as rt:
        h = await rt.start(review, "d2")
        await rt.send(h.id, "rt.approval", {"approved": False})
        assert await h.result(timeout=5) == "draft:d2 rejected"


async def test_invalid_payload_raises_at_sender_and_stores_nothing(runtime: Make) -> None:
    async with runtime() as rt:
        h = await rt.start(collect, 1)
        with pytest.raises(af.InvalidPayload):
            await rt.send(h.id, ping, "not an int")
        assert (await h.status()).events == []
        await rt.send(h.id, ping, 7)
        assert await h.result(timeout=5) == [7]


async def test_early_events_wait_in_mailbox_and_keep_send_order(runtime: Make) -> None:
    async with runtime() as rt:
        h = await rt.start(collect, 3)
        # all four are accepted before the instance consumes any: the rest are buffered
        await asyncio.gather(*(rt.send(h.id, ping, i) for i in (10, 20, 30, 40)))
        assert await h.result(timeout=5) == [10, 20, 30]
        st = await h.status()
        assert [e.consumed_at is not None for e in st.events] == [True, True, True, False]


async def test_start_is_idempotent_on_id(runtime: Make) -> None:
    async with runtime() as rt:
        a = await rt.start(collect, 1, id="same")
        b = await rt.start(collect, 99, id="same")
        assert a.id == b.id == "same"
        with pytest.raises(af.ActorflowError, match=r"rt\.collect"):
            await rt.start(review, "x", id="same")
        await rt.send("same", ping, 1)
        assert await b.result(timeout=5) == [1]
        again = await rt.start(collect, 5, id="same")  # finished: still its handle
        assert await again.result() == [1]


async def test_concurrent_starts_of_one_id_start_once(runtime: Make) -> None:
    async with runtime() as rt:
        handles = await asyncio.gather(*(rt.start(collect, 1, id="dup") for _ in range(5)))
        assert {h.id for h in handles} == {"dup"}
        assert len(await rt.list()) == 1


async def test_unknown_and_finished_instances_are_clear_errors(runtime: Make) -> None:
    async with runtime() as rt:
        with pytest.raises(af.ActorflowError, match="no workflow instance with id 'nope'"):
            await rt.send("nope", ping, 1)
        with pytest.raises(af.ActorflowError, match="no event named"):
            await rt.send("nope", "rt.never-defined", 1)
        h = await rt.start(collect, 1)
        await rt.send(h.id, ping, 1)
        await h.result(timeout=5)
        with pytest.raises(af.ActorflowError, match="has finished"):
            await rt.send(h.id, ping, 2)
        with pytest.raises(af.ActorflowError, match="no workflow instance"):
            await rt.handle("nope").result()


async def test_error_and_cancelled_events(runtime: Make) -> None:
    @af.workflow(name="rt.errors")
    async def errors(ctx: af.Context[None]) -> list[str]:
        seen = []
        for _ in range(2):
            try:
                await ctx.wait_event(ping)
            except af.EventFailed as e:
                seen.append(f"failed {e.event} {e.error}")
            except af.EventCancelled as e:
                seen.append(f"cancelled {e.event}")
        return seen

    async with runtime() as rt:
        h = await rt.start(errors)
        with pytest.raises(af.InvalidPayload):
            await rt.send(h.id, ping, error="x", cancelled=True)
        with pytest.raises(af.InvalidPayload):
            await rt.send(h.id, ping, 5, error="x")
        await rt.send(h.id, ping, error=ValueError("card declined"))
        await rt.send(h.id, ping, cancelled=True)
        assert await h.result(timeout=5) == ["failed rt.ping card declined", "cancelled rt.ping"]
        outcomes = [e.outcome for e in (await h.status()).events]
        assert outcomes == ["failed", "cancelled"]


async def test_tokens_resolve_once_even_before_the_wait(runtime: Make) -> None:
    async with runtime() as rt:
        h = await rt.start(token_flow, id="tok")
        await asyncio.sleep(0.05)  # the publishing step runs in a thread
        for _ in range(100):
            if "tok" in tokens:
                break
            await asyncio.sleep(0.01)
        token = tokens.pop("tok")
        st = await h.status()
        assert any(e.token == token and e.outcome is None for e in st.events)
        await rt.resolve(token, {"approved": True})
        with pytest.raises(af.ActorflowError, match="unknown, already used"):
            await rt.resolve(token, {"approved": True})
        assert await h.result(timeout=5) == "yes"
        with pytest.raises(af.ActorflowError, match="unknown, already used"):
            await rt.reject(token, "late")
        with pytest.raises(af.ActorflowError, match="unknown"):
            await rt.resolve("tnot-a-real-token-at-all", None)


async def test_reject_token_raises_event_failed(runtime: Make) -> None:
    @af.workflow(name="rt.reject")
    async def rejecting(ctx: af.Context[None]) -> str:
        ref = await ctx.create_event(approval)
        await ctx.step(publish_token, ctx.workflow_id, ref.id)
        try:
            await ctx.wait_event(ref)
        except af.EventFailed as e:
            return e.error
        return "?"

    async with runtime() as rt:
        h = await rt.start(rejecting, id="rej")
        while "rej" not in tokens:
            await asyncio.sleep(0.005)
        await rt.reject(tokens.pop("rej"), "nope")
        assert await h.result(timeout=5) == "nope"


async def test_status_shows_what_an_instance_waits_on(runtime: Make) -> None:
    async with runtime() as rt:
        h = await rt.start(collect, 2)
        st = await h.status()
        assert st.state == "waiting"
        assert [(w.kind, w.name) for w in st.waiting_on] == [("event", "rt.ping")]
        listed = await rt.list(status="waiting")
        assert [s.id for s in listed] == [h.id] and listed[0].events == []
        assert await rt.list(status=["completed"]) == []
        assert [s.id for s in await rt.list(workflow=collect)] == [h.id]
        assert await rt.list(workflow="rt.review") == []


async def test_steps_retry_then_fail_as_step_failed(runtime: Make) -> None:
    attempts: list[int] = []

    def flaky() -> int:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("down")
        return len(attempts)

    def broken() -> None:
        raise ValueError("bad input")

    @af.workflow(name="rt.retry")
    async def retrying(ctx: af.Context[None]) -> str:
        n = await ctx.step(flaky, retry=af.Retry(attempts=5, initial=0))
        try:
            await ctx.step(broken, retry=af.Retry(attempts=2, initial=0))
        except af.StepFailed as e:
            return f"{n} {e.step} {e.error_type} {e.message}"
        return "?"

    async with runtime() as rt:
        h = await rt.start(retrying)
        result = await h.result(timeout=5)
        assert result == f"3 {__name__}.{broken.__qualname__} ValueError bad input"


async def test_results_decode_to_annotations_first_run_and_replay(runtime: Make) -> None:
    async def fetch_order() -> Order:
        return Order("o1", 9.5)

    def loose() -> Any:
        return Order("o2", 1.0)

    @af.workflow(name="rt.types")
    async def typed(ctx: af.Context[None], order: Order) -> Order:
        a = await ctx.step(fetch_order)
        b = await ctx.step(loose)
        assert isinstance(a, Order) and isinstance(b, dict)
        await ctx.wait_event(go)
        return Order(order.id + a.id + b["id"], order.total)

    async with runtime() as rt:
        h = await rt.start(typed, Order("x", 2.0), id="typed")
        while (await h.status()).state != "waiting":
            await asyncio.sleep(0.005)
        durable = rt.path is not None
        if not durable:
            await rt.send("typed", go)
            assert await h.result(timeout=5) == Order("xo1o2", 2.0)
    if durable:  # the second run replays both steps from the journal
        async with runtime() as rt:
            await rt.send("typed", go)
            assert await rt.handle("typed").result(timeout=5) == Order("xo1o2", 2.0)


async def test_workflow_exception_is_failed_with_type_and_message(runtime: Make) -> None:
    @af.workflow(name="rt.fails")
    async def fails(ctx: af.Context[None]) -> None:
        raise KeyError("missing thing")

    async with runtime() as rt:
        h = await rt.start(fails)
        with pytest.raises(af.WorkflowFailed) as info:
            await h.result(timeout=5)
        assert info.value.error_type == "KeyError"
        assert "missing thing" in info.value.message
        assert (await h.status()).state == "failed"


async def test_unencodable_result_fails_clearly(runtime: Make) -> None:
    @af.workflow(name="rt.unencodable")
    async def unencodable(ctx: af.Context[None]) -> object:
        return object()

    async with runtime() as rt:
        h = await rt.start(unencodable)
        with pytest.raises(af.WorkflowFailed, match="cannot be stored"):
            await h.result(timeout=5)


async def test_cancel_runs_cleanup_and_ends_cancelled(runtime: Make) -> None:
    cleaned: list[str] = []

    @af.workflow(name="rt.cancel")
    async def cancellable(ctx: af.Context[None]) -> None:
        try:
            await ctx.wait_event(go)
        except asyncio.CancelledError:
            await ctx.step(cleaned.append, "cleanup")
            raise

    async with runtime() as rt:
        h = await rt.start(cancellable)
        await h.cancel()
        with pytest.raises(af.WorkflowCancelled):
            await h.result(timeout=5)
        await h.cancel()  # idempotent on a finished instance
        assert cleaned == ["cleanup"]
        assert (await h.status()).state == "cancelled"


async def test_swallowed_cancel_completes(runtime: Make) -> None:
    @af.workflow(name="rt.swallow")
    async def swallow(ctx: af.Context[None]) -> str:
        try:
            await ctx.wait_event(go)
        except asyncio.CancelledError:
            return "cleaned up"
        return "went"

    async with runtime() as rt:
        h = await rt.start(swallow)
        await h.cancel()
        assert await h.result(timeout=5) == "cleaned up"


async def test_closed_runtime_raises_runtime_closed(runtime: Make) -> None:
    rt = runtime()
    async with rt:
        h = await rt.start(collect, 1)
        pending = asyncio.ensure_future(h.result())
        await asyncio.sleep(0)
    with pytest.raises(af.RuntimeClosed):
        await pending
    with pytest.raises(af.RuntimeClosed):
        await rt.send(h.id, ping, 1)
    with pytest.raises(af.RuntimeClosed):
        await rt.start(collect, 1)


async def test_result_timeout_is_wait_timeout(runtime: Make) -> None:
    async with runtime() as rt:
        h = await rt.start(collect, 1)
        with pytest.raises(af.WaitTimeout):
            await h.result(timeout=0.01)
        with pytest.raises(TimeoutError):
            await h.result(timeout=0.01)


async def test_gather_of_waits_is_all_of(runtime: Make) -> None:
    a, b = af.Event("rt.a"), af.Event("rt.b", str)

    @af.workflow(name="rt.allof")
    async def allof(ctx: af.Context[None]) -> list[Any]:
        both = await asyncio.gather(ctx.wait_event(b), ctx.wait_event(a), ctx.step(count, "g"))
        return list(both)

    async with runtime() as rt:
        h = await rt.start(allof)
        await rt.send(h.id, a)
        await rt.send(h.id, b, "bee")
        assert await h.result(timeout=5) == ["bee", None, "g"]


async def test_a_store_read_cut_short_by_close_raises_runtime_closed(db: Path) -> None:
    """A call that was reading the store when the runtime closed (its connection gone)
    raises ``RuntimeClosed``, as calls on a closed runtime do, not a store error."""
    rt = af.Runtime(db)
    await rt.open()
    store = rt._store
    closed = asyncio.Event()
    close, load = store.close, store.load

    async def close_then_say() -> None:
        await close()
        closed.set()

    async def load_after_close(instance_id: str) -> Any:
        await closed.wait()
        return await load(instance_id)

    store.close = close_then_say  # type: ignore[method-assign]
    store.load = load_after_close  # type: ignore[method-assign]
    reading = asyncio.ensure_future(rt.handle("unknown-id").status())
    await asyncio.sleep(0)
    await rt.close()
    with pytest.raises(af.RuntimeClosed):
        await reading
