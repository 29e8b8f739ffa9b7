"""A child process for the kill -9 test: runs workflows on a database until killed.

Usage: python crash_child.py DB WORKDIR INSTANCES PINGS

With CRASH_SLACK set, instances' bases are rewritten once their journal outgrows them
by that many bytes (see actorflow.store.layout), so that kills also land mid-rewrite.

Each instance runs a step with a side effect (logged to WORKDIR/steps.log, one line
per execution, flushed before the step returns), then consumes PINGS events, then a
second step. The sender sends ping k of an instance only after the instance's
status shows k events, so no event is sent twice even across kills; every send that
returns is logged to WORKDIR/acks.log. When all instances are done the results are
written to WORKDIR/results.json and the process prints DONE.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from pathlib import Path

import actorflow as af
from actorflow.store import layout

if "CRASH_SLACK" in os.environ:
    layout.SLACK = int(os.environ["CRASH_SLACK"])

ping = af.Event("crash.ping", int)
workdir = Path(sys.argv[2])


def side_effect(instance: str, what: str) -> str:
    nonce = f"{what}-{random.getrandbits(64):016x}"
    with open(workdir / "steps.log", "a") as f:
        f.write(f"{instance} {nonce}\n")
        f.flush()
        os.fsync(f.fileno())
    return nonce


@af.workflow(name="crash.flow")
async def flow(ctx: af.Context[None], n: int) -> dict[str, object]:
    first = await ctx.step(side_effect, ctx.workflow_id, "a")
    got = [await ctx.wait_event(ping) for _ in range(n)]
    last = await ctx.step(side_effect, ctx.workflow_id, "b")
    return {"first": first, "got": got, "last": last}


async def feed(rt: af.Runtime, instance: str, pings: int) -> None:
    h = rt.handle(instance)
    while True:
        st = await h.status()
        sent = len(st.events)
        if st.state in ("completed", "failed", "cancelled") or sent >= pings:
            return
        await rt.send(instance, ping, sent)
        with open(workdir / "acks.log", "a") as f:
            f.write(f"{instance} {sent}\n")
        await asyncio.sleep(random.random() * 0.03)


async def main() -> None:
    db, instances, pings = sys.argv[1], int(sys.argv[3]), int(sys.argv[4])
    async with af.Runtime(db, checkpoint_every=40) as rt:
        ids = [f"i{n}" for n in range(instances)]
        handles = [await rt.start(flow, pings, id=i) for i in ids]
        await asyncio.gather(*(feed(rt, i, pings) for i in ids))
        results = {h.id: await h.result() for h in handles}
    (workdir / "results.json").write_text(json.dumps(results))
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
