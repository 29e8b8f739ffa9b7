"""The mailbox of one instance: its events not consumed yet, and the event waits that
have none to take.

An event sent by name feeds the waits on that name, a token's event only the wait on
that token; one event feeds one wait, oldest first (DESIGN §1, *Mailbox*). An event a
wait takes is *reserved* until the wait's outcome is committed; a wait cancelled before
it saw its event *gives it back*, and it takes its place again. The mailbox does no
I/O: its owner writes the records and tells it what was committed.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actorflow.records import EventState
    from actorflow.waits import EventWait

_EMPTY: Any = MappingProxyType({})
"""What an empty table of a mailbox is until something goes in (shared, read-only: a
write to it raises instead of reaching every mailbox); emptied, a table is this again.
An empty dict costs 64 bytes, and every loaded instance has a mailbox of eight tables,
mostly empty."""


class Mailbox:
    """Unconsumed events by name and by token, and the waits for them; see the module
    docstring. ``tokens``: the tokens events were already sent for (each is single-use).
    """

    # Slots, dicts for sets (an empty set costs 216 bytes), and the shared _EMPTY for
    # each table until it has something: every loaded instance has a mailbox.
    __slots__ = (
        "_by_name", "_by_token", "_reserved", "_returned", "_tokens", "_unwritten",
        "_waits_by_name", "_waits_by_token",
    )  # fmt: skip

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        # By name: a heap of (event id, event), so that the oldest goes first and a
        # given-back event takes its place again, each in O(log n).
        self._by_name: dict[str, list[tuple[int, EventState]]] = _EMPTY
        self._by_token: dict[str, EventState] = _EMPTY
        # By name: the one wait on it (the common case: no dict of its own, one object
        # less for the garbage collector to visit in every parked instance), or several
        # by sequence number, in the order they began waiting.
        self._waits_by_name: dict[str, EventWait | dict[int, EventWait]] = _EMPTY
        self._waits_by_token: dict[str, EventWait] = _EMPTY
        self._reserved: dict[int, None] = _EMPTY  # event ids taken by a wait, being written
        self._returned: dict[int, None] = _EMPTY  # given back, EventReturned not committed
        # By-name events accepted but not committed yet, by name, that no wait took: a
        # later event of the same name must not overtake them to a wait.
        self._unwritten: dict[str, int] = _EMPTY
        self._tokens: dict[str, None] = dict.fromkeys(tokens) or _EMPTY

    @property
    def busy(self) -> bool:
        """Whether an event is on its way: being written, reserved, or given back."""
        return bool(self._reserved or self._returned or self._unwritten)

    # -- tokens ----------------------------------------------------------------------
    def use_token(self, token: str) -> None:
        """An event is being sent for ``token``: no other may be."""
        if self._tokens is _EMPTY:
            self._tokens = {}
        self._tokens[token] = None

    def token_used(self, token: str) -> bool:
        """Whether an event was already sent (or is being written) for ``token``."""
        return token in self._tokens

    def free_token(self, token: str) -> None:
        """The event for ``token`` was not written: the token may be used again."""
        if token in self._tokens:
            del self._tokens[token]

    # -- events arriving -------------------------------------------------------------
    def accept(
        self, event_id: int, name: str, token: str | None, live: bool = True
    ) -> EventWait | None:
        """A new event (``name``, or ``token``'s) is being written: return the wait that
        takes it at once (only ``live``), the event reserved for it: the wait on its
        token, or the oldest on its name unless an earlier event of that name is still
        being written (which it must not overtake). Else a by-name event counts as being
        written until :meth:`written`."""
        wait = None
        if not live:
            pass
        elif token is not None:
            wait = self._waits_by_token.get(token)
        elif name not in self._unwritten and (waits := self._waits_by_name.get(name)):
            # As waiting() does, without a call: the hot path.
            wait = next(iter(waits.values())) if isinstance(waits, dict) else waits
        if wait is not None:
            self._reserve(event_id)
        elif token is None:
            if self._unwritten is _EMPTY:
                self._unwritten = {}
            self._unwritten[name] = self._unwritten.get(name, 0) + 1
        return wait

    def waiting(self, name: str, token: str | None) -> EventWait | None:
        """The wait an event of ``name`` (or ``token``'s) would go to now, if any."""
        if token is not None:
            return self._waits_by_token.get(token)
        waits = self._waits_by_name.get(name)
        if isinstance(waits, dict):
            return next(iter(waits.values()))
        return waits

    def written(self, name: str) -> None:
        """A by-name event that :meth:`accept` gave no wait was committed (it is
        :meth:`put` next)."""
        unwritten = self._unwritten
        left = unwritten.get(name, 0) - 1
        if left > 0:
            unwritten[name] = left
        elif name in unwritten:
            del unwritten[name]
            if not unwritten:
                self._unwritten = _EMPTY

    def put(self, event: EventState) -> EventWait | None:
        """Offer a committed event: return the wait that takes it (the event is then
        reserved for it), or keep it, in id order, for a later wait."""
        token = event.token
        wait = self.waiting(event.name, token)
        if wait is not None:
            self._reserve(event.id)
        elif token is not None:
            if self._by_token is _EMPTY:
                self._by_token = {}
            self._by_token[token] = event
        else:  # by id: a given-back event takes its place again
            if self._by_name is _EMPTY:
                self._by_name = {}
            heapq.heappush(self._by_name.setdefault(event.name, []), (event.id, event))
        return wait

    # -- waits -----------------------------------------------------------------------
    def take(self, wait: EventWait) -> EventState | None:
        """The oldest event ``wait`` takes, reserved for it; ``None``: there is none, and
        ``wait`` waits here (until :meth:`remove`) for the next one."""
        token = wait.token
        if token is not None:
            by_token = self._by_token
            event = by_token.get(token)
            if event is None:
                if self._waits_by_token is _EMPTY:
                    self._waits_by_token = {}
                self._waits_by_token[token] = wait
                return None
            del by_token[token]
            if not by_token:
                self._by_token = _EMPTY
        else:
            mail = self._by_name.get(wait.name)
            if not mail:
                waits = self._waits_by_name
                if waits is _EMPTY:
                    waits = self._waits_by_name = {}
                other = waits.get(wait.name)
                if other is None:
                    waits[wait.name] = wait
                elif isinstance(other, dict):
                    other[wait.seq] = wait
                else:
                    waits[wait.name] = {other.seq: other, wait.seq: wait}
                return None
            event = heapq.heappop(mail)[1]
            if not mail:
                del self._by_name[wait.name]
                if not self._by_name:
                    self._by_name = _EMPTY
        self._reserve(event.id)
        return event

    def remove(self, wait: EventWait) -> None:
        """``wait`` no longer waits here (it got its outcome, or was cancelled)."""
        token = wait.token
        if token is not None:
            if self._waits_by_token.get(token) is wait:
                del self._waits_by_token[token]
                if not self._waits_by_token:
                    self._waits_by_token = _EMPTY
            return
        all_waits = self._waits_by_name
        waits = all_waits.get(wait.name)
        if waits is wait:
            del all_waits[wait.name]
        elif isinstance(waits, dict):
            waits.pop(wait.seq, None)
            if len(waits) == 1:
                all_waits[wait.name] = next(iter(waits.values()))
            elif not waits:
                del all_waits[wait.name]
        if not all_waits:
            self._waits_by_name = _EMPTY

    # -- reserved events -------------------------------------------------------------
    def _reserve(self, event_id: int) -> None:
        if self._reserved is _EMPTY:
            self._reserved = {}
        self._reserved[event_id] = None

    def _unreserve(self, event_id: int) -> None:
        reserved = self._reserved
        if event_id in reserved:
            del reserved[event_id]
            if not reserved:
                self._reserved = _EMPTY

    def reserved(self, event_id: int) -> bool:
        """Whether event ``event_id`` is taken by a wait whose outcome is being written."""
        return event_id in self._reserved

    def reserved_ids(self) -> list[int]:
        """The events taken by waits whose outcomes are being written."""
        return list(self._reserved)

    def consumed(self, event_id: int) -> None:
        """The outcome that took event ``event_id`` was committed and delivered."""
        self._unreserve(event_id)

    def give_back(self, event_id: int) -> None:
        """The wait that took event ``event_id`` is gone before it saw it: the event is
        no longer taken (its ``EventReturned`` being written); the owner :meth:`put`\\ s it
        back when it runs."""
        self._unreserve(event_id)
        if self._returned is _EMPTY:
            self._returned = {}
        self._returned[event_id] = None

    def given_back(self, event_id: int) -> bool:
        """Whether event ``event_id`` was given back and its ``EventReturned`` is not
        committed yet."""
        return event_id in self._returned

    def returned(self, event_id: int) -> bool:
        """Event ``event_id``'s ``EventReturned`` was committed: whether it was given back
        here (and so is in the mailbox already); if not, the owner :meth:`put`\\ s it."""
        returned = self._returned
        if event_id in returned:
            del returned[event_id]
            if not returned:
                self._returned = _EMPTY
            return True
        return False
