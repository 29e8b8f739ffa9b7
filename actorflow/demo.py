"""``actorflow demo``: an approval flow that waits for a human across a restart."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import msgspec

import actorflow as af


class Decision(msgspec.Struct):
    """A human's answer to a proposed tool call."""

    approved: bool
    by: str = ""


demo_approval = af.Event("demo.approval", Decision)


def propose(tool: str) -> str:
    """The agent's side effect: describe the tool call it wants to make."""
    print(f"  [step] agent proposes: {tool}")
    return f"run {tool}"


def execute(action: str) -> str:
    """The approved tool call itself."""
    print(f"  [step] executing: {action}")
    return "done"


@af.workflow(name="demo.agent")
async def agent(ctx: af.Context[None], tool: str) -> str:
    """Propose a tool call, wait (durably) for approval, then run it or not."""
    action = await ctx.step(propose, tool)
    print("  [workflow] waiting for a human's approval (up to 1 day)...")
    decision = await ctx.wait_event(demo_approval, timeout=86_400)
    if not decision.approved:
        return f"declined by {decision.by}"
    return await ctx.step(execute, action) + f", approved by {decision.by}"


async def run_demo(db: Path) -> str:
    """Start, stop while waiting, reopen, approve, and return the result."""
    print(f"1. open a runtime on {db} and start the agent")
    async with af.Runtime(db) as rt:
        h = await rt.start(agent, "rm -rf ./build", id="agent-1")
        while (await h.status()).state != "waiting":
            await asyncio.sleep(0.01)
        st = await h.status()
        print(f"   status: {st.state}, waiting on {[w.name for w in st.waiting_on]}")
    print("2. the process stops while the agent waits (nothing is lost)")
    print("3. a new runtime opens the same file: the agent resumes where it was")
    async with af.Runtime(db) as rt:
        h = rt.handle("agent-1")
        print(f"   status after restart: {(await h.status()).state}")
        print("4. a human approves: rt.send('agent-1', 'demo.approval', {...})")
        await rt.send("agent-1", demo_approval, {"approved": True, "by": "alice"})
        result = await h.result(timeout=10)
        print(f"5. result: {result!r} (the proposal step ran once, before the restart)")
        return result


def main() -> None:
    """Run the demo on a temporary database."""
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run_demo(Path(tmp) / "demo.db"))
