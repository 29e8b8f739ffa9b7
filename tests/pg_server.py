"""A throwaway PostgreSQL server for the tests: ``initdb`` and ``pg_ctl`` of the machine.

The cluster lives in a temporary directory, listens on 127.0.0.1 on a free port (and
on a Unix socket in that directory), trusts local connections, and is stopped and
deleted at the end. As root, initdb and the server run as the unprivileged
``postgres`` user (PostgreSQL refuses to run as root); the directory is made that
user's. The server is a child of the test process, started as ``pg_ctl start`` would
(``postgres -D``, ready once ``postmaster.pid`` says so) but asked to quit with it
(``PR_SET_PDEATHSIG``): a test run killed midway leaves no server behind. Durability
settings of the *server* (``fsync``) are off: the tests kill clients, never the server.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

USER = "postgres"
"""The unprivileged user that runs the server when the tests run as root."""


class ServerUnavailable(Exception):
    """The server could not be found or started (the message says why)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """One running cluster; :meth:`url` names a database on it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="actorflow-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self._runas: list[str] = []
        self._user: tuple[int, int] | None = None  # (uid, gid) to run as, when root
        self._proc: subprocess.Popen[bytes] | None = None

    def _run(self, argv: Sequence[str], timeout: float = 120) -> None:
        found = shutil.which(argv[0])
        if found is None:
            raise ServerUnavailable(
                f"{argv[0]} is not on PATH (PostgreSQL 15's server: apt install postgresql-15)"
            )
        try:
            subprocess.run(
                [*self._runas, found, *argv[1:]],
                check=True,
                capture_output=True,
                timeout=timeout,
                cwd=self.dir,
            )
        except subprocess.CalledProcessError as exc:
            out = (exc.stdout + exc.stderr).decode(errors="replace")
            raise ServerUnavailable(f"{argv[0]} failed ({exc.returncode}): {out[-2000:]}") from None
        except subprocess.TimeoutExpired:
            raise ServerUnavailable(f"{argv[0]} did not finish in {timeout} s") from None

    def start(self) -> None:
        """initdb, then start the server and wait until it accepts connections."""
        for tool in ("initdb", "postgres"):
            if shutil.which(tool) is None:
                raise ServerUnavailable(
                    f"{tool} is not on PATH (PostgreSQL 15's server: apt install postgresql-15)"
                )
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(USER)
            except KeyError:
                raise ServerUnavailable(
                    f"running as root and there is no {USER!r} user to run the server as"
                ) from None
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._user = (user.pw_uid, user.pw_gid)
            runuser = shutil.which("runuser")
            if runuser is None:
                raise ServerUnavailable("running as root and runuser is not on PATH")
            self._runas = [runuser, "-u", USER, "--"]
        self._run(
            ["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"]
        )  # fmt: skip
        postgres = shutil.which("postgres")
        assert postgres is not None
        with open(self.dir / "log", "wb") as log:
            self._proc = subprocess.Popen(
                [postgres, "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=200"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.dir,
                preexec_fn=_child(self._user),
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self._ready():
            if self._proc.poll() is not None:
                log_text = (self.dir / "log").read_text(errors="replace")[-2000:]
                raise ServerUnavailable(f"postgres exited ({self._proc.returncode}): {log_text}")
            if time.monotonic() > deadline:
                raise ServerUnavailable("postgres did not become ready in 60 s")
            time.sleep(0.05)

    def _ready(self) -> bool:
        # What pg_ctl -w waits for: the status line of postmaster.pid says "ready".
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        """A ``postgresql://`` URL of ``database`` on this server over TCP."""
        auth = USER if password is None else f"{USER}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Stop the server (immediate shutdown: nothing in it is kept) and delete its
        directory."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGQUIT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


_PR_SET_PDEATHSIG = 1


def _child(user: tuple[int, int] | None) -> Callable[[], None]:
    """What the server's process does before exec: become ``user`` (uid, gid), then
    ask for SIGQUIT (immediate shutdown) when the test process dies (set after the
    change of user, which would clear it)."""

    def run() -> None:
        if user is not None:
            os.setgroups([])
            os.setgid(user[1])
            os.setuid(user[0])
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT)

    return run
