"""A throwaway PostgreSQL server for the tests: ``initdb`` and ``pg_ctl`` of the machine.

The cluster lives in a temporary directory, listens on 127.0.0.1 on a free port (and
on a Unix socket in that directory), trusts local connections, and is stopped and
deleted at the end. As root, the server runs as the unprivileged ``postgres`` user
(PostgreSQL refuses to run as root); the directory is made that user's. Durability
settings of the *server* (``fsync``) are off: the tests kill clients, never the server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
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
        self.started = False

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
        for tool in ("initdb", "pg_ctl"):
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
            runuser = shutil.which("runuser")
            if runuser is None:
                raise ServerUnavailable("running as root and runuser is not on PATH")
            self._runas = [runuser, "-u", USER, "--"]
        self._run(
            ["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"]
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            ["pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", options,
             "-w", "-t", "60", "start"]
        )  # fmt: skip
        self.started = True

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        """A ``postgresql://`` URL of ``database`` on this server over TCP."""
        auth = USER if password is None else f"{USER}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory."""
        try:
            if self.started:
                self._run(["pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        except ServerUnavailable:
            pass
        finally:
            self.started = False
            shutil.rmtree(self.dir, ignore_errors=True)
