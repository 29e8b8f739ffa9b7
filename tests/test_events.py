"""Events: typed payloads, gates, validation at the sender, names and tokens."""

from __future__ import annotations

import re

import msgspec
import pytest

import actorflow as af
from actorflow.events import new_token


class Decision(msgspec.Struct):
    approved: bool
    note: str = ""


class Strict(msgspec.Struct, forbid_unknown_fields=True):
    n: int


decision = af.Event("test_events.decision", Decision)
strict = af.Event("test_events.strict", Strict)
gate = af.Event("test_events.gate")


def test_event_exposes_name_and_type() -> None:
    assert decision.name == "test_events.decision"
    assert decision.type is Decision
    assert gate.type is None


def test_payload_accepts_instance_and_builtins_of_same_shape() -> None:
    a = decision.encode(Decision(True, "ok"), 1 << 20)
    b = decision.encode({"approved": True, "note": "ok"}, 1 << 20)
    assert a == b
    assert decision.decode(a) == Decision(True, "ok")


@pytest.mark.parametrize(
    "value",
    [{"approved": "yes"}, {"note": "missing approved"}, 42, "text", [True]],
)
def test_wrong_payload_is_invalid(value: object) -> None:
    with pytest.raises(af.InvalidPayload, match=r"test_events\.decision"):
        decision.encode(value, 1 << 20)


def test_unknown_fields_rejected_only_where_struct_says_so() -> None:
    decision.encode({"approved": True, "extra": 1}, 1 << 20)
    with pytest.raises(af.InvalidPayload):
        strict.encode({"n": 1, "extra": 1}, 1 << 20)


def test_gate_takes_no_payload() -> None:
    assert gate.encode(None, 10) is None
    with pytest.raises(af.InvalidPayload, match="gate"):
        gate.encode({"x": 1}, 10)


def test_oversized_payload_is_invalid() -> None:
    with pytest.raises(af.InvalidPayload, match="over the limit"):
        decision.encode({"approved": True, "note": "x" * 100}, 50)


def test_same_name_same_type_is_fine_other_type_is_an_error() -> None:
    again = af.Event("test_events.decision", Decision)
    assert again.type is Decision
    with pytest.raises(af.ActorflowError, match="already defined"):
        af.Event("test_events.decision", Strict)


@pytest.mark.parametrize("name", ["", "x" * 256, 7])
def test_bad_event_names(name: object) -> None:
    with pytest.raises(af.ActorflowError):
        af.Event(name)  # type: ignore[arg-type]


def test_tokens_are_long_random_and_start_with_a_letter() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    for t in tokens:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{21,}", t)
