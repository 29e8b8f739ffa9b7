"""A child process for the patching test: the *old* code of a workflow, before a patch.

Usage: python patching_child.py DB ID [ID ...]

Starts one instance per ID of ``patching.flow`` as it was before ``ctx.patched("x")``
existed (step ``a``, step ``old-b``, then a wait for ``go``), lets each park on that
wait, closes the runtime and prints DONE. The test reopens the file under newer code.
"""

from __future__ import annotations

import asyncio
import sys

import actorflow as af

go = af.Event("patching.go", str)


def mark(what: str) -> str:
    return what


@af.workflow(name="patching.flow")
async def flow(ctx: af.Context[None]) -> list[object]:
    a = await ctx.step(mark, "a", name="a")
    b = await ctx.step(mark, "old", name="old-b")
    got = await ctx.wait_event(go)
    return [a, b, got, "old-end"]


async def main() -> None:
    db, ids = sys.argv[1], sys.argv[2:]
    async with af.Runtime(db) as rt:
        handles = [await rt.start(flow, id=i) for i in ids]
        for h in handles:
            while (await h.status()).state != "waiting":
                await asyncio.sleep(0.005)
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
