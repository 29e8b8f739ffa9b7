"""``actorflow demo``: an agent waits for a human's approval across a restart.

Everything the demo prints comes from steps (which run once, their results stored)
or from the driver, never from workflow code: workflow code runs again from the
top whenever an instance is rebuilt by replay, so a print there would repeat.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import msgspec

import actorflow as af


class Decision(msgspec.Struct):
    """A human's answer to a proposed tool call."""

    approved: bool
    by: str = ""


demo_approval = af.Event("demo.approval", Decision)
step_runs: dict[str, int] = {}  # how often each step really ran, to show it once


def _ran(step: str) -> None:
    step_runs[step] = step_runs.get(step, 0) + 1


def propose(tool: str) -> str:
    """The agent's first side effect: decide on a tool call."""
    _ran("propose")
    print(f"   [step] the agent proposes a tool call: {tool}")
    return tool


def execute(action: str) -> str:
    """The approved tool call itself (simulated)."""
    _ran("execute")
    print(f"   [step] running the approved tool call: {action}")
    return "done"


@af.workflow(name="demo.agent")
async def agent(ctx: af.Context[None], tool: str) -> str:
    """Propose a tool call, wait (durably) for approval, then run it or not."""
    action = await ctx.step(propose, tool)
    decision = await ctx.wait_event(demo_approval, timeout=timedelta(days=1))
    if not decision.approved:
        return f"not run: declined by {decision.by}"
    outcome = await ctx.step(execute, action)
    return f"{outcome}: {action}, approved by {decision.by}"


async def _parked(h: af.Handle[str]) -> str:
    while (st := await h.status()).state != "waiting":
        await asyncio.sleep(0.005)
    waits = ", ".join(f"{w.kind} {w.name!r}" for w in st.waiting_on)
    return f"{st.state} on {waits}"


async def run_demo(db: Path) -> str:
    """Start, stop while waiting, reopen, approve; return the agent's result."""
    began = time.perf_counter()
    step_runs.clear()
    print("actorflow demo: an agent that waits for a human's approval, across a restart")
    print(f"database: {db}\n")

    print("1. start: the agent proposes a tool call, then waits for approval")
    async with af.Runtime(db) as rt:
        h = await rt.start(agent, "rm -rf ./build", id="agent-1")
        print(f"   status: {await _parked(h)}")
    print("2. restart: that runtime closed (as if the process died); a new one opens the file")
    async with af.Runtime(db) as rt:
        h = rt.handle("agent-1")
        print(f"   status: {await _parked(h)}")
        print(
            "   replay: the workflow re-ran from the top; its finished step returned the stored"
            f" result without running again (propose has run {step_runs.get('propose', 0)}x)"
        )
        print("3. a human approves: rt.send('agent-1', 'demo.approval', {...})")
        print(
            f"   (from a shell: actorflow --db {db} send agent-1 demo.approval "
            """'{"approved": true, "by": "alice"}')"""
        )
        await rt.send("agent-1", demo_approval, {"approved": True, "by": "alice"})
        result = await h.result(timeout=10)
        print("4. the agent resumed where it was and finished")
        print(f"   result: {result!r}")
        [event] = (await h.status()).events
        consumed = f"{event.consumed_at:%H:%M:%S}" if event.consumed_at else "never"
        print(f"   history: {event.name!r} sent {event.sent_at:%H:%M:%S}, consumed {consumed}")
    runs = ", ".join(f"{name} {n}x" for name, n in step_runs.items())
    print(f"\nsteps run: {runs}; total {time.perf_counter() - began:.2f} s")
    return result


def main() -> None:
    """Run the demo on a temporary database."""
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run_demo(Path(tmp) / "demo.db"))
