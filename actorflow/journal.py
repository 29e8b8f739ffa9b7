"""The journal of one run: the position of every call its code makes, what is stored
for those positions, and the checks that replayed code makes the calls it made before.

Each call on the context takes the next position (``seq``) in the order the code makes
it. A call with an outcome (a step, a wait) finds it among the stored outcomes while
replay feeds them; a value call (``now``, ``random``, ``uuid4``, ``create_event``, a
deadline) finds its stored :class:`~actorflow.records.Value`. A position past what is
stored is a new call, whose outcome or value is yet to be written. The journal does no
I/O: it is told what is stored, and raises :class:`NonDeterminismError` when the code
and the stored calls disagree.

A patch (``ctx.patched``) takes no position, so that histories written before the patch
keep their positions: its marker is stored apart, and where there is none the journal
tells whether the stored history went on past this point without it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from actorflow.errors import NonDeterminismError
from actorflow.records import Effect, Outcome, Value
from actorflow.steps import same_call

_RESTORE = "restore the code that started this instance"


class Journal:
    """Call positions and stored outcomes of one instance's run; see the module docstring.

    ``values`` is the instance's stored values by position (its snapshot's, so that a
    value enters it when its record is committed, not when it is written).
    """

    __slots__ = ("_outcomes", "_patches", "_values", "instance_id", "made")

    def __init__(self, instance_id: str, values: dict[int, Value]) -> None:
        self.instance_id = instance_id
        self.made = 0  # calls the code has made: the next call's position
        self._values = values
        self._outcomes: dict[int, Outcome] = {}  # while replaying: stored outcomes by position
        self._patches: dict[str, bool] = {}  # this run's answers to ``patched``

    def replay(self, history: Iterable[Effect]) -> None:
        """Hold the outcomes stored in ``history`` until :meth:`end_replay`."""
        self._outcomes = {e.seq: e for e in history if isinstance(e, Outcome)}

    def end_replay(self) -> None:
        """Replay is over: the code's later calls are new ones."""
        self._outcomes = {}

    def next(self) -> int:
        """The position of the code's next call (which is counted as made)."""
        seq = self.made
        self.made = seq + 1
        return seq

    def check_call(self, seq: int, kind: str, name: str) -> None:
        """Raise :class:`NonDeterminismError` if the journal holds, at ``seq``, another
        call than ``kind name`` (or a value call)."""
        stored = self._stored(seq)
        if stored is not None and not same_call(stored.kind, stored.name, kind, name):
            raise self._diverged(seq, stored, kind, name)

    def value(self, seq: int, kind: str, name: str) -> bytes | None:
        """The value stored for value call ``kind name`` at ``seq`` (``None``: a new
        call, whose value is to be recorded). Raises :class:`NonDeterminismError` if the
        journal holds another call there."""
        stored = self._stored(seq)
        if stored is None:
            return None
        if not isinstance(stored, Value) or (stored.kind, stored.name) != (kind, name):
            raise self._diverged(seq, stored, kind, name)
        return stored.value

    def check_outcome(self, outcome: Outcome) -> None:
        """Replay fed ``outcome`` and no open call takes it: raise
        :class:`NonDeterminismError` if its code has not made that call (it no longer
        makes it), rather than having cancelled it."""
        if outcome.seq >= self.made:
            raise NonDeterminismError(
                f"workflow {self.instance_id!r}: the journal holds the outcome of call "
                f"#{outcome.seq} ({_call(outcome.kind, outcome.name)}) but the code no longer "
                f"makes that call; {_RESTORE}"
            )

    def check_made(self, how: str) -> None:
        """Replay fed every stored outcome and the code ``how`` (``paused``,
        ``returned``, ...): raise :class:`NonDeterminismError` if the journal holds a
        call it has not made, whose outcome running on would drop."""
        made, outcomes, values = self.made, self._outcomes, self._values
        if max(outcomes, default=-1) < made and max(values, default=-1) < made:
            return
        seq = min(seq for seq in (*outcomes, *values) if seq >= made)
        stored = self._stored(seq)
        assert stored is not None
        raise NonDeterminismError(
            f"workflow {self.instance_id!r}: the code {how} after {made} calls, but the "
            f"journal holds call #{seq} ({_call(stored.kind, stored.name)}) that it no longer "
            f"makes; {_RESTORE}"
        )

    def patched(self, patch_id: str, markers: Collection[str]) -> tuple[bool, bool]:
        """Whether the code takes patch ``patch_id``'s new branch here, and whether its
        marker is to be recorded (``markers``: the run's stored ones).

        Its marker is stored: yes. Else, if the journal holds a call at or past this
        position, the run went on past here before the patch existed: no. Else this is a
        fresh path: yes, and record the marker. The first answer holds for the run.
        """
        answer = self._patches.get(patch_id)
        if answer is not None:
            return answer, False
        made = self.made
        new = patch_id not in markers and (
            max(self._outcomes, default=-1) < made and max(self._values, default=-1) < made
        )
        answer = new or patch_id in markers
        self._patches[patch_id] = answer
        return answer, new

    def _stored(self, seq: int) -> Outcome | Value | None:
        # Either sort: a value call and a call with an outcome never share a kind, so a
        # call of one sort where the journal holds the other has diverged. Live, a new
        # call's position is past the journal: nothing is found.
        outcome = self._outcomes.get(seq)
        return outcome if outcome is not None else self._values.get(seq)

    def _diverged(
        self, seq: int, stored: Outcome | Value, kind: str, name: str
    ) -> NonDeterminismError:
        return NonDeterminismError(
            f"workflow {self.instance_id!r} call #{seq}: the journal holds "
            f"{_call(stored.kind, stored.name)} but the code now makes {_call(kind, name)}; "
            f"{_RESTORE}"
        )


def _call(kind: str, name: str) -> str:
    """A call as a divergence names it: its kind and name (and what makes a deadline)."""
    if kind == "deadline":
        return f"{kind} {name!r} (of a sleep or a timeout)"
    return f"{kind} {name!r}"
