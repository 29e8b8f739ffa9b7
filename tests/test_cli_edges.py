"""Rough edges of the command line: a closed pipe, a send without ``--wait`` that the
running owner rejects, and Ctrl-C of the agent example."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import App, run

HERE = Path(__file__).parent
EXAMPLE = HERE.parent / "examples" / "agent_approval.py"


@pytest.fixture
def app(db: Path) -> Iterator[App]:
    running = App(db)
    yield running
    if running.proc.poll() is None:
        running.stop()


def test_output_into_a_closed_pipe_exits_quietly(app: App, db: Path) -> None:
    for command in (["show", "r1"], ["list"], ["list", "--json"]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "actorflow", "--db", str(db), *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # as `| head -1` does once it has its line
        stderr = proc.stderr.read()
        assert proc.wait(timeout=30) == 0, stderr
        assert stderr == ""


def test_send_without_wait_reports_the_running_owners_rejection(app: App, db: Path) -> None:
    misspelt = run(db, "send", "r1", "cli.aproval", '{"approved": true}')
    assert misspelt.returncode == 1, misspelt.stdout
    assert "rejected" in misspelt.stderr and "cli.aproval" in misspelt.stderr
    assert "waits on event 'cli.approval'" in misspelt.stderr  # what it does wait on

    wrong_type = run(db, "send", "r1", "cli.approval", '{"approved": "maybe"}')
    assert wrong_type.returncode == 1 and "does not fit" in wrong_type.stderr
    assert "maybe" not in wrong_type.stderr  # the payload's type is named, not its value

    good = run(db, "send", "r1", "cli.approval", '{"approved": true}')
    assert good.returncode == 0 and "accepted by process" in good.stdout, good.stderr


def test_send_without_wait_and_without_a_runtime_is_queued(db: Path) -> None:
    App(db).stop()
    queued = run(db, "send", "r1", "cli.approval", '{"approved": true}')
    assert queued.returncode == 0 and "queued" in queued.stdout, queued.stderr


def test_ctrl_c_of_the_agent_example_is_quiet(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--db", str(tmp_path / "agent.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "waiting for approval" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert "stopped; the agent is stored" in out
    assert "never retrieved" not in err and "Traceback" not in err, err


def interruptible() -> None:
    """In the child: Ctrl-C is KeyboardInterrupt even when the tests run where SIGINT is
    ignored (a background job), which the child would otherwise inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
