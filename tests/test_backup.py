"""Backups: a consistent, private copy of a database, taken while a runtime writes it,
that opens as an ordinary actorflow database."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import actorflow as af
from actorflow.store.lock import sidecar_path
from actorflow.store.sqlite import APPLICATION_ID, SCHEMA_VERSION

CHILD = Path(__file__).with_name("backup_child.py")
value = af.Event("backup.value", int)
go = af.Event("backup.go")


@af.workflow(name="backup.flow")  # as in backup_child.py
async def flow(ctx: af.Context[None]) -> int:
    return await ctx.wait_event(value)


@af.workflow(name="backup.gate")
async def gate(ctx: af.Context[None]) -> str:
    await ctx.wait_event(go)
    return "passed"


def acked(acks: Path) -> tuple[set[int], set[int]]:
    """Instances whose start, and whose event, the child saw acknowledged so far."""
    started, sent = set(), set()
    for line in acks.read_text().splitlines():
        what, _, n = line.partition(" ")
        if n.isdigit():  # a line being written may be cut short
            (started if what == "started" else sent).add(int(n))
    return started, sent


@pytest.fixture
def loaded(tmp_path: Path) -> Iterator[tuple[Path, Path, subprocess.Popen[str]]]:
    """A child process owning a database, starting instances and sending events."""
    db, acks = tmp_path / "live.db", tmp_path / "acks.log"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(db), str(acks)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "READY", child.stderr.read()  # type: ignore[union-attr]
    yield db, acks, child
    child.kill()
    child.wait(timeout=20)


async def test_backup_under_load_recovers_everything_acknowledged_before_it(
    loaded: tuple[Path, Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    db, acks, child = loaded
    deadline = time.monotonic() + 30
    while len(acked(acks)[0]) < 300:  # several checkpoints of the child's runtime
        assert child.poll() is None and time.monotonic() < deadline, "the child stalled"
        time.sleep(0.02)
    started, sent = acked(acks)  # read before the backup begins: acknowledged before it
    out = tmp_path / "copy.db"
    af.backup(db, out)
    later = time.monotonic() + 0.2
    while time.monotonic() < later:  # the load goes on after the backup
        assert child.poll() is None
    child.kill()
    child.wait(timeout=20)

    with sqlite3.connect(out) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    async with af.Runtime(out) as rt:
        present = {s.id: s for s in await rt.list()}
        for n in started:
            assert f"b{n}" in present, n
        for n in sent:
            assert await rt.handle(f"b{n}").result(timeout=10) == n
        for n in started - sent:
            if n % 2:
                assert present[f"b{n}"].state == "waiting"


async def test_the_copy_is_a_private_ordinary_actorflow_file(tmp_path: Path) -> None:
    db, out = tmp_path / "app.db", tmp_path / "copy.db"
    old_umask = os.umask(0)  # whatever the umask: private
    try:
        async with af.Runtime(db) as rt:
            await rt.start(gate, id="g")
            size = af.backup(db, out)  # from the owning process itself
            with pytest.raises(af.DatabaseLocked):  # the owner kept its lock
                await af.Runtime(db).open()
            await rt.send("g", go)
    finally:
        os.umask(old_umask)
    assert size == out.stat().st_size > 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert not sidecar_path(out).exists()  # no lock comes with the copy
    assert not Path(f"{out}-wal").exists()
    with sqlite3.connect(out) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    async with af.Runtime(out) as rt:  # as of the backup: still waiting, and resumes
        assert (await rt.handle("g").status()).state == "waiting"
        await rt.send("g", go)
        assert await rt.handle("g").result(timeout=5) == "passed"


async def test_an_existing_out_is_replaced_only_with_force(tmp_path: Path) -> None:
    db, out = tmp_path / "app.db", tmp_path / "copy.db"
    async with af.Runtime(db) as rt:
        await rt.start(gate, id="one")
    out.write_bytes(b"precious")
    with pytest.raises(af.StoreError, match=r"already exists.*--force"):
        af.backup(db, out)
    assert out.read_bytes() == b"precious"
    Path(f"{out}-wal").write_bytes(b"stale log of an older file")
    Path(f"{out}-shm").write_bytes(b"stale")
    af.backup(db, out, force=True)
    assert not Path(f"{out}-wal").exists() and not Path(f"{out}-shm").exists()
    async with af.Runtime(out) as rt:
        assert [s.id for s in await rt.list()] == ["one"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".backup")] == []


async def test_refuses_the_database_itself_and_a_file_in_use(tmp_path: Path) -> None:
    db, other = tmp_path / "app.db", tmp_path / "other.db"
    async with af.Runtime(db) as rt:
        await rt.start(gate, id="one")
    with pytest.raises(af.StoreError, match="the database itself"):
        af.backup(db, db, force=True)
    with pytest.raises(af.StoreError, match="nowhere is not a directory"):
        af.backup(db, tmp_path / "nowhere" / "copy.db")
    async with af.Runtime(other):
        with pytest.raises(af.StoreError, match="in use by a runtime"):
            af.backup(db, other, force=True)
    async with af.Runtime(db) as rt:
        assert [s.id for s in await rt.list()] == ["one"]


def test_refuses_what_is_not_an_actorflow_database(tmp_path: Path) -> None:
    foreign, out = tmp_path / "foreign.db", tmp_path / "copy.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(af.StoreError, match="not an actorflow database"):
        af.backup(foreign, out)
    with pytest.raises(af.StoreError, match="does not exist"):
        af.backup(tmp_path / "missing.db", out)
    assert not out.exists()


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actorflow", "--db", str(db), *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


async def test_cli_backup(tmp_path: Path) -> None:
    db, out = tmp_path / "app.db", tmp_path / "copy.db"
    async with af.Runtime(db) as rt:
        await rt.start(gate, id="one")
        done = cli(db, "backup", str(out))
        assert done.returncode == 0 and f"to {out}" in done.stdout, done.stderr
        done = cli(db, "backup", str(out))
        assert done.returncode == 1 and done.stderr.count("\n") == 1
        assert "already exists" in done.stderr and "Traceback" not in done.stderr
        done = cli(db, "--json", "backup", str(out), "--force")
        assert done.returncode == 0 and '"bytes":' in done.stdout, done.stderr
    async with af.Runtime(out) as rt:
        assert [s.id for s in await rt.list()] == ["one"]


async def test_runtime_backup_method(tmp_path: Path) -> None:
    db, out = tmp_path / "app.db", tmp_path / "copy.db"
    async with af.Runtime(db) as rt:
        await rt.start(gate, id="one")
        assert await rt.backup(out) == out.stat().st_size
        await rt.send("one", go)  # the runtime went on during and after it
        assert await rt.handle("one").result(timeout=5) == "passed"
    async with af.Runtime(out) as rt:
        assert (await rt.handle("one").status()).state == "waiting"
    async with af.Runtime() as rt:
        with pytest.raises(af.StoreError, match="in-memory"):
            await rt.backup(out, force=True)
