"""The command line against a runtime in another process: real file, real processes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from actorflow import cli
from actorflow.inbox import SendRequest, submit

HERE = Path(__file__).parent


class App:
    """The app process of tests/cli_app.py, owning the database while it runs."""

    def __init__(self, db: Path | str, start: bool = True, *extra: str) -> None:
        self.db = db
        argv = [sys.executable, str(HERE / "cli_app.py"), str(db)] + ["--start"] * start
        argv += extra
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "READY", line + self.proc.stderr.read()  # type: ignore[union-attr]

    def stop(self) -> None:
        """Close stdin: the app closes its runtime cleanly and exits."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=20) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=20)


@pytest.fixture
def app(db: Path) -> Iterator[App]:
    running = App(db)
    yield running
    if running.proc.poll() is None:
        running.stop()


def run(db: Path | str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``actorflow --db DB ARGS...`` as a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "actorflow", "--db", str(db), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def show(db: Path | str, instance: str) -> dict[str, Any]:
    done = run(db, "show", instance, "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def wait_state(db: Path | str, instance: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        found = show(db, instance)
        if found["status"]["state"] == state or time.monotonic() > deadline:
            assert found["status"]["state"] == state, found
            return found
        time.sleep(0.05)


def one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("actorflow: error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_list_and_show_read_a_running_runtime(app: App, db: Path) -> None:
    listed = run(db, "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == [
        "ID",
        "WORKFLOW",
        "STATE",
        "WAITING",
        "ON",
        "UPDATED",
    ]
    assert "r1" in listed.stdout and "event cli.approval" in listed.stdout

    as_json = json.loads(run(db, "list", "--json", "--status", "waiting").stdout)
    assert {s["id"] for s in as_json} == {"r1", "r2", "t1", "q1"}
    assert json.loads(run(db, "--json", "list", "--status", "completed").stdout) == []

    r1 = show(db, "r1")
    assert r1["args"] == ["doc-1"]
    assert r1["steps"][0]["name"] == "draft" and r1["steps"][0]["result"] == "draft of doc-1"
    assert r1["status"]["waiting_on"] == [
        {"kind": "event", "name": "cli.approval", "token": None, "deadline": None}
    ]
    human = run(db, "show", "t1")
    assert "waiting on:" in human.stdout and "event cli.go (token t" in human.stdout


def test_send_wait_is_accepted_and_the_instance_resumes(app: App, db: Path) -> None:
    done = run(db, "send", "r1", "cli.approval", '{"approved": true, "note": "ok"}', "--wait")
    assert done.returncode == 0, done.stderr
    assert "accepted by process" in done.stdout
    r1 = wait_state(db, "r1", "completed")
    assert r1["result"] == "draft of doc-1: approved ok"
    event = r1["status"]["events"][0]
    assert event["name"] == "cli.approval" and event["consumed_at"] is not None


def test_send_wait_with_invalid_payload_is_rejected_and_changes_nothing(app: App, db: Path) -> None:
    done = run(db, "send", "r1", "cli.approval", '{"approved": "maybe"}', "--wait", "--json")
    assert done.returncode == 1
    receipt = json.loads(done.stdout)
    assert receipt["status"] == "rejected" and "approved" in receipt["reason"]
    human = run(db, "send", "r1", "cli.approval", '{"note": 1}', "--wait")
    assert human.returncode == 1 and "rejected: payload for event 'cli.approval'" in human.stderr
    r1 = show(db, "r1")
    assert r1["status"]["state"] == "waiting" and r1["status"]["events"] == []
    # ... and the instance still takes a good one
    assert run(db, "send", "r1", "cli.approval", '{"approved": false}', "--wait").returncode == 0
    assert wait_state(db, "r1", "completed")["result"] == "draft of doc-1: rejected"


def test_unknown_event_name_is_rejected_by_the_runtime(app: App, db: Path) -> None:
    done = run(db, "send", "r1", "no.such.event", "--wait")
    assert done.returncode == 1 and "no.such.event" in done.stderr
    assert show(db, "r1")["status"]["state"] == "waiting"


def test_resolve_reject_cancel_notify(app: App, db: Path) -> None:
    token = show(db, "t1")["status"]["events"][0]["token"]
    assert run(db, "reject", token, "no thanks", "--wait").returncode == 0
    assert wait_state(db, "t1", "completed")["result"] == "failed: no thanks"
    again = run(db, "resolve", token, "--wait")
    assert again.returncode == 1 and "rejected" in again.stderr

    assert run(db, "cancel", "r2", "--wait").returncode == 0
    wait_state(db, "r2", "cancelled")

    db.with_suffix(".flag").write_text("flag up")
    assert run(db, "notify", "files", "--wait").returncode == 0
    assert wait_state(db, "q1", "completed")["result"] == "flag up"


def test_payload_from_stdin_and_file(app: App, db: Path, tmp_path: Path) -> None:
    assert (
        run(db, "send", "r1", "cli.approval", "-", "--wait", stdin='{"approved": true}').returncode
        == 0
    )
    payload = tmp_path / "decision.json"
    payload.write_text('{"approved": true, "note": "from a file"}')
    assert run(db, "send", "r2", "cli.approval", f"@{payload}", "--wait").returncode == 0
    assert wait_state(db, "r2", "completed")["result"] == "draft of doc-2: approved from a file"


def test_sends_while_no_runtime_runs_are_applied_at_the_next_start(db: Path) -> None:
    App(db).stop()
    queued = run(db, "send", "r1", "cli.approval", '{"approved": true}')
    assert queued.returncode == 0 and "queued" in queued.stdout
    pending = run(db, "send", "r2", "cli.approval", '{"approved": "bad"}', "--wait")
    assert pending.returncode == 3 and "no runtime is running" in pending.stderr
    assert show(db, "r1")["status"]["state"] == "waiting"
    restarted = App(db, start=False)
    try:
        assert wait_state(db, "r1", "completed")["result"] == "draft of doc-1: approved"
        assert show(db, "r2")["status"]["state"] == "waiting"  # the bad one was rejected
    finally:
        restarted.stop()
    with sqlite3.connect(db) as conn:
        verdicts = conn.execute("SELECT status FROM inbox ORDER BY seq").fetchall()
    assert verdicts == [("accepted",), ("rejected",)]


def test_a_request_is_applied_once_across_a_crash(db: Path) -> None:
    app = App(db)
    app.kill()
    seq = submit(db, SendRequest("r1", "cli.approval", '{"approved": true}'))
    for _ in range(2):  # applied at the first restart, not again at the second
        restarted = App(db, start=False)
        wait_state(db, "r1", "completed")
        restarted.stop()
    r1 = show(db, "r1")
    assert len(r1["status"]["events"]) == 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM inbox WHERE seq = ?", (seq,)).fetchone() == (
            "accepted",
        )


def test_second_owner_is_refused_and_a_dead_owner_is_taken_over(db: Path) -> None:
    app = App(db)
    probe = subprocess.run(
        [sys.executable, str(HERE / "cli_app.py"), str(db)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.returncode != 0
    assert "DatabaseLocked" in probe.stderr and f"owned by process {app.proc.pid}" in probe.stderr
    app.kill()  # the OS drops the dead owner's lock: the next one takes over
    App(db, start=False).stop()


async def test_database_locked_in_process(db: Path) -> None:
    async with af.Runtime(db):
        with pytest.raises(af.DatabaseLocked) as caught:
            async with af.Runtime(db):
                pass
        assert caught.value.pid == os.getpid()
    async with af.Runtime(db):  # released on close
        pass


# -- errors: one line, non-zero exit, nothing queued (run in-process for speed) ---------
def inbox_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM inbox").fetchone()[0])


@pytest.fixture
def idle_db(db: Path) -> Path:
    App(db).stop()
    return db


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["send", "nobody", "cli.go"], "no workflow instance with id 'nobody'"),
        (["send", "r1", "cli.approval", "{not json"], "not valid JSON"),
        (["send", "r1", "cli.approval", "[" * 10_000 + "]" * 10_000], "nested deeper"),
        (["send", "r1", "cli.approval", "@/no/such/file.json"], "cannot read payload file"),
        (["send", "r1", "cli.approval", "{}", "--error", "x"], "not both"),
        (["send", "r1", "", "{}"], "an event name must be"),
        (["send", "r1", "e" * 300], "an event name must be"),
        (["cancel", "x" * 256], "an instance ID must be"),
        (["show", "nobody"], "no workflow instance with id 'nobody'"),
    ],
)
def test_bad_input_is_one_line_and_queues_nothing(
    idle_db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    before = inbox_rows(idle_db)
    with pytest.raises(SystemExit) as exited:
        cli.main(["--db", str(idle_db), *argv])
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert inbox_rows(idle_db) == before


def test_non_utf8_payload_file(
    idle_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"note": "\xff\xfe"}')
    with pytest.raises(SystemExit):
        cli.main(["--db", str(idle_db), "send", "r1", "cli.approval", f"@{bad}"])
    assert "not UTF-8" in capsys.readouterr().err


def test_finished_instance_is_refused(idle_db: Path) -> None:
    app = App(idle_db, start=False)
    try:
        assert run(idle_db, "cancel", "r1", "--wait").returncode == 0
        wait_state(idle_db, "r1", "cancelled")
    finally:
        app.stop()
    one_line_error(run(idle_db, "send", "r1", "cli.approval", "{}"), "has finished (cancelled)")


def test_missing_and_foreign_databases(tmp_path: Path) -> None:
    one_line_error(run(tmp_path / "nope.db", "list"), "does not exist")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    one_line_error(run(foreign, "list"), "not an actorflow database")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    one_line_error(run(text, "send", "a", "b"), "not an SQLite database")


def test_db_from_environment_and_option_after_command(idle_db: Path) -> None:
    env = {**os.environ, "ACTORFLOW_DB": str(idle_db)}
    by_env = subprocess.run(
        [sys.executable, "-m", "actorflow", "list", "--json"],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert by_env.returncode == 0 and len(json.loads(by_env.stdout)) == 4
    after = subprocess.run(
        [sys.executable, "-m", "actorflow", "list", "--db", str(idle_db)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert after.returncode == 0 and "cli.review" in after.stdout


def test_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "actorflow", "--version"], capture_output=True, text=True, timeout=30
    )
    assert done.stdout.strip() == f"actorflow {af.__version__}"
