"""File ownership and permissions: the owner lock is the file's, files are private,
the lock file is never followed, and another local user can neither read nor block.

Real processes throughout: an owner in a child process, a zombie owner, and an
attacker running as the user ``nobody`` (through ``runuser``; we run as root).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import actorflow as af
from actorflow.reader import Reader
from actorflow.store.lock import owner_pid

CLI = [sys.executable, "-m", "actorflow"]

OWNER = """
import asyncio, sys
import actorflow as af

async def main() -> None:
    async with af.Runtime(sys.argv[1]):
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""

ZOMBIE = """
import asyncio, os, sys
import actorflow as af

async def own_and_die() -> None:
    await af.Runtime(sys.argv[1]).open()
    os._exit(0)  # dies owning it: no close, no release

child = os.fork()
if child == 0:
    asyncio.run(own_and_die())
os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)  # dead, and left unreaped
print(child, flush=True)
sys.stdin.read()
"""


class Owner:
    """A runtime open on ``db`` in a child process until :meth:`stop`."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", OWNER, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "READY", line + self.proc.stderr.read()  # type: ignore[union-attr]
        self.pid = self.proc.pid

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=20) == 0


@pytest.fixture
def owner_of(tmp_path: Path) -> Iterator[Owner]:
    owner = Owner(tmp_path / "agent.db")
    yield owner
    if owner.proc.poll() is None:
        owner.stop()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- A: the lock is the file's, not the path's ---------------------------------------
async def test_a_symlink_to_an_owned_file_is_locked(owner_of: Owner, tmp_path: Path) -> None:
    link = tmp_path / "link.db"
    link.symlink_to("agent.db")
    with pytest.raises(af.DatabaseLocked) as caught:
        async with af.Runtime(link):
            pass
    assert caught.value.pid == owner_of.pid
    assert not (tmp_path / "link.db.lock").exists()


async def test_a_hard_link_to_an_owned_file_is_locked(owner_of: Owner, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    link = tmp_path / "other" / "hard.db"
    os.link(tmp_path / "agent.db", link)
    with pytest.raises(af.DatabaseLocked) as caught:
        async with af.Runtime(link):
            pass
    assert caught.value.pid == owner_of.pid
    assert owner_pid(link) == owner_of.pid


async def test_the_real_file_is_locked_when_its_owner_came_through_a_link(
    tmp_path: Path,
) -> None:
    async with af.Runtime(tmp_path / "real.db"):
        pass
    (tmp_path / "link.db").symlink_to("real.db")
    owner = Owner(tmp_path / "link.db")
    try:
        with pytest.raises(af.DatabaseLocked) as caught:
            async with af.Runtime(tmp_path / "real.db"):
                pass
        assert caught.value.pid == owner.pid
        assert owner_pid(tmp_path / "real.db") == owner.pid
    finally:
        owner.stop()
    assert owner_pid(tmp_path / "real.db") is None
    async with af.Runtime(tmp_path / "real.db"):  # the owner let go
        pass


@pytest.mark.parametrize("link", [Path.symlink_to, Path.hardlink_to])
async def test_links_are_locked_in_the_same_process_too(
    db: Path, link: Callable[[Path, Path], None]
) -> None:
    other = db.with_name("other.db")
    async with af.Runtime(db):
        link(other, db)
        with pytest.raises(af.DatabaseLocked) as caught:
            async with af.Runtime(other):
                pass
        assert caught.value.pid == os.getpid() == owner_pid(other)
    async with af.Runtime(other):  # released on close
        pass


def test_a_zombie_owner_is_not_reported_alive(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    helper = subprocess.Popen(
        [sys.executable, "-c", ZOMBIE, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert helper.stdout is not None
        zombie = int(helper.stdout.readline())
        state = Path(f"/proc/{zombie}/stat").read_text().rpartition(")")[2].split()[0]
        assert state == "Z"
        assert (tmp_path / "app.db.lock").read_text() == str(zombie)  # recorded, never released
        assert owner_pid(db) is None
        probe = subprocess.run(
            [*CLI, "--db", str(db), "notify", "t", "--wait", "--timeout", "0.2"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert probe.returncode == 3
        assert "no runtime is running" in probe.stderr
    finally:
        assert helper.stdin is not None
        helper.stdin.close()
        helper.wait(timeout=20)


go = af.Event("security.go")


@af.workflow(name="security.wait")
async def wait_for_go(ctx: af.Context[None]) -> str:
    await ctx.wait_event(go)
    return "ok"


OUTSIDE_READER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT count(*) FROM wal").fetchall()
conn.close()
"""


async def test_a_reader_in_the_owners_process_keeps_sqlites_locks(db: Path) -> None:
    """Closing a descriptor of the file drops every POSIX lock the process holds on
    it, SQLite's too: then the next outside connection to close believes it is the
    last one and deletes the WAL under the running owner, whose later writes no other
    process sees."""
    async with af.Runtime(db) as rt:
        await rt.start(wait_for_go, id="a")
        Reader(db).snapshots()  # in the owner's process
        outside = OUTSIDE_READER
        subprocess.run([sys.executable, "-c", outside, str(db)], check=True, timeout=30)
        assert db.with_name(db.name + "-wal").exists()
        await rt.start(wait_for_go, id="b")
        shown = subprocess.run(
            [*CLI, "--db", str(db), "show", "b"], capture_output=True, text=True, timeout=30
        )
        assert shown.returncode == 0, shown.stderr


# -- B: a planted lock file is never followed ----------------------------------------
@pytest.mark.parametrize("plant", ["symlink", "hard link"])
async def test_a_planted_lock_file_is_refused_and_its_target_untouched(
    tmp_path: Path, plant: str
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "app").mkdir()
    db = tmp_path / "app" / "app.db"
    lock = tmp_path / "app" / "app.db.lock"
    if plant == "symlink":
        lock.symlink_to("../victim.txt")
    else:
        os.link(victim, lock)
    with pytest.raises(af.StoreError, match="lock file"):
        async with af.Runtime(db):
            pass
    assert victim.read_text() == "precious"
    assert not db.exists()  # the empty file it made is gone again


@pytest.mark.parametrize("plant", ["directory", "fifo", "dangling symlink"])
async def test_a_lock_file_that_is_not_a_regular_file_is_refused(
    db: Path, tmp_path: Path, plant: str
) -> None:
    lock = tmp_path / "app.db.lock"
    if plant == "directory":
        lock.mkdir()
    elif plant == "fifo":
        os.mkfifo(lock)
    else:
        lock.symlink_to(tmp_path / "nothing-here")
    with pytest.raises(af.StoreError, match="lock file"):
        async with af.Runtime(db):
            pass
    assert not (tmp_path / "nothing-here").exists()


async def test_a_database_symlink_to_nothing_is_refused_not_created(tmp_path: Path) -> None:
    (tmp_path / "app.db").symlink_to(tmp_path / "elsewhere.db")
    with pytest.raises(af.StoreError, match="symbolic link"):
        async with af.Runtime(tmp_path / "app.db"):
            pass
    assert not (tmp_path / "elsewhere.db").exists()


# -- D: private files ----------------------------------------------------------------
@pytest.fixture(params=[0o022, 0o000])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


async def test_new_files_are_private_whatever_the_umask(db: Path, umask: int) -> None:
    async with af.Runtime(db):
        files = [db, *(db.with_name(db.name + end) for end in ("-wal", "-shm", ".lock"))]
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}


async def test_an_existing_files_mode_is_kept(db: Path, umask: int) -> None:
    async with af.Runtime(db):
        pass
    db.chmod(0o644)
    async with af.Runtime(db):
        assert mode(db) == 0o644
    assert mode(db) == 0o644


async def test_an_empty_existing_file_keeps_its_mode(db: Path, umask: int) -> None:
    db.touch(mode=0o640)
    db.chmod(0o640)
    async with af.Runtime(db):
        pass
    assert mode(db) == 0o640


# -- C: another local user -----------------------------------------------------------
ATTACK = """
import fcntl, json, os, sys

def attempt(what, path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return "refused: " + exc.strerror
    try:
        if what == "read":
            os.read(fd, 16)
        else:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return "done"
    except OSError as exc:
        return "failed: " + exc.strerror
    finally:
        os.close(fd)

print(json.dumps({
    what + " " + os.path.basename(path): attempt(what, path)
    for path in sys.argv[1:] for what in ("read", "flock")
}))
"""

HOLD_SHARED = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_SH)
print(os.getpid(), flush=True)
sys.stdin.read()
"""


def nobody_python() -> list[str]:
    """The command that runs python as the user nobody, or skip saying why not."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run the attacker as the user nobody")
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("needs runuser, to run the attacker as the user nobody")
    for python in (sys.executable, "/usr/bin/python3"):
        argv = [runuser, "-u", "nobody", "--", python]
        if subprocess.run([*argv, "-c", "pass"], capture_output=True).returncode == 0:
            return argv
    pytest.skip("no python the user nobody can run (or no user nobody)")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the user nobody can enter (pytest's own are private to root)."""
    with tempfile.TemporaryDirectory() as name:
        os.chmod(name, 0o755)
        yield Path(name)


async def test_another_user_can_neither_read_nor_lock_the_files(shared_dir: Path) -> None:
    attacker = nobody_python()
    db = shared_dir / "app.db"
    async with af.Runtime(db):
        files = [str(db.with_name(db.name + end)) for end in ("", "-wal", "-shm", ".lock")]
        done = subprocess.run(
            [*attacker, "-c", ATTACK, *files], capture_output=True, text=True, timeout=30
        )
        results = json.loads(done.stdout)
    assert len(results) == 8
    assert all(r == "refused: Permission denied" for r in results.values()), results


async def test_a_shared_lock_by_a_reader_is_told_apart_from_an_owner(shared_dir: Path) -> None:
    attacker = nobody_python()
    db = shared_dir / "app.db"
    async with af.Runtime(db):
        pass
    db.chmod(0o644)  # made readable by hand: what the refusal is about
    holder = subprocess.Popen(
        [*attacker, "-c", HOLD_SHARED, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        pid = int(holder.stdout.readline())
        with pytest.raises(af.StoreError, match="shared lock") as caught:
            async with af.Runtime(db):
                pass
        assert not isinstance(caught.value, af.DatabaseLocked)
        assert f"process {pid} " in str(caught.value)
        assert owner_pid(db) is None
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=20)
    async with af.Runtime(db):
        pass


def test_the_owner_lock_is_exclusive_flock_on_the_database(db: Path) -> None:
    """What outside tools can rely on: the owner holds an exclusive flock on the file."""
    owner = Owner(db)
    try:
        fd = os.open(db, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        finally:
            os.close(fd)  # this process holds no SQLite lock on it
    finally:
        owner.stop()
