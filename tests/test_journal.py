"""The journal alone: positions, stored outcomes and values, divergence checks (no I/O)."""

from __future__ import annotations

import pytest

import actorflow as af
from actorflow.journal import Journal
from actorflow.records import CancelRequested, Effect, Outcome, Value


def outcome(seq: int, kind: str = "step", name: str = "app.charge") -> Outcome:
    return Outcome("wf", seq, kind, name, 1.0, value=b"\xc0")


def value(seq: int, kind: str = "now", name: str = "now") -> Value:
    return Value("wf", seq, kind, name, b"\xcb", 1.0)


def test_positions_count_up_from_zero() -> None:
    journal = Journal("wf", {})
    assert [journal.next() for _ in range(3)] == [0, 1, 2]
    assert journal.made == 3


def test_a_new_call_is_past_the_journal() -> None:
    journal = Journal("wf", {})
    journal.check_call(journal.next(), "step", "app.anything")  # nothing stored: any call
    assert journal.value(journal.next(), "now", "now") is None
    journal.check_made("paused")  # nothing stored that is not made


def test_replay_checks_each_call_against_its_stored_outcome() -> None:
    journal = Journal("wf", {})
    history: list[Effect] = [outcome(0), CancelRequested("wf", 2.0), outcome(1, "event", "go")]
    journal.replay(history)
    journal.check_call(journal.next(), "step", "app.charge")
    with pytest.raises(af.NonDeterminismError) as caught:
        journal.check_call(journal.next(), "event", "stop")
    assert str(caught.value) == (
        "workflow 'wf' call #1: the journal holds event 'go' but the code now makes "
        "event 'stop'; restore the code that started this instance"
    )


def test_a_step_stored_under_an_older_name_is_the_same_call() -> None:
    journal = Journal("wf", {})
    journal.replay([outcome(0, "step", "charge")])  # a bare qualified name, as stored before
    journal.check_call(journal.next(), "step", "app.charge")


def test_a_value_call_finds_its_stored_value() -> None:
    values = {0: value(0)}
    journal = Journal("wf", values)
    assert journal.value(journal.next(), "now", "now") == b"\xcb"
    assert journal.value(journal.next(), "random", "random") is None  # new
    values[1] = value(1, "random", "random")  # committed: the journal sees it
    assert journal.value(1, "random", "random") == b"\xcb"


def test_a_value_call_where_the_journal_holds_another_diverges() -> None:
    journal = Journal("wf", {0: value(0, "uuid4", "uuid4")})
    journal.replay([outcome(1)])
    with pytest.raises(af.NonDeterminismError, match=r"call #0: the journal holds uuid4 'uuid4' "):
        journal.value(journal.next(), "now", "now")
    with pytest.raises(af.NonDeterminismError, match=r"holds step 'app.charge' but the code now "):
        journal.value(journal.next(), "now", "now")  # an outcome where a value is made


def test_a_call_where_the_journal_holds_a_value_diverges() -> None:
    journal = Journal("wf", {0: value(0, "deadline", "deadline")})
    with pytest.raises(af.NonDeterminismError, match="now makes timer 'sleep'"):
        journal.check_call(journal.next(), "timer", "sleep")


def test_stored_calls_the_code_did_not_make_are_named() -> None:
    journal = Journal("wf", {3: value(3)})
    journal.replay([outcome(0), outcome(1, "event", "go")])
    journal.next()
    with pytest.raises(af.NonDeterminismError) as caught:
        journal.check_made("returned")
    assert str(caught.value) == (
        "workflow 'wf': the code returned after 1 calls, but the journal holds call #1 "
        "(event 'go') that it no longer makes; restore the code that started this instance"
    )
    journal.next()
    journal.next()
    with pytest.raises(af.NonDeterminismError, match=r"paused after 3 calls.*#3 \(now 'now'\)"):
        journal.check_made("paused")
    journal.next()
    journal.check_made("paused")


def test_an_outcome_for_a_call_not_made_diverges_one_made_and_cancelled_does_not() -> None:
    journal = Journal("wf", {})
    journal.next()
    journal.check_outcome(outcome(0))  # made, then cancelled by the code: not a divergence
    with pytest.raises(af.NonDeterminismError) as caught:
        journal.check_outcome(outcome(1, "event", "go"))
    assert str(caught.value) == (
        "workflow 'wf': the journal holds the outcome of call #1 (event 'go') but the code "
        "no longer makes that call; restore the code that started this instance"
    )


def test_after_replay_the_stored_outcomes_are_gone() -> None:
    journal = Journal("wf", {})
    journal.replay([outcome(0)])
    journal.end_replay()
    journal.check_call(journal.next(), "event", "anything")
    journal.check_made("paused")


def test_a_patch_on_a_fresh_path_is_taken_and_its_marker_recorded() -> None:
    journal = Journal("wf", {})
    journal.next()
    assert journal.patched("p", []) == (True, True)
    assert journal.patched("p", []) == (True, False)  # one answer (and marker) per run
    assert journal.made == 1  # it takes no position


def test_a_patch_whose_marker_is_stored_is_taken() -> None:
    journal = Journal("wf", {})
    journal.replay([outcome(0), outcome(1)])
    assert journal.patched("p", ["p"]) == (True, False)


def test_a_history_past_the_patch_point_without_its_marker_takes_the_old_branch() -> None:
    values = {2: value(2)}
    journal = Journal("wf", values)
    journal.replay([outcome(0)])
    assert journal.patched("by-outcome", ["other"]) == (False, False)
    journal.next()
    assert journal.patched("by-value", []) == (False, False)  # call #2 is stored
    assert journal.patched("by-outcome", []) == (False, False)  # the run's first answer
    journal.next()
    journal.next()
    assert journal.patched("later", []) == (True, True)  # nothing stored from #3 on
