"""A child process for the passivation kill -9 test: many parked instances, few loaded.

Usage: python passivation_child.py DB WORKDIR INSTANCES PINGS

Runs with ``max_loaded=3``, so most instances are unloaded at any moment and each event
loads one by replay. Each instance runs a step, then takes PINGS pings (each wait with
a long timeout, so its deadline is stored and watched), with a step after every fourth,
then a last step; each step's execution is logged to WORKDIR/steps.log (flushed before
it returns). Every instance also gets one ``noise`` event that no wait takes (kept in its
mailbox, never loading it). Feeders pick instances at random and send ping k only after
the instance's status shows k pings, so no ping is sent twice even across kills. Each
ping carries a random payload, logged to WORKDIR/tries.log before it is sent and to
WORKDIR/acks.log once the send returns. When all instances are done the results are
written to WORKDIR/results.json and the process prints DONE.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import sys
from pathlib import Path

import actorflow as af

ping = af.Event("passchild.ping", int)
noise = af.Event("passchild.noise", int)
workdir = Path(sys.argv[2])
MAX_LOADED = 3


def side_effect(instance: str, what: str) -> str:
    nonce = f"{what}-{random.getrandbits(64):016x}"
    with open(workdir / "steps.log", "a") as f:
        f.write(f"{instance} {nonce}\n")
        f.flush()
        os.fsync(f.fileno())
    return nonce


@af.workflow(name="passchild.flow")
async def flow(ctx: af.Context[None], n: int) -> dict[str, object]:
    first = await ctx.step(side_effect, ctx.workflow_id, "a")
    got, middle = [], []
    for k in range(n):
        got.append(await ctx.wait_event(ping, timeout=86400))
        if k % 4 == 3:
            middle.append(await ctx.step(side_effect, ctx.workflow_id, f"m{k}"))
    last = await ctx.step(side_effect, ctx.workflow_id, "b")
    return {"first": first, "got": got, "middle": middle, "last": last}


class Loads(logging.Handler):
    """Counts ``workflow.loaded`` events: proof that instances were unloaded."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "workflow.loaded" in record.getMessage()


async def feed(rt: af.Runtime, ids: list[str], pings: int, locks: dict[str, asyncio.Lock]) -> None:
    live = list(ids)
    while live:
        instance = random.choice(live)
        async with locks[instance]:
            st = await rt.handle(instance).status()
            if st.state != "waiting" and st.state != "running":
                live.remove(instance)
                continue
            if not any(e.name == noise.name for e in st.events):
                await rt.send(instance, noise, 0)
            sent = sum(e.name == ping.name for e in st.events)
            if sent >= pings:
                live.remove(instance)
                continue
            payload = random.getrandbits(48)  # tells this send from a resend of ping k
            with open(workdir / "tries.log", "a") as f:
                f.write(f"{instance} {payload}\n")
            await rt.send(instance, ping, payload)
            with open(workdir / "acks.log", "a") as f:
                f.write(f"{instance} {payload}\n")
        await asyncio.sleep(random.random() * 0.002)


async def main() -> None:
    db, instances, pings = sys.argv[1], int(sys.argv[3]), int(sys.argv[4])
    loads = Loads()
    logger = logging.getLogger("actorflow")
    logger.addHandler(loads)
    logger.setLevel(logging.DEBUG)
    async with af.Runtime(db, checkpoint_every=25, max_loaded=MAX_LOADED) as rt:
        ids = [f"i{n}" for n in range(instances)]
        handles = [await rt.start(flow, pings, id=i) for i in ids]
        locks = {i: asyncio.Lock() for i in ids}
        await asyncio.gather(*(feed(rt, ids, pings, locks) for _ in range(6)))
        results = {h.id: await h.result() for h in handles}
        assert rt.loaded <= MAX_LOADED, rt.loaded
    (workdir / "results.json").write_text(json.dumps({"results": results, "loads": loads.count}))
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
