"""A local AI agent that stops for a human before every risky tool call, even across a restart.

Shows: an agent loop as a workflow (each "LLM" turn and each tool call is a step, so
none runs twice), a typed approval event awaited by name (``af.Event("approval",
Decision)``), and a process that can be killed while it waits: run it again on the
same database and it resumes where it was. The approval can come from another
terminal through the command line, which writes to the database's inbox.

Run:
  python examples/agent_approval.py              # demo: temporary db, approves itself
  python examples/agent_approval.py --db agent.db   # waits for you; kill it, rerun it
  python examples/agent_approval.py --ui         # approve in a web page (actorflow[ui])
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import sys
import tempfile
import webbrowser
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import msgspec

import actorflow as af


class ToolCall(msgspec.Struct):
    tool: str
    args: dict[str, str]


class Decision(msgspec.Struct):
    approved: bool
    note: str = ""


approval = af.Event("approval", Decision)

TASK = "clean up the build directory and tell the team"
RISKY = frozenset({"delete_file", "send_email"})

# The fake LLM: the tool calls it proposes, one per turn (no network, same every run).
SCRIPT = [
    ToolCall("list_dir", {"path": "build"}),
    ToolCall("read_file", {"path": "build/README"}),
    ToolCall("delete_file", {"path": "build/cache.bin"}),
    ToolCall("send_email", {"to": "team@example.com", "subject": "build cache cleared"}),
]


def describe(call: ToolCall) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in call.args.items())
    return f"{call.tool}({args})"


# -- side effects: each runs once, its result stored --------------------------------
def think(task: str, history: list[str]) -> ToolCall | None:
    """One LLM turn: the next tool call for ``task`` given what happened so far."""
    call = SCRIPT[len(history)] if len(history) < len(SCRIPT) else None
    print(f"  [llm] proposes {describe(call) if call else 'nothing more: done'}")
    return call


def ask_human(instance: str, call: ToolCall) -> None:
    """Where a real agent would post to chat; this one prints."""
    print(f"  [agent] {describe(call)} is risky: {instance} needs a human's approval")


def run_tool(call: ToolCall) -> str:
    """Pretend to run the tool (nothing is touched on disk)."""
    print(f"  [tool] {describe(call)}")
    outputs = {
        "list_dir": "README, cache.bin",
        "read_file": "build output; safe to delete",
        "delete_file": "deleted",
        "send_email": "sent",
    }
    return outputs[call.tool]


# -- the workflow ---------------------------------------------------------------------
@af.workflow(name="agent.run")
async def agent(ctx: af.Context[None], task: str) -> list[str]:
    """Ask the LLM for tool calls until it is done; risky ones wait for approval."""
    history: list[str] = []
    while (call := await ctx.step(think, task, history, name="llm")) is not None:
        if call.tool in RISKY:
            await ctx.step(ask_human, ctx.workflow_id, call)
            try:
                decision = await ctx.wait_event(approval, timeout=timedelta(hours=24))
            except af.WaitTimeout:
                decision = Decision(approved=False, note="nobody answered within 24 h")
            if not decision.approved:
                history.append(f"{describe(call)} -> denied: {decision.note}")
                continue
        output = await ctx.step(run_tool, call)
        history.append(f"{describe(call)} -> {output}")
    return history


# -- the driver -----------------------------------------------------------------------
@contextlib.asynccontextmanager
async def open_page(rt: af.Runtime, port: int) -> AsyncIterator[None]:
    """Serve the web page for this runtime, in this process, while the block runs."""
    import actorflow.ui  # needs the extra: pip install 'actorflow[ui]'

    async with actorflow.ui.serving(actorflow.ui.app(rt), port=port) as link:
        print(f"approve or deny in your browser: {link}", flush=True)
        if sys.stdin.isatty():  # someone at a terminal: open it for them
            webbrowser.open(link)
        yield


APPROVE = '{"approved": true}'
DENY = '{"approved": false, "note": "why"}'


async def supervise(
    rt: af.Runtime, h: af.Handle[list[str]], db: Path, approve_after: float | None
) -> list[str]:
    """Follow the agent: print how to answer each approval it waits for, or answer it
    after ``approve_after`` seconds; return the agent's transcript."""
    result = asyncio.ensure_future(h.result())
    # On Ctrl-C the runtime closes under it: its RuntimeClosed has nobody left to see it.
    result.add_done_callback(lambda done: done.cancelled() or done.exception())
    announced = -1
    while not result.done():
        st = await h.status()
        # Tell successive waits apart by how many approvals were used up before each.
        answered = sum(1 for e in st.events if e.name == approval.name and e.consumed_at)
        if answered != announced and any(w.name == approval.name for w in st.waiting_on):
            announced = answered
            command = f"actorflow --db {shlex.quote(str(db))} send {h.id} approval"
            print("waiting for approval; in another terminal:")
            print(f"  {command} '{APPROVE}'")
            print(f"  (or deny: {command} '{DENY}')")
            if approve_after is not None:
                await asyncio.sleep(approve_after)
                await rt.send(h.id, approval, Decision(approved=True, note="auto-approved"))
                print("  <- approval: approved (auto-approve)")
        await asyncio.wait([result], timeout=0.02)
    return result.result()


async def main(
    db: Path | None = None,
    approve_after: float | None = 0.5,
    instance: str = "agent-1",
    ui_port: int | None = None,
) -> list[str]:
    """Run (or resume) the agent on ``db``; ``approve_after=None`` waits for a human.
    With ``ui_port``, the page of ``actorflow.ui`` for this runtime is served there."""
    with tempfile.TemporaryDirectory() as tmp:
        path = db or Path(tmp) / "agent.db"
        async with af.Runtime(path) as rt, contextlib.AsyncExitStack() as page:
            if ui_port is not None:
                await page.enter_async_context(open_page(rt, ui_port))
            try:
                st = await rt.handle(instance).status()
                then = "resuming" if st.state in ("running", "waiting") else "its transcript:"
                print(f"{instance}: found in {path} ({st.state}); {then}")
            except af.ActorflowError:
                print(f"{instance}: new run on {path}; task: {TASK}")
            h = await rt.start(agent, TASK, id=instance)  # idempotent: resumes an existing one
            transcript = await supervise(rt, h, path, approve_after)
    print(f"{instance}: finished")
    for line in transcript:
        print(f"  {line}")
    return transcript


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--db", type=Path, help="keep state in this file and wait for a human's approval"
    )
    parser.add_argument(
        "--auto-approve", action="store_true", help="approve by itself (default without --db)"
    )
    parser.add_argument("--id", default="agent-1", help="instance ID (default: agent-1)")
    parser.add_argument(
        "--ui", action="store_true", help="serve a page to approve in a browser (waits for you)"
    )
    parser.add_argument("--port", type=int, default=8765, help="the page's port (default 8765)")
    args = parser.parse_args()
    auto = args.auto_approve or (args.db is None and not args.ui)
    try:
        asyncio.run(main(args.db, 0.5 if auto else None, args.id, args.port if args.ui else None))
    except KeyboardInterrupt:
        print("\nstopped; the agent is stored. Run the same command again to resume.")
