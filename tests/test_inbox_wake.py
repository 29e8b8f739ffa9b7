"""The inbox watcher is woken by ``inbox.submit`` (a datagram on ``<db>.wake``) instead
of polling: a request applies at once with the fallback poll pushed out of reach, an
idle runtime does not read the inbox over and over, and the socket path is made and
removed safely (a dead owner's socket replaced, anything else planted there left
alone)."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from actorflow import runtime as runtime_module
from actorflow.inbox import Receipt, SendRequest, submit, wait_for_receipt
from actorflow.store.sqlite import SQLiteStore
from actorflow.store.wake import ring, wake_path

ping = af.Event("wake.ping", int)


@af.workflow(name="wake.waiter")
async def waiter(ctx: af.Context[None]) -> int:
    return await ctx.wait_event(ping)


@pytest.fixture
def no_fallback_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Push the watcher's fallback poll out of reach: only a wake-up applies a request."""
    monkeypatch.setattr(runtime_module, "INBOX_FALLBACK_MIN", 3600.0)
    monkeypatch.setattr(runtime_module, "INBOX_FALLBACK_MAX", 3600.0)


def listened_to(path: Path) -> bool:
    """Whether a socket is bound at ``path`` (a dead owner's refuses connections)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            return False
    return True


async def submitted(db: Path, instance: str, value: int) -> Receipt:
    """Submit a send from a thread, as another process would, and wait (generously) for
    its verdict: a functional bound, far above a wake-up, far below the fallback."""
    seq = await asyncio.to_thread(submit, db, SendRequest(instance, ping.name, str(value)))
    return await asyncio.to_thread(wait_for_receipt, db, seq, 2.0)


@pytest.mark.usefixtures("no_fallback_poll")
async def test_a_submitted_request_applies_without_waiting_for_the_poll(db: Path) -> None:
    async with af.Runtime(db) as rt:
        h = await rt.start(waiter, id="w")
        await asyncio.sleep(0.05)  # the watcher is asleep on its (unreachable) poll
        assert (await submitted(db, "w", 7)).status == "accepted"
        assert await h.result(timeout=5) == 7


@pytest.mark.usefixtures("no_fallback_poll")
async def test_the_wake_socket_is_private_and_removed_at_close(db: Path) -> None:
    async with af.Runtime(db):
        info = os.lstat(wake_path(db))
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600
    assert not os.path.lexists(wake_path(db))


@pytest.mark.usefixtures("no_fallback_poll")
async def test_a_dead_owners_socket_is_replaced(db: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(wake_path(db)))
    stale.close()  # its file stays, as after a kill -9
    assert not listened_to(wake_path(db))
    async with af.Runtime(db) as rt:
        assert listened_to(wake_path(db))
        h = await rt.start(waiter, id="w")
        assert (await submitted(db, "w", 3)).status == "accepted"
        assert await h.result(timeout=5) == 3


@pytest.mark.parametrize("planted", ["file", "symlink", "directory"])
async def test_anything_else_at_the_socket_path_is_left_alone(
    db: Path, tmp_path: Path, planted: str
) -> None:
    path = wake_path(db)
    target = tmp_path / "victim"
    target.write_text("keep me")
    if planted == "file":
        path.write_text("keep me too")
    elif planted == "symlink":
        path.symlink_to(target)
    else:
        path.mkdir()
    async with af.Runtime(db) as rt:  # it still runs, polling instead
        h = await rt.start(waiter, id="w")
        assert (await submitted(db, "w", 5)).status == "accepted"
        assert await h.result(timeout=5) == 5
    assert target.read_text() == "keep me" and stat.S_IMODE(target.stat().st_mode) != 0o600
    if planted == "file":
        assert path.read_text() == "keep me too"
    elif planted == "symlink":
        assert path.is_symlink() and os.readlink(path) == str(target)
    else:
        assert path.is_dir()


async def test_an_idle_runtime_does_not_read_the_inbox_over_and_over(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    original = SQLiteStore.inbox

    async def counted(self: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(SQLiteStore, "inbox", counted)
    async with af.Runtime(db) as rt:
        await rt.start(waiter, id="w")
        reads = 0
        await asyncio.sleep(0.5)
        assert reads <= 2, f"{reads} inbox reads in 0.5 s of doing nothing"


@pytest.mark.usefixtures("no_fallback_poll")
async def test_forged_wake_ups_only_cause_a_re_read(db: Path) -> None:
    async with af.Runtime(db) as rt:
        h = await rt.start(waiter, id="w")
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.setblocking(False)
        with sender:
            for _ in range(200):  # junk of any size; a full queue only drops some
                try:
                    sender.sendto(b"\xff" * 512, str(wake_path(db)))
                except BlockingIOError:
                    break
        await asyncio.sleep(0.05)
        assert (await rt.handle("w").status()).state == "waiting"
        assert (await submitted(db, "w", 1)).status == "accepted"
        assert await h.result(timeout=5) == 1


def test_ringing_without_an_owner_is_ignored(db: Path, tmp_path: Path) -> None:
    ring(db)  # nothing there
    wake_path(db).write_text("not a socket")
    ring(db)  # not sent, and nothing written
    assert wake_path(db).read_text() == "not a socket"
    bystander = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    bystander.bind(str(tmp_path / "bystander.sock"))
    bystander.setblocking(False)
    wake_path(db).unlink()
    wake_path(db).symlink_to(tmp_path / "bystander.sock")
    ring(db)  # a symlink is not followed
    with bystander, pytest.raises(BlockingIOError):
        bystander.recv(1)


def test_a_long_path_is_reached_through_its_directory(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    db = deep / "app.db"
    assert len(os.fsencode(wake_path(db))) > 108  # too long for a socket address

    async def scenario() -> None:
        async with af.Runtime(db) as rt:
            assert stat.S_ISSOCK(os.lstat(wake_path(db)).st_mode)
            h = await rt.start(waiter, id="w")
            assert (await submitted(db, "w", 9)).status == "accepted"
            assert await h.result(timeout=5) == 9
        assert not os.path.lexists(wake_path(db))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtime_module, "INBOX_FALLBACK_MIN", 3600.0)
        patch.setattr(runtime_module, "INBOX_FALLBACK_MAX", 3600.0)
        asyncio.run(scenario())


@pytest.mark.usefixtures("no_fallback_poll")
async def test_the_socket_is_private_where_chmod_cannot_skip_symlinks(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chmod = os.chmod

    def old_libc_chmod(path: Any, mode: int, *, follow_symlinks: bool = True) -> None:
        if not follow_symlinks:  # as Python does where fchmodat cannot skip symlinks
            raise NotImplementedError("chmod: follow_symlinks unavailable on this platform")
        chmod(path, mode)

    monkeypatch.setattr(os, "chmod", old_libc_chmod)
    async with af.Runtime(db) as rt:
        assert stat.S_IMODE(os.lstat(wake_path(db)).st_mode) == 0o600
        h = await rt.start(waiter, id="w")
        assert (await submitted(db, "w", 2)).status == "accepted"
        assert await h.result(timeout=5) == 2
