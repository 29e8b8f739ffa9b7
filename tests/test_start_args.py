"""``rt.start`` checks its arguments, and ``@af.workflow`` its ``state=`` type, before
anything is stored: arguments are bound to the workflow's parameters and converted to
their annotations (``af.InvalidPayload`` otherwise), as payloads are at ``send``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import actorflow as af

Make = Callable[..., af.Runtime]
Clock = af.testing.ManualClock


class Order(msgspec.Struct):
    sku: str
    qty: int = 1


@af.workflow(name="args.echo")
async def echo(ctx: af.Context[None], x: int) -> int:
    return x


@af.workflow(name="args.defaults")
async def with_default(ctx: af.Context[None], x: int, y: int = 2) -> int:
    return x * y


@af.workflow(name="args.order")
async def take_order(ctx: af.Context[None], order: Order) -> str:
    assert isinstance(order, Order)  # the declared type on the first run too
    return f"{order.sku}x{order.qty}"


@af.workflow(name="args.untyped")
async def untyped(ctx, value):  # type: ignore[no-untyped-def]
    return value


@af.workflow(name="args.star")
async def star(ctx: af.Context[None], *values: int) -> int:
    return sum(values)


@pytest.mark.parametrize(
    ("wf", "args"),
    [
        (echo, ("five",)),  # does not convert
        (echo, (1, 2)),  # too many
        (echo, ()),  # too few
        (with_default, (1, 2, 3)),
        (take_order, ({"qty": 2},)),  # a required field missing
        (take_order, ({"sku": "a", "qty": "two"},)),
        (echo, (object(),)),  # cannot be encoded at all
    ],
)
async def test_arguments_that_do_not_bind_or_convert_raise_and_store_nothing(
    runtime: Make, wf: af.Workflow[Any], args: tuple[Any, ...]
) -> None:
    async with runtime() as rt:
        with pytest.raises(af.InvalidPayload):
            await rt.start(wf, *args, id="bad")
        assert await rt.list() == []
        with pytest.raises(af.ActorflowError, match="no workflow instance"):
            await rt.handle("bad").status()
        # the id is still free for a start that fits
        assert await rt.start(echo, 5, id="bad") is not None
        assert await rt.handle("bad").result(timeout=1) == 5


async def test_the_error_names_types_not_values(runtime: Make) -> None:
    async with runtime() as rt:
        with pytest.raises(af.InvalidPayload) as caught:
            await rt.start(echo, "s3cr3t-value")
    text = str(caught.value)
    assert "s3cr3t-value" not in text
    assert "args.echo" in text and "int" in text and "str" in text


async def test_a_bad_start_leaves_nothing_after_reopen(db: Path, clock: Clock) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        with pytest.raises(af.InvalidPayload):
            await rt.start(echo, "five", id="e")
        with pytest.raises(af.InvalidPayload):
            await rt.start(echo, 1, 2, id="f")
    async with af.Runtime(db, clock=clock) as rt:
        assert await rt.list() == []


async def test_arguments_that_fit_are_converted_to_the_annotations(runtime: Make) -> None:
    async with runtime() as rt:
        assert await rt.handle((await rt.start(with_default, 4)).id).result(timeout=1) == 8
        assert await (await rt.start(with_default, 4, 3)).result(timeout=1) == 12
        h = await rt.start(take_order, {"sku": "pen", "qty": 3})
        assert await h.result(timeout=1) == "penx3"
        assert await (await rt.start(take_order, Order("ink"))).result(timeout=1) == "inkx1"
        assert await (await rt.start(untyped, {"any": [1, "x"]})).result(timeout=1) == {
            "any": [1, "x"]
        }
        assert await (await rt.start(star, 1, 2, 3)).result(timeout=1) == 6
        with pytest.raises(af.InvalidPayload):
            await rt.start(star, 1, "2")


async def test_converted_arguments_replay_the_same_after_reopen(db: Path, clock: Clock) -> None:
    go = af.Event("args.go")

    @af.workflow(name="args.parked")
    async def parked(ctx: af.Context[None], order: Order) -> str:
        await ctx.wait_event(go)
        assert isinstance(order, Order)
        return order.sku

    async with af.Runtime(db, clock=clock) as rt:
        await rt.start(parked, {"sku": "cup"}, id="p")
    async with af.Runtime(db, clock=clock) as rt:
        await rt.send("p", go)
        assert await rt.handle("p").result(timeout=1) == "cup"


# -- state= is checked at definition -------------------------------------------------


class NeedsAField(msgspec.Struct):
    required: int


class Refuses:
    def __init__(self) -> None:
        raise RuntimeError("no")


@pytest.mark.parametrize("state", [NeedsAField, Refuses])
def test_a_state_type_that_cannot_be_built_raises_at_definition(state: type[Any]) -> None:
    with pytest.raises(af.ActorflowError, match=state.__qualname__) as caught:

        @af.workflow(name="args.bad_state", state=state)
        async def bad_state(ctx: af.Context[Any]) -> None:
            return None

    assert isinstance(caught.value, TypeError)  # a type problem, as Python would call it

    # the refused definition did not take the name

    @af.workflow(name="args.bad_state")
    async def other(ctx: af.Context[None]) -> None:
        return None
