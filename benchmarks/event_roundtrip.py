"""N instances each wait for one event; send them all; measure the durable round trip.

Run: python benchmarks/event_roundtrip.py [--n 10000] [--durability normal] [--json PATH]

Reports starts/s, events/s, p50/p99 send-to-resume latency and memory per waiting
instance, next to a same-run baseline of plain asyncio futures (one task per waiter,
resolved by ``set_result``), so the ratio says what durability costs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from pathlib import Path

from _common import percentile, report, rss_bytes

import actorflow as af

wake = af.Event("bench.wake", int)
resumed: dict[str, float] = {}


@af.workflow(name="bench.roundtrip")
async def roundtrip(ctx: af.Context[None]) -> int:
    value = await ctx.wait_event(wake)
    resumed[ctx.workflow_id] = time.perf_counter()  # benchmark probe, not durable state
    return value


async def baseline(n: int) -> dict[str, float]:
    """The same shape with plain futures: n tasks park on a future each."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(n)]
    woke: list[float] = [0.0] * n

    async def waiter(i: int) -> int:
        value: int = await futures[i]
        woke[i] = time.perf_counter()
        return value

    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    tasks = [loop.create_task(waiter(i)) for i in range(n)]
    await asyncio.sleep(0)
    started = time.perf_counter() - t0
    rss1 = rss_bytes()
    sent_at = [0.0] * n
    t1 = time.perf_counter()
    for i, f in enumerate(futures):
        sent_at[i] = time.perf_counter()
        f.set_result(i)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t1
    lat = [(woke[i] - sent_at[i]) * 1e3 for i in range(n)]
    return {
        "starts_per_s": n / started,
        "events_per_s": n / elapsed,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "bytes_per_waiter": (rss1 - rss0) / n,
    }


async def durable(n: int, path: Path | None, durability: str) -> dict[str, float]:
    """actorflow: n instances wait for an event, then all events are sent at once."""
    resumed.clear()
    gc.collect()
    rss0 = rss_bytes()
    async with af.Runtime(path, durability=durability) as rt:  # type: ignore[arg-type]
        t0 = time.perf_counter()
        handles = await asyncio.gather(*(rt.start(roundtrip, id=f"w{i}") for i in range(n)))
        started = time.perf_counter() - t0
        gc.collect()
        rss1 = rss_bytes()
        sent_at: dict[str, float] = {}

        async def send(i: int) -> None:
            sent_at[f"w{i}"] = time.perf_counter()
            await rt.send(f"w{i}", wake, i)

        t1 = time.perf_counter()
        await asyncio.gather(*(send(i) for i in range(n)))
        results = await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.perf_counter() - t1
        assert results == list(range(n))
    lat = [(resumed[k] - sent_at[k]) * 1e3 for k in sent_at]
    return {
        "starts_per_s": n / started,
        "events_per_s": n / elapsed,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "bytes_per_waiter": (rss1 - rss0) / n,
    }


async def single_latency(path: Path, samples: int) -> dict[str, float]:
    """Send-to-resume latency of one event at a time on an otherwise idle runtime."""
    resumed.clear()
    lat = []
    async with af.Runtime(path) as rt:
        for i in range(samples):
            h = await rt.start(roundtrip, id=f"s{i}")
            t = time.perf_counter()
            await rt.send(h.id, wake, i)
            await h.result()
            lat.append((resumed[h.id] - t) * 1e3)
    return {"p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--durability", default="normal", choices=["normal", "full"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    base = await baseline(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = await durable(args.n, Path(tmp) / "bench.db", args.durability)
        memory = await durable(args.n, None, args.durability)
        single = await single_latency(Path(tmp) / "single.db", 500)
    rows = [
        {"run": "asyncio futures (baseline)", **base},
        {"run": f"actorflow sqlite ({args.durability})", **sqlite},
        {"run": "actorflow in memory", **memory},
    ]
    ratios = {
        "sqlite_events_vs_baseline": sqlite["events_per_s"] / base["events_per_s"],
        "sqlite_bytes_vs_baseline": sqlite["bytes_per_waiter"] / max(base["bytes_per_waiter"], 1),
    }
    report(
        "event_roundtrip",
        rows,
        {"n": args.n, "single_event_latency_sqlite": single, **ratios},
        args.json,
    )


if __name__ == "__main__":
    asyncio.run(main())
