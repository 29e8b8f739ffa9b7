"""examples/chat_bot.py under load: N conversations at once, message -> reply latency.

Run: python benchmarks/chat_bot.py [--conversations 100] [--messages 20] [--pause 0.02]
     [--loop asyncio|uvloop] [--json PATH]

Each of N clients sends M messages to its conversation (a durable instance waiting on
``chat.message``), each a random pause of up to ``--pause`` seconds after the previous
reply, and times message -> reply: ``rt.send`` (the event made durable) until the reply,
pushed by the workflow's async step, reaches the client. The example's own ``main`` is
what runs.

Same-run baseline: the same clients against a plain asyncio bot, one task per
conversation, each message made durable first by an asyncio + sqlite3 group-commit
writer (``event_roundtrip.GroupCommitLog``: what one loop turn queued, in one
transaction on one worker thread) and then answered. Ratio: actorflow p50 / baseline
p50 (lower is better). Target (issue #13): p50 < 2 ms with 100 conversations.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from _common import percentile, report
from event_roundtrip import GroupCommitLog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import chat_bot  # the example, as shipped


async def baseline(conversations: int, messages: int, pause: float, path: Path) -> list[float]:
    """Message -> reply latencies (ms) of a plain asyncio bot whose messages are made
    durable by a group-commit writer before they are answered."""
    log = GroupCommitLog(path, "NORMAL")
    inboxes = [asyncio.Queue[str]() for _ in range(conversations)]
    outboxes = [asyncio.Queue[str]() for _ in range(conversations)]

    async def bot(i: int) -> None:
        turn = 0
        while True:
            text = await inboxes[i].get()
            turn += 1
            outboxes[i].put_nowait(chat_bot.compose(f"user{i}", text, turn))

    async def client(i: int) -> list[float]:
        latencies = []
        for m in range(messages):
            await asyncio.sleep(pause * random.random())
            began = time.perf_counter()
            text = f"hello number {m}"
            await log.append(f"chat-{i}", msgspec.msgpack.encode([f"chat-{i}", text]))
            inboxes[i].put_nowait(text)
            await outboxes[i].get()
            latencies.append((time.perf_counter() - began) * 1e3)
        return latencies

    bots = [asyncio.get_running_loop().create_task(bot(i)) for i in range(conversations)]
    try:
        timings = await asyncio.gather(*(client(i) for i in range(conversations)))
    finally:
        for task in bots:
            task.cancel()
        await asyncio.gather(*bots, return_exceptions=True)
        await log.close()
    return [t for per_client in timings for t in per_client]


async def run(args: argparse.Namespace) -> None:
    loop_kind = type(asyncio.get_running_loop()).__module__.split(".")[0]
    with tempfile.TemporaryDirectory() as tmp:
        t0, cpu0 = time.perf_counter(), time.process_time()
        # A short idle timeout: the goodbyes come soon after the last message.
        flow = await chat_bot.main(
            args.conversations, args.messages, 0.5, args.pause, db=Path(tmp) / "chat.db"
        )
        flow_cpu = time.process_time() - cpu0
        flow_wall = time.perf_counter() - t0
        cpu0 = time.process_time()
        base = await baseline(args.conversations, args.messages, args.pause, Path(tmp) / "b.db")
        base_cpu = time.process_time() - cpu0
    replies = args.conversations * args.messages
    rows: list[dict[str, Any]] = [
        {"run": "asyncio bot + sqlite3 group commit", "p50_ms": percentile(base, 50),
         "p99_ms": percentile(base, 99), "cpu_us_per_reply": base_cpu / replies * 1e6},
        {"run": "actorflow examples/chat_bot.py", "p50_ms": flow.p50_ms, "p99_ms": flow.p99_ms,
         "cpu_us_per_reply": flow_cpu / replies * 1e6},
    ]  # fmt: skip
    extra = {
        "conversations": args.conversations,
        "messages": args.messages,
        "pause_s": args.pause,
        "loop": loop_kind,
        "actorflow_seconds": flow_wall,
        "p50_vs_baseline": flow.p50_ms / percentile(base, 50),
        "target_p50_ms": 2.0,
        "target_met": flow.p50_ms < 2.0,
        "load_average": os.getloadavg()[0],
    }
    report(f"chat_bot-{loop_kind}", rows, extra, args.json)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.02, help="longest pause (s)")
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--json", "--out", dest="json", default=None)
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(run(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
