"""An app process for the CLI tests: owns a database and runs workflows until stdin closes.

Usage: python cli_app.py DB [--start] [--flag=PATH]

DB is a file or a ``postgresql://`` URL. With ``--start`` it starts the fixed instances
below (idempotent on their IDs); ``q1`` waits for the file PATH (default: DB with the
suffix ``.flag``). It
prints ``READY <pid>`` once open, then serves until its stdin is closed, then closes
the runtime cleanly and prints ``CLOSED``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import msgspec

import actorflow as af


class Decision(msgspec.Struct):
    """A reviewer's answer."""

    approved: bool
    note: str = ""


approval = af.Event("cli.approval", Decision)
go = af.Event("cli.go")


@af.workflow(name="cli.review")
async def review(ctx: af.Context[None], doc: str) -> str:
    draft = await ctx.step(lambda: f"draft of {doc}", name="draft")
    decision = await ctx.wait_event(approval)
    return f"{draft}: {'approved' if decision.approved else 'rejected'} {decision.note}".strip()


@af.workflow(name="cli.token")
async def token_flow(ctx: af.Context[None]) -> str:
    ref = await ctx.create_event(go)
    try:
        await ctx.wait_event(ref)
    except af.EventFailed as exc:
        return f"failed: {exc.error}"
    return "resolved"


def flag_file(path: str) -> str | None:
    """The query of ``cli.query``: the file's text once it exists."""
    p = Path(path)
    return p.read_text() if p.exists() else None


@af.workflow(name="cli.query")
async def query_flow(ctx: af.Context[None], path: str) -> str:
    return str(await ctx.wait_for(flag_file, path, on=("files",)))


async def main(db: str, start: bool, flag: str) -> None:
    async with af.Runtime(db) as rt:
        if start:
            await rt.start(review, "doc-1", id="r1")
            await rt.start(review, "doc-2", id="r2")
            await rt.start(token_flow, id="t1")
            await rt.start(query_flow, flag, id="q1")
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print("CLOSED", flush=True)


if __name__ == "__main__":
    flags = [a.partition("=")[2] for a in sys.argv[2:] if a.startswith("--flag=")]
    default = str(Path(sys.argv[1]).with_suffix(".flag"))
    asyncio.run(main(sys.argv[1], "--start" in sys.argv[2:], flags[0] if flags else default))
