"""``@workflow``: workflow definitions, their event handlers, and the registry by name."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import msgspec

from actorflow import codec
from actorflow.errors import ActorflowError, InvalidPayload
from actorflow.events import Event, check_name

if TYPE_CHECKING:
    pass

R = TypeVar("R")
T = TypeVar("T")
Handler = Callable[[Any, Any], None]

_registry: dict[str, Workflow[Any]] = {}


class InvalidStateType(ActorflowError, TypeError):
    """A ``state=`` type that cannot be built with no arguments (also a ``TypeError``)."""


class Workflow(Generic[R]):
    """A registered workflow: an ``async def (ctx, *args)`` plus its state type and handlers."""

    def __init__(self, fn: Callable[..., Awaitable[R]], name: str, state: type[Any] | None) -> None:
        self.fn = fn
        self.name = check_name(name, "a workflow name")
        _check_state_type(self.name, state)
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

    def carried_state(self, encoded: bytes | None) -> Any:
        """The state a run starts from: ``encoded`` (carried over by ``continue_as_new``)
        decoded, else :meth:`new_state`."""
        if encoded is None or self.state_type is None:
            return self.new_state()
        state_type: Any = self.state_type
        return codec.decoder(state_type).decode(encoded)

    @functools.cached_property
    def result_decoder(self) -> msgspec.msgpack.Decoder[Any]:
        """Decoder for the workflow's return value (its annotation, else builtins)."""
        return codec.decoder(codec.return_type(self.fn))

    @functools.cached_property
    def arg_types(self) -> list[Any]:
        """The declared type of each positional parameter after ``ctx`` (resolving string
        annotations compiles them: once per workflow, not at every start)."""
        return codec.parameter_types(self.fn)

    @functools.cached_property
    def arg_decoders(self) -> list[msgspec.msgpack.Decoder[Any]]:
        """One decoder per positional parameter after ``ctx``."""
        return [codec.decoder(t) for t in self.arg_types]

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        """The workflow function's signature (``ctx`` first)."""
        return inspect.signature(self.fn)

    @functools.cached_property
    def rest_type(self) -> Any:
        """The declared type of arguments past the positional parameters (``*args: T``)."""
        rest = [p for p in self.signature.parameters.values() if p.kind is p.VAR_POSITIONAL]
        if not rest:
            return Any
        try:
            return typing.get_type_hints(self.fn).get(rest[0].name, Any)
        except Exception:  # an annotation that does not resolve: builtins, as elsewhere
            return Any

    def encode_args(self, args: Sequence[Any]) -> list[bytes]:
        """``args`` converted to the parameter annotations and encoded, as ``rt.start``
        stores them. Raises :class:`InvalidPayload` when they do not bind to the
        parameters or do not convert (errors name types, never the values)."""
        try:
            self.signature.bind(None, *args)  # None stands for the context
        except TypeError as exc:
            raise InvalidPayload(
                f"arguments for workflow {self.name!r} do not fit its parameters: {exc}"
            ) from None
        types = self.arg_types
        return [
            _encode_arg(self.name, i, arg, types[i] if i < len(types) else self.rest_type)
            for i, arg in enumerate(args)
        ]

    def decode_args(self, args: list[bytes]) -> list[Any]:
        """Arguments as the workflow function receives them."""
        decoders = self.arg_decoders
        rest_decoder = codec.decoder(self.rest_type)
        return [
            (decoders[i] if i < len(decoders) else rest_decoder).decode(a)
            for i, a in enumerate(args)
        ]


def _check_state_type(workflow: str, state: type[Any] | None) -> None:
    # Checked at definition: a state built only when an instance starts would fail
    # there, after its start was stored.
    if state is None:
        return
    try:
        state()
    except Exception as exc:
        raise InvalidStateType(
            f"workflow {workflow!r}: state type {_type_name(state)} cannot be built with no "
            f"arguments ({type(exc).__name__}: {exc}); give every field a default"
        ) from None


def _encode_arg(workflow: str, index: int, arg: Any, target: Any) -> bytes:
    what = f"argument {index} of workflow {workflow!r}"
    try:
        value = arg if target is Any else msgspec.convert(arg, target)
        return codec.encode(value, what)
    except (msgspec.ValidationError, TypeError, ValueError, OverflowError) as exc:
        raise InvalidPayload(
            f"{what} ({type(arg).__name__}) does not fit {_type_name(target)}: {exc}"
        ) from None


def _type_name(target: Any) -> str:
    return target.__qualname__ if isinstance(target, type) else repr(target)


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
