"""The documentation site covers what it must; ``.ci/run`` also builds it strictly.

The build's own checks live in ``tools/mkdocs_hooks.py``; these run them without
MkDocs, so that a public name or a CLI flag left out fails the test suite too.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import actorflow as af
from actorflow import cli

ROOT = Path(__file__).resolve().parent.parent


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "tools/mkdocs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_name_is_rendered_by_a_page() -> None:
    pages = "\n".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    rendered = set(re.findall(r"^:::\s*actorflow\.(\w+)\s*$", pages, re.MULTILINE))
    missing = set(af.__all__) - {"__version__"} - rendered
    assert not missing, f"no docs page renders: {sorted(missing)}"


def test_every_public_name_and_method_has_a_docstring() -> None:
    hooks = _hooks()
    problems = [
        problem
        for name in af.__all__
        if name != "__version__"
        for problem in hooks._undocumented(name, getattr(af, name))
    ]
    assert problems == []


def test_cli_reference_lists_every_command_and_flag() -> None:
    reference = _hooks().cli_reference()
    parser = cli._parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in commands.choices.items():
        assert f"### `actorflow {name}`" in reference
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}`" in reference, (name, flag)
            if not action.option_strings:
                assert f"`{action.metavar or action.dest}`" in reference, (name, action.dest)


def test_every_page_is_in_the_navigation() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert {p for p in pages if p not in config} == set()
