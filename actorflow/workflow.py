"""``@workflow``: workflow definitions, their event handlers, and the registry by name."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import msgspec

from actorflow import codec
from actorflow.errors import ActorflowError
from actorflow.events import Event, check_name

if TYPE_CHECKING:
    pass

R = TypeVar("R")
T = TypeVar("T")
Handler = Callable[[Any, Any], None]

_registry: dict[str, Workflow[Any]] = {}


class Workflow(Generic[R]):
    """A registered workflow: an ``async def (ctx, *args)`` plus its state type and handlers."""

    def __init__(self, fn: Callable[..., Awaitable[R]], name: str, state: type[Any] | None) -> None:
        self.fn = fn
        self.name = check_name(name, "a workflow name")
        self.state_type = state
        self.handlers: dict[str, tuple[Event[Any], Handler]] = {}
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]
        known = _registry.get(self.name)
        if known is not None and _identity(known.fn) != _identity(fn):
            raise ActorflowError(
                f"workflow {self.name!r} is already defined by {_identity(known.fn)}; "
                f"give {_identity(fn)} another name with @workflow(name=...)"
            )
        _registry[self.name] = self

    def __repr__(self) -> str:
        return f"<workflow {self.name!r}>"

    def on(self, event: Event[T]) -> Callable[[Callable[[Any, T], None]], Callable[[Any, T], None]]:
        """Register ``handler(state, payload)`` to update state when ``event`` arrives.

        Such an event never feeds ``ctx.wait_event``; ``ctx.wait_until`` sees its effect.
        """
        if self.state_type is None:
            raise ActorflowError(
                f"workflow {self.name!r} has no state; declare @workflow(state=SomeStruct) "
                "to use event handlers"
            )

        def register(handler: Callable[[Any, T], None]) -> Callable[[Any, T], None]:
            self.handlers[event.name] = (event, handler)
            return handler

        return register

    def new_state(self) -> Any:
        """A fresh state object (``None`` when the workflow declares no state)."""
        return None if self.state_type is None else self.state_type()

    @functools.cached_property
    def result_decoder(self) -> msgspec.msgpack.Decoder[Any]:
        """Decoder for the workflow's return value (its annotation, else builtins)."""
        return codec.decoder(codec.return_type(self.fn))

    @functools.cached_property
    def arg_decoders(self) -> list[msgspec.msgpack.Decoder[Any]]:
        """One decoder per positional parameter after ``ctx``."""
        return [codec.decoder(t) for t in codec.parameter_types(self.fn)]

    def decode_args(self, args: list[bytes]) -> list[Any]:
        """Arguments as the workflow function receives them."""
        decoders = self.arg_decoders
        any_decoder = codec.decoder(Any)
        return [
            (decoders[i] if i < len(decoders) else any_decoder).decode(a)
            for i, a in enumerate(args)
        ]


def _identity(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


@overload
def workflow(fn: Callable[..., Awaitable[R]], /) -> Workflow[R]: ...
@overload
def workflow(
    *, name: str | None = None, state: type[Any] | None = None
) -> Callable[[Callable[..., Awaitable[R]]], Workflow[R]]: ...
def workflow(
    fn: Callable[..., Awaitable[R]] | None = None,
    /,
    *,
    name: str | None = None,
    state: type[Any] | None = None,
) -> Workflow[R] | Callable[[Callable[..., Awaitable[R]]], Workflow[R]]:
    """Declare a workflow: ``@workflow`` or ``@workflow(name=..., state=StateStruct)``.

    The name (default: the function's name) identifies stored instances, so keep it
    stable; defining it again with another function raises :class:`ActorflowError`.
    """

    def define(f: Callable[..., Awaitable[R]]) -> Workflow[R]:
        return Workflow(f, name or f.__name__, state)

    return define(fn) if fn is not None else define


def lookup(name: str) -> Workflow[Any] | None:
    """The workflow registered under ``name`` in this process, if any."""
    return _registry.get(name)
