"""Backups: a consistent copy of a database while its runtime keeps writing.

Copying the ``.db`` file alone is not safe while a runtime runs: the latest commits
live in its ``-wal`` file until SQLite folds them in. :func:`backup` instead reads
the database in one read transaction through SQLite's online backup API, so the copy
holds exactly the commits made before it began, and is written to a private
temporary file that replaces ``out`` only once complete.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from actorflow.errors import StoreError
from actorflow.store.lock import owner_pid
from actorflow.store.sqlite import connect_outside

SIDE_FILES = ("-wal", "-shm", "-journal")
"""SQLite's files beside a database, which would be applied to a new file of that name."""


def backup(
    path: str | os.PathLike[str], out: str | os.PathLike[str], *, force: bool = False
) -> int:
    """Write a consistent copy of the actorflow database at ``path`` to ``out`` and
    return its size in bytes; a runtime may be writing ``path`` meanwhile (it is not
    paused). The copy is an ordinary actorflow database, private to its user (mode
    0600), holding every commit made before the copy began; no owner comes with it.

    Raises :class:`StoreError` if ``path`` is not an actorflow database, if ``out``
    exists (unless ``force``: then it is replaced, with its stale ``-wal``/``-shm``,
    provided no runtime owns it) or is ``path`` itself. It blocks while copying: from
    async code, call it through ``asyncio.to_thread``.
    """
    out = Path(out)
    source = connect_outside(path)
    try:
        _check_target(Path(path), out, force)
        temporary = out.with_name(f".{out.name}.{os.getpid()}.backup")
        try:
            _copy(source, temporary)
            os.replace(temporary, out)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise
    finally:
        source.close()
    for suffix in SIDE_FILES:  # an old file's log would be applied to the copy
        with contextlib.suppress(FileNotFoundError):
            Path(f"{out}{suffix}").unlink()
    _sync_directory(out.parent)
    return out.stat().st_size


def _check_target(path: Path, out: Path, force: bool) -> None:
    if not out.parent.is_dir():
        raise StoreError(f"cannot back up to {out}: {out.parent} is not a directory")
    if not out.exists() and not out.is_symlink():
        return
    if out.exists() and out.samefile(path):
        raise StoreError(f"{out} is the database itself; give another file to back up to")
    if not force:
        raise StoreError(f"{out} already exists; remove it or pass --force to replace it")
    owner = owner_pid(out)
    if owner is not None:
        raise StoreError(f"{out} is in use by a runtime (process {owner}); stop it first")


def _copy(source: sqlite3.Connection, temporary: Path) -> None:
    # Created here, empty and private (whatever the umask), before SQLite opens it.
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    target = sqlite3.connect(temporary, isolation_level=None)
    try:
        source.backup(target)  # all pages in one step: one read transaction, consistent
        # The copy carries the source's WAL mode; fold any log back so the file is whole.
        target.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        raise StoreError(f"could not back up to {temporary.parent}: {exc}") from None
    finally:
        target.close()
    fd = os.open(temporary, os.O_RDONLY)
    try:
        os.fsync(fd)  # durable before it takes out's name
    finally:
        os.close(fd)


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system syncs a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
