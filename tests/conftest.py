"""Shared fixtures: a database path, a manual clock, and a runtime factory."""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import actorflow as af

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


@pytest.fixture(params=["sqlite", "memory"])
def runtime(
    request: pytest.FixtureRequest, db: Path, clock: af.testing.ManualClock
) -> Callable[..., af.Runtime]:
    """Makes runtimes on the same store kind (SQLite file or in memory) and clock."""

    def make(**kwargs: Any) -> af.Runtime:
        path = db if request.param == "sqlite" else None
        return af.Runtime(path, clock=clock, **kwargs)

    return make


@pytest.fixture
def restore_workflow_registry() -> Iterator[None]:
    """Leave the process's workflow registry as it was (for tests that redefine names)."""
    registry = importlib.import_module("actorflow.workflow")._registry
    saved = dict(registry)
    yield
    registry.clear()
    registry.update(saved)
