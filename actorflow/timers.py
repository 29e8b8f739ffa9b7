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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import compress, repeat
from math import floor as _floor
from operator import attrgetter, is_not

from actorflow.clock import Cancellable, Clock
from actorflow.log import logger as _log

# 1 ms ticks: 64 ms, 4 s, 4.4 min, 4.7 h, 12 days, 2.2 years. A small level 0 keeps the
# cascade of one level-1 slot (all timers of the next 64 ms) short, so firing stays prompt.
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
        self._live = 0
        self._dead = 0  # cancelled timers still held in slots or in a batch being run
        self._armed: Cancellable | None = None
        self._armed_at = _INF  # -inf while running a batch: re-arm once at its end
        self._closed = False

    def schedule(self, when: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` once the clock reaches ``when`` (epoch seconds).

        A deadline already past runs at the next loop iteration. After
        :meth:`close` the timer is returned already inert.
        """
        if self._closed:
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
        self._live += 1
        if when < armed_at:
            self._arm_at(when)
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
        self._occupied = 0
        self._live = self._dead = 0

    # -- internals -------------------------------------------------------------------
    def _arm_at(self, when: float) -> None:
        if self._armed is not None:
            self._armed.cancel()
        self._armed_at = when
        self._armed = self._clock.call_at(when, self._ring)

    def _cascade(self, timers: list[Timer], level: int) -> int:
        """Spread the ``timers`` of a slot of ``level`` (the overflow: one past the top)
        over the slots of the level below, the position having just entered that slot;
        return how many were dead. Those of the first slot below share the position's
        block there and must go lower still: that slot is cascaded next, at once."""
        below = level - 1
        shift, base, mask = _SHIFTS[below], _BASES[below], (1 << _LEVEL_BITS[below]) - 1
        per_tick = self._per_tick
        slots = self._slots
        dropped = 0
        for timer in timers:
            if timer.callback is None:
                dropped += 1
            else:
                slots[base + ((_floor(timer.when * per_tick) >> shift) & mask)].append(timer)
        occupied = self._occupied
        for i in range(base, base + mask + 1):
            if slots[i]:
                occupied |= 1 << i
        self._occupied = occupied
        return dropped

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

    def _take(self, i: int, start: int) -> list[Timer]:
        """Remove and return the contents of slot ``i`` (or the overflow block at ``start``)."""
        if i < 0:
            self._earliest_in.pop(-1 - (start >> _TOP), None)
            return self._overflow.pop(start >> _TOP)
        if i >= _L0:
            self._earliest_in.pop(i, None)
        timers = self._slots[i]
        self._slots[i] = []
        self._occupied &= ~(1 << i)
        return timers

    def _collect(self, now: float) -> list[Timer]:
        """Move the position to the clock's tick; return the live timers due by ``now``."""
        target = _floor(now * self._per_tick)
        due: list[Timer] = []
        dropped = 0
        while (found := self._earliest()) is not None:
            i, start = found
            if start > target:
                break
            timers = self._take(i, start)
            if not 0 <= i < _L0:  # a higher-level slot: spread it over the levels below
                self._pos = start
                dropped += self._cascade(timers, _LEVEL[i] if i >= 0 else len(_LEVEL_BITS))
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
                self._arm()

    def _arm(self) -> None:
        """Arm for the earliest live deadline of the earliest slot; nothing if empty."""
        while (found := self._earliest()) is not None:
            i, start = found
            key = i if i >= 0 else -1 - (start >> _TOP)
            earliest = self._earliest_in.get(key)
            if earliest is not None:
                self._arm_at(earliest)
                return
            timers = self._slots[i] if i >= 0 else self._overflow[start >> _TOP]
            live = _alive(timers)
            if len(live) < len(timers):
                self._dead -= len(timers) - len(live)
                timers[:] = live
            if live:
                earliest = min(map(_when, live))
                if not 0 <= i < _L0:
                    self._earliest_in[key] = earliest
                self._arm_at(earliest)
                return
            self._take(i, start)

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
