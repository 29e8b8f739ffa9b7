"""Reopen time of one instance with a long history: replay must be linear in it.

Run: python benchmarks/reopen_history.py [--sizes 10000,20000,50000] [--quick] [--json PATH]

One conversation consumes N events one at a time (one wait per event), then parks.
The runtime is closed (a checkpoint folds the log into the instance's snapshot) and
opened again; the time of ``open()`` is what replaying those N outcomes costs.
``--quick`` runs 2,000 and 8,000 events.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import report

import actorflow as af

message = af.Event("bench.reopen.message", int)
done = af.Event("bench.reopen.done")


@af.workflow(name="bench.reopen.conversation")
async def conversation(ctx: af.Context[None], n: int) -> int:
    total = 0
    for _ in range(n):
        total += await ctx.wait_event(message)
    await ctx.wait_event(done)
    return total


async def settle(rt: af.Runtime) -> None:
    """Wait until nothing is written or run (the instance parked)."""
    while not rt.idle:
        await asyncio.sleep(0.001)


async def parked_on_done(rt: af.Runtime) -> bool:
    """Whether the conversation consumed every message and waits for ``done``."""
    (status,) = await rt.list()  # without the event history, which status() builds
    return [w.name for w in status.waiting_on] == [done.name]


async def build(path: Path, n: int) -> float:
    """A database whose one instance consumed ``n`` events; returns the seconds it took."""
    t0 = time.perf_counter()
    async with af.Runtime(path) as rt:
        await rt.start(conversation, n, id="talk")
        await asyncio.gather(*(rt.send("talk", message, 1) for _ in range(n)))
        while not await parked_on_done(rt):
            await asyncio.sleep(0.1)  # list() decodes the stored history: not too often
        await settle(rt)
    return time.perf_counter() - t0


async def reopen(path: Path) -> float:
    """Seconds ``open()`` takes (replay of the whole history included)."""
    rt = af.Runtime(path)
    t0 = time.perf_counter()
    await rt.open()
    elapsed = time.perf_counter() - t0
    assert await parked_on_done(rt), "replay did not reach the same wait"
    await rt.close()
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,20000,50000")
    parser.add_argument("--quick", action="store_true", help="2,000 and 8,000 events")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sizes = [2_000, 8_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "reopen.db"
            built = await build(path, n)
            seconds = await reopen(path)
        rows.append(
            {
                "events": n,
                "build_s": built,
                "reopen_s": seconds,
                "us_per_event": seconds / n * 1e6,
            }
        )
    report("reopen_history", rows, {}, args.json)


if __name__ == "__main__":
    asyncio.run(main())
