"""Shared fixtures: a database path, a manual clock, and a runtime factory."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from tests.pg_server import PgServer, ServerUnavailable

CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
"""Set by ``.ci/run``: there, a PostgreSQL server that cannot start fails the tests."""

LOOP = os.environ.get("ACTORFLOW_LOOP", "asyncio")
"""The host event loop the tests run on: ``asyncio`` (default) or ``uvloop``
(``ACTORFLOW_LOOP=uvloop python -m pytest ...``, as ``.ci/run`` does for the core)."""

if LOOP == "uvloop":
    import uvloop

    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
        """Every asyncio test runs on a uvloop loop."""
        return {"uvloop": uvloop.new_event_loop}

elif LOOP != "asyncio":
    raise pytest.UsageError(f"ACTORFLOW_LOOP must be 'asyncio' or 'uvloop', got {LOOP!r}")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A fresh database file path."""
    return tmp_path / "app.db"


@pytest.fixture
def clock() -> af.testing.ManualClock:
    """A clock that only moves when the test says so."""
    return af.testing.ManualClock()


def _unavailable(reason: str) -> None:
    if CI:
        pytest.fail(f"PostgreSQL is mandatory in CI: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL server for the tests: {reason}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A throwaway PostgreSQL 15 server for the whole session (see tests/pg_server.py).
    Where it cannot run, the tests that need it skip, saying why; in CI they fail."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        _unavailable("asyncpg is not installed (pip install 'actorflow[postgres]')")
    server = PgServer()
    try:
        server.start()
    except ServerUnavailable as exc:
        server.stop()
        _unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


def _admin(url: str, *statements: str) -> None:
    """Run ``statements`` on ``url`` (outside the test's event loop: in a thread)."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's server (dropped afterwards)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    _admin(pg_server.url(), f"CREATE DATABASE {name}")
    yield pg_server.url(name)
    _admin(pg_server.url(), f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


STORES = ["sqlite", "memory", "postgres"]
"""The store kinds the shared ``runtime`` fixture runs each test on."""


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """The kind of store of this run of the test: ``sqlite``, ``memory`` or ``postgres``."""
    return str(request.param)


@pytest.fixture
def runtime(
    request: pytest.FixtureRequest, store_kind: str, db: Path, clock: af.testing.ManualClock
) -> Callable[..., af.Runtime]:
    """Makes runtimes on the same store (an SQLite file, memory, or a fresh PostgreSQL
    database) and clock."""
    where: Path | str | None = {"sqlite": db, "memory": None}.get(store_kind)
    if store_kind == "postgres":
        where = request.getfixturevalue("pg_url")

    def make(**kwargs: Any) -> af.Runtime:
        return af.Runtime(where, clock=clock, **kwargs)

    return make


@pytest.fixture
def restore_workflow_registry() -> Iterator[None]:
    """Leave the process's workflow registry as it was (for tests that redefine names)."""
    registry = importlib.import_module("actorflow.workflow")._registry
    saved = dict(registry)
    yield
    registry.clear()
    registry.update(saved)
