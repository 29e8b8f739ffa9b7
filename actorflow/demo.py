"""``actorflow demo``: an agent waits for a human's approval across a restart.

Everything the demo prints comes from steps (which run once, their results stored)
or from the driver, never from workflow code: workflow code runs again from the
top whenever an instance is rebuilt by replay, so a print there would repeat.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import msgspec

import actorflow as af


class OutputClosed(Exception):
    """Whoever read the demo's output has gone (``actorflow demo | head -3``)."""


_output_closed = threading.Event()  # set from whichever thread's print found it closed


def say(text: str = "") -> None:
    """Print one line of the story; raise :class:`OutputClosed` once stdout is closed,
    so that the demo stops (in a step, the step fails and the driver sees that)."""
    if _output_closed.is_set():
        raise OutputClosed
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _output_closed.set()
        raise OutputClosed from None


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
    say(f"   [step] the agent proposes a tool call: {tool}")
    return tool


def execute(action: str) -> str:
    """The approved tool call itself (simulated)."""
    _ran("execute")
    say(f"   [step] running the approved tool call: {action}")
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
    """Poll until the agent waits; say on what. An agent that ended instead (one of its
    steps failed: say() found stdout closed) raises why, as ``h.result()`` tells it."""
    async with asyncio.timeout(10):
        while (st := await h.status()).state == "running":
            await asyncio.sleep(0.005)
    if st.state != "waiting":
        await h.result()
    waits = ", ".join(f"{w.kind} {w.name!r}" for w in st.waiting_on)
    return f"{st.state} on {waits}"


async def _free_id(rt: af.Runtime) -> str:
    """``agent-1``, or the first ``agent-N`` that earlier demos on this database left free."""
    taken = {st.id for st in await rt.list(workflow=agent)}
    n = 1
    while f"agent-{n}" in taken:
        n += 1
    return f"agent-{n}"


async def run_demo(db: Path | str, kept: bool = False) -> str:
    """Start, stop while waiting, reopen, approve; return the agent's result.
    ``kept``: the database outlives the demo, so say how to look at it afterwards."""
    began = time.perf_counter()
    step_runs.clear()
    say("actorflow demo: an agent that waits for a human's approval, across a restart")
    say(f"database: {db}\n")

    say("1. start: the agent proposes a tool call, then waits for approval")
    async with af.Runtime(db) as rt:
        agent_id = await _free_id(rt)
        h = await rt.start(agent, "rm -rf ./build", id=agent_id)
        say(f"   status: {await _parked(h)}")
    say("2. restart: that runtime closed (as if the process died); a new one opens the file")
    async with af.Runtime(db) as rt:
        h = rt.handle(agent_id)
        say(f"   status: {await _parked(h)}")
        say(
            "   replay: the workflow re-ran from the top; its finished step returned the stored"
            f" result without running again (propose has run {step_runs.get('propose', 0)}x)"
        )
        say(f"3. a human approves: rt.send({agent_id!r}, 'demo.approval', {{...}})")
        command = f"actorflow --db {shlex.quote(str(db))}"
        say(
            f"   (from a shell: {command} send {agent_id} demo.approval "
            """'{"approved": true, "by": "alice"}')"""
        )
        await rt.send(agent_id, demo_approval, {"approved": True, "by": "alice"})
        result = await h.result(timeout=10)
        say("4. the agent resumed where it was and finished")
        say(f"   result: {result!r}")
        [event] = (await h.status()).events
        consumed = f"{event.consumed_at:%H:%M:%S}" if event.consumed_at else "never"
        say(f"   history: {event.name!r} sent {event.sent_at:%H:%M:%S}, consumed {consumed}")
    runs = ", ".join(f"{name} {n}x" for name, n in step_runs.items())
    say(f"\nsteps run: {runs}; total {time.perf_counter() - began:.2f} s")
    if kept:
        say(f"look at it again: {command} show {agent_id}")
    return result


def main(db: Path | str | None = None) -> None:
    """Run the demo on ``db`` (kept), or on a temporary database. Stops quietly, at
    once, when its output is closed (``actorflow demo | head -3``)."""
    _output_closed.clear()
    try:
        if db is not None:
            asyncio.run(run_demo(db, kept=True))
            return
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(run_demo(Path(tmp) / "demo.db"))
    except (OutputClosed, af.WorkflowFailed):
        if not _output_closed.is_set():
            raise
        # Python's own advice for a closed stdout: point it at /dev/null, so that the
        # flush at exit does not fail once more with a BrokenPipeError of its own.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
