"""Timers for waits, sleeps and retries: a hierarchical timing wheel.

Deadlines are absolute (epoch seconds) and cut into ticks (1 ms by default). Level
0 has one slot per tick of the current 64-tick block; each of the five levels above
has 64 slots, each covering a whole block of the level below; deadlines beyond the
top level (about two years) wait in an overflow table keyed by top-level block. A
timer sits at the level of the highest bit in which its tick differs from the
wheel's position, so schedule is one append and cancel is a flag: a cancelled timer
is dropped when its slot is reached, or in one sweep once cancelled timers far
outnumber live ones (so schedule/cancel churn cannot grow memory).

The wheel holds at most one armed ``clock.call_at``, set for the exact earliest
deadline of the earliest non-empty slot; when it rings, the wheel moves to the
clock's tick, cascading the higher-level slots on the way (only those holding
timers: an empty wheel arms nothing, a far one arms once), and runs every timer
whose deadline has passed: by deadline, ties in schedule order. A timer never runs
before its deadline; a cancel may leave the alarm early, which only costs a wake-up.

Cascading costs Python work per timer, so a slot of thousands cascaded when it comes
due would make the timers due meanwhile late by milliseconds. Instead the slots due
within a few seconds are *staged*: spread over the level below ahead of time, a
bounded batch at each wake-up (the alarm is set a tick ahead while some remain), so
that reaching a slot only moves its ready buckets in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from itertools import compress, islice, repeat
from math import floor as _floor
from operator import attrgetter, is_not

from actorflow.clock import Cancellable, Clock
from actorflow.log import logger as _log

# 1 ms ticks: 64 ms, 4 s, 4.4 min, 4.7 h, 12 days, 2.2 years. A small level 0 keeps each
# level-0 slot (the timers of one tick, scanned at each wake-up in it) short.
_LEVEL_BITS = (6, 6, 6, 6, 6, 6)
_SHIFTS = tuple(sum(_LEVEL_BITS[:i]) for i in range(len(_LEVEL_BITS)))
_TOP = sum(_LEVEL_BITS)  # ticks that differ from the position at or above this bit overflow
_BASES = tuple(sum(1 << b for b in _LEVEL_BITS[:i]) for i in range(len(_LEVEL_BITS)))
_SLOTS = sum(1 << b for b in _LEVEL_BITS)
# For a position/tick XOR of bit length n (<= _TOP): its level's shift, mask and base.
_PLACE = tuple(
    next(
        (_SHIFTS[lvl], (1 << _LEVEL_BITS[lvl]) - 1, _BASES[lvl])
        for lvl in range(len(_LEVEL_BITS))
        if n <= _SHIFTS[lvl] + _LEVEL_BITS[lvl]
    )
    for n in range(_TOP + 1)
)
# For a flat slot index: its level's shift, the shift of the level above, its level's base.
_SPAN = tuple(
    (_SHIFTS[lvl], _SHIFTS[lvl] + _LEVEL_BITS[lvl], _BASES[lvl])
    for lvl in range(len(_LEVEL_BITS))
    for _ in range(1 << _LEVEL_BITS[lvl])
)
_L0 = 1 << _LEVEL_BITS[0]
_L0_MASK = _L0 - 1
_LEVEL = tuple(lvl for lvl, bits in enumerate(_LEVEL_BITS) for _ in range(1 << bits))
# Cancelled timers stay in their slots (as ~80 bytes each: the callback is dropped at
# once) until there are more than _COMPACT_MIN of them and _COMPACT_RATIO times the live
# ones; then one sweep drops them all. Sweeping touches every held timer, so a larger
# ratio trades a little memory for fewer sweeps: amortized (1 + 1/ratio) visits a cancel.
_COMPACT_MIN = 4096
_COMPACT_RATIO = 3
# Staging (see above) spreads at most _STAGE_BUDGET timers a wake-up (~0.25 ms at ~0.5 us
# each), of the higher-level slots starting within _STAGE_HORIZON ticks.
_STAGE_BUDGET = 512
_STAGE_HORIZON = 1 << (_SHIFTS[2] + 1)  # two level-2 blocks: ~8 s of 1 ms ticks
_INF = math.inf
_when = attrgetter("when")
_callback = attrgetter("callback")


def _alive(timers: list[Timer]) -> list[Timer]:
    """The timers not yet run or cancelled, in order (C-speed: compaction is bulk work)."""
    return list(compress(timers, map(is_not, map(_callback, timers), repeat(None))))


class Timer:
    """A scheduled callback; ``cancel()`` is O(1) and idempotent."""

    __slots__ = ("_wheel", "callback", "when")

    def __init__(
        self, when: float, callback: Callable[[], object] | None, wheel: TimerWheel
    ) -> None:
        self.when = when
        self.callback = callback  # None once run or cancelled: the mark of a dead timer
        self._wheel = wheel

    def cancel(self) -> None:
        """Never run; a no-op once run or cancelled."""
        if self.callback is not None:
            self.callback = None
            wheel = self._wheel
            wheel._live -= 1
            wheel._dead = dead = wheel._dead + 1
            if dead > _COMPACT_MIN and dead > _COMPACT_RATIO * wheel._live:
                wheel._compact()

    @property
    def pending(self) -> bool:
        """True until the timer has run or been cancelled."""
        return self.callback is not None

    def __repr__(self) -> str:
        return f"<Timer when={self.when} pending={self.pending}>"


class _Staged:
    """A higher-level slot's first ``done`` timers, spread ahead of time over ``buckets``
    (one per slot of the level below), the ``dropped`` cancelled ones left out. Only
    appends may change the slot meanwhile; anything else discards its staging.

    The first bucket is due as soon as the slot is, so it is staged in turn (``first``)
    when it is itself a higher-level slot."""

    __slots__ = ("buckets", "done", "dropped", "first")

    def __init__(self, buckets: list[list[Timer]], first: _Staged | None) -> None:
        self.buckets = buckets
        self.done = 0
        self.dropped = 0
        self.first = first


def _staged_earliest(timers: list[Timer], staged: _Staged) -> float:
    """The earliest deadline in a staged slot, cancelled timers included (inf if none is
    left): found in its first non-empty bucket and its unstaged rest, not by a scan."""
    earliest: float = min(map(_when, islice(timers, staged.done, None)), default=_INF)
    for j, bucket in enumerate(staged.buckets):
        if bucket:
            if j == 0 and staged.first is not None:
                return min(earliest, _staged_earliest(bucket, staged.first))
            bucket_earliest: float = min(map(_when, bucket))
            return min(earliest, bucket_earliest)
    return earliest


class TimerWheel:
    """Runs callbacks at absolute deadlines with one armed ``clock.call_at`` at a time.

    ``tick`` (seconds) is the slot width; deadlines keep full precision, since the
    alarm is set for the exact earliest one. A callback that raises is logged
    (``timer.callback_failed``) and the other timers still run.
    """

    def __init__(self, clock: Clock, tick: float = 0.001) -> None:
        if not tick > 0:
            raise ValueError(f"tick must be positive, got {tick!r}")
        self._clock = clock
        self._tick = tick
        self._per_tick = 1.0 / tick
        self._pos = _floor(clock.now() * self._per_tick)  # every slot before this tick is done
        self._slots: list[list[Timer]] = [[] for _ in range(_SLOTS)]
        self._occupied = 0  # bit i set: _slots[i] may hold timers
        self._overflow: dict[int, list[Timer]] = {}  # tick >> _TOP -> timers
        # The earliest deadline in a higher-level slot (key: flat index) or overflow block
        # (key: -1 - block), once _arm needed it: so that a big far slot is scanned once,
        # not at every re-arm. Cancels may leave it early: the alarm then rings early,
        # cascades the slot and re-arms exactly.
        self._earliest_in: dict[int, float] = {}
        self._staged: dict[int, _Staged] = {}  # flat index of a higher-level slot -> staging
        # Empty lists for staging buckets: the slot lists a staging replaces, reused so that
        # the lists that fill up stay old for the garbage collector (a young list of
        # thousands of timers is scanned by every young collection: milliseconds).
        self._spare: list[list[Timer]] = []
        # Every higher-level slot starting before this tick is fully staged: so that a
        # wake-up with nothing new to stage costs one comparison, not a scan of the slots.
        self._stage_from: float = _INF
        self._live = 0
        self._dead = 0  # cancelled timers still held in slots or in a batch being run
        self._armed: Cancellable | None = None
        self._armed_at = _INF  # -inf while running a batch: re-arm once at its end
        self._closed = False

    def schedule(self, when: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` once the clock reaches ``when`` (epoch seconds).

        A deadline already past runs at the next loop iteration. After
        :meth:`close` the timer is returned already inert, and so is one whose deadline
        never comes (``inf``, or NaN); ``-inf`` is due now.
        """
        if when == -_INF:
            when = self._clock.now()
        if self._closed or not when < _INF:  # NaN compares false: it never comes either
            return Timer(when, None, self)
        timer = Timer(when, callback, self)
        armed_at = self._armed_at
        tick = _floor(when * self._per_tick)
        pos = self._pos
        if armed_at == _INF:  # empty and idle: catch the position up with the clock first
            now = _floor(self._clock.now() * self._per_tick)
            if now > pos:
                self._pos = pos = now
        diff = tick ^ pos
        alarm = when
        if tick <= pos:  # due already (or this very tick): the current slot
            slot = self._slots[pos & _L0_MASK]
            if not slot:
                self._occupied |= 1 << (pos & _L0_MASK)
            slot.append(timer)
        elif diff < _L0:
            slot = self._slots[tick & _L0_MASK]
            if not slot:
                self._occupied |= 1 << (tick & _L0_MASK)
            slot.append(timer)
        else:
            if diff >> _TOP:
                i = -1 - (tick >> _TOP)
                slot = self._overflow.setdefault(tick >> _TOP, [])
            else:
                shift, mask, base = _PLACE[diff.bit_length()]
                i = base + ((tick >> shift) & mask)
                slot = self._slots[i]
                if not slot:
                    self._occupied |= 1 << i
            slot.append(timer)
            earliest = self._earliest_in.get(i)
            if earliest is not None and when < earliest:
                self._earliest_in[i] = when
            if tick < self._stage_from:
                self._stage_from = tick
            if when < armed_at and tick - pos < _STAGE_HORIZON:
                alarm = min(when, self._clock.now() + self._tick)  # wake up to stage it
        self._live += 1
        if alarm < armed_at:
            self._arm_at(alarm)
        return timer

    def __len__(self) -> int:
        return self._live

    def close(self) -> None:
        """Stop: no timer runs afterwards, and later ``schedule`` calls are inert."""
        self._closed = True
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None
        for slot in [*self._slots, *self._overflow.values()]:
            for timer in slot:
                timer.callback = None
            slot.clear()
        self._overflow.clear()
        self._earliest_in.clear()
        self._staged.clear()
        self._spare.clear()
        self._stage_from = _INF
        self._occupied = 0
        self._live = self._dead = 0

    # -- internals -------------------------------------------------------------------
    def _arm_at(self, when: float) -> None:
        if self._armed is not None:
            self._armed.cancel()
        self._armed_at = when
        self._armed = self._clock.call_at(when, self._ring)

    def _spread(
        self, timers: Iterable[Timer], into: list[list[Timer]], base: int, level: int
    ) -> int:
        """Append each live timer of a slot of ``level`` to ``into[base + j]``, ``j`` its
        slot in the level below; return how many were dead."""
        shift, mask = _SHIFTS[level - 1], (1 << _LEVEL_BITS[level - 1]) - 1
        per_tick = self._per_tick
        dropped = 0
        for timer in timers:
            if timer.callback is None:
                dropped += 1
            else:
                into[base + ((_floor(timer.when * per_tick) >> shift) & mask)].append(timer)
        return dropped

    def _cascade(self, timers: list[Timer], staged: _Staged | None, level: int) -> int:
        """Spread the ``timers`` of a slot of ``level`` (the overflow: one past the top)
        over the slots of the level below, the position having just entered that slot;
        return how many were dead. What was ``staged`` ahead is moved in as it is, so only
        the timers added since are spread now. Those of the first slot below share the
        position's block there and must go lower still: that slot is cascaded next."""
        slots = self._slots
        base = _BASES[level - 1]
        staged_dropped = 0
        if staged is not None:  # the slots below are empty: the position just left them
            self._spare += slots[base : base + len(staged.buckets)]
            slots[base : base + len(staged.buckets)] = staged.buckets
            if staged.first is not None:
                if staged.buckets[0]:
                    self._staged[base] = staged.first  # that slot is cascaded next
                else:
                    self._release(staged.first)
            staged_dropped = staged.dropped
            timers = list(islice(timers, staged.done, None))
        dropped = staged_dropped + self._spread(timers, slots, base, level)
        if level >= 2:  # the slots below are higher-level ones, to be staged in turn
            self._stage_from = min(self._stage_from, self._pos)
        occupied = self._occupied
        for k in range(base, base + (1 << _LEVEL_BITS[level - 1])):
            if slots[k]:
                occupied |= 1 << k
        self._occupied = occupied
        return dropped

    def _stage(self) -> bool:
        """Spread up to _STAGE_BUDGET timers of the higher-level slots due within the
        horizon (the earliest first) ahead of time; return True if some remain."""
        pos = self._pos
        if self._stage_from - pos >= _STAGE_HORIZON:
            return False
        budget = _STAGE_BUDGET
        higher = self._occupied >> _L0 << _L0
        if self._stage_from > pos:  # the slots before that one's are staged already
            higher &= -1 << self._slot_of(int(self._stage_from))
        while higher:
            low = higher & -higher
            higher ^= low
            i = low.bit_length() - 1
            shift, width, base = _SPAN[i]
            start = (pos >> width << width) | ((i - base) << shift)
            if start - pos >= _STAGE_HORIZON:
                self._stage_from = start
                return False
            staged = self._staged.get(i)
            if staged is None:
                staged = self._staged[i] = self._staging(_LEVEL[i])
            budget = self._stage_slot(self._slots[i], staged, _LEVEL[i], budget)
            if budget == 0:
                self._stage_from = start
                return True
        self._stage_from = _INF
        return False

    def _stage_slot(self, timers: list[Timer], staged: _Staged, level: int, budget: int) -> int:
        """Stage up to ``budget`` more of the ``timers`` of a slot of ``level``, then its
        first bucket's; return the budget left (none: some may remain)."""
        done = staged.done
        stop = min(len(timers), done + budget)
        if stop > done:
            staged.dropped += self._spread(islice(timers, done, stop), staged.buckets, 0, level)
            staged.done = stop
            budget -= stop - done
        if staged.first is not None and budget:
            budget = self._stage_slot(staged.buckets[0], staged.first, level - 1, budget)
        return budget

    def _staging(self, level: int) -> _Staged:
        """A new staging for a slot of ``level``, its buckets from the spare lists."""
        spare = self._spare
        buckets = [spare.pop() if spare else [] for _ in range(1 << _LEVEL_BITS[level - 1])]
        return _Staged(buckets, self._staging(level - 1) if level >= 2 else None)

    def _release(self, staged: _Staged | None) -> None:
        """Give the buckets of a staging no longer wanted back to the spare lists."""
        while staged is not None:
            for bucket in staged.buckets:
                bucket.clear()
            self._spare += staged.buckets
            staged = staged.first

    def _unstage(self, i: int) -> None:
        """Forget what was staged of slot ``i``: its list was rewritten."""
        staged = self._staged.pop(i, None)
        if staged is not None:
            self._release(staged)
            self._stage_from = min(self._stage_from, self._pos)

    def _slot_of(self, tick: int) -> int:
        """The flat index of the slot that holds ``tick`` (not before the position, within
        the top level); _L0 for a tick of the position's level-0 block."""
        diff = tick ^ self._pos
        if diff < _L0:
            return _L0
        if diff >> _TOP:
            return _SLOTS
        shift, mask, base = _PLACE[diff.bit_length()]
        return base + ((tick >> shift) & mask)

    def _earliest(self) -> tuple[int, int] | None:
        """The earliest slot that may hold timers, as (flat index or -1 for overflow, start
        tick)."""
        occupied = self._occupied
        if occupied:
            i = (occupied & -occupied).bit_length() - 1
            shift, width, base = _SPAN[i]
            return i, (self._pos >> width << width) | ((i - base) << shift)
        if self._overflow:
            return -1, min(self._overflow) << _TOP
        return None

    def _take(self, i: int, start: int) -> tuple[list[Timer], _Staged | None]:
        """Remove and return the contents of slot ``i`` (or the overflow block at ``start``)
        and what of them was staged."""
        if i < 0:
            self._earliest_in.pop(-1 - (start >> _TOP), None)
            return self._overflow.pop(start >> _TOP), None
        if i >= _L0:
            self._earliest_in.pop(i, None)
        timers = self._slots[i]
        self._slots[i] = []
        self._occupied &= ~(1 << i)
        return timers, self._staged.pop(i, None)

    def _collect(self, now: float) -> list[Timer]:
        """Move the position to the clock's tick; return the live timers due by ``now``."""
        target = _floor(now * self._per_tick)
        due: list[Timer] = []
        dropped = 0
        while (found := self._earliest()) is not None:
            i, start = found
            if start > target:
                break
            timers, staged = self._take(i, start)
            if not 0 <= i < _L0:  # a higher-level slot: spread it over the levels below
                self._pos = start
                level = _LEVEL[i] if i >= 0 else len(_LEVEL_BITS)
                dropped += self._cascade(timers, staged, level)
                continue
            if start < target:
                for timer in timers:
                    if timer.callback is None:
                        dropped += 1
                    else:
                        due.append(timer)
                continue
            keep = []  # the target tick itself: only deadlines up to now are due
            for timer in timers:
                if timer.callback is None:
                    dropped += 1
                elif timer.when <= now:
                    due.append(timer)
                else:
                    keep.append(timer)
            if keep:
                self._slots[i] = keep
                self._occupied |= 1 << i
            break
        if target > self._pos:
            self._pos = target
        self._dead -= dropped
        due.sort(key=_when)  # stable: ties keep schedule order
        return due

    def _ring(self) -> None:
        """The armed alarm: run what is due, then arm for what is next."""
        self._armed = None
        self._armed_at = -_INF
        due = self._collect(self._clock.now())
        taken = 0
        try:
            for timer in due:
                if self._closed:
                    return
                taken += 1
                callback = timer.callback
                if callback is None:  # cancelled by an earlier callback of this batch
                    self._dead -= 1
                    continue
                timer.callback = None
                self._live -= 1
                try:
                    callback()
                except Exception:
                    _log.exception("timer.callback_failed", when=timer.when)
        finally:
            self._armed_at = _INF
            rest = due[taken:]
            if self._closed:
                for timer in rest:
                    timer.callback = None
            else:
                if rest:  # a BaseException escaped a callback: the rest run next time
                    self._slots[self._pos & _L0_MASK][:0] = rest
                    self._occupied |= 1 << (self._pos & _L0_MASK)
                self._arm(self._clock.now() + self._tick if self._stage() else _INF)

    def _arm(self, soon: float = _INF) -> None:
        """Arm for the earliest live deadline of the earliest slot, or for ``soon`` if
        earlier (more to stage); nothing if empty."""
        while (found := self._earliest()) is not None:
            i, start = found
            key = i if i >= 0 else -1 - (start >> _TOP)
            earliest = self._earliest_in.get(key)
            if earliest is not None:
                self._arm_at(min(earliest, soon))
                return
            timers = self._slots[i] if i >= 0 else self._overflow[start >> _TOP]
            staged = self._staged.get(i) if i >= _L0 else None
            if staged is not None and (first := _staged_earliest(timers, staged)) < _INF:
                self._earliest_in[key] = first
                self._arm_at(min(first, soon))
                return
            live = _alive(timers)
            if len(live) < len(timers):
                self._dead -= len(timers) - len(live)
                timers[:] = live
                self._unstage(i)
            if live:
                earliest = min(map(_when, live))
                if not 0 <= i < _L0:
                    self._earliest_in[key] = earliest
                self._arm_at(min(earliest, soon))
                return
            self._release(self._take(i, start)[1])

    def _compact(self) -> None:
        """Drop every cancelled timer still held: they far outnumber the live ones."""
        removed = 0
        occupied = self._occupied
        while occupied:
            low = occupied & -occupied
            occupied ^= low
            i = low.bit_length() - 1
            timers = self._slots[i]
            live = _alive(timers)
            removed += len(timers) - len(live)
            self._slots[i] = live
            if len(live) < len(timers):
                self._unstage(i)
            if not live:
                self._occupied &= ~low
                self._earliest_in.pop(i, None)
        for key, timers in list(self._overflow.items()):
            live = _alive(timers)
            removed += len(timers) - len(live)
            if live:
                self._overflow[key] = live
            else:
                del self._overflow[key]
                self._earliest_in.pop(-1 - key, None)
        self._dead -= removed
