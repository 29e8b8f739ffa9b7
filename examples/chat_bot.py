"""A low-latency chat bot: every conversation is a durable instance waiting for a message.

Shows: many instances waiting at once on one event loop; an event per message
(``af.Event("chat.message", Msg)``) delivered by instance ID; an idle timeout that ends
the conversation with a goodbye (``af.WaitTimeout``); replies sent from an async
step; ``ctx.continue_as_new`` every ``TURNS_PER_RUN`` turns, so that a conversation
that lasts for months keeps a short journal; and what a message-to-reply round trip
costs with every message made durable in SQLite first (group commit batches the
concurrent conversations).

Run: ``python examples/chat_bot.py [--conversations N] [--messages M] [--idle S] [--db PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

import msgspec

import actorflow as af


class Msg(msgspec.Struct):
    text: str


class Report(msgspec.Struct):
    conversations: int
    replies: int
    goodbyes: int
    p50_ms: float
    p99_ms: float


message = af.Event("chat.message", Msg)


class Connections:
    """Stands in for a chat server's open client connections (websockets, say)."""

    def __init__(self) -> None:
        self._clients: dict[str, asyncio.Queue[str]] = {}

    def open(self, conversation: str) -> asyncio.Queue[str]:
        """Connect a client; what the bot says to it arrives in the returned queue."""
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._clients[conversation] = queue
        return queue

    def push(self, conversation: str, text: str) -> None:
        """Send ``text`` to the client, if it is still connected."""
        client = self._clients.get(conversation)
        if client is not None:
            client.put_nowait(text)


connections = Connections()


async def say(conversation: str, text: str) -> None:
    """The bot speaks. An async step runs on the event loop: no thread hop, low latency.

    Its result is stored after it ran, so a crash in between sends the reply again at
    the restart: at-least-once, as with any side effect outside the database."""
    connections.push(conversation, text)


def compose(user: str, text: str, turn: int) -> str:
    """The bot's brain: pure, so it can run in the workflow (an LLM call would be a step)."""
    return f"#{turn} got it, {user}: {text!r} has {len(text.split())} word(s)"


TURNS_PER_RUN = 100
"""A conversation may last for months: every this many turns it continues as a new run,
so that its journal (and what a restart replays) stays short."""


@af.workflow(name="chat.conversation")
async def conversation(
    ctx: af.Context[None], user: str, idle_seconds: float, turns: int = 0
) -> int:
    """Answer each message; say goodbye after ``idle_seconds`` of silence. Returns turns."""
    for _ in range(TURNS_PER_RUN):
        try:
            msg = await ctx.wait_event(message, timeout=idle_seconds)
        except af.WaitTimeout:
            await ctx.step(say, ctx.workflow_id, f"bye {user}, talk later!")
            return turns
        turns += 1
        await ctx.step(say, ctx.workflow_id, compose(user, msg.text, turns))
    # Messages that arrive meanwhile wait in the mailbox and go to the next run.
    ctx.continue_as_new(user, idle_seconds, turns)


# -- the driver: N clients chatting at once, timing each message -> reply ------------
async def chat(
    rt: af.Runtime,
    conversation_id: str,
    client: asyncio.Queue[str],
    messages: int,
    pause: float,
) -> list[float]:
    """One client: send ``messages`` messages, each ``pause`` seconds after the previous
    reply (people type); return the round-trip times in seconds."""
    latencies = []
    for i in range(messages):
        await asyncio.sleep(pause * random.random())
        began = time.perf_counter()
        await rt.send(conversation_id, message, Msg(f"hello number {i}"))
        await client.get()
        latencies.append(time.perf_counter() - began)
    return latencies


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def main(
    conversations: int = 100,
    messages: int = 20,
    idle_seconds: float = 30.0,
    pause: float = 0.0,
    clock: af.testing.ManualClock | None = None,
    db: Path | None = None,
) -> Report:
    """Run the conversations, print latencies, let them idle out; return the numbers.

    With a ManualClock the idle timeout is reached by moving the clock, not by waiting.
    """
    with tempfile.TemporaryDirectory() as tmp:
        async with af.Runtime(db or Path(tmp) / "chat.db", clock=clock) as rt:
            # A conversation that said goodbye is over and takes no more messages: on a
            # database that earlier runs used, new conversations are numbered after theirs.
            first = len(await rt.list(workflow=conversation))
            handles = await asyncio.gather(
                *(
                    rt.start(conversation, f"user{i}", idle_seconds, id=f"chat-{first + i}")
                    for i in range(conversations)
                )
            )
            clients = {h.id: connections.open(h.id) for h in handles}
            print(f"{conversations} conversations open, {messages} messages each")
            began = time.perf_counter()
            timings = await asyncio.gather(
                *(chat(rt, h.id, clients[h.id], messages, pause) for h in handles)
            )
            elapsed = time.perf_counter() - began
            latencies = sorted(t for per_client in timings for t in per_client)
            p50, p99 = percentile(latencies, 0.50) * 1e3, percentile(latencies, 0.99) * 1e3
            print(
                f"{len(latencies)} replies in {elapsed:.2f} s: "
                f"latency p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {latencies[-1] * 1e3:.2f} ms"
            )

            print(f"silence: after {idle_seconds:g} s without a message each bot says goodbye")
            if clock is not None:
                await clock.advance(idle_seconds)
            turns = [await h.result(timeout=idle_seconds + 10) for h in handles]
            last_words = [clients[h.id].get_nowait() for h in handles]
            goodbyes = sum(1 for text in last_words if text.startswith("bye"))
            print(f"{handles[0].id} got: {last_words[0]!r}")
            print(f"{goodbyes} goodbyes; {sum(turns)} turns answered in all")
    return Report(conversations, len(latencies), goodbyes, round(p50, 3), round(p99, 3))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument(
        "--idle", type=float, default=1.0, help="idle timeout in seconds (real bots: 30 or more)"
    )
    parser.add_argument(
        "--pause", type=float, default=0.02, help="a client's longest pause between messages"
    )
    parser.add_argument("--db", type=Path, help="database file (default: a temporary one)")
    args = parser.parse_args()
    asyncio.run(main(args.conversations, args.messages, args.idle, args.pause, db=args.db))
