"""Encoding of user values (payloads, arguments, step and workflow results).

One msgpack encoder for everything, one decoder per target type, built once and
reused: values are always decoded to the declared type (or to builtins when there
is none), on the first run exactly as on replay.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

import msgspec

ENCODER = msgspec.msgpack.Encoder()
NONE = ENCODER.encode(None)


@functools.lru_cache(maxsize=4096)
def decoder(target: Any) -> msgspec.msgpack.Decoder[Any]:
    """The shared decoder for values of type ``target`` (``Any`` for builtins)."""
    return msgspec.msgpack.Decoder(target)


def encode(value: object, what: str) -> bytes:
    """Encode ``value``; a value msgspec cannot encode raises ``TypeError`` naming ``what``."""
    try:
        return ENCODER.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{what} cannot be stored: {exc}") from None


def return_type(fn: Callable[..., Any]) -> Any:
    """The declared return type of ``fn`` (unwrapping coroutines), or ``Any``."""
    # Every ctx.step asks; resolving string annotations compiles them each time.
    try:
        return _cached_return_type(fn)
    except TypeError:  # an unhashable callable
        return _return_type(fn)


def _return_type(fn: Callable[..., Any]) -> Any:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return Any
    target = hints.get("return", Any)
    if inspect.iscoroutinefunction(fn):
        return target
    origin = typing.get_origin(target)
    if origin is not None and getattr(origin, "__name__", "") in {"Coroutine", "Awaitable"}:
        return typing.get_args(target)[-1]
    return target


_cached_return_type = functools.lru_cache(maxsize=4096)(_return_type)


def parameter_types(fn: Callable[..., Any]) -> list[Any]:
    """The declared types of ``fn``'s positional parameters after the first (the context)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    params = list(inspect.signature(fn).parameters.values())[1:]
    return [
        hints.get(p.name, Any)
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
