"""A child process for the patching test: the *old* code of a workflow, before a patch.

Usage: python patching_child.py DB MODE ID [ID ...]

MODE ``old``: starts one instance per ID of ``patching.flow`` as it was before
``ctx.patched("x")`` existed (step ``a``, step ``old-b``, then a wait for ``go``), lets
each park on that wait, closes the runtime and prints DONE. The test reopens the file
under newer code. MODE ``kill``: the code with the patch instead; once each instance is
parked (its marker committed, no checkpoint yet) the process kills itself with SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import actorflow as af

go = af.Event("patching.go", str)


def mark(what: str) -> str:
    return what


async def old(ctx: af.Context[None]) -> list[object]:
    a = await ctx.step(mark, "a", name="a")
    b = await ctx.step(mark, "old", name="old-b")
    got = await ctx.wait_event(go)
    return [a, b, got, "old-end"]


async def patched(ctx: af.Context[None]) -> list[object]:
    a = await ctx.step(mark, "a", name="a")
    if ctx.patched("x"):
        b = await ctx.step(mark, "new", name="new-b")
    else:
        b = await ctx.step(mark, "old", name="old-b")
    got = await ctx.wait_event(go)
    return [a, b, got, "killed"]


async def main() -> None:
    db, mode, ids = sys.argv[1], sys.argv[2], sys.argv[3:]
    flow = af.workflow(name="patching.flow")(old if mode == "old" else patched)
    async with af.Runtime(db) as rt:
        handles = [await rt.start(flow, id=i) for i in ids]
        for h in handles:
            while (await h.status()).state != "waiting":
                await asyncio.sleep(0.005)
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
