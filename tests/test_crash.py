"""Kill -9 a real child process at random moments, restart it, check nothing was lost.

Checks: every acknowledged send is delivered exactly once (each instance gets pings
0..n-1 exactly, in order); no step whose result was stored ran again (the stored
nonce of each step is the last execution of it in the side-effect log); every
instance finishes with the right result.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("crash_child.py")
INSTANCES = 30
PINGS = 120


def run_child(
    db: Path, work: Path, kill_after: float | None, env: dict[str, str] | None = None
) -> bool:
    """Run the child; kill it after ``kill_after`` seconds. True if it finished."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(db), str(work), str(INSTANCES), str(PINGS)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if kill_after is not None:
        time.sleep(kill_after)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return False
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return "DONE" in out


@pytest.mark.parametrize("slack", [None, 0], ids=["default", "rewrite-bases-often"])
def test_kill_9_loses_nothing_and_repeats_no_stored_step(tmp_path: Path, slack: int | None) -> None:
    db = tmp_path / "crash.db"
    rng = random.Random(int(os.environ.get("CRASH_SEED", "7")))
    env = None if slack is None else {**os.environ, "CRASH_SLACK": str(slack)}
    kills = 0
    for _ in range(20):
        if run_child(db, tmp_path, rng.uniform(0.3, 0.7), env):
            break
        kills += 1
    assert run_child(db, tmp_path, None, env)
    print(f"survived {kills} kills")
    assert kills >= 3, "the child finished before it could be killed often enough"

    check_results(tmp_path)


def check_results(workdir: Path) -> None:
    """After the child finished: every instance took every ping (each acknowledged one
    among them), and no step whose result was stored ran again."""
    results = json.loads((workdir / "results.json").read_text())
    assert len(results) == INSTANCES
    runs: dict[str, list[str]] = {}
    for line in (workdir / "steps.log").read_text().splitlines():
        instance, nonce = line.split()
        runs.setdefault(instance, []).append(nonce)
    acked = {tuple(line.split()) for line in (workdir / "acks.log").read_text().splitlines()}
    for instance, result in results.items():
        assert result["got"] == list(range(PINGS)), (instance, result)
        first = [n for n in runs[instance] if n.startswith("a-")]
        last = [n for n in runs[instance] if n.startswith("b-")]
        assert first[-1] == result["first"], f"{instance}: step a ran after its result was stored"
        assert last[-1] == result["last"], f"{instance}: step b ran after its result was stored"
    for instance, k in acked:
        assert int(k) in results[instance]["got"]
