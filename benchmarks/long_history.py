"""Cost of one more event, of a checkpoint and of a reopen as one instance's history grows.

Run: python benchmarks/long_history.py [--sizes 0,1000,10000,100000] [--quick] [--out PATH]

One chat instance loops on ``wait_event`` and runs a cheap step per measured message
(the step tells the benchmark the message was handled). Its history is grown in bursts
of messages without a step (``-2``) to each size; at each size the benchmark measures

- ``event_p50_ms``: p50 of single round trips (send, then the step of that message ran);
- ``checkpoint_p50_ms``: p50 of ``rt.checkpoint()`` after 100 new messages, and
  ``checkpoint_kb``: what that checkpoint appended to the journal (SQLite, DESIGN §3.2);
- after closing the runtime, in a fresh one on the file: ``open_s`` (the instance is
  parked, so open does not load it), ``load_s`` (the store's ``load``: its base decoded
  and its journal folded, the storage part) and ``reopen_s``: open, then one round trip
  (which loads the instance, replays its workflow code over the whole history and
  handles the message: what a user waits for).

``*_vs_fresh`` are ratios to the same measurements taken, alternately, on a fresh
instance (history 0) of the same runtime at the same time (the machine's load varies;
they are what the flatness targets judge); ``*_ratio`` are ratios to the size-0 row.
Targets (DESIGN §3.2): per-event and checkpoint cost flat within 1.5x from 0 to 100,000;
reopen linear, under 1 s at 100,000.
Each size is a minimum: measuring adds ~1,300 messages, and ``events`` says how many
the history held when measured. ``--quick`` runs 0, 2,000 and 5,000 (used by
tests/test_benchmarks_smoke.py).
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
CHECKPOINTS = 11
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
        if n == -1:
            return count
        if n >= 0:  # measured: the benchmark waits for this step
            await ctx.step(handled, n)
        count += 1


class Chat:
    """Sends numbered messages to one instance and waits until they are handled (the
    numbers of each chat start at its own ``offset``, so that their steps' acks differ)."""

    def __init__(self, instance: str = "talk", offset: int = 0) -> None:
        self.instance = instance
        self.offset = offset
        self.sent = 0

    async def send(self, rt: af.Runtime, count: int, steps: bool = True) -> None:
        """Send ``count`` messages at once (``steps``: each runs the step, else only the
        last); return when the last one was handled."""
        first, self.sent = self.offset + self.sent, self.sent + count
        last = self.offset + self.sent - 1
        done = acks[last] = asyncio.get_running_loop().create_future()
        for start in range(first, last + 1, BURST):
            stop = min(start + BURST, last + 1)
            await asyncio.gather(
                *(
                    rt.send(self.instance, message, n if steps or n == last else -2)
                    for n in range(start, stop)
                )
            )
        await done

    async def round_trip(self, rt: af.Runtime) -> float:
        """Seconds from one send to its step having run."""
        t0 = time.perf_counter()
        await self.send(rt, 1)
        return time.perf_counter() - t0


def journal_bytes(path: Path, instance: str) -> int:
    """Bytes of an instance's journal rows (what checkpoints appended since its base)."""
    conn = sqlite3.connect(path)
    try:
        found = conn.execute(
            "SELECT coalesce(sum(length(records)), 0) FROM journal WHERE wf = ?", (instance,)
        ).fetchone()
        return int(found[0])
    finally:
        conn.close()


async def checkpoint_after(rt: af.Runtime, chat: Chat, path: Path) -> tuple[float, float, int]:
    """Seconds of a checkpoint after 100 messages to ``chat`` (wall clock, and CPU of
    this process: less swayed by other processes), and the journal bytes it appended
    for it (negative: its base was rewritten)."""
    await chat.send(rt, 100)
    before = journal_bytes(path, chat.instance)
    t0, c0 = time.perf_counter(), time.process_time()
    await rt.checkpoint()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return elapsed, cpu, journal_bytes(path, chat.instance) - before


async def measure(rt: af.Runtime, talk: Chat, fresh: Chat, path: Path) -> dict[str, float]:
    """Round trips and checkpoints at the current history length, alternated with the
    same on a fresh instance (history 0): a baseline taken under the same load."""
    trips: dict[Chat, list[float]] = {talk: [], fresh: []}
    for _ in range(ROUND_TRIPS):
        for chat in (talk, fresh):
            trips[chat].append(await chat.round_trip(rt))
    await rt.checkpoint()
    checkpoints: dict[Chat, list[float]] = {talk: [], fresh: []}
    cpu: dict[Chat, list[float]] = {talk: [], fresh: []}
    written: list[int] = []
    for _ in range(CHECKPOINTS):
        for chat in (talk, fresh):
            elapsed, used, appended = await checkpoint_after(rt, chat, path)
            checkpoints[chat].append(elapsed)
            cpu[chat].append(used)
            if chat is talk:
                written.append(appended)
    appended = sorted(w for w in written if w > 0)
    event, checkpoint = percentile(trips[talk], 50), percentile(checkpoints[talk], 50)
    return {
        "event_p50_ms": event * 1e3,
        "event_p99_ms": percentile(trips[talk], 99) * 1e3,
        "event_vs_fresh": event / percentile(trips[fresh], 50),
        "checkpoint_p50_ms": checkpoint * 1e3,
        "checkpoint_vs_fresh": checkpoint / percentile(checkpoints[fresh], 50),
        "checkpoint_max_ms": max(checkpoints[talk]) * 1e3,
        "checkpoint_cpu_ms": percentile(cpu[talk], 50) * 1e3,
        "checkpoint_cpu_vs_fresh": percentile(cpu[talk], 50) / percentile(cpu[fresh], 50),
        "checkpoint_kb": (appended[len(appended) // 2] / 1024) if appended else float("nan"),
    }


async def reopen(path: Path, talk: Chat) -> tuple[af.Runtime, dict[str, float]]:
    """A fresh runtime on the file, and the seconds of its open, of one store load of
    the instance, and of open + the next round trip."""
    rt = af.Runtime(path, checkpoint_every=10**9)
    t0 = time.perf_counter()
    await rt.open()
    opened = time.perf_counter() - t0
    first = await talk.round_trip(rt)
    t1 = time.perf_counter()
    snapshot = await rt._store.load("talk")  # the storage part alone (a private handle)
    loaded = time.perf_counter() - t1
    assert snapshot is not None and snapshot.status == "running"
    return rt, {"open_s": opened, "load_s": loaded, "reopen_s": opened + first}


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
                    await talk.send(rt, size - talk.sent, steps=False)
                built = time.perf_counter() - t0
                # Measuring adds messages too: the history actually reached is reported.
                row: dict[str, Any] = {"events": talk.sent, "build_s": built}
                fresh = Chat(f"fresh-{len(rows)}", (len(rows) + 1) * 10**8)
                await rt.start(chat, id=fresh.instance)
                row.update(await measure(rt, talk, fresh, path))
                await rt.close()
                rt, times = await reopen(path, talk)
                row.update(times)
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
    parser.add_argument("--quick", action="store_true", help="0, 2,000 and 5,000 events")
    parser.add_argument("--out", "--json", dest="out", default=None)
    args = parser.parse_args()
    sizes = [0, 2_000, 5_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    rows = await run(sorted(sizes))
    last = rows[-1]
    largest = max(rows, key=lambda r: r["events"])
    extra = {
        "targets": {
            "event_flat_1.5x": max(r["event_vs_fresh"] for r in rows) <= 1.5,
            "checkpoint_flat_1.5x": max(r["checkpoint_vs_fresh"] for r in rows) <= 1.5,
            "reopen_under_1s_at_largest": largest["reopen_s"] < 1.0,
            "load_under_1s_at_largest": largest["load_s"] < 1.0,
        },
        "reopen_us_per_event_at_largest": (
            last["reopen_s"] / last["events"] * 1e6 if last["events"] else None
        ),
        "load_us_per_event_at_largest": (
            last["load_s"] / last["events"] * 1e6 if last["events"] else None
        ),
    }
    report("long_history", rows, extra, args.out)


if __name__ == "__main__":
    asyncio.run(main())
