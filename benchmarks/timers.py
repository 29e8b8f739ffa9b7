"""TimerWheel against asyncio's own timers (``loop.call_at``) in the same run.

Run: python benchmarks/timers.py [--n 1000000] [--fire 100000] [--quick] [--json PATH]

(a) schedule ``--n`` timers at random deadlines within the next hour, then cancel
them all: schedule, cancel and schedule+cancel ops/s (best of ``--repeat``, in CPU
time of this process, so that other load on the machine skews it less). asyncio
purges cancelled handles at its next loop iteration, the wheel during ``cancel``:
``purge_s`` is that next iteration, and schedule+cancel counts it.
(b) fire ``--fire`` timers spread over ``--spread`` seconds of real time with the
real clock: lateness (ms after the deadline at which the callback ran) p50/p99/max,
over the timers due after the last one was scheduled (``measured`` says how many).
``loop.call_at`` falls far behind at that many timers (each heap step compares handles in
Python), so it is also measured with ``--fire-loop`` timers: the loop's own latency, the
yardstick for the wheel's (its target: at most one tick more).
(c) memory per scheduled timer (tracemalloc), the handle kept by the caller included.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from _common import percentile, report

from actorflow.clock import SystemClock
from actorflow.timers import TimerWheel

HOUR = 3600.0


def noop() -> None:
    pass


def churn_wheel(deadlines: list[float]) -> tuple[float, float, TimerWheel]:
    """Seconds to schedule every deadline on a wheel, then to cancel them all."""
    wheel = TimerWheel(SystemClock())
    schedule = wheel.schedule
    gc.collect()
    t0 = time.process_time()
    timers = [schedule(when, noop) for when in deadlines]
    t1 = time.process_time()
    for timer in timers:
        timer.cancel()
    t2 = time.process_time()
    assert len(wheel) == 0
    return t1 - t0, t2 - t1, wheel


def churn_loop(loop: asyncio.AbstractEventLoop, deadlines: list[float]) -> tuple[float, float]:
    """The same with ``loop.call_at`` and ``TimerHandle.cancel``."""
    call_at = loop.call_at
    gc.collect()
    t0 = time.process_time()
    handles = [call_at(when, noop) for when in deadlines]
    t1 = time.process_time()
    for handle in handles:
        handle.cancel()
    t2 = time.process_time()
    return t1 - t0, t2 - t1


async def churn(n: int, repeat: int) -> dict[str, dict[str, float]]:
    """(a): best of ``repeat`` interleaved runs of each."""
    loop = asyncio.get_running_loop()
    offsets = [random.random() * HOUR for _ in range(n)]
    best: dict[str, tuple[float, float, float]] = {}
    for _ in range(repeat):
        for name in ("wheel", "loop"):
            wheel = None
            if name == "wheel":
                now = time.time()
                sched, cancel, wheel = churn_wheel([now + d for d in offsets])
            else:
                now = loop.time()
                sched, cancel = churn_loop(loop, [now + d for d in offsets])
            t0 = time.process_time()
            await asyncio.sleep(0)  # the loop drops its cancelled handles here
            purge = time.process_time() - t0
            if wheel is not None:
                wheel.close()
            old = best.get(name, (float("inf"),) * 3)
            best[name] = (min(old[0], sched), min(old[1], cancel), min(old[2], purge))
    return {
        name: {
            "schedule_per_s": n / s,
            "cancel_per_s": n / c,
            "purge_s": p,
            "sched_cancel_per_s": n / (s + c + p),
        }
        for name, (s, c, p) in best.items()
    }


async def lateness(n: int, spread: float, use_wheel: bool) -> dict[str, float]:
    """(b): ``n`` timers due uniformly over ``spread`` s, starting once all are scheduled."""
    loop = asyncio.get_running_loop()
    late: list[tuple[float, float]] = []
    record = late.append
    done = loop.create_future()
    wheel = TimerWheel(SystemClock())
    clock: Callable[[], float] = time.time if use_wheel else loop.time
    start = clock() + 0.3 + n * 4e-6  # time to schedule them all, with room to spare
    deadlines = [start + random.random() * spread for _ in range(n)]

    def probe(when: float) -> Callable[[], None]:
        def fire() -> None:
            record((when, clock()))
            if len(late) == n:
                done.set_result(None)

        return fire

    probes = [(when, probe(when)) for when in deadlines]
    gc.collect()
    if use_wheel:
        for when, fire in probes:
            wheel.schedule(when, fire)
    else:
        for when, fire in probes:
            loop.call_at(when, fire)
    ready = clock()
    del probes
    await done
    wheel.close()
    assert all(at >= when for when, at in late), "a timer ran early"
    ms = [(at - when) * 1e3 for when, at in late if when >= ready]
    return {
        "late_p50_ms": percentile(ms, 50),
        "late_p99_ms": percentile(ms, 99),
        "late_max_ms": max(ms, default=float("nan")),
        "measured": len(ms),
    }


def memory(n: int) -> dict[str, float]:
    """(c): traced bytes per pending timer, the caller's list of handles included."""

    async def measure() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        now, mono = time.time(), loop.time()
        offsets = [random.random() * HOUR for _ in range(n)]
        out = {}
        for name in ("wheel", "loop"):
            wheel = TimerWheel(SystemClock())
            gc.collect()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            kept: list[Any]
            if name == "wheel":
                kept = [wheel.schedule(now + d, noop) for d in offsets]
            else:
                kept = [loop.call_at(mono + d, noop) for d in offsets]
            used = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
            out[name] = used / n
            for handle in kept:
                handle.cancel()
            wheel.close()
            del kept
            await asyncio.sleep(0)
        return out

    return asyncio.run(measure())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000, help="timers for (a)")
    parser.add_argument("--fire", type=int, default=100_000, help="timers for (b)")
    parser.add_argument("--fire-loop", type=int, default=10_000, help="loop.call_at for (b)")
    parser.add_argument("--spread", type=float, default=1.5, help="seconds for (b)")
    parser.add_argument("--mem", type=int, default=200_000, help="timers for (c)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.quick:
        args.n, args.fire, args.spread, args.mem, args.repeat = 100_000, 20_000, 0.5, 50_000, 1
        args.fire_loop = 5_000

    ops = asyncio.run(churn(args.n, args.repeat))
    late = {
        "wheel": asyncio.run(lateness(args.fire, args.spread, use_wheel=True)),
        "loop": asyncio.run(lateness(args.fire, args.spread, use_wheel=False)),
    }
    small = asyncio.run(lateness(args.fire_loop, args.spread, use_wheel=False))
    mem = memory(args.mem)
    names = {"wheel": "TimerWheel", "loop": "loop.call_at (baseline)"}
    rows = [
        {"timers": names[k], **ops[k], **late[k], "bytes_per_timer": mem[k]}
        for k in ("wheel", "loop")
    ]
    ratios = {
        "sched_cancel_vs_loop": ops["wheel"]["sched_cancel_per_s"]
        / ops["loop"]["sched_cancel_per_s"],
        "schedule_vs_loop": ops["wheel"]["schedule_per_s"] / ops["loop"]["schedule_per_s"],
        "cancel_vs_loop": ops["wheel"]["cancel_per_s"] / ops["loop"]["cancel_per_s"],
        "late_p99_vs_loop": late["wheel"]["late_p99_ms"] / max(late["loop"]["late_p99_ms"], 1e-6),
        "late_p99_vs_loop_fire_loop": late["wheel"]["late_p99_ms"]
        / max(small["late_p99_ms"], 1e-6),
        "bytes_vs_loop": mem["wheel"] / mem["loop"],
    }
    sizes = {"n": args.n, "fire": args.fire, "spread_s": args.spread, "mem_n": args.mem}
    loop_small = {f"loop_fire_loop_{k}": v for k, v in small.items()}
    extra = {**sizes, "fire_loop": args.fire_loop, **loop_small, **ratios}
    report("timers", rows, {**extra, "python": sys.version.split()[0]}, args.json)


if __name__ == "__main__":
    main()
