"""``actorflow demo`` as a newcomer runs it: a subprocess that finishes quickly and
tells the story (start, wait, restart, approval, done) without printing anything twice."""

from __future__ import annotations

import subprocess
import sys
import time


def test_demo_runs_the_approval_flow_across_a_restart_in_under_5_seconds() -> None:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "actorflow", "demo"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    elapsed = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert elapsed < 5, f"the demo took {elapsed:.1f} s"
    out = done.stdout
    for line in [
        "1. start: the agent proposes a tool call, then waits for approval",
        "   status: waiting on event 'demo.approval'",
        "2. restart:",
        "   replay: the workflow re-ran from the top",
        "(propose has run 1x)",
        "3. a human approves",
        "4. the agent resumed where it was and finished",
        "   result: 'done: rm -rf ./build, approved by alice'",
        "steps run: propose 1x, execute 1x",
    ]:
        assert line in out, f"no {line!r} in:\n{out}"
    # Each step printed once, although the workflow ran twice (first run, then replay).
    assert out.count("[step] the agent proposes a tool call") == 1
    assert out.count("[step] running the approved tool call") == 1
    assert out.index("1. start") < out.index("2. restart") < out.index("3. a human")
    assert done.stderr == ""
