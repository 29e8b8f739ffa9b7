"""One owner per database file: an exclusive ``flock`` on the database file itself.

The lock belongs to the file, not to the name that reached it: it is taken on the
process's one descriptor of the file (:mod:`actorflow.store.files`), so a runtime
that opens a symlink or a hard link to an owned file finds it taken. ``flock`` locks
and SQLite's POSIX (``fcntl``) locks on the same file do not interact on Linux, the
BSDs and macOS; on network file systems that emulate ``flock`` with POSIX locks they
would, but SQLite's WAL mode does not work there anyway. The operating system drops
the lock when its process dies, however it dies (a zombie holds no files), so a dead
owner is taken over safely without guessing from timestamps.

Who holds the lock is read from ``/proc/locks`` (Linux), which names the process
holding each ``flock`` by device and inode, without touching the lock: taking it,
even briefly, could make a starting runtime fail. The owner also writes its process
ID into a sidecar ``<real path>.lock``, for systems without ``/proc/locks``, and
holds an exclusive ``flock`` on it too, so that a runtime of an earlier actorflow
(which locked only the sidecar) is kept out as well. The sidecar is opened without
following a symlink and must be a regular file with one link, else
:class:`StoreError`: writing the process ID can never truncate or write another file.
It is created with mode 0600, whatever the umask.

What the lock cannot stop: ``flock`` needs no write access, so anyone who can open
the database file, even read only, can lock it and keep the runtime from starting.
New files are private (0600) for this reason. An owner always takes an exclusive
lock, so a refusal because of a shared one says so (:class:`StoreError`, not
:class:`DatabaseLocked`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
from pathlib import Path

from actorflow.errors import DatabaseLocked, StoreError
from actorflow.store.files import DatabaseFile, FileKey, hold, let_go

_guard = threading.Lock()
_owned: dict[FileKey, int] = {}
"""Files owned by a runtime of this process, to their sidecar's descriptor. Runtimes
of one process share the file's descriptor, so ``flock`` alone would let a second
one in."""


def sidecar_path(database: Path) -> Path:
    """Where the owner of ``database`` records its process ID: beside the real file."""
    real = Path(os.path.realpath(database))
    return real.with_name(real.name + ".lock")


class OwnerLock:
    """The right to run workflows on one database file."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self._file: DatabaseFile | None = None
        self._sidecar: int | None = None
        self._held_here: DatabaseFile | None = None

    @property
    def path(self) -> Path:
        """The sidecar lock file."""
        return sidecar_path(self.database)

    def acquire(self, file: DatabaseFile | None = None) -> None:
        """Take the lock on ``file`` (held open by the caller until after
        :meth:`release`; by default the database, held here, created if missing) or
        raise :class:`DatabaseLocked` naming the owner. Raises :class:`StoreError` if
        the sidecar is not a regular file, or if the file is locked by something that
        is not an owner."""
        if file is None:
            self._held_here = file = hold(self.database, create=True)
        try:
            self._lock(file)
        except BaseException:
            self._let_go_here()
            raise

    def _lock(self, file: DatabaseFile) -> None:
        with _guard:
            if file.key in _owned:
                raise DatabaseLocked(str(self.database), os.getpid())
            try:
                fcntl.flock(file.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _refusal(self.database, [file.key]) from None
            try:
                self._sidecar = self._claim_sidecar()
            except BaseException:
                fcntl.flock(file.fd, fcntl.LOCK_UN)
                raise
            self._file = file
            _owned[file.key] = self._sidecar

    def _claim_sidecar(self) -> int:
        fd = _open_sidecar(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _refusal(self.database, [_key_of(self.path)]) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def release(self) -> None:
        """Give the lock up (idempotent). The sidecar stays: unlinking it would race."""
        with _guard:
            file, self._file = self._file, None
            sidecar, self._sidecar = self._sidecar, None
            if sidecar is not None:  # before the unlock: the next owner writes it
                os.ftruncate(sidecar, 0)
                os.close(sidecar)
            if file is not None:
                fcntl.flock(file.fd, fcntl.LOCK_UN)
                _owned.pop(file.key, None)
        self._let_go_here()

    def _let_go_here(self) -> None:
        held, self._held_here = self._held_here, None
        if held is not None:
            let_go(held)


def owner_pid(database: Path) -> int | None:
    """The process ID of the runtime that owns ``database`` now, if one is alive.

    Read without touching the lock: the process holding an exclusive ``flock`` on the
    file (or its sidecar) by ``/proc/locks``; where that is missing, the recorded
    owner. A dead process, zombies included, is never reported.
    """
    try:
        info = os.stat(database)
    except OSError:
        return None
    keys = [(info.st_dev, info.st_ino)]
    sidecar = _key_of(sidecar_path(database))
    if sidecar is not None:
        keys.append(sidecar)
    holders = _flock_holders(keys)
    if holders is None:
        pid = _recorded_pid(sidecar_path(database))
    else:
        pid = next((pid for pid, exclusive in holders if exclusive), None)
    return pid if pid is not None and _alive(pid) else None


def _refusal(database: Path, keys: list[FileKey | None]) -> StoreError:
    """The error for a lock found taken: who holds it, as well as can be told."""
    holders = _flock_holders([key for key in keys if key is not None]) or []
    owner = next((pid for pid, exclusive in holders if exclusive), None)
    if owner is None and holders:
        return StoreError(
            f"{database} is locked by process {holders[0][0]} with a shared lock, which "
            "no actorflow runtime takes: a program that can read the file is keeping "
            "the runtime out; stop it, and make the file private (chmod 600)"
        )
    if owner is None:  # no /proc/locks, or the holder let go meanwhile
        owner = _recorded_pid(sidecar_path(database))
    return DatabaseLocked(str(database), -1 if owner is None else owner)


def _open_sidecar(path: Path) -> int:
    # O_NOFOLLOW: a planted symlink must not make us truncate its target.
    # O_NONBLOCK: a planted FIFO must not hang the open.
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create the lock file {path}: {exc.strerror}") from None
    else:
        os.fchmod(fd, 0o600)  # the umask may have taken bits away
        return fd
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise _not_a_sidecar(path, exc.strerror) from None
        raise StoreError(f"cannot open the lock file {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise _not_a_sidecar(path, "not a regular file with one link")
    return fd


def _not_a_sidecar(path: Path, why: str | None) -> StoreError:
    return StoreError(
        f"cannot use the lock file {path} ({why}); it must be a regular file, not a "
        "symbolic link or a hard link to another file: remove it and start again"
    )


def _key_of(path: Path) -> FileKey | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISREG(info.st_mode) else None


def _flock_holders(keys: list[FileKey]) -> list[tuple[int, bool]] | None:
    """``(pid, exclusive)`` of each ``flock`` on these files, or ``None`` where the
    system does not say (no ``/proc/locks``)."""
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    # A line: "1: FLOCK  ADVISORY  WRITE 8803 fe:00:2148008 0 EOF" (a waiter has "->"
    # after the number); the device is "major:minor" in hex, the inode in decimal.
    wanted = {f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}" for dev, ino in keys}
    holders = []
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] in wanted:
            pid = int(fields[4])
            if pid > 0:  # 0 or less: a process outside our PID namespace
                holders.append((pid, fields[3] == "WRITE"))
    return holders


def _recorded_pid(sidecar: Path) -> int | None:
    try:
        fd = os.open(sidecar, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:  # not a file one can read at an offset
        return None
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process: not gone, and not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: the signal check is all there is
    state = status.rpartition(")")[2].split()[:1]  # the name, in (), may hold spaces
    return state not in (["Z"], ["X"])


def _forget_in_child() -> None:
    global _guard
    _guard = threading.Lock()
    for sidecar in _owned.values():  # the database's are closed in store.files
        os.close(sidecar)  # else the child would keep a dead parent's lock
    _owned.clear()


os.register_at_fork(after_in_child=_forget_in_child)
