"""Logging: silent by default; with configure_logging, one structlog event per transition."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import actorflow as af

ping = af.Event("log.ping", int)


def flaky(attempts: list[int]) -> str:
    attempts.append(1)
    if len(attempts) < 2:
        raise ConnectionError("try again")
    return "ok"


@af.workflow(name="log.flow")
async def flow(ctx: af.Context[None]) -> int:
    await ctx.step(flaky, [], retry=af.Retry(attempts=3, initial=0.001), name="flaky")
    with contextlib.suppress(af.WaitTimeout):
        await ctx.wait_event(ping, timeout=5)
    return int(await ctx.wait_event(ping))


@af.workflow(name="log.boom")
async def boom(ctx: af.Context[None]) -> None:
    raise ValueError("no good")


@pytest.fixture
def log_lines(capsys: pytest.CaptureFixture[str]) -> Iterator[list[dict[str, object]]]:
    lines: list[dict[str, object]] = []
    af.configure_logging("INFO", json=True)
    yield lines
    stdlib = logging.getLogger("actorflow")
    for handler in [h for h in stdlib.handlers if not isinstance(h, logging.NullHandler)]:
        stdlib.removeHandler(handler)
    stdlib.setLevel(logging.NOTSET)
    stdlib.propagate = True


async def test_every_transition_is_an_event_bound_to_its_workflow(
    db: Path,
    clock: af.testing.ManualClock,
    log_lines: list[dict[str, object]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with af.Runtime(db, clock=clock) as rt:
        h = await rt.start(flow, id="f1")
        await clock.advance(0.01)  # the retry delay
        await clock.advance(5)  # the first wait times out
        await rt.send("f1", ping, 7)
        assert await h.result(timeout=5) == 7
        failed = await rt.start(boom, id="b1")
        with pytest.raises(af.WorkflowFailed):
            await failed.result(timeout=5)
    async with af.Runtime(db, clock=clock):
        pass
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    names = [e["event"] for e in events]
    for expected in (
        "recovery.done", "workflow.started", "step.retry", "step.completed", "wait.timeout",
        "event.sent", "event.consumed", "workflow.completed", "workflow.failed",
    ):  # fmt: skip
        assert expected in names, (expected, names)
    for event in events:
        if event["event"] != "recovery.done":
            assert event["workflow_id"] in ("f1", "b1"), event
    failure = next(e for e in events if e["event"] == "workflow.failed")
    assert failure["error"] == "ValueError: no good"
    recovery = [e for e in events if e["event"] == "recovery.done"]
    assert recovery[-1]["instances"] == 0 and "seconds" in recovery[-1]


def test_silent_by_default(tmp_path: Path) -> None:
    script = f"""
import asyncio, actorflow as af
@af.workflow
async def hello(ctx) -> str:
    return await ctx.step(lambda: "hi", name="hi")
async def main():
    async with af.Runtime({str(tmp_path / "quiet.db")!r}) as rt:
        h = await rt.start(hello)
        print(await h.result())
asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hi\n" and done.stderr == ""
