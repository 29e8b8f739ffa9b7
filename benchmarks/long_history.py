"""Cost of one more event, of a checkpoint and of a reopen as one instance's history grows.

Run: python benchmarks/long_history.py [--sizes 0,1000,10000,100000] [--quick] [--out PATH]

One chat instance loops on ``wait_event`` and runs a cheap step per message (the step
tells the benchmark the message was handled). Its history is grown in bursts to each
size; at each size the benchmark measures

- ``event_p50_ms``: p50 of single round trips (send, then the step of that message ran);
- ``checkpoint_p50_ms``: p50 of ``rt.checkpoint()`` after 100 new messages, and
  ``checkpoint_kb``: what that checkpoint appended to the journal (SQLite, DESIGN §3.2);
- ``reopen_s``: close, open the file in a fresh runtime and read the instance's status
  (it is parked, so this is what loads and replays it); ``first_event_ms``: the next
  round trip after that.

Ratios are to the size-0 values of the same run. Targets (DESIGN §3.2): per-event and
checkpoint cost flat within 1.5x from 0 to 100,000; reopen linear, under 1 s at 100,000.
``--quick`` runs 0, 200 and 2,000 (used by tests/test_benchmarks_smoke.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import percentile, report

import actorflow as af

message = af.Event("bench.long.message", int)
acks: dict[int, asyncio.Future[None]] = {}
ROUND_TRIPS = 200
CHECKPOINTS = 7
BURST = 1_000


async def handled(n: int) -> int:
    """The cheap step: tells the benchmark message ``n`` was handled."""
    waiter = acks.pop(n, None)
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
    return n


@af.workflow(name="bench.long.chat")
async def chat(ctx: af.Context[None]) -> int:
    count = 0
    while True:
        n = await ctx.wait_event(message)
        if n < 0:
            return count
        await ctx.step(handled, n)
        count += 1


class Chat:
    """Sends numbered messages to the one instance and waits until they are handled."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, rt: af.Runtime, count: int) -> None:
        """Send ``count`` messages at once; return when the last one was handled."""
        first, self.sent = self.sent, self.sent + count
        done = acks[self.sent - 1] = asyncio.get_running_loop().create_future()
        for start in range(first, self.sent, BURST):
            stop = min(start + BURST, self.sent)
            await asyncio.gather(*(rt.send("talk", message, n) for n in range(start, stop)))
        await done

    async def round_trip(self, rt: af.Runtime) -> float:
        """Seconds from one send to its step having run."""
        t0 = time.perf_counter()
        await self.send(rt, 1)
        return time.perf_counter() - t0


def journal_bytes(path: Path) -> int:
    """Bytes of the instance's journal rows (what checkpoints appended since its base)."""
    conn = sqlite3.connect(path)
    try:
        found = conn.execute("SELECT coalesce(sum(length(records)), 0) FROM journal").fetchone()
        return int(found[0])
    finally:
        conn.close()


async def measure(rt: af.Runtime, talk: Chat, path: Path) -> dict[str, float]:
    """Round trips and checkpoints at the current history length."""
    trips = [await talk.round_trip(rt) for _ in range(ROUND_TRIPS)]
    await rt.checkpoint()
    checkpoints: list[float] = []
    written: list[int] = []
    for _ in range(CHECKPOINTS):
        await talk.send(rt, 100)
        before = journal_bytes(path)
        t0 = time.perf_counter()
        await rt.checkpoint()
        checkpoints.append(time.perf_counter() - t0)
        written.append(journal_bytes(path) - before)  # < 0: the base was rewritten
    appended = sorted(w for w in written if w > 0)
    return {
        "event_p50_ms": percentile(trips, 50) * 1e3,
        "event_p99_ms": percentile(trips, 99) * 1e3,
        "checkpoint_p50_ms": percentile(checkpoints, 50) * 1e3,
        "checkpoint_max_ms": max(checkpoints) * 1e3,
        "checkpoint_kb": (appended[len(appended) // 2] / 1024) if appended else float("nan"),
    }


async def reopen(path: Path, talk: Chat) -> tuple[af.Runtime, float, float]:
    """A fresh runtime on the file: seconds until the instance's status is read (which
    loads it), and of the next round trip."""
    rt = af.Runtime(path, checkpoint_every=10**9)
    t0 = time.perf_counter()
    await rt.open()
    status = await rt.handle("talk").status()
    loaded = time.perf_counter() - t0
    assert status.state == "waiting", status.state
    return rt, loaded, await talk.round_trip(rt)


async def run(sizes: list[int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    talk = Chat()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.db"
        # Checkpoints only when measured (and at close), not every 50,000 records.
        rt = af.Runtime(path, checkpoint_every=10**9)
        await rt.open()
        await rt.start(chat, id="talk")
        try:
            for size in sizes:
                t0 = time.perf_counter()
                if size > talk.sent:
                    await talk.send(rt, size - talk.sent)
                built = time.perf_counter() - t0
                row: dict[str, Any] = {"events": size, "build_s": built}
                row.update(await measure(rt, talk, path))
                await rt.close()
                rt, loaded, first = await reopen(path, talk)
                row["reopen_s"] = loaded
                row["first_event_ms"] = first * 1e3
                rows.append(row)
                print(f"  {size:>7,} events: {row}", flush=True)
        finally:
            await rt.close()
    base = rows[0]
    for row in rows:
        for key in ("event_p50_ms", "checkpoint_p50_ms"):
            row[key.removesuffix("_p50_ms") + "_ratio"] = row[key] / base[key]
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="0,1000,10000,100000")
    parser.add_argument("--quick", action="store_true", help="0, 200 and 2,000 events")
    parser.add_argument("--out", "--json", dest="out", default=None)
    args = parser.parse_args()
    sizes = [0, 200, 2_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    rows = await run(sorted(sizes))
    last = rows[-1]
    largest = max(rows, key=lambda r: r["events"])
    extra = {
        "targets": {
            "event_flat_1.5x": max(r["event_ratio"] for r in rows) <= 1.5,
            "checkpoint_flat_1.5x": max(r["checkpoint_ratio"] for r in rows) <= 1.5,
            "reopen_under_1s_at_largest": largest["reopen_s"] < 1.0,
        },
        "reopen_us_per_event_at_largest": (
            last["reopen_s"] / last["events"] * 1e6 if last["events"] else None
        ),
    }
    report("long_history", rows, extra, args.out)


if __name__ == "__main__":
    asyncio.run(main())
