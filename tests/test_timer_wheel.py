"""TimerWheel: exact firing with a manual clock, ordering, cancel, far deadlines, churn."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from actorflow import timers as timers_mod
from actorflow.clock import SystemClock
from actorflow.testing import ManualClock
from actorflow.timers import Timer, TimerWheel

DAY = 86_400.0
YEAR = 365.25 * DAY


class SpyClock:
    """A ManualClock that remembers every alarm the wheel arms, to check there is one."""

    def __init__(self) -> None:
        self.manual = ManualClock()
        self.alarms: list[tuple[float, Any]] = []

    def now(self) -> float:
        return self.manual.now()

    def call_at(self, when: float, callback: Callable[[], object]) -> Any:
        alarm = self.manual.call_at(when, callback)
        self.alarms.append((when, alarm))
        return alarm

    def armed(self) -> list[float]:
        """Deadlines of the alarms still armed (not rung, not cancelled)."""
        return [when for when, alarm in self.alarms if not alarm.cancelled]

    async def advance(self, seconds: float) -> None:
        await self.manual.advance(seconds)


@pytest.fixture
def clock() -> SpyClock:
    return SpyClock()


@pytest.fixture
def wheel(clock: SpyClock) -> TimerWheel:
    return TimerWheel(clock)


class Log:
    """Callbacks that record (name, clock time when run)."""

    def __init__(self, clock: SpyClock) -> None:
        self.clock = clock
        self.runs: list[tuple[str, float]] = []

    def __call__(self, name: str) -> Callable[[], None]:
        return lambda: self.runs.append((name, self.clock.now()))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.runs]


def stored(wheel: TimerWheel) -> int:
    """How many timer entries (live or cancelled) the wheel still holds."""
    return sum(map(len, wheel._slots)) + sum(map(len, wheel._overflow.values()))


async def test_runs_by_deadline_and_ties_in_schedule_order(
    clock: SpyClock, wheel: TimerWheel
) -> None:
    log = Log(clock)
    t0 = clock.now()
    for name, delay in [("c", 3.0), ("a1", 1.0), ("b", 2.0), ("a2", 1.0), ("d", 0.0005)]:
        wheel.schedule(t0 + delay, log(name))
    wheel.schedule(t0 + 1.0, log("a3"))
    await clock.advance(10)
    assert log.names == ["d", "a1", "a2", "a3", "b", "c"]
    assert [at for _, at in log.runs] == [t0 + d for d in (0.0005, 1.0, 1.0, 1.0, 2.0, 3.0)]


async def test_ties_keep_schedule_order_across_a_cascade(
    clock: SpyClock, wheel: TimerWheel
) -> None:
    """A timer scheduled early sits in a higher level; one scheduled later for the same
    deadline goes straight to level 0: the early one still runs first."""
    log = Log(clock)
    when = clock.now() + 30.0
    wheel.schedule(when, log("early"))
    await clock.advance(29.99)
    wheel.schedule(when, log("late"))
    wheel.schedule(when - 0.0001, log("before"))
    await clock.advance(1)
    assert log.names == ["before", "early", "late"]


async def test_never_early_and_exactly_on_time_within_a_tick(
    clock: SpyClock, wheel: TimerWheel
) -> None:
    log = Log(clock)
    t0 = clock.now()
    deadlines = [t0 + 0.0101, t0 + 0.0102, t0 + 0.0109, t0 + 0.0110, t0 + 0.0643]
    for i, when in enumerate(deadlines):
        wheel.schedule(when, log(str(i)))
    await clock.advance(0.0101)
    assert log.names == ["0"]
    await clock.advance(0.00005)
    assert log.names == ["0"]
    await clock.advance(0.5)
    assert log.names == ["0", "1", "2", "3", "4"]
    assert [at for _, at in log.runs] == deadlines


async def test_cancel_before_after_and_twice(clock: SpyClock, wheel: TimerWheel) -> None:
    log = Log(clock)
    t0 = clock.now()
    a = wheel.schedule(t0 + 1, log("a"))
    b = wheel.schedule(t0 + 2, log("b"))
    assert len(wheel) == 2 and a.pending
    a.cancel()
    a.cancel()
    assert len(wheel) == 1 and not a.pending
    await clock.advance(5)
    assert log.names == ["b"]
    assert len(wheel) == 0 and not b.pending
    b.cancel()  # after it ran: nothing happens
    b.cancel()
    assert len(wheel) == 0
    assert stored(wheel) == 0


async def test_ten_thousand_timers_in_one_slot(clock: SpyClock, wheel: TimerWheel) -> None:
    runs: list[int] = []
    when = clock.now() + 5.0
    timers = [
        wheel.schedule(when + (i % 7) * 1e-5, lambda i=i: runs.append(i)) for i in range(10_000)
    ]
    for timer in timers[::10]:
        timer.cancel()
    assert len(wheel) == 9_000
    await clock.advance(5.0)
    await clock.advance(1e-5)
    first = [i for i in range(10_000) if i % 7 in (0, 1) and i % 10]
    assert runs == sorted(first, key=lambda i: i % 7)  # by deadline, ties in schedule order
    await clock.advance(1)
    expected = sorted((i for i in range(10_000) if i % 10), key=lambda i: i % 7)
    assert runs == expected
    assert len(wheel) == 0


@pytest.mark.parametrize(
    "delay",
    [0.0005, 0.07, 4.2, 300.0, 5 * 3600.0, DAY, 7 * DAY, 30 * DAY, YEAR, 3 * YEAR, 100 * YEAR],
)
async def test_far_deadlines_run_exactly_at_their_deadline(
    clock: SpyClock, wheel: TimerWheel, delay: float
) -> None:
    log = Log(clock)
    when = clock.now() + delay
    wheel.schedule(when, log("far"))
    wheel.schedule(when + 0.5, log("after"))
    await clock.advance(delay * 0.999)
    assert log.runs == []
    assert clock.armed() == [when]
    await clock.advance(max(0.0, when - clock.now() - 1e-4))
    assert log.runs == []
    await clock.advance(1e-4 + 1.0)
    assert log.runs == [("far", when), ("after", when + 0.5)]
    assert clock.armed() == []


async def test_timers_spread_over_years_in_order(clock: SpyClock, wheel: TimerWheel) -> None:
    rng = random.Random(7)
    t0 = clock.now()
    deadlines = [t0 + rng.uniform(0, 200 * YEAR) for _ in range(300)]
    deadlines += [t0 + rng.uniform(0, 10.0) for _ in range(300)]
    log = Log(clock)
    for i, when in enumerate(deadlines):
        wheel.schedule(when, log(str(i)))
    await clock.advance(201 * YEAR)
    assert [at for _, at in log.runs] == sorted(deadlines)
    assert all(at == deadlines[int(name)] for name, at in log.runs)


async def test_past_deadlines_run_at_the_next_iteration(clock: SpyClock, wheel: TimerWheel) -> None:
    log = Log(clock)
    now = clock.now()
    wheel.schedule(now - 3600, log("hour ago"))
    wheel.schedule(now, log("now"))
    wheel.schedule(now - 1, log("second ago"))
    wheel.schedule(0.0, log("epoch"))
    assert log.runs == []
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert log.names == ["epoch", "hour ago", "second ago", "now"]
    assert clock.armed() == []


async def test_scheduling_earlier_rearms_earlier(clock: SpyClock, wheel: TimerWheel) -> None:
    log = Log(clock)
    t0 = clock.now()
    assert clock.armed() == []
    wheel.schedule(t0 + DAY, log("day"))
    assert clock.armed() == [t0 + DAY]
    wheel.schedule(t0 + 60, log("minute"))
    assert clock.armed() == [t0 + 60]
    wheel.schedule(t0 + 3600, log("hour"))  # later than armed: nothing changes
    assert clock.armed() == [t0 + 60]
    await clock.advance(61)
    assert log.names == ["minute"]
    assert clock.armed() == [t0 + 3600]
    await clock.advance(DAY)
    assert log.names == ["minute", "hour", "day"]
    assert clock.armed() == []


async def test_at_most_one_alarm_and_none_when_idle(clock: SpyClock, wheel: TimerWheel) -> None:
    rng = random.Random(3)
    t0 = clock.now()
    timers = [wheel.schedule(t0 + rng.uniform(0, 100), lambda: None) for _ in range(500)]
    for timer in timers[::3]:
        timer.cancel()
    for _ in range(40):
        await clock.advance(rng.uniform(0, 5))
        assert len(clock.armed()) <= 1
    assert len(wheel) == 0
    assert clock.armed() == []
    assert stored(wheel) == 0


async def test_callbacks_schedule_and_cancel_timers(clock: SpyClock, wheel: TimerWheel) -> None:
    log = Log(clock)
    t0 = clock.now()
    victims: list[Timer] = []

    def first() -> None:
        log("first")()
        victims[0].cancel()  # due in this same batch: must not run
        victims[1].cancel()  # due later
        wheel.schedule(t0 + 1, log("same time"))  # now: runs at the next iteration
        wheel.schedule(t0 + 0.5, log("already past"))
        wheel.schedule(t0 + 2, log("later"))

    wheel.schedule(t0 + 1, first)
    victims.append(wheel.schedule(t0 + 1, log("victim now")))
    victims.append(wheel.schedule(t0 + 1.5, log("victim later")))
    wheel.schedule(t0 + 1, log("sibling"))
    await clock.advance(1)
    assert log.names == ["first", "sibling", "already past", "same time"]
    assert [at - t0 for _, at in log.runs] == [1, 1, 1, 1]
    assert len(wheel) == 1
    await clock.advance(5)
    assert log.names[-1] == "later" and len(log.runs) == 5
    assert len(wheel) == 0 and stored(wheel) == 0


async def test_a_callback_that_raises_does_not_stop_the_others(
    clock: SpyClock, wheel: TimerWheel
) -> None:
    log = Log(clock)
    t0 = clock.now()

    def boom() -> None:
        raise RuntimeError("boom")

    wheel.schedule(t0 + 1, boom)
    wheel.schedule(t0 + 1, log("next"))
    wheel.schedule(t0 + 2, log("later"))
    await clock.advance(3)
    assert log.names == ["next", "later"]


async def test_a_base_exception_propagates_and_the_rest_still_run(
    clock: SpyClock, wheel: TimerWheel
) -> None:
    class Stop(BaseException):
        pass

    log = Log(clock)
    t0 = clock.now()

    def stop() -> None:
        raise Stop

    wheel.schedule(t0 + 1, log("a"))
    wheel.schedule(t0 + 1, stop)
    wheel.schedule(t0 + 1, log("b"))
    wheel.schedule(t0 + 2, log("c"))
    with pytest.raises(Stop):
        await clock.advance(1)
    assert log.names == ["a"] and len(wheel) == 2
    await clock.advance(5)
    assert log.names == ["a", "b", "c"]
    assert log.runs[1] == ("b", t0 + 1)


async def test_far_slot_earliest_is_remembered_and_kept_exact(
    clock: SpyClock, wheel: TimerWheel
) -> None:
    """A far slot's earliest deadline is found once and kept up to date by later
    schedules; after a cancel the alarm may ring early, but nothing runs early."""
    log = Log(clock)
    t0 = clock.now()
    far = [wheel.schedule(t0 + 3600 + i, log(f"far{i}")) for i in range(10, 20)]
    wheel.schedule(t0 + 1, log("short"))
    await clock.advance(2)
    assert clock.armed() == [t0 + 3610]
    wheel.schedule(t0 + 3, log("short2"))
    wheel.schedule(t0 + 3605, log("earlier far"))
    far[0].cancel()
    await clock.advance(2)
    assert clock.armed() == [t0 + 3605]
    await clock.advance(3700)
    expected = [("short", t0 + 1), ("short2", t0 + 3), ("earlier far", t0 + 3605)]
    expected += [(f"far{i}", t0 + 3600 + i) for i in range(11, 20)]
    assert log.runs == expected


async def test_close_stops_everything(clock: SpyClock, wheel: TimerWheel) -> None:
    log = Log(clock)
    t0 = clock.now()
    timers = [wheel.schedule(t0 + d, log(str(d))) for d in (1, 2, YEAR)]
    await clock.advance(1)
    wheel.close()
    assert len(wheel) == 0
    assert clock.armed() == []
    late = wheel.schedule(t0 + 3, log("after close"))
    assert not late.pending and len(wheel) == 0
    for timer in timers:
        timer.cancel()
    await clock.advance(2 * YEAR)
    assert log.names == ["1"]
    assert len(wheel) == 0


async def test_close_from_a_callback_stops_the_batch(clock: SpyClock, wheel: TimerWheel) -> None:
    log = Log(clock)
    t0 = clock.now()
    wheel.schedule(t0 + 1, log("before"))
    wheel.schedule(t0 + 1, wheel.close)
    wheel.schedule(t0 + 1, log("same batch"))
    wheel.schedule(t0 + 2, log("later"))
    await clock.advance(5)
    assert log.names == ["before"]
    assert len(wheel) == 0 and clock.armed() == []


async def test_len_counts_live_timers(clock: SpyClock, wheel: TimerWheel) -> None:
    t0 = clock.now()
    assert len(wheel) == 0
    timers = [wheel.schedule(t0 + i, lambda: None) for i in range(1, 11)]
    assert len(wheel) == 10
    timers[9].cancel()
    timers[0].cancel()
    assert len(wheel) == 8
    await clock.advance(5.5)
    assert len(wheel) == 4
    await clock.advance(10)
    assert len(wheel) == 0


async def test_schedule_cancel_churn_keeps_memory_bounded(
    clock: SpyClock, wheel: TimerWheel
) -> None:
    rng = random.Random(1)
    t0 = clock.now()
    keep = [wheel.schedule(t0 + rng.uniform(0, DAY), lambda: None) for _ in range(1000)]
    most = 0
    bound = 4096 + 4 * len(keep) + 1  # cancelled ones sweep at > max(4096, 3 x live)
    for _ in range(200_000):
        wheel.schedule(t0 + rng.uniform(0, 30 * DAY), lambda: None).cancel()
        most = max(most, stored(wheel)) if rng.random() < 0.001 else most
    assert len(wheel) == 1000
    assert stored(wheel) <= bound
    assert most <= bound
    # a bulk cancel leaves nothing much behind either
    bulk = [wheel.schedule(t0 + rng.uniform(0, YEAR), lambda: None) for _ in range(50_000)]
    for timer in bulk:
        timer.cancel()
    assert stored(wheel) <= bound
    assert len(wheel) == 1000


async def test_matches_a_reference_model(clock: SpyClock, wheel: TimerWheel) -> None:
    """Random schedules, cancels and advances against a sorted list of (when, order)."""
    rng = random.Random(11)
    expected: dict[int, float] = {}
    timers: dict[int, Timer] = {}
    runs: list[tuple[int, float]] = []
    spans = [0.002, 0.05, 1.0, 60.0, 3600.0, DAY]
    n = 0
    for _ in range(60):
        for _ in range(rng.randrange(0, 60)):
            when = clock.now() + rng.uniform(-0.01, rng.choice(spans))
            timers[n] = wheel.schedule(when, lambda n=n: runs.append((n, clock.now())))
            expected[n] = when
            n += 1
        for key in rng.sample(sorted(timers), k=min(len(timers), rng.randrange(0, 10))):
            timers.pop(key).cancel()
            expected.pop(key, None)
        before = clock.now()
        await clock.advance(rng.choice(spans) * rng.random())
        due = sorted((k for k, w in expected.items() if w <= clock.now()), key=expected.get)
        assert [k for k, _ in runs] == due  # by deadline; ties (equal keys) by schedule order
        for k, at in runs:
            assert at == max(expected.pop(k), before)
            timers.pop(k, None)
        runs.clear()
        assert len(wheel) == len(expected)
        assert len(clock.armed()) <= 1


async def test_real_clock_fires_within_a_tick_and_loop_latency() -> None:
    loop = asyncio.get_running_loop()
    clock = SystemClock()
    wheel = TimerWheel(clock)
    ran = loop.create_future()
    when = clock.now() + 0.020
    wheel.schedule(when, lambda: ran.set_result(time.time()))
    at = await asyncio.wait_for(ran, 0.1)
    assert when <= at <= when + 0.001 + 0.050
    assert len(wheel) == 0
    wheel.close()


# -- staging: higher-level slots spread over the level below ahead of time ----------------


def unstaged(wheel: TimerWheel) -> int:
    """How many timers of the higher-level slots within the horizon are not yet staged."""
    pos, left = wheel._pos, 0
    for i, timers in enumerate(wheel._slots):
        if i < 64 or not timers:
            continue
        level = timers_mod._LEVEL[i]
        start = wheel._pos >> timers_mod._SHIFTS[level] + 6 << timers_mod._SHIFTS[level] + 6
        start |= (i - timers_mod._BASES[level]) << timers_mod._SHIFTS[level]
        if start - pos < timers_mod._STAGE_HORIZON:
            staged = wheel._staged.get(i)
            left += len(timers) - (staged.done if staged else 0)
    return left


def spread_when_due(wheel: TimerWheel) -> list[int]:
    """Count the timers the wheel spreads from now on when their slot is due (into its
    slots, not into staging buckets): those that were not staged in time."""
    counted = [0]
    spread = wheel._spread

    def counting(timers: Any, into: Any, base: int, level: int) -> int:
        timers = list(timers)
        if into is wheel._slots:
            counted[0] += len(timers)
        return spread(timers, into, base, level)

    wheel._spread = counting  # type: ignore[method-assign]
    return counted


async def test_near_slots_are_staged_while_idle_and_installed_when_due(
    clock: SpyClock, wheel: TimerWheel
) -> None:
    """Timers a few seconds ahead are spread over the level below in budgeted wake-ups
    before they are due (one alarm at a time); reaching them then spreads nothing."""
    rng = random.Random(5)
    t0 = clock.now()
    deadlines = [t0 + rng.uniform(1.0, 3.0) for _ in range(3000)]
    log = Log(clock)
    for i, when in enumerate(deadlines):
        wheel.schedule(when, log(str(i)))
    assert clock.armed() == [t0 + 0.001]  # a wake-up to stage, not the first deadline
    assert unstaged(wheel) == 3000
    await clock.advance(0.001)
    assert unstaged(wheel) == 3000 - timers_mod._STAGE_BUDGET  # one budget per wake-up
    await clock.advance(0.05)
    assert unstaged(wheel) == 0
    assert clock.armed() == [min(deadlines)]
    counted = spread_when_due(wheel)
    await clock.advance(0.95 + 0.064 * 3)  # into the first slots: installed, not spread
    assert counted[0] == 0
    await clock.advance(3)
    order = sorted(range(3000), key=deadlines.__getitem__)
    assert log.names == [str(i) for i in order]
    assert all(at == deadlines[int(name)] for name, at in log.runs)
    assert len(wheel) == 0 and stored(wheel) == 0 and wheel._dead == 0
    assert wheel._staged == {} or all(not s.done for s in wheel._staged.values())


async def test_a_big_slot_is_staged_two_levels_down(clock: SpyClock, wheel: TimerWheel) -> None:
    """A level-2 slot's first level-1 slot is due the moment the level-2 one is: it is
    staged as well, so crossing a 4 s block spreads nothing at once."""
    edge = ((wheel._pos >> 12) + 1) << 12  # the next level-2 block (4096 ticks), ahead
    first = edge * 0.001 + 0.0002
    whens = [first + k * 0.0004 for k in range(2000)]  # the block's first 0.8 s
    log = Log(clock)
    for k, when in enumerate(whens):
        wheel.schedule(when, log(str(k)))
    while unstaged(wheel) or not any(s.first and s.first.done for s in wheel._staged.values()):
        await clock.advance(0.001)
    assert clock.now() < first
    counted = spread_when_due(wheel)
    await clock.advance(first - clock.now())
    assert counted[0] == 0
    assert log.names == ["0"] and log.runs[0][1] == first
    await clock.advance(1.0)
    assert log.names == [str(k) for k in range(2000)]
    assert [at for _, at in log.runs] == whens


async def test_staged_slots_take_later_schedules_in_order(
    clock: SpyClock, wheel: TimerWheel
) -> None:
    """Timers added to a slot after it was staged (ties, earlier deadlines) and cancels of
    staged timers: order by deadline, ties in schedule order, nothing cancelled runs."""
    t0 = clock.now()
    log = Log(clock)
    base = t0 + 0.5
    early = [wheel.schedule(base + k * 1e-4, log(f"e{k}")) for k in range(600)]
    await clock.advance(0.01)
    assert unstaged(wheel) == 0
    wheel.schedule(base + 5e-4, log("tie"))  # same deadline as e5: after it
    wheel.schedule(base - 1e-4, log("before all"))
    for timer in early[100:200]:
        timer.cancel()
    assert len(wheel) == 502
    await clock.advance(1)
    expected = ["before all"] + [f"e{k}" for k in range(600) if not 100 <= k < 200]
    expected.insert(expected.index("e5") + 1, "tie")
    assert log.names == expected
    assert len(wheel) == 0 and stored(wheel) == 0 and wheel._dead == 0


async def test_a_cancel_inside_the_batch_being_cascaded(clock: SpyClock, wheel: TimerWheel) -> None:
    """A callback cancels timers that sit in a staged slot not yet installed and in the
    level-0 slots it was installed into."""
    t0 = clock.now()
    log = Log(clock)
    later: list[Timer] = []

    def first() -> None:
        log("first")()
        for timer in later[::2]:
            timer.cancel()

    wheel.schedule(t0 + 0.9, first)
    later += [wheel.schedule(t0 + 1.0 + k * 0.003, log(str(k))) for k in range(200)]
    await clock.advance(2)
    assert log.names == ["first"] + [str(k) for k in range(1, 200, 2)]
    assert len(wheel) == 0 and stored(wheel) == 0 and wheel._dead == 0


async def test_compaction_discards_stale_staging(clock: SpyClock, wheel: TimerWheel) -> None:
    t0 = clock.now()
    log = Log(clock)
    keep = [wheel.schedule(t0 + 1 + k * 0.001, log(str(k))) for k in range(300)]
    await clock.advance(0.01)
    assert unstaged(wheel) == 0 and wheel._staged
    junk = [wheel.schedule(t0 + 1.2 + k * 1e-5, lambda: None) for k in range(5000)]
    for timer in junk:
        timer.cancel()  # a sweep after 4097: the staged slots' lists are rewritten
    assert stored(wheel) == 300 + 5000 - 4097
    assert all(s.done <= len(wheel._slots[i]) for i, s in wheel._staged.items())
    keep[7].cancel()
    await clock.advance(2)
    assert log.names == [str(k) for k in range(300) if k != 7]
    assert len(wheel) == 0 and stored(wheel) == 0 and wheel._dead == 0


@pytest.mark.parametrize("budget, compact_min", [(7, 16), (64, 4096)])
async def test_matches_a_reference_model_while_staging(
    clock: SpyClock,
    wheel: TimerWheel,
    monkeypatch: pytest.MonkeyPatch,
    budget: int,
    compact_min: int,
) -> None:
    """Dense near timers, small steps and a tiny staging budget: slots are often half
    staged when timers are added, cancelled, swept or come due."""
    monkeypatch.setattr(timers_mod, "_STAGE_BUDGET", budget)
    monkeypatch.setattr(timers_mod, "_COMPACT_MIN", compact_min)
    rng = random.Random(budget)
    expected: dict[int, float] = {}
    timers: dict[int, Timer] = {}
    runs: list[tuple[int, float]] = []

    def record(k: int) -> Callable[[], None]:
        return lambda: runs.append((k, clock.now()))

    n = 0
    for _ in range(150):
        for _ in range(rng.randrange(0, 80)):
            when = clock.now() + rng.choice([rng.uniform(-0.002, 0.2), rng.uniform(0, 10)])
            when = round(when, 3) if rng.random() < 0.3 else when  # some ties
            timers[n] = wheel.schedule(when, record(n))
            expected[n] = when
            n += 1
        for key in rng.sample(sorted(timers), k=min(len(timers), rng.randrange(0, 40))):
            timers.pop(key).cancel()
            expected.pop(key, None)
        before = clock.now()
        await clock.advance(rng.choice([0.0005, 0.003, 0.02, 0.3]) * rng.random())
        due = sorted((k for k, w in expected.items() if w <= clock.now()), key=expected.__getitem__)
        assert [k for k, _ in runs] == due
        for k, at in runs:
            assert at == max(expected.pop(k), before)
            timers.pop(k, None)
        runs.clear()
        assert len(wheel) == len(expected)
        assert len(clock.armed()) <= 1
    await clock.advance(20)
    assert len(runs) == len(expected)
    assert len(wheel) == 0 and stored(wheel) == 0 and wheel._dead == 0


async def test_a_staged_slot_arms_for_its_earliest_deadline(
    clock: SpyClock, wheel: TimerWheel
) -> None:
    """The earliest deadline of a staged slot comes from its first bucket; cancelling
    that timer may leave the alarm early, never late, and nothing runs early."""
    t0 = clock.now()
    log = Log(clock)
    whens = [t0 + 0.5 + k * 0.0007 for k in range(1000)][::-1]  # scheduled latest first
    timers = [wheel.schedule(when, log(str(k))) for k, when in enumerate(whens)]
    await clock.advance(0.01)
    assert unstaged(wheel) == 0
    assert clock.armed() == [whens[-1]]
    timers[-1].cancel()
    wheel._earliest_in.clear()  # forget it: found again from the staged buckets
    wheel._arm()
    assert clock.armed() in ([whens[-1]], [whens[-2]])
    await clock.advance(whens[-2] - clock.now() - 1e-6)
    assert log.runs == []
    await clock.advance(1)
    assert log.names == [str(k) for k in range(998, -1, -1)]
    assert [at for _, at in log.runs] == whens[-2::-1]
