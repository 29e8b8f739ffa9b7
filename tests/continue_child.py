"""A child process for the continue_as_new kill -9 test.

Usage: python continue_child.py DB WORKDIR POINT

Runs one instance of ``cchild.counter`` (it takes 3 messages per run, each through a
step, then continues as new), sends it messages two at a time (so that sends race the
switch between runs) and kills itself with SIGKILL at POINT of the first switch:

- ``write-before``: just before the batch holding the ``ContinuedAsNew`` is written;
- ``write-after``: just after it is written, before it is applied;
- ``next-write``: at the first write after it (the new run's first records);
- ``checkpoint-before`` / ``checkpoint-after``: around the first checkpoint that stores
  the new run.

Each value is logged to WORKDIR/tries.log before it is sent and to WORKDIR/acks.log once
its send returns; each step execution to WORKDIR/steps.log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import msgspec

import actorflow as af
from actorflow.records import ContinuedAsNew, Record, Snapshot
from actorflow.store.sqlite import SQLiteStore

PER_RUN = 3


class Seen(msgspec.Struct):
    values: list[int] = msgspec.field(default_factory=list)


message = af.Event("cchild.message", int)


def log(workdir: Path, name: str, line: str) -> None:
    with open(workdir / name, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def take(workdir: str, value: int) -> int:
    """The step: its execution is logged, so a stored one run again shows."""
    log(Path(workdir), "steps.log", str(value))
    return value


@af.workflow(name="cchild.counter", state=Seen)
async def counter(ctx: af.Context[Seen], workdir: str) -> list[int]:
    """Take PER_RUN messages, then continue as new; a negative one ends it."""
    for _ in range(PER_RUN):
        value = await ctx.wait_event(message)
        if value < 0:
            return ctx.state.values
        ctx.state.values.append(await ctx.step(take, workdir, value, name="take"))
    ctx.continue_as_new(workdir)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    """Make the store kill this process at ``point`` (see the module docstring)."""
    write, checkpoint = SQLiteStore.write, SQLiteStore.checkpoint
    switched = False

    async def write_then_die(self: SQLiteStore, records: list[Record], *args: Any) -> None:
        nonlocal switched
        switching = any(isinstance(r, ContinuedAsNew) for r in records)
        if (point == "write-before" and switching) or (point == "next-write" and switched):
            _die()
        await write(self, records, *args)
        if point == "write-after" and switching:
            _die()
        switched = switched or switching

    async def checkpoint_then_die(self: SQLiteStore, snapshots: list[Snapshot]) -> None:
        new_run = any(s.run > 1 for s in snapshots)
        if point == "checkpoint-before" and new_run:
            _die()
        await checkpoint(self, snapshots)
        if point == "checkpoint-after" and new_run:
            _die()

    SQLiteStore.write = write_then_die  # type: ignore[method-assign]
    SQLiteStore.checkpoint = checkpoint_then_die  # type: ignore[method-assign]


async def main(db: str, workdir: Path, point: str) -> None:
    arm(point)
    async with af.Runtime(db, checkpoint_every=4) as rt:
        await rt.start(counter, str(workdir), id="c")
        value = 0
        while True:
            pair = [value + 1, value + 2]
            value += 2
            for v in pair:
                log(workdir, "tries.log", str(v))

            async def send(v: int) -> None:
                await rt.send("c", message, v)
                log(workdir, "acks.log", str(v))

            await asyncio.gather(*(send(v) for v in pair))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3]))
