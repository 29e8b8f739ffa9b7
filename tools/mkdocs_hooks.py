"""MkDocs hooks for the docs build: the CLI reference and a check that nothing is left out.

- ``<!-- cli-reference -->`` in a page becomes the reference of every ``actorflow``
  subcommand and flag, generated from the CLI's own argument parser, so the page can
  never fall behind the command.
- Every public name (``actorflow.__all__``) must be rendered by a ``::: actorflow.NAME``
  block somewhere, and it and its public methods must have docstrings; otherwise a
  warning is logged, which fails ``mkdocs build --strict``.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import re
from typing import Any

import actorflow
from actorflow import cli

_log = logging.getLogger("mkdocs.plugins.actorflow.hooks")
_MARKER = "<!-- cli-reference -->"
_RENDERED = re.compile(r"^:::\s*actorflow\.(\w+)\s*$", re.MULTILINE)
_rendered: set[str] = set()


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Fill in the CLI reference; note which public names the page renders."""
    _rendered.update(_RENDERED.findall(markdown))
    if _MARKER in markdown:
        markdown = markdown.replace(_MARKER, cli_reference())
    return markdown


def on_env(env: Any, **kwargs: Any) -> Any:
    """Warn (failing a strict build) about public names left out or undocumented."""
    for name in actorflow.__all__:
        if name == "__version__":
            continue
        if name not in _rendered:
            _log.warning(
                "actorflow.%s is public but no page renders it (::: actorflow.%s)", name, name
            )
        for path, problem in _undocumented(name, getattr(actorflow, name)):
            _log.warning("%s %s", path, problem)
    return env


def _undocumented(name: str, value: Any) -> list[tuple[str, str]]:
    """Public things under ``value`` without a docstring of their own."""
    found = []
    if not (value.__doc__ or "").strip():
        found.append((f"actorflow.{name}", "has no docstring"))
    if inspect.isclass(value) or inspect.ismodule(value):
        for attr, member in vars(value).items():
            if attr.startswith("_"):
                continue
            if inspect.ismodule(value) and getattr(member, "__module__", None) != value.__name__:
                continue  # imported into the module, documented where it is defined
            if inspect.isclass(member) and inspect.ismodule(value):
                found += _undocumented(f"{name}.{attr}", member)
                continue
            if callable(member) or isinstance(member, property | classmethod | staticmethod):
                doc = getattr(member, "__doc__", None)
                if not (doc or "").strip():
                    found.append((f"actorflow.{name}.{attr}", "has no docstring"))
    return found


# -- the CLI reference -------------------------------------------------------------------
def cli_reference() -> str:
    """Markdown for every subcommand of ``actorflow`` and every flag it takes."""
    parser = cli._parser()
    parts = [
        "### Options of every command\n",
        "They may come before or after the command's name.\n",
        _options_table(parser, skip_help=True),
    ]
    for name, sub in _subcommands(parser).items():
        parts.append(f"### `actorflow {name}`\n")
        parts.append(f"{_escape(sub.description or '')}\n")
        parts.append(f"```text\n{sub.format_usage().strip()}\n```\n")
        parts.append(_options_table(sub, skip_help=True, skip=_common_dests(parser)))
    return "\n".join(parts)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _common_dests(parser: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in parser._actions if a.option_strings and a.dest not in ("help",)}


def _options_table(
    parser: argparse.ArgumentParser, *, skip_help: bool, skip: set[str] | None = None
) -> str:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if skip_help and isinstance(action, argparse._HelpAction):
            continue
        if skip and action.option_strings and action.dest in skip:
            continue
        rows.append(f"| {_usage(action)} | {_escape(_help(action))} |")
    if not rows:
        return "No arguments.\n"
    return "| argument | meaning |\n|---|---|\n" + "\n".join(rows) + "\n"


def _usage(action: argparse.Action) -> str:
    if action.option_strings:
        flags = ", ".join(f"`{s}`" for s in action.option_strings)
        if action.nargs == 0:
            return flags
        metavar = action.metavar or action.dest.upper()
        return f"{flags} `{metavar}`"
    metavar = action.metavar or action.dest
    shown = f"`{metavar}`"
    if action.nargs == "?":
        return f"{shown} (optional)"
    if action.nargs in ("+", "*"):
        return f"{shown} ... ({'one or more' if action.nargs == '+' else 'any number'})"
    return shown


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if action.help == argparse.SUPPRESS:
        text = ""
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        text += f" (one of: {', '.join(str(c) for c in action.choices)})"
    if isinstance(action, argparse._AppendAction):
        text += " (repeatable)" if "repeatable" not in text else ""
    return text.strip()


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")
