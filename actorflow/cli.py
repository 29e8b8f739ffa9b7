"""The ``actorflow`` command line: inspect a database and reach its runtime from a shell.

``list`` and ``show`` read the file (never taking it over), and ``backup`` copies it;
``send``, ``resolve``, ``reject``, ``cancel``, ``notify`` and ``purge`` put a request in
the database's inbox, which the owning runtime applies at once (``submit`` wakes it),
or at its next start when none runs.
When a runtime runs, a command waits briefly for its verdict and reports it (so a
misspelt event or a payload of the wrong type fails the command); ``--wait`` waits
until the runtime accepted or rejected the request, up to ``--timeout``.
``--db`` (or ``$ACTORFLOW_DB``) names an SQLite file or a ``postgresql://`` URL, whose
password never appears in the output (``backup`` and ``demo`` take files only).
Errors are one line on stderr and a non-zero exit status: 1 for an error or a
rejected request, 2 for a usage error, 3 for a request still pending after ``--wait``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import msgspec

import actorflow
from actorflow.backup import backup
from actorflow.errors import ActorflowError, DatabaseLocked, StoreError
from actorflow.events import check_name
from actorflow.inbox import (
    CancelRequest,
    NotifyRequest,
    PurgeRequest,
    Receipt,
    Request,
    ResolveRequest,
    SendRequest,
    submit,
    wait_for_receipt,
)
from actorflow.log import configure_logging
from actorflow.reader import Details, Reader
from actorflow.retention import FINISHED_STATES, Purged, purge, purge_statuses
from actorflow.status import STATES, Status, Wait
from actorflow.store.base import Store
from actorflow.store.lock import owner_pid
from actorflow.store.sqlite import SQLiteStore
from actorflow.store.url import is_postgres_url, redact

EXIT_ERROR, EXIT_USAGE, EXIT_PENDING = 1, 2, 3
MAX_PAYLOAD_TEXT = 1_048_576  # the runtime's default payload limit
MAX_DEPTH = 64  # JSON nesting the CLI accepts
BRIEF_WAIT = 2.0  # seconds a command without --wait gives a running owner to decide


class CommandError(Exception):
    """A problem the user can fix; printed as one line."""


# -- arguments ------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    # --db, --json and -v work before or after the command name: the shared options
    # live on the main parser and (without defaults, so they do not reset it) on each
    # command's parser.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--db", help="database file (default: $ACTORFLOW_DB, else actorflow.db)")
    common.add_argument("--json", action="store_true", help="print one JSON document")
    common.add_argument("-v", "--verbose", action="count", help="log actorflow events")

    parser = argparse.ArgumentParser(
        prog="actorflow",
        description="Inspect an actorflow database and send to its workflows.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"actorflow {actorflow.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, parents=[common])

    p = command("list", "list instances with their state and what they wait on")
    p.add_argument(
        "--status", action="append", choices=sorted(STATES), help="only this state (repeatable)"
    )
    p.add_argument("--workflow", help="only instances of this workflow")

    p = command("show", "one instance: status, args, state, waits, events, steps")
    p.add_argument("id", help="instance ID")

    p = command("send", "send an event to an instance by name")
    p.add_argument("id", help="instance ID")
    p.add_argument("event", help="event name")
    p.add_argument("payload", nargs="?", help="JSON payload, - for stdin, @FILE for a file")
    failure = p.add_mutually_exclusive_group()
    failure.add_argument("--error", metavar="MSG", help="make the wait raise af.EventFailed")
    failure.add_argument(
        "--cancelled", action="store_true", help="make the wait raise af.EventCancelled"
    )
    _wait_options(p)

    p = command("resolve", "resolve a pre-created event by its token")
    p.add_argument("token", help="the event's token (EventRef.id)")
    p.add_argument("payload", nargs="?", help="JSON payload, - for stdin, @FILE for a file")
    _wait_options(p)

    p = command("reject", "fail a pre-created event by its token")
    p.add_argument("token", help="the event's token (EventRef.id)")
    p.add_argument("message", help="the error the waiting workflow sees")
    _wait_options(p)

    p = command("cancel", "cancel an instance")
    p.add_argument("id", help="instance ID")
    _wait_options(p)

    p = command("notify", "re-run ctx.wait_for queries listening on these topics")
    p.add_argument("topics", nargs="+", metavar="TOPIC")
    _wait_options(p)

    p = command("purge", "delete finished instances (and applied requests) older than DURATION")
    p.add_argument(
        "--older-than", required=True, type=duration, metavar="DURATION",
        help="how long ago they finished: 30s, 90m, 12h, 7d, 2w",
    )  # fmt: skip
    p.add_argument(
        "--status", action="append", type=finished_state, metavar="STATE",
        help="only completed, failed or cancelled instances (repeatable); "
        "without it, applied inbox requests are purged too",
    )  # fmt: skip
    _wait_options(p)

    p = command("backup", "write a consistent copy of the database while its runtime runs")
    p.add_argument("out", metavar="OUT", help="the copy's path (created private, mode 0600)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")

    p = command("ui", "serve a web page to see waiting instances and act on them")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")

    command("demo", "run a self-contained approval flow across a restart (on --db FILE if given)")
    return parser


def _wait_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait", action="store_true", help="wait until the runtime accepted or rejected it"
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds --wait waits (default 10)")


DURATION_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def duration(text: str) -> float:
    """Seconds in a duration such as ``30s``, ``90m``, ``12h``, ``7d`` or ``2w``."""
    number, unit = text[:-1], text[-1:].lower()
    try:
        value = float(number) if unit in DURATION_UNITS and number.strip() == number else -1.0
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: give a number and a unit, as in 30s, 90m, 12h, 7d or 2w"
        )
    return value * DURATION_UNITS[unit]


def finished_state(text: str) -> str:
    """A state ``purge --status`` takes: only finished ones."""
    if text not in FINISHED_STATES:
        what = "is unfinished and never purged" if text in STATES else "is not a state"
        raise argparse.ArgumentTypeError(
            f"{text!r} {what}; use {', '.join(sorted(FINISHED_STATES))}"
        )
    return text


# -- payloads -------------------------------------------------------------------------
def _payload_text(arg: str | None) -> str | None:
    """The JSON text of a payload argument (inline, ``-`` for stdin, ``@path``), checked."""
    if arg is None:
        return None
    if arg == "-":
        raw = sys.stdin.buffer.read(MAX_PAYLOAD_TEXT + 1)
        source = "stdin"
    elif arg.startswith("@"):
        try:
            with open(arg[1:], "rb") as f:
                raw = f.read(MAX_PAYLOAD_TEXT + 1)
        except OSError as exc:
            raise CommandError(f"cannot read payload file {arg[1:]!r}: {exc.strerror}") from None
        source = f"file {arg[1:]!r}"
    else:
        raw = arg.encode("utf-8", "surrogateescape")
        source = "the payload argument"
    if len(raw) > MAX_PAYLOAD_TEXT:
        raise CommandError(f"payload from {source} is larger than {MAX_PAYLOAD_TEXT} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError(f"payload from {source} is not UTF-8: {exc.reason}") from None
    _check_json(text, source)
    return text


def _check_json(text: str, source: str) -> None:
    depth = deepest = 0
    in_string = escaped = False
    for char in text:  # a cheap depth scan first: deep nesting would exhaust the stack
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    if deepest > MAX_DEPTH:
        raise CommandError(f"payload from {source} is nested deeper than {MAX_DEPTH} levels")
    try:
        msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise CommandError(f"payload from {source} is not valid JSON: {exc}") from None


# -- output ---------------------------------------------------------------------------
def _emit_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _in(moment: datetime) -> str:
    """How far off ``moment`` is, to two units: "in 6d 23h", "in 4m 10s", "due"."""
    left = int((moment - datetime.now(UTC)).total_seconds())
    if left <= 0:
        return "due"
    units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)]
    parts: list[str] = []
    for name, size in units:
        count, left = divmod(left, size)
        if count or parts:
            parts.append(f"{count}{name}")
    return "in " + " ".join(parts[:2])


def _wait_text(wait: Wait) -> str:
    what = {"timer": "timer", "condition": "condition", "query": "query"}.get(wait.kind, "event")
    if wait.kind == "event":
        what = f"event {wait.name}" + (f" (token {wait.token})" if wait.token else "")
    elif wait.name and wait.kind != "timer":
        what = f"{wait.kind} {wait.name}"
    if wait.deadline is not None:
        what += f" until {_when(wait.deadline)} ({_in(wait.deadline)})"
    return what


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _state_text(status: Status) -> str:
    # ``detail`` on an unfinished instance: its runtime could not run it (unknown
    # workflow, code that diverged from the journal); the waits shown are the stored ones.
    if status.detail is not None and status.finished_at is None:
        return f"{status.state} (held)"
    return status.state


def _print_list(statuses: list[Status]) -> None:
    if not statuses:
        print("no instances")
        return
    rows = [["ID", "WORKFLOW", "STATE", "WAITING ON", "UPDATED"]]
    for s in statuses:
        waits = "; ".join(_wait_text(w) for w in s.waiting_on) or "-"
        rows.append([s.id, s.workflow, _state_text(s), waits, _when(s.updated_at)])
    print(_table(rows))


def _short(value: Any) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 200 else text[:197] + "..."


def _print_details(d: Details) -> None:
    s = d.status
    lines = [
        f"id:        {s.id}",
        f"workflow:  {s.workflow}",
        f"status:    {_state_text(s)}",
        f"created:   {_when(s.created_at)}",
        f"updated:   {_when(s.updated_at)}",
    ]
    if s.finished_at is not None:
        lines.append(f"finished:  {_when(s.finished_at)}")
    if s.run > 1:
        lines.append(f"run:       {s.run} (continued as new {s.run - 1} time(s))")
    lines.append(f"args:      {_short(d.args)}")
    if d.state is not None:
        lines.append(f"state:     {_short(d.state)}")
    if s.state == "completed":
        lines.append(f"result:    {_short(d.result)}")
    if s.error:  # its first line; the traceback follows at the end
        lines.append(f"error:     {s.error.splitlines()[0]}")
    if s.detail:
        lines.append(f"detail:    {s.detail}")
    print("\n".join(lines))
    if s.waiting_on:
        print("\nwaiting on:")
        for wait in s.waiting_on:
            print(f"  {_wait_text(wait)}")
    if s.events:
        print("\nevents:")
        rows = [["NAME", "TOKEN", "OUTCOME", "CREATED", "SENT", "CONSUMED"]]
        for e in s.events:
            rows.append(
                [e.name, e.token or "-", e.outcome or "pending", _when(e.created_at),
                 _when(e.sent_at), _when(e.consumed_at)]
            )  # fmt: skip
        print("  " + _table(rows).replace("\n", "\n  "))
    if d.steps:
        print("\nsteps:")
        rows = [["#", "NAME", "FINISHED", "RESULT"]]
        for step in d.steps:
            outcome = f"error {step.error}" if step.error else _short(step.result)
            rows.append([str(step.seq), step.name, _when(step.finished_at), outcome])
        print("  " + _table(rows).replace("\n", "\n  "))
    if d.traceback:
        print("\ntraceback:\n" + d.traceback.rstrip())


# -- commands -------------------------------------------------------------------------
def _request(args: argparse.Namespace) -> Request:
    match args.command:
        case "send":
            check_name(args.id, "an instance ID")
            check_name(args.event, "an event name")
            payload = _payload_text(args.payload)
            if payload is not None and (args.error is not None or args.cancelled):
                raise CommandError("give a payload, or --error / --cancelled, not both")
            return SendRequest(args.id, args.event, payload, args.error, args.cancelled)
        case "resolve":
            check_name(args.token, "a token")
            return ResolveRequest(args.token, _payload_text(args.payload))
        case "reject":
            check_name(args.token, "a token")
            return ResolveRequest(args.token, None, args.message)
        case "cancel":
            check_name(args.id, "an instance ID")
            return CancelRequest(args.id)
        case "purge":
            return PurgeRequest(args.older_than, args.status)
        case _:
            for topic in args.topics:
                check_name(topic, "a topic")
            return NotifyRequest(list(args.topics))


Target = Path | str
"""A database: an SQLite file, or a ``postgresql://`` URL (a ``str``)."""


def _label(db: Target) -> str:
    """``db`` as messages name it: a URL without its password."""
    return redact(db) if isinstance(db, str) else str(db)


def _owner(db: Target) -> str | None:
    """Who has ``db`` open ("process 123" on a file), or ``None`` if no runtime does."""
    if isinstance(db, str):
        from actorflow.store import pg_outside  # asyncpg: only for a URL

        return "its runtime" if pg_outside.owner_running(db) else None
    pid = owner_pid(db)
    return None if pid is None else f"process {pid}"


def _check_target(db: Target, request: Request) -> None:
    """Fail fast on what the runtime would reject for sure: an unknown or finished instance."""
    if not isinstance(request, SendRequest | CancelRequest):
        return
    snapshot = Reader(db).snapshots(request.instance).get(request.instance)
    if snapshot is None:
        raise CommandError(f"no workflow instance with id {request.instance!r} in {_label(db)}")
    if snapshot.finished and isinstance(request, SendRequest):
        raise CommandError(
            f"workflow instance {request.instance!r} has finished ({snapshot.status}); "
            "it takes no more events"
        )


def _purge_unowned(db: Target, request: PurgeRequest) -> Purged | None:
    """With no runtime on ``db``, purge it here, taking it over for the purge alone (the
    log is folded first, as at any open); ``None`` if a runtime took it meanwhile."""

    async def run() -> Purged | None:
        store: Store
        if isinstance(db, str):
            from actorflow.store.postgres import PostgresStore

            store = PostgresStore(db)
        else:
            store = SQLiteStore(db)
        try:
            await store.open()
        except DatabaseLocked:
            return None
        except StoreError:
            if isinstance(db, str) and _owner(db) is not None:  # opened meanwhile
                return None
            raise
        try:
            before = time.time() - request.older_than
            statuses = purge_statuses(request.statuses)
            return await purge(store, _folded, before, statuses, request.statuses is None)
        finally:
            await store.close()

    return asyncio.run(run())


async def _folded() -> None:
    """Opening the store folded the log into snapshots already: nothing left to fold."""


def _deliver(db: Target, args: argparse.Namespace) -> int:
    request = _request(args)
    _check_target(db, request)
    label = _label(db)
    if isinstance(request, PurgeRequest) and _owner(db) is None:
        purged = _purge_unowned(db, request)
        if purged is not None:  # seq 0: applied here, nothing was queued
            return _report(args, Receipt(0, "accepted", str(purged)), f"{purged} in {label}")
    seq = submit(db, request)
    what = f"request #{seq} ({args.command})"
    owner = _owner(db)
    if owner is None:
        if not args.wait:
            return _report(
                args,
                Receipt(seq, "pending", None),
                f"{what} queued; it will be applied when a runtime starts on {label}",
            )
        return _report(
            args,
            Receipt(seq, "pending", "no runtime is running on this database"),
            f"{what} queued; no runtime is running on {label}, so it will be applied when one"
            " starts",
            EXIT_PENDING,
        )
    found = wait_for_receipt(db, seq, args.timeout if args.wait else BRIEF_WAIT)
    if found.status == "accepted":
        said = f": {found.reason}" if found.reason else ""  # a purge says what it deleted
        return _report(args, found, f"{what} accepted by {owner}{said}")
    if found.status == "rejected":
        return _report(args, found, f"{what} rejected: {found.reason}", EXIT_ERROR)
    if not args.wait:
        return _report(args, found, f"{what} queued; {owner} has not decided it yet")
    return _report(
        args, found, f"{what} still pending after {args.timeout:g}s ({owner})", EXIT_PENDING
    )


def _report(args: argparse.Namespace, receipt: Receipt, text: str, code: int = 0) -> int:
    if args.json:
        _emit_json(receipt)
    else:
        print(text, file=sys.stderr if code else sys.stdout)
    return code


def _run(args: argparse.Namespace) -> int:
    target = args.db or os.environ.get("ACTORFLOW_DB")
    url = target if isinstance(target, str) and is_postgres_url(target) else None
    # Shown without its password (``ui`` too: its banner names the URL redacted).
    if url is not None and args.command == "demo":
        raise CommandError(f"{redact(url)}: the demo runs on an SQLite file; give --db FILE")
    if url is not None and args.command == "backup":
        raise CommandError(
            f"{redact(url)}: backup copies SQLite files; back up a PostgreSQL database"
            " with pg_dump (pg_dump --schema=actorflow ...)"
        )
    if args.command == "demo":
        from actorflow.demo import main as demo

        demo(args.db)  # only an explicit --db: ACTORFLOW_DB may name the app's own file
        return 0
    if args.command == "ui":
        try:
            from actorflow.ui.command import serve_file
        except ImportError as exc:
            raise CommandError(str(exc)) from None
        db_text = args.db or os.environ.get("ACTORFLOW_DB") or "actorflow.db"
        return serve_file(db_text, args.host, args.port)
    db: Target = url if url is not None else Path(target or "actorflow.db")
    if args.command == "list":
        states = set(args.status) if args.status else None
        statuses = Reader(db).list(states, args.workflow)
        _emit_json(statuses) if args.json else _print_list(statuses)
        return 0
    if args.command == "show":
        details = Reader(db).show(args.id)
        _emit_json(details) if args.json else _print_details(details)
        return 0
    if args.command == "backup":
        size = backup(db, args.out, force=args.force)
        if args.json:
            _emit_json({"database": str(db), "backup": args.out, "bytes": size})
        else:
            print(f"backed up {db} to {args.out} ({size} bytes)")
        return 0
    return _deliver(db, args)


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    print(f"actorflow: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    for name, default in (("db", None), ("json", False), ("verbose", 0)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.verbose:
        configure_logging("DEBUG" if args.verbose > 1 else "INFO")
    try:
        code = _run(args)
        sys.stdout.flush()  # a reader that went away (`| head`) shows here, not at exit
        return code
    except BrokenPipeError:  # before OSError, its base: a closed pipe is not an error
        _discard_stdout()
        return 0
    except (ActorflowError, CommandError) as exc:
        _fail(str(exc))
    except sqlite3.Error as exc:
        _fail(f"database error: {exc}")
    except OSError as exc:
        _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    except KeyboardInterrupt:
        _fail("interrupted", 130)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush at exit does not fail
    on the closed pipe again (as the Python docs on SIGPIPE advise)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file (an embedding app's stream)
        pass


if __name__ == "__main__":
    sys.exit(main())
