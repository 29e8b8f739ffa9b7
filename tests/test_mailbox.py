"""The mailbox alone: events by name and token, oldest first, reserve and give back (no I/O)."""

from __future__ import annotations

from typing import Any

from actorflow.mailbox import Mailbox
from actorflow.records import EventState
from actorflow.waits import EventWait


def event(event_id: int, name: str = "go", token: str | None = None) -> EventState:
    return EventState(event_id, name, token, None, None, False, 1.0, 1.0)


def wait(seq: int, name: str = "go", token: str | None = None) -> EventWait:
    w = EventWait(None, seq, name, _NoFuture())  # type: ignore[arg-type]
    w.token = token
    return w


class _NoFuture:
    """The mailbox never looks at a wait's future."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the mailbox used the future's {name}")


def test_an_early_event_waits_for_a_wait() -> None:
    box = Mailbox()
    assert box.put(event(0)) is None
    assert box.take(wait(0)) == event(0)
    assert box.reserved(0)
    box.consumed(0)
    assert not box.reserved(0) and not box.busy


def test_events_by_name_go_oldest_first() -> None:
    box = Mailbox()
    for i in (2, 0, 1):  # given back out of order: id order still rules
        box.put(event(i))
    assert [box.take(wait(s)).id for s in range(3)] == [0, 1, 2]  # type: ignore[union-attr]
    assert box.take(wait(3)) is None


def test_a_name_feeds_waits_on_that_name_only() -> None:
    box = Mailbox()
    box.put(event(0, "other"))
    first = wait(0)
    assert box.take(first) is None  # waits
    assert box.put(event(1, "other")) is None
    assert box.put(event(2)) is first
    assert box.reserved(2)


def test_a_token_feeds_only_the_wait_on_that_token() -> None:
    box = Mailbox()
    by_name = wait(0)
    assert box.take(by_name) is None
    assert box.put(event(0, token="t1")) is None  # no wait on t1 yet: kept
    on_t2 = wait(1, token="t2")
    assert box.take(on_t2) is None
    assert box.take(wait(2, token="t1")) == event(0, token="t1")
    assert box.put(event(1, token="t2")) is on_t2
    assert box.waiting("go", "t2") is on_t2  # until removed, once its outcome is written
    box.remove(on_t2)
    assert box.waiting("go", "t2") is None
    assert box.waiting("go", None) is by_name


def test_the_oldest_wait_takes_a_new_event() -> None:
    box = Mailbox()
    first, second = wait(3), wait(5)
    box.take(first)
    box.take(second)
    assert box.waiting("go", None) is first
    box.remove(first)
    assert box.waiting("go", None) is second
    box.remove(second)
    assert box.waiting("go", None) is None


def test_a_new_event_goes_at_once_to_the_oldest_wait_that_takes_it() -> None:
    box = Mailbox()
    first, second, on_token = wait(3), wait(5), wait(6, token="tok")
    for w in (first, second, on_token):
        box.take(w)
    assert box.accept(0, "go", None) is first
    assert box.reserved(0) and box.busy  # on its way to the wait
    assert box.accept(1, "go", "tok") is on_token
    assert box.accept(2, "go", "other") is None  # a token nobody waits on: kept for later
    assert box.accept(3, "go", None, live=False) is None  # replaying: waits take nothing yet
    box.written("go")
    assert not box.reserved(2) and not box.reserved(3)


def test_an_event_being_written_is_not_overtaken() -> None:
    box = Mailbox()
    assert box.accept(0, "go", None) is None  # sent while no wait was there; being written
    w = wait(0)
    assert box.take(w) is None
    assert box.accept(1, "go", None) is None  # a newer event must not go first
    assert box.accept(2, "go", "tok") is None
    assert box.busy
    box.written("go")
    box.written("go")
    assert not box.busy
    assert box.put(event(0)) is w  # the older one, committed, goes to the wait
    assert box.waiting("go", None) is w


def test_a_given_back_event_takes_its_place_again() -> None:
    box = Mailbox()
    box.put(event(0))
    box.put(event(1))
    assert box.take(wait(0)) == event(0)
    box.give_back(0)
    assert not box.reserved(0) and box.given_back(0) and box.busy
    box.put(event(0))  # back in the mailbox before its EventReturned commits
    assert box.returned(0)  # committed: it was back already
    assert not box.given_back(0) and not box.returned(0)
    assert box.take(wait(1)) == event(0)  # oldest first, again
    assert box.take(wait(2)) == event(1)


def test_tokens_are_single_use_until_a_write_is_refused() -> None:
    box = Mailbox(["a"])
    assert box.token_used("a") and not box.token_used("b")
    box.use_token("b")
    assert box.token_used("b")
    box.free_token("b")
    assert not box.token_used("b")


def test_a_removed_wait_takes_nothing() -> None:
    box = Mailbox()
    w = wait(0)
    box.take(w)
    box.remove(w)
    box.remove(w)  # twice: no harm
    assert box.put(event(0)) is None
    assert box.take(wait(1)) == event(0)
