"""The database file as the operating system sees it: created private, opened once.

SQLite guards the file with POSIX (``fcntl``) locks, which belong to the process and
are all dropped when the process closes *any* descriptor of that file ("How To
Corrupt An SQLite Database File", section 2.2). Code beside SQLite must therefore
never open and close the database file while a connection of the process may hold
such a lock. So each database file, known by ``(st_dev, st_ino)`` whatever name
reached it, gets one descriptor per process: taken by :func:`hold` and given back by
:func:`let_go`, closed only when its last holder lets go. The owner lock and every
connection actorflow opens hold it for as long as they are open, so the descriptor is
never closed under a connection of ours.

A new database file is created here, empty and private (mode 0600 whatever the
umask), before SQLite opens it; SQLite gives ``-wal`` and ``-shm`` the same mode. An
existing file's mode is left as it is.

A forked child closes its copies of these descriptors: an ``flock`` belongs to the
open file, which the child would otherwise share with its parent (keeping a dead
parent's lock alive, or taking a lock the parent already holds).
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from actorflow.errors import StoreError

FileKey = tuple[int, int]
"""``(st_dev, st_ino)``: one file, whichever path (symlink, hard link) reached it."""


@dataclass(frozen=True)
class DatabaseFile:
    """A held descriptor of one database file; give it back with :func:`let_go`."""

    path: Path
    fd: int
    key: FileKey
    created: bool = field(compare=False)
    """This call created the (empty) file."""


@dataclass
class _Open:
    fd: int
    holders: int


_guard = threading.Lock()
_open: dict[FileKey, _Open] = {}
_retired: dict[int, _Open] = {}
"""Held descriptors of files deleted since, by descriptor: closed when let go."""


def hold(path: Path, *, create: bool) -> DatabaseFile:
    """The process's descriptor of the file at ``path`` (a symlink is followed: a link
    to a database is that database). With ``create``, a missing file is created
    empty with mode 0600. Raises :class:`StoreError` for a directory, anything else
    that is not a regular file, or a symlink to nothing; :class:`FileNotFoundError`
    for a missing file without ``create``."""
    with _guard:
        known = _known(path)
        if known is not None:
            key, entry = known
            entry.holders += 1
            return DatabaseFile(path, entry.fd, key, created=False)
        fd, created = _open_or_create(path, create)
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino)
        if not stat.S_ISREG(info.st_mode) or _current(key) is not None:
            # Not a regular file (SQLite holds no lock on it), or the path was
            # swapped for a file we already hold between the stat and the open.
            os.close(fd)
            _refuse_kind(path, info.st_mode)
            raise StoreError(f"{path} changed while it was being opened; try again")
        _open[key] = _Open(fd, holders=1)
        return DatabaseFile(path, fd, key, created)


def let_go(file: DatabaseFile) -> None:
    """Give back what :func:`hold` returned (once); the last holder closes it."""
    with _guard:
        entry = _open.get(file.key)
        if entry is None or entry.fd != file.fd:
            entry = _retired.get(file.fd)
        if entry is None:
            return  # forgotten by a fork, or already given back
        entry.holders -= 1
        if entry.holders == 0:
            if _open.get(file.key) is entry:
                del _open[file.key]
            _retired.pop(entry.fd, None)
            os.close(entry.fd)


def _known(path: Path) -> tuple[FileKey, _Open] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot open {path}: {exc.strerror}") from None
    _refuse_kind(path, info.st_mode)
    key = (info.st_dev, info.st_ino)
    entry = _current(key)
    return None if entry is None else (key, entry)


def _current(key: FileKey) -> _Open | None:
    """What we hold of the file ``key`` names now (not of a deleted one)."""
    entry = _open.get(key)
    if entry is not None and os.fstat(entry.fd).st_nlink == 0:
        # We hold a deleted file whose inode number came back: not this one.
        _retired[entry.fd] = _open.pop(key)
        return None
    return entry


def _refuse_kind(path: Path, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise StoreError(f"{path} is a directory, not a database file")
    if not stat.S_ISREG(mode):
        raise StoreError(f"{path} is not a regular file; pass the path of a database file")


def _open_or_create(path: Path, create: bool) -> tuple[int, bool]:
    for _ in range(3):  # another process may create or remove it between our calls
        if create:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                pass
            except OSError as exc:  # no such directory, no permission, read-only
                raise StoreError(f"cannot create {path}: {exc.strerror}") from None
            else:
                os.fchmod(fd, 0o600)  # the umask may have taken bits away
                return fd, True
        try:
            # O_NONBLOCK: a FIFO planted at the path must not hang the open.
            return os.open(path, os.O_RDONLY | os.O_NONBLOCK), False
        except FileNotFoundError:
            if not create:
                raise
            if os.path.islink(path):
                raise StoreError(
                    f"{path} is a symbolic link to a missing file; actorflow does not "
                    "create a database through a link: create the target or fix the link"
                ) from None
        except OSError as exc:
            raise StoreError(f"cannot open {path}: {exc.strerror}") from None
    raise StoreError(f"{path} keeps appearing and disappearing; try again")


def _forget_in_child() -> None:
    global _guard
    _guard = threading.Lock()  # another thread may have held it at the fork
    for entry in [*_open.values(), *_retired.values()]:
        os.close(entry.fd)  # the parent keeps its own copy, and its locks
    _open.clear()
    _retired.clear()


os.register_at_fork(after_in_child=_forget_in_child)
