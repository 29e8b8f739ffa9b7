"""A child process for the backup test: starts instances and sends events until killed.

Usage: python backup_child.py DB ACKS

Instance ``b{n}`` waits for one event and returns its value. Every even instance gets
its event at once; odd ones keep waiting. Each start and send that returned (so is
durable) is logged to ACKS as ``started N`` or ``sent N``, flushed at once.
"""

from __future__ import annotations

import asyncio
import sys

import actorflow as af

value = af.Event("backup.value", int)


@af.workflow(name="backup.flow")
async def flow(ctx: af.Context[None]) -> int:
    return await ctx.wait_event(value)


async def main() -> None:
    db, acks = sys.argv[1], sys.argv[2]
    with open(acks, "a", buffering=1) as log:  # line-buffered: each line written at once
        async with af.Runtime(db, checkpoint_every=64) as rt:
            print("READY", flush=True)
            n = 0
            while True:
                await rt.start(flow, id=f"b{n}")
                log.write(f"started {n}\n")
                if n % 2 == 0:
                    await rt.send(f"b{n}", value, n)
                    log.write(f"sent {n}\n")
                n += 1
                await asyncio.sleep(0.001)


if __name__ == "__main__":
    asyncio.run(main())
