"""A conversation of 100,000 messages that continues as new every 1,000: does the cost of
a message, the memory and the file stay flat as it goes on?

Run: python benchmarks/long_conversation.py [--messages 100000] [--per-run 1000]
     [--quick] [--out PATH]

One instance loops on ``wait_event`` and calls ``ctx.continue_as_new`` every
``--per-run`` messages (DESIGN §3.2). Messages go in bursts of 1,000, each burst sent at
once and then taken (one per commit, as a wait's outcome is durable before the code
sees it). For each tenth of the conversation the table gives the time per message
(``us_per_message``: from the burst's first send until the instance took its last
message), the Python heap the process holds (tracemalloc is too slow for this many
messages, so ``rss_mb`` and the collector's tracked objects), the file's size after a
checkpoint, and the run number. ``*_ratio`` are ratios to the first tenth (the file's to
the second: it grows until the log holds a checkpoint's worth), measured in the same
run: the target is flat (within 1.5x) from there to the last.
``--quick`` runs 5,000 messages, 500 a run (used by tests/test_benchmarks_smoke.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import report, rss_bytes

import actorflow as af

message = af.Event("bench.long.message", int)
PER_RUN = 1_000


@af.workflow(name="bench.long.conversation")
async def conversation(ctx: af.Context[None], per_run: int, taken: int = 0) -> int:
    """Take messages; a negative one ends it; every ``per_run`` a new run begins."""
    for _ in range(per_run):
        if await ctx.wait_event(message) < 0:
            return taken
        taken += 1
    ctx.continue_as_new(per_run, taken)


async def measure(path: Path, messages: int, per_run: int, burst: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    tenth = max(burst, messages // 10)
    async with af.Runtime(path) as rt:
        h = await rt.start(conversation, per_run, id="talk")
        sent = 0
        began, spent = time.perf_counter(), 0.0
        while sent < messages:
            t0 = time.perf_counter()
            await asyncio.gather(*(rt.send("talk", message, 1) for _ in range(burst)))
            sent += burst
            while any(e.consumed_at is None for e in (await h.status()).events):
                await asyncio.sleep(0.005)  # a few ms over a burst that takes ~0.5 s
            spent += time.perf_counter() - t0
            if sent % tenth == 0:
                await rt.checkpoint()
                gc.collect()
                status = await h.status()
                rows.append(
                    {
                        "messages": sent,
                        "run": status.run,
                        "us_per_message": spent / tenth * 1e6,
                        "rss_mb": rss_bytes() / 2**20,
                        "gc_objects": len(gc.get_objects()),
                        "file_kb": path.stat().st_size / 1024,
                    }
                )
                spent = 0.0
        await rt.send("talk", message, -1)
        assert await h.result() == messages
        print(f"{messages:,} messages in {time.perf_counter() - began:.1f} s")
    # The file grows until the log holds a checkpoint's worth (then pages are reused):
    # its ratio is to the second tenth; the others are to the first.
    for row in rows:
        for key in ("us_per_message", "rss_mb", "gc_objects"):
            row[f"{key}_ratio"] = row[key] / rows[0][key]
        row["file_kb_ratio"] = row["file_kb"] / rows[min(1, len(rows) - 1)]["file_kb"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--per-run", type=int, default=PER_RUN)
    parser.add_argument("--quick", action="store_true", help="5,000 messages, 500 a run")
    parser.add_argument("--out", "--json", dest="out", default=None)
    args = parser.parse_args()
    messages, per_run, burst = args.messages, args.per_run, 1_000
    if args.quick:
        messages, per_run, burst = 5_000, 500, 500
    with tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(measure(Path(tmp) / "talk.db", messages, per_run, burst))
    last = rows[-1]
    flat = {
        key: last[f"{key}_ratio"] <= 1.5
        for key in ("us_per_message", "rss_mb", "gc_objects", "file_kb")
    }
    report(
        "long_conversation",
        rows,
        {"messages": messages, "per_run": per_run, "flat_within_1.5x": flat},
        args.out,
    )


if __name__ == "__main__":
    main()
