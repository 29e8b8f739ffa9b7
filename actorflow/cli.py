"""The ``actorflow`` command line."""

from __future__ import annotations

import argparse
import sys

import actorflow


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="actorflow", description=actorflow.__doc__)
    parser.add_argument("--version", action="version", version=f"actorflow {actorflow.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run a self-contained approval flow across a restart")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from actorflow.demo import main as demo

        demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
