"""Shared pieces of the web page tests: an agent that waits for approval, a server on a
free port in the test's own event loop, and Debian's chromium driven by Playwright."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import timedelta

import msgspec
import pytest
from playwright.async_api import Browser, async_playwright

import actorflow as af
import actorflow.ui
from actorflow.ui import UI

CHROMIUM = os.environ.get("ACTORFLOW_CHROMIUM", "/usr/bin/chromium")


class Decision(msgspec.Struct):
    """A person's answer to a proposed tool call."""

    approved: bool
    note: str = ""


approval = af.Event("ui.approval", Decision)
go = af.Event("ui.go")


def propose(task: str) -> str:
    """The tool call the agent wants to make."""
    return f"delete_file(path={task!r})"


def run_tool(call: str) -> str:
    """Pretend to run it."""
    return "deleted"


@af.workflow(name="ui.agent")
async def agent(ctx: af.Context[None], task: str) -> str:
    """Propose a risky call, wait up to 7 days for a person, run it if approved."""
    call = await ctx.step(propose, task)
    decision = await ctx.wait_event(approval, timeout=timedelta(days=7))
    if not decision.approved:
        return f"denied: {decision.note}"
    return await ctx.step(run_tool, call)


@af.workflow(name="ui.gated")
async def gated(ctx: af.Context[None]) -> str:
    """Wait for a plain gate."""
    try:
        await ctx.wait_event(go)
    except af.EventCancelled:
        return "stopped"
    return "went"


@af.workflow(name="ui.napper")
async def napper(ctx: af.Context[None]) -> str:
    """Sleep for an hour (waits on a timer, not on a person)."""
    await ctx.sleep(3600)
    return "rested"


@af.workflow(name="ui.token")
async def token_flow(ctx: af.Context[None]) -> str:
    """Wait on a pre-created event (a token)."""
    ref = await ctx.create_event(approval)
    try:
        decision = await ctx.wait_event(ref)
    except af.EventFailed as exc:
        return f"rejected: {exc.error}"
    return f"resolved: {decision.approved}"


async def parked(rt: af.Runtime, instance: str) -> af.Status:
    """The status of ``instance`` once it waits on something (a few ms)."""
    for _ in range(500):
        st = await rt.handle(instance).status()
        if st.state != "running":
            return st
        await asyncio.sleep(0.01)
    raise AssertionError(f"{instance} never parked")


@contextlib.asynccontextmanager
async def serving(ui: UI) -> AsyncIterator[str]:
    """Serve ``ui`` on a free port of 127.0.0.1 in the test's loop; yield the base URL."""
    async with actorflow.ui.serving(ui, port=0) as link:
        yield link.partition("/?token=")[0]


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless chromium (Debian's, never a downloaded one)."""
    if not os.path.exists(CHROMIUM):
        missing = f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)"
        if os.environ.get("CI"):  # CI installs it: there the browser tests never skip
            raise AssertionError(missing)
        pytest.skip(missing)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            await browser.close()
