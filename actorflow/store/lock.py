"""One owner per database file: an OS lock on a sidecar ``<db>.lock`` file.

The operating system drops the lock when its process dies, however it dies, so a
stale owner is taken over safely without guessing from timestamps; the file holds
the owner's process ID so that the refusal can name it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from actorflow.errors import DatabaseLocked


class OwnerLock:
    """The right to run workflows on one database file."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DatabaseLocked` naming the live owner."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise DatabaseLocked(
                str(self.database), int(owner) if owner.isdigit() else -1
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (idempotent). The file stays: unlinking it would race."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)
            os.close(fd)


def owner_pid(database: Path) -> int | None:
    """The process ID of the runtime that owns ``database`` now, if one seems to.

    A hint for the CLI, read without touching the lock (taking it, even briefly, could
    make a starting runtime fail): the recorded owner, if that process is alive.
    """
    try:
        text = (database.with_name(database.name + ".lock")).read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # alive, owned by another user
    return pid
