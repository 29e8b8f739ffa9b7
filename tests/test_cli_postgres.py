"""The command line on PostgreSQL: ``--db postgresql://...`` against a runtime in another
process (tests/cli_app.py on a fresh database of the test server), as on a file."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CI
from tests.test_cli import App, run, show, wait_state

try:
    import asyncpg
except ImportError:  # in CI a failure (the import error), elsewhere a skip saying why
    if CI:
        raise
    pytest.skip(
        "asyncpg is not installed (pip install 'actorflow[postgres]')", allow_module_level=True
    )

PASSWORD = "s3cret-Cli-Pa55"


def with_password(url: str) -> str:
    """``url`` with :data:`PASSWORD` in it (the test server trusts local connections)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


def inbox(url: str) -> list[tuple[str, str | None]]:
    """The inbox's (status, reason) rows, oldest first."""

    async def read() -> list[tuple[str, str | None]]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT status, reason FROM actorflow.inbox ORDER BY seq")
            return [(r[0], r[1]) for r in rows]
        finally:
            await conn.close()

    return asyncio.run(read())


def start_app(url: str, tmp_path: Path, start: bool = True) -> App:
    return App(url, start, f"--flag={tmp_path / 'q1.flag'}")


@pytest.fixture
def url(pg_url: str) -> str:
    """The test's database, with a password in its URL (which must never be shown)."""
    return with_password(pg_url)


@pytest.fixture
def pg_app(url: str, tmp_path: Path) -> Iterator[App]:
    running = start_app(url, tmp_path)
    yield running
    if running.proc.poll() is None:
        running.stop()


def no_password(*done: subprocess.CompletedProcess[str]) -> None:
    for d in done:
        assert PASSWORD not in d.stdout + d.stderr


def test_list_and_show_read_a_running_runtime(pg_app: App, url: str) -> None:
    listed = run(url, "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split()[:3] == ["ID", "WORKFLOW", "STATE"]
    assert "r1" in listed.stdout and "event cli.approval" in listed.stdout
    as_json = json.loads(run(url, "list", "--json", "--status", "waiting").stdout)
    assert {s["id"] for s in as_json} == {"r1", "r2", "t1", "q1"}
    assert json.loads(run(url, "--json", "list", "--status", "completed").stdout) == []
    assert len(json.loads(run(url, "list", "--json", "--workflow", "cli.review").stdout)) == 2

    r1 = show(url, "r1")
    assert r1["args"] == ["doc-1"]
    assert r1["steps"][0]["name"] == "draft" and r1["steps"][0]["result"] == "draft of doc-1"
    assert r1["status"]["waiting_on"] == [
        {"kind": "event", "name": "cli.approval", "token": None, "deadline": None}
    ]
    human = run(url, "show", "t1")
    assert "waiting on:" in human.stdout and "event cli.go (token t" in human.stdout
    no_password(listed, human)

    # postgres:// too, and the URL from $ACTORFLOW_DB
    short = run(url.replace("postgresql://", "postgres://"), "list", "--json")
    assert short.returncode == 0 and len(json.loads(short.stdout)) == 4
    env = {**os.environ, "ACTORFLOW_DB": url}
    by_env = subprocess.run(
        [sys.executable, "-m", "actorflow", "show", "r1", "--json"],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert by_env.returncode == 0 and json.loads(by_env.stdout)["args"] == ["doc-1"]


def test_send_wait_accepted_and_an_invalid_payload_rejected(pg_app: App, url: str) -> None:
    bad = run(url, "send", "r1", "cli.approval", '{"approved": "maybe"}', "--wait", "--json")
    assert bad.returncode == 1, bad.stderr
    receipt = json.loads(bad.stdout)
    assert receipt["status"] == "rejected" and "approved" in receipt["reason"]
    human = run(url, "send", "r1", "cli.approval", '{"note": 1}', "--wait")
    assert human.returncode == 1 and "rejected: payload for event 'cli.approval'" in human.stderr
    assert show(url, "r1")["status"]["events"] == []

    done = run(url, "send", "r1", "cli.approval", '{"approved": true, "note": "ok"}', "--wait")
    assert done.returncode == 0, done.stderr
    assert "accepted by its runtime" in done.stdout
    r1 = wait_state(url, "r1", "completed")
    assert r1["result"] == "draft of doc-1: approved ok"
    assert r1["status"]["events"][0]["consumed_at"] is not None
    # without --wait: the brief wait still reports the verdict of a running owner
    brief = run(url, "send", "r2", "cli.approval", '{"approved": false}')
    assert brief.returncode == 0 and "accepted" in brief.stdout
    assert [status for status, _ in inbox(url)] == ["rejected", "rejected", "accepted", "accepted"]
    no_password(bad, human, done, brief)


def test_resolve_reject_cancel_notify(pg_app: App, url: str, tmp_path: Path) -> None:
    token = show(url, "t1")["status"]["events"][0]["token"]
    assert run(url, "reject", token, "no thanks", "--wait").returncode == 0
    assert wait_state(url, "t1", "completed")["result"] == "failed: no thanks"
    again = run(url, "resolve", token, "--wait")
    assert again.returncode == 1 and "rejected" in again.stderr

    assert run(url, "cancel", "r2", "--wait").returncode == 0
    wait_state(url, "r2", "cancelled")
    finished = run(url, "send", "r2", "cli.approval", "{}")
    assert finished.returncode == 1 and "has finished (cancelled)" in finished.stderr

    (tmp_path / "q1.flag").write_text("flag up")
    assert run(url, "notify", "files", "--wait").returncode == 0
    assert wait_state(url, "q1", "completed")["result"] == "flag up"


@pytest.mark.parametrize(
    "argv", [["send", "nobody", "cli.go"], ["cancel", "nobody"], ["show", "nobody"]]
)
def test_an_unknown_instance_is_one_line_and_queues_nothing(
    pg_app: App, url: str, argv: list[str]
) -> None:
    done = run(url, *argv)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no workflow instance with id 'nobody' in" in lines[0], lines
    assert "postgresql://postgres:***@" in lines[0]
    assert inbox(url) == []


def test_requests_while_no_runtime_runs_apply_at_the_next_start(url: str, tmp_path: Path) -> None:
    start_app(url, tmp_path).stop()
    queued = run(url, "send", "r1", "cli.approval", '{"approved": true}')
    assert queued.returncode == 0 and "queued" in queued.stdout, queued.stderr
    pending = run(url, "send", "r2", "cli.approval", '{"approved": "bad"}', "--wait")
    assert pending.returncode == 3 and "no runtime is running" in pending.stderr
    assert show(url, "r1")["status"]["state"] == "waiting"
    restarted = start_app(url, tmp_path, start=False)
    try:
        assert wait_state(url, "r1", "completed")["result"] == "draft of doc-1: approved"
        assert show(url, "r2")["status"]["state"] == "waiting"  # the bad one was rejected
    finally:
        restarted.stop()
    assert [status for status, _ in inbox(url)] == ["accepted", "rejected"]
    no_password(queued, pending)


def test_purge_with_and_without_a_runtime(url: str, tmp_path: Path) -> None:
    app = start_app(url, tmp_path)
    try:
        assert run(url, "cancel", "r1", "--wait").returncode == 0
        wait_state(url, "r1", "cancelled")
        owned = run(url, "purge", "--older-than", "0s", "--wait")
        assert owned.returncode == 0 and "accepted by its runtime" in owned.stdout, owned.stderr
    finally:
        app.stop()
    assert run(url, "show", "r1").returncode == 1  # purged by the runtime
    app = start_app(url, tmp_path, start=False)
    try:
        assert run(url, "cancel", "r2", "--wait").returncode == 0
        wait_state(url, "r2", "cancelled")
    finally:
        app.stop()
    unowned = run(url, "purge", "--older-than", "0s", "--json")  # applied here, no runtime
    assert unowned.returncode == 0, unowned.stderr
    assert json.loads(unowned.stdout)["seq"] == 0
    assert {s["id"] for s in json.loads(run(url, "list", "--json").stdout)} == {"t1", "q1"}


def test_the_password_is_never_shown(url: str, pg_server: object, tmp_path: Path) -> None:
    fresh = run(url, "list")  # no runtime ever ran here: no actorflow schema
    assert fresh.returncode == 1 and "holds no actorflow schema" in fresh.stderr
    assert "postgresql://postgres:***@" in fresh.stderr
    start_app(url, tmp_path).stop()
    port = url.split("@127.0.0.1:")[1].split("/")[0]
    outputs = [
        fresh,
        run(url, "list", "-vv"),
        run(url, "show", "r1", "-vv"),
        run(url, "send", "r1", "cli.approval", '{"approved": true}', "-vv"),
        run(url, "send", "r1", "cli.approval", '{"approved": true}', "--wait", "--timeout", "0"),
        run(url, "backup", str(tmp_path / "copy.db")),
        run(url, "demo"),
        run(url.replace(f":{port}/", ":1/"), "list"),  # nothing listens on port 1
        run(url.rsplit("/", 1)[0] + "/no_such_database", "show", "r1"),
        run(f"postgresql://postgres:{PASSWORD}@127.0.0.1:notaport/db", "list"),
    ]
    assert [d.returncode for d in outputs] == [1, 0, 0, 0, 3, 1, 1, 1, 1, 1]
    assert "pg_dump" in outputs[5].stderr
    for done in outputs:
        assert PASSWORD not in done.stdout + done.stderr, done
    for done in outputs[5:]:
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("actorflow: error: "), done.stderr
        assert "***" in lines[0], lines[0]
