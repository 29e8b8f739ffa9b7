"""Shared fixtures: a database path, a manual clock, and a runtime factory."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import actorflow as af


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
