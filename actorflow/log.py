"""Logging: structlog events on the stdlib logger ``"actorflow"``, silent until enabled.

A library must not print on its own: every event goes to the stdlib logger named
``actorflow``, which has no handler of its own, so nothing shows unless the app
configures logging (or calls :func:`configure_logging`). Each event is a structlog
event dict rendered to one line (key=value, or JSON), bound to ``workflow_id``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_stdlib = logging.getLogger("actorflow")
_stdlib.addHandler(logging.NullHandler())
_renderer: list[Any] = [structlog.processors.KeyValueRenderer(sort_keys=False, key_order=["event"])]


def _render(logger: Any, method: str, event: structlog.typing.EventDict) -> str:
    return str(_renderer[0](logger, method, event))


_structlog: structlog.stdlib.BoundLogger = structlog.wrap_logger(
    _stdlib,
    processors=[
        structlog.stdlib.filter_by_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _render,
    ],
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)


class _Logger:
    """Checks the level before structlog builds anything: a disabled event costs one call."""

    __slots__ = ()

    def debug(self, event: str, **fields: Any) -> None:
        if _stdlib.isEnabledFor(logging.DEBUG):
            _structlog.debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        if _stdlib.isEnabledFor(logging.INFO):
            _structlog.info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        if _stdlib.isEnabledFor(logging.WARNING):
            _structlog.warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        if _stdlib.isEnabledFor(logging.ERROR):
            _structlog.error(event, **fields)

    def exception(self, event: str, **fields: Any) -> None:
        if _stdlib.isEnabledFor(logging.ERROR):
            _structlog.exception(event, **fields)


logger = _Logger()
"""The logger every actorflow module uses: ``logger.info("step.completed", workflow_id=...)``."""


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (tests and apps swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(level: int | str = "INFO", json: bool = False) -> None:
    """Show actorflow's events on stderr at ``level``: one line each, key=value or JSON."""
    _renderer[0] = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.processors.KeyValueRenderer(
            sort_keys=False, key_order=["timestamp", "event"]
        )
    )
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    for old in [h for h in _stdlib.handlers if not isinstance(h, logging.NullHandler)]:
        _stdlib.removeHandler(old)
    _stdlib.addHandler(handler)
    _stdlib.setLevel(level if isinstance(level, int) else level.upper())
    _stdlib.propagate = False
