"""N instances park on a condition; measure how fast they resume when it turns true.

Run: python benchmarks/conditions.py [--n 10000] [--quick] [--memory] [--durability normal]
                                     [--threshold 3] [--json PATH]

Two scenarios, each next to a same-run baseline of plain asyncio:

- ``wait_until``: each instance waits until ``ctx.state.n >= threshold``; state is
  changed only by an ``@wf.on`` handler of a ``bump`` event. ``threshold`` bumps are
  sent to every instance (one round at a time, all instances at once); the latency
  is from the send of the bump that meets the condition to the instance resuming.
  Baseline: one task per waiter in ``asyncio.Condition.wait_for`` over a counter,
  bumped with ``notify_all``.
- ``wait_for``: each instance waits on a query over an in-memory table, listening
  on one topic. All rows are made ready, then one ``rt.notify(topic)`` re-runs every
  query; the latency is from that call to each instance resuming. Baseline: tasks
  in ``wait_for`` on one shared ``asyncio.Condition``, woken by one ``notify_all``.

Throughput counts resumed instances per second of the resume phase (for
``wait_until`` the whole sending phase, all rounds). Default store: a real SQLite
file in a temporary directory; ``--memory`` adds the in-memory store.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from _common import percentile, report

import actorflow as af

bump = af.Event("bench.cond.bump", int)
resumed: dict[str, float] = {}
rows_ready: dict[str, bool] = {}


class Counter(msgspec.Struct):
    n: int = 0


@af.workflow(name="bench.cond.until", state=Counter)
async def until(ctx: af.Context[Counter], threshold: int) -> int:
    await ctx.wait_until(lambda: ctx.state.n >= threshold)
    resumed[ctx.workflow_id] = time.perf_counter()  # benchmark probe, not durable state
    return ctx.state.n


@until.on(bump)
def _bump(state: Counter, by: int) -> None:
    state.n += by


def row_ready(key: str) -> bool:
    return rows_ready.get(key, False)


@af.workflow(name="bench.cond.query")
async def query(ctx: af.Context[None]) -> bool:
    value = await ctx.wait_for(row_ready, ctx.workflow_id, on="bench.rows")
    resumed[ctx.workflow_id] = time.perf_counter()
    return value


def summary(lat_ms: list[float], count: int, seconds: float) -> dict[str, float]:
    return {
        "resumes_per_s": count / seconds,
        "p50_ms": percentile(lat_ms, 50),
        "p99_ms": percentile(lat_ms, 99),
        "seconds": seconds,
    }


# -- baselines -----------------------------------------------------------------------


async def baseline_until(n: int, threshold: int) -> dict[str, float]:
    """n tasks in Condition.wait_for(counter >= threshold), one Condition each."""
    counters = [0] * n
    conditions = [asyncio.Condition() for _ in range(n)]
    woke = [0.0] * n
    last_send = [0.0] * n

    async def waiter(i: int) -> None:
        async with conditions[i]:
            await conditions[i].wait_for(lambda: counters[i] >= threshold)
        woke[i] = time.perf_counter()

    async def send(i: int) -> None:
        last_send[i] = time.perf_counter()
        async with conditions[i]:
            counters[i] += 1
            conditions[i].notify_all()

    tasks = [asyncio.ensure_future(waiter(i)) for i in range(n)]
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    for _ in range(threshold):
        await asyncio.gather(*(send(i) for i in range(n)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    return summary([(woke[i] - last_send[i]) * 1e3 for i in range(n)], n, elapsed)


async def baseline_query(n: int) -> dict[str, float]:
    """n tasks in wait_for on one shared Condition, woken by a single notify_all."""
    ready = [False] * n
    condition = asyncio.Condition()
    woke = [0.0] * n

    async def waiter(i: int) -> None:
        async with condition:
            await condition.wait_for(lambda: ready[i])
        woke[i] = time.perf_counter()

    tasks = [asyncio.ensure_future(waiter(i)) for i in range(n)]
    await asyncio.sleep(0)
    for i in range(n):
        ready[i] = True
    t0 = time.perf_counter()
    async with condition:
        condition.notify_all()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    return summary([(w - t0) * 1e3 for w in woke], n, elapsed)


# -- actorflow -----------------------------------------------------------------------


async def settle(rt: af.Runtime) -> None:
    """Wait until nothing is written or run (every instance parked)."""
    while not rt.idle:
        await asyncio.sleep(0.001)


async def durable_until(
    n: int, threshold: int, path: Path | None, durability: str
) -> dict[str, float]:
    resumed.clear()
    gc.collect()
    async with af.Runtime(path, durability=durability) as rt:  # type: ignore[arg-type]
        ids = [f"u{i}" for i in range(n)]
        handles = await asyncio.gather(*(rt.start(until, threshold, id=i) for i in ids))
        await settle(rt)
        last_send: dict[str, float] = {}

        async def send(wf: str) -> None:
            last_send[wf] = time.perf_counter()
            await rt.send(wf, bump, 1)

        t0 = time.perf_counter()
        for _ in range(threshold):
            await asyncio.gather(*(send(i) for i in ids))
        results = await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.perf_counter() - t0
        assert results == [threshold] * n, "an instance resumed on the wrong count"
    lat = [(resumed[i] - last_send[i]) * 1e3 for i in ids]
    return summary(lat, n, elapsed)


async def durable_query(n: int, path: Path | None, durability: str) -> dict[str, float]:
    resumed.clear()
    rows_ready.clear()
    gc.collect()
    async with af.Runtime(path, durability=durability) as rt:  # type: ignore[arg-type]
        ids = [f"q{i}" for i in range(n)]
        handles = await asyncio.gather(*(rt.start(query, id=i) for i in ids))
        await settle(rt)  # every query ran once and found nothing
        for i in ids:
            rows_ready[i] = True
        t0 = time.perf_counter()
        await rt.notify("bench.rows")
        results = await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.perf_counter() - t0
        assert all(results)
    lat = [(resumed[i] - t0) * 1e3 for i in ids]
    return summary(lat, n, elapsed)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 instances")
    parser.add_argument("--threshold", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="also run the in-memory store")
    parser.add_argument("--durability", default="normal", choices=["normal", "full"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    n = 1_000 if args.quick else args.n
    rows: list[dict[str, Any]] = []
    base_until = await baseline_until(n, args.threshold)
    base_query = await baseline_query(n)
    rows.append({"run": "wait_until: asyncio.Condition (baseline)", **base_until})
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_until = await durable_until(
            n, args.threshold, Path(tmp) / "until.db", args.durability
        )
        rows.append({"run": f"wait_until: actorflow sqlite ({args.durability})", **sqlite_until})
        if args.memory:
            memory_until = await durable_until(n, args.threshold, None, args.durability)
            rows.append({"run": "wait_until: actorflow in memory", **memory_until})
        rows.append({"run": "wait_for: asyncio.Condition (baseline)", **base_query})
        sqlite_query = await durable_query(n, Path(tmp) / "query.db", args.durability)
        rows.append({"run": f"wait_for: actorflow sqlite ({args.durability})", **sqlite_query})
        if args.memory:
            memory_query = await durable_query(n, None, args.durability)
            rows.append({"run": "wait_for: actorflow in memory", **memory_query})
    ratios = {
        "until_throughput_vs_baseline": sqlite_until["resumes_per_s"] / base_until["resumes_per_s"],
        "query_throughput_vs_baseline": sqlite_query["resumes_per_s"] / base_query["resumes_per_s"],
    }
    report("conditions", rows, {"n": n, "threshold": args.threshold, **ratios}, args.json)


if __name__ == "__main__":
    asyncio.run(main())
