"""Typed events, pre-created event tokens, and payload validation at the sender."""

from __future__ import annotations

import re
import secrets
from typing import Any, Generic, TypeVar, overload

import msgspec

from actorflow import codec
from actorflow.errors import ActorflowError, InvalidPayload

T = TypeVar("T")

MAX_NAME = 255


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is a usable name or instance ID: 1 to 255 characters of
    valid Unicode (a lone surrogate cannot be stored as UTF-8)."""
    # The error names the value's type and length, never its content: it may be a
    # payload or a secret pasted into the wrong place, and errors reach logs and rows.
    if not isinstance(value, str):
        raise ActorflowError(
            f"{what} must be a string of 1 to {MAX_NAME} characters, got {type_name(value)}"
        )
    if not 1 <= len(value) <= MAX_NAME:
        raise ActorflowError(
            f"{what} must be a string of 1 to {MAX_NAME} characters, got {len(value)}"
        )
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ActorflowError(
                f"{what} must be valid Unicode text, got a str with a lone surrogate"
            ) from None
    return value


def type_name(value: object) -> str:
    """What to say about a value in an error: its type, never its content."""
    return f"a value of type {type(value).__qualname__}"


# msgspec's validation messages that may quote the value being validated: an enum or
# literal value, a tag, an unknown field's name. Only the type's own words are kept.
_QUOTING = re.compile(r"^(Invalid enum value|Invalid value|Object contains unknown field)\b")


def describe_invalid(exc: msgspec.ValidationError) -> str:
    """A msgspec validation error as text that names types and fields, never values."""
    message, at, where = str(exc).partition(" - at ")
    found = _QUOTING.match(message)
    if found is not None:
        message = found.group(1).replace("Invalid enum value", "Invalid value")
    elif "'" in message or '"' in message:
        message = "Invalid value"
    return message + at + where


def _same_type(a: Any, b: Any) -> bool:
    # A re-import or reload makes a new class object with the same identity by name.
    if a == b:
        return True
    return bool(
        getattr(a, "__module__", None) == getattr(b, "__module__", None)
        and getattr(a, "__qualname__", None) == getattr(b, "__qualname__", object())
    )


_registry: dict[str, Event[Any]] = {}


class Event(Generic[T]):
    """A named event; ``type`` is the msgspec type of its payload (``None``: a plain gate).

    Names are registered for the process: defining the same name again with another
    type raises :class:`ActorflowError`.
    """

    __slots__ = ("_decoder", "name", "type")

    @overload
    def __init__(self: Event[None], name: str) -> None: ...
    @overload
    def __init__(self, name: str, type: type[T]) -> None: ...
    @overload
    def __init__(self, name: str, type: Any) -> None: ...
    def __init__(self, name: str, type: Any = None) -> None:
        self.name = check_name(name, "an event name")
        self.type = type
        self._decoder = codec.decoder(type) if type is not None else None
        known = _registry.get(name)
        if known is not None and not _same_type(known.type, type):
            raise ActorflowError(
                f"event {name!r} is already defined with payload type {known.type!r}; "
                f"pick another name than for {type!r}"
            )
        _registry[name] = self

    def __repr__(self) -> str:
        return f"Event({self.name!r}, {self.type!r})" if self.type else f"Event({self.name!r})"

    def encode(self, value: object, max_bytes: int) -> bytes | None:
        """Validate ``value`` against the type and encode it; raises :class:`InvalidPayload`."""
        if self.type is None:
            if value is not None:
                raise InvalidPayload(
                    f"event {self.name!r} is a gate and takes no payload, got {type_name(value)}"
                )
            return None
        try:
            value = msgspec.convert(value, self.type)
            data = codec.ENCODER.encode(value)
        except msgspec.ValidationError as exc:
            raise InvalidPayload(
                f"payload for event {self.name!r} does not fit {_type_name(self.type)}: "
                f"{describe_invalid(exc)}"
            ) from None
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise InvalidPayload(
                f"payload for event {self.name!r} does not fit {_type_name(self.type)}: "
                f"{_encode_problem(exc)}"
            ) from None
        if len(data) > max_bytes:
            raise InvalidPayload(
                f"payload for event {self.name!r} is {len(data)} bytes, "
                f"over the limit of {max_bytes} (max_payload_bytes)"
            )
        return data

    def decode(self, data: bytes | None) -> T:
        """The payload as the waiter receives it: an instance of ``type`` (``None`` for a gate)."""
        if self._decoder is None or data is None:
            return None  # type: ignore[return-value]
        return self._decoder.decode(data)  # type: ignore[no-any-return]


def _encode_problem(exc: Exception) -> str:
    if isinstance(exc, UnicodeError):  # its text quotes the offending character
        return "a string is not valid Unicode"
    if isinstance(exc, TypeError | OverflowError):  # msgspec names a type or a range here
        return str(exc)
    return type(exc).__name__


def _type_name(t: Any) -> str:
    return getattr(t, "__qualname__", None) or repr(t)


def lookup(event: Event[Any] | str) -> Event[Any]:
    """The registered :class:`Event` for ``event`` (an Event or its name)."""
    if isinstance(event, Event):
        return event
    found = _registry.get(check_name(event, "an event name"))
    if found is None:
        raise ActorflowError(
            f"no event named {event!r} is defined in this process; define it with "
            f"af.Event({event!r}, PayloadType) before sending"
        )
    return found


def lookup_name(name: str) -> Event[Any] | None:
    """The registered event of that name, if any (used when decoding stored events)."""
    return _registry.get(name)


class EventRef(Generic[T]):
    """An event made ahead of time: ``id`` is an unguessable single-use token for it."""

    __slots__ = ("event", "id")

    def __init__(self, id: str, event: Event[T]) -> None:
        self.id = id
        self.event = event

    def __repr__(self) -> str:
        return f"EventRef({self.id!r}, {self.event!r})"


def new_token() -> str:
    """A fresh token: 128 random bits, URL-safe, starting with a letter."""
    return "t" + secrets.token_urlsafe(16)
