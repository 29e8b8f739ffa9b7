"""Waking the owner when another process writes the inbox: a Unix datagram socket.

The owning runtime binds a datagram socket at ``<real path>.wake``, beside the
database's real file (as ``<real path>.lock``), and reads it on its own event loop
(``loop.add_reader``: no thread, no task per wake-up). :func:`ring`, called by
:func:`actorflow.inbox.submit` once its INSERT has committed, sends it one byte; the
runtime's inbox watcher then reads the inbox table at once instead of at its next
poll, which is kept only as a slow fallback (a lost datagram, a writer that sends
none). The datagram carries nothing: the runtime re-reads the table, so a forged one
can only cause a cheap re-read, and at most :data:`DRAIN` of them are read per loop
turn.

The socket is created safely: ``bind`` never follows a symlink nor replaces anything;
an existing path is replaced only if it is a socket (a dead owner's: the live one
holds the owner lock, which the caller holds now), and anything else there (a file, a
symlink, a directory) is left alone and the runtime polls instead (:class:`InboxBell`
without a socket). Its mode is 0600 whatever the umask, and it is removed at close if
it is still the one bound here. A path longer than a socket address allows is reached
through ``/proc/self/fd`` where there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

from actorflow.log import logger as _log

DRAIN = 64
"""Datagrams read per wake-up at most; a flood cannot hold the loop."""
_MAX_ADDRESS = 100  # bytes of sun_path that every system takes (Linux: 107)


def wake_path(database: str | os.PathLike[str]) -> Path:
    """Where the owner of ``database`` listens for wake-ups: beside the real file."""
    real = Path(os.path.realpath(database))
    return real.with_name(real.name + ".wake")


def ring(database: str | os.PathLike[str]) -> None:
    """Tell the owner of ``database``, if one listens, that the inbox changed.

    Best effort and never blocking: no owner, a full queue or any other error is
    ignored (the owner's fallback poll finds the request). Nothing is sent unless the
    path is a socket, so a symlink planted there is not followed."""
    path = wake_path(database)
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
            _address(path) as address,
        ):
            sock.setblocking(False)
            sock.sendto(b"!", address)
    except OSError:
        pass


class InboxBell:
    """What the inbox watcher sleeps on: rung by a datagram on the wake socket (if one
    could be bound), by :meth:`ring`, or by the end of the wait's timeout."""

    def __init__(self, sock: socket.socket | None, path: Path | None) -> None:
        self._sock = sock
        self._path = path
        self._key = _key(path) if path is not None else None
        self._rung = False
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def listen(cls, database: str | os.PathLike[str] | None) -> InboxBell:
        """A bell rung by datagrams to ``wake_path(database)``; without a socket (no
        database, or the path is taken by something that is not a socket, or too
        long) one that only its timeouts and :meth:`ring` end. Call it while holding
        the owner lock of ``database``, from the event loop that will wait on it."""
        if database is None:
            return cls(None, None)
        path = wake_path(database)
        try:
            sock = _bind(path)
        except OSError as exc:
            _log.warning("inbox.wake_unavailable", path=str(path), error=exc.strerror or str(exc))
            return cls(None, None)
        bell = cls(sock, path)
        bell._loop = asyncio.get_running_loop()
        bell._loop.add_reader(sock.fileno(), bell._on_datagram)
        return bell

    @property
    def listening(self) -> bool:
        """Whether other processes can ring it (a wake socket is bound)."""
        return self._sock is not None

    def ring(self) -> None:
        """Wake the waiter now, or make its next wait return at once."""
        self._rung = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        """Forget earlier rings: call before reading what they announced."""
        self._rung = False

    async def wait(self, timeout: float) -> None:
        """Return when rung (since the last :meth:`clear`) or after ``timeout`` seconds."""
        if self._rung:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if self._waiter is waiter:
                self._waiter = None

    def close(self) -> None:
        """Stop listening and remove the socket file if it is still the one bound here
        (idempotent). Call before letting go of the owner lock."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
        sock.close()
        if self._path is not None and self._key is not None and _key(self._path) == self._key:
            with contextlib.suppress(OSError):
                os.unlink(self._path)

    def _on_datagram(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(DRAIN):  # the content does not matter: drop it
            try:
                sock.recv(1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
        self.ring()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _bind(path: Path) -> socket.socket:
    """A non-blocking datagram socket bound at ``path`` with mode 0600; a socket left
    there (by a dead owner) is replaced, anything else refused with ``OSError``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        with _address(path) as address:
            try:
                sock.bind(address)  # creates the path, never through a symlink
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EEXIST):
                    raise
                _remove_stale(path)
                sock.bind(address)
            _make_private(address)
        return sock
    except OSError:
        sock.close()
        raise


def _make_private(address: str) -> None:
    """Mode 0600 for the socket just bound at ``address`` (the umask may have left it
    open to others), never for what a symlink swapped in since points to."""
    try:
        os.chmod(address, 0o600, follow_symlinks=False)
        return
    except NotImplementedError:  # a symlink now, or a libc without it (glibc < 2.32)
        pass
    # Only a socket is changed; a swap in the instant between the two calls could at
    # worst make one of this user's own files private.
    if not stat.S_ISSOCK(os.lstat(address).st_mode):
        raise OSError(f"{address} changed while it was being made private")
    os.chmod(address, 0o600)


def _remove_stale(path: Path) -> None:
    info = os.lstat(path)
    if not stat.S_ISSOCK(info.st_mode):
        raise FileExistsError(
            f"{path} exists and is not a socket; actorflow leaves it alone: remove it"
        )
    os.unlink(path)


def _key(path: Path) -> tuple[int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISSOCK(info.st_mode) else None


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """``path`` as a socket address; a path too long for one is reached through an open
    descriptor of its directory (``/proc/self/fd/N/name``, Linux)."""
    if len(os.fsencode(path)) <= _MAX_ADDRESS:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
