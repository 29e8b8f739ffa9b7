"""A Griffe extension for the docs build: Sphinx roles in docstrings become links.

actorflow's docstrings say ``:class:`RuntimeClosed``` and ``:meth:`advance```; the docs
site renders Markdown, where such a role would show as text. Each role becomes an
autorefs link (``[`RuntimeClosed`][actorflow.RuntimeClosed]``), so that mkdocs
``--strict`` fails when one points at nothing. A role in a public docstring that names
nothing importable is reported as a warning (a typo), which fails a strict build too.
"""

from __future__ import annotations

import importlib
import logging
import re
from typing import Any

import griffe

import actorflow

_log = logging.getLogger("mkdocs.plugins.actorflow.roles")
_ROLE = re.compile(r":(?:class|func|meth|attr|exc|mod|data|obj):`(~?)([^`]+)`")


def _exists(path: str) -> bool:
    """Whether the dotted ``path`` names a module or an attribute reachable from one."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(target, attr):
                return False
            target = getattr(target, attr)
        return True
    return False


# Rendered by a page besides the names in actorflow.__all__ (see docs/tracing.md).
_ALSO_DOCUMENTED = frozenset({"actorflow.tracing", "actorflow.tracing.TracerProvider"})


def _documented(path: str) -> bool:
    """Whether the site renders ``path``: a public name or a member of one."""
    if path in _ALSO_DOCUMENTED:
        return True
    parts = path.split(".")
    return len(parts) >= 2 and parts[0] == "actorflow" and parts[1] in actorflow.__all__


def _public_paths() -> set[str]:
    """Canonical paths of the names in ``actorflow.__all__`` (where they are defined)."""
    paths = set()
    for name in actorflow.__all__:
        value = getattr(actorflow, name)
        if hasattr(value, "__qualname__") and hasattr(value, "__module__"):
            paths.add(f"{value.__module__}.{value.__qualname__}")
        elif hasattr(value, "__spec__"):
            paths.add(value.__name__)
    return paths


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx cross-reference roles in every docstring as autorefs links."""

    def __init__(self) -> None:
        super().__init__()
        self._public = _public_paths()

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the roles of ``obj``'s docstring once the tree is complete."""
        if obj.docstring is None or ":" not in obj.docstring.value:
            return
        obj.docstring.value = _ROLE.sub(lambda m: self._link(obj, m), obj.docstring.value)

    def _link(self, obj: griffe.Object, match: re.Match[str]) -> str:
        short, name = match.group(1) == "~", match.group(2)
        shown = name.rsplit(".", 1)[-1] if short else name
        if _exists(f"builtins.{name}"):
            return f"`{shown}`"  # Python's own: no page of this site to link to
        target = self._resolve(obj, name)
        if target is None:
            if self._is_public(obj):
                _log.warning("%s: the docstring refers to %r, which does not exist", obj.path, name)
            return f"`{shown}`"
        if not _documented(target):
            return f"`{shown}`"  # internal (a constant, a private class): no page shows it
        return f"[`{shown}`][{target}]"

    def _resolve(self, obj: griffe.Object, name: str) -> str | None:
        cls = obj if obj.is_class else obj.parent if obj.parent and obj.parent.is_class else None
        candidates = [name] if name.startswith("actorflow.") else []
        # A public name is rendered (and anchored) under the package: prefer that path.
        candidates.append(f"actorflow.{name}")
        if cls is not None:
            candidates.append(f"{cls.path}.{name}")
        candidates.append(f"{obj.module.path}.{name}")
        return next((path for path in candidates if _exists(path)), None)

    def _is_public(self, obj: griffe.Object) -> bool:
        return any(obj.path == p or obj.path.startswith(p + ".") for p in self._public)
