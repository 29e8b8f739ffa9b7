"""One runtime process of the multi-process PostgreSQL tests, driven over its stdin.

Usage: python cluster_child.py URL WORKDIR NAME LEASE

Opens ``af.Runtime(URL, lease=LEASE)``, prints ``{"ready": true, "pid": ...}``, then takes
one JSON command a line on stdin: ``{"id": n, "op": ..., ...}``. Each command runs in
its own task; its answer is one line ``{"id": n, "ok": value}`` or ``{"id": n,
"error": type name, "kinds": its classes' names, "message": text}``.

Ops: ``start``, ``send``, ``resolve``, ``reject``, ``cancel``, ``notify``, ``status``,
``result`` (waiting ``within`` seconds), ``list`` (the public API, for any instance);
``feed`` (a stream of tagged pings, each acknowledged send logged to
WORKDIR/acks.log, each failed one to WORKDIR/send-errors.log); ``whoami``; ``close``
(leave the runtime cleanly, answer, exit). End of stdin closes too.

Steps append to WORKDIR/steps.log, one line per start and per end of an execution,
with the process id and the time, flushed and synced before the step goes on: the
tests count executions from it. A ``slow`` step waits for the file WORKDIR/release
(asynchronously: the runtime's loop, its lease renewals included, keeps running).
With CLUSTER_PARENT set to the test's process id, the child dies with it.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

import actorflow as af


class Ping(msgspec.Struct):
    """A tagged ping: who sent it, and its number in that sender's stream."""

    sender: str
    k: int


ping = af.Event("cluster.ping", Ping)
approval = af.Event("cluster.approval", str)

workdir = Path(sys.argv[2])
NAME = sys.argv[3]


def log_step(line: str) -> None:
    """Append ``line`` to the step log, synced before the caller goes on."""
    with open(workdir / "steps.log", "a") as f:
        f.write(f"{line} {os.getpid()} {time.time():.6f}\n")
        f.flush()
        os.fsync(f.fileno())


async def side_effect(instance: str, what: str, slow: bool = False) -> str:
    """A step with a side effect: logged at its start and end, with a fresh nonce."""
    log_step(f"START {instance} {what}")
    if slow:
        while not (workdir / "release").exists():
            await asyncio.sleep(0.02)
    nonce = f"{what}-{random.getrandbits(64):016x}"
    log_step(f"DONE {instance} {what} {nonce}")
    return nonce


def flag(instance: str) -> str | None:
    """The query of ``drive``: the content of WORKDIR/flag-INSTANCE once it exists."""
    path = workdir / f"flag-{instance}"
    return path.read_text() if path.exists() else None


@af.workflow(name="cluster.drive")
async def drive(ctx: af.Context[None], pings: int) -> dict[str, Any]:
    """Driven from outside: pings by name, a token, a query woken by ``notify``."""
    first = await ctx.step(side_effect, ctx.workflow_id, "a")
    got = []
    for _ in range(pings):
        p = await ctx.wait_event(ping)
        got.append([p.sender, p.k])
    ref = await ctx.create_event(approval)
    try:
        verdict = "resolved:" + await ctx.wait_event(ref)
    except af.EventFailed as exc:
        verdict = "rejected:" + exc.error
    flagged = await ctx.wait_for(flag, ctx.workflow_id, on=("cluster.flags",), name="cluster.flag")
    return {"first": first, "got": got, "verdict": verdict, "flag": flagged}


@af.workflow(name="cluster.park")
async def park(ctx: af.Context[None]) -> str:
    """Parked until cancelled (or an approval comes)."""
    return await ctx.wait_event(approval)


@af.workflow(name="cluster.flow")
async def flow(ctx: af.Context[None], expect: int, slow: bool = False) -> dict[str, Any]:
    """A step (``slow``: in flight until released), ``expect`` pings, a second step."""
    first = await ctx.step(side_effect, ctx.workflow_id, "a", slow)
    got = []
    for _ in range(expect):
        p = await ctx.wait_event(ping)
        got.append([p.sender, p.k])
    last = await ctx.step(side_effect, ctx.workflow_id, "b")
    return {"first": first, "got": got, "last": last}


@af.workflow(name="cluster.nap")
async def nap(ctx: af.Context[None], seconds: float, expect: int) -> dict[str, Any]:
    """A durable timer, then a step, then ``expect`` pings."""
    await ctx.sleep(seconds)
    woke = await ctx.step(side_effect, ctx.workflow_id, "c")
    got = []
    for _ in range(expect):
        p = await ctx.wait_event(ping)
        got.append([p.sender, p.k])
    return {"woke": woke, "got": got}


WORKFLOWS = {wf.name: wf for wf in (drive, park, flow, nap)}


def ack(line: str, name: str = "acks.log") -> None:
    with open(workdir / name, "a") as f:
        f.write(line + "\n")
        f.flush()


async def feed_one(rt: af.Runtime, instance: str, tag: str, ks: range, pause: float) -> int:
    """Send pings ``ks`` of sender ``tag`` to ``instance`` one after the other. A send
    that raised (a contract breach the test reports) is logged and tried again, for a
    second or two; then the stream gives up. Returns how many sends raised."""
    errors = 0
    for k in ks:
        for attempt in range(GIVE_UP + 1):
            try:
                await rt.send(instance, ping, Ping(tag, k))
            except Exception as exc:
                errors += 1
                ack(f"{tag} {instance} {k} {type(exc).__name__}: {exc}", "send-errors.log")
                if attempt == GIVE_UP:
                    return errors
                await asyncio.sleep(0.1)
            else:
                ack(f"{tag} {instance} {k} {time.time():.6f}")
                break
        if pause:
            await asyncio.sleep(random.uniform(0, 2 * pause))
    return errors


GIVE_UP = 15
"""Attempts of a send that keeps raising after which its stream stops."""


def plain(value: Any) -> Any:
    """``value`` as JSON can carry it (datetimes as ISO text)."""
    return msgspec.to_builtins(value)


async def run(rt: af.Runtime, op: str, cmd: dict[str, Any], closing: asyncio.Event) -> Any:
    """Carry out one command on ``rt``."""
    if op == "start":
        h = await rt.start(WORKFLOWS[cmd["workflow"]], *cmd.get("args", []), id=cmd.get("wf"))
        return h.id
    if op == "send":
        value = cmd.get("value")
        if value is not None:
            value = Ping(**value)
        await rt.send(
            cmd["wf"],
            cmd.get("event", ping.name),
            value,
            error=cmd.get("error"),
            cancelled=cmd.get("cancelled", False),
        )
        return None
    if op == "resolve":
        await rt.resolve(cmd["token"], cmd.get("value"))
        return None
    if op == "reject":
        await rt.reject(cmd["token"], cmd["error"])
        return None
    if op == "cancel":
        await rt.handle(cmd["wf"]).cancel()
        return None
    if op == "notify":
        await rt.notify(*cmd["topics"])
        return None
    if op == "status":
        return plain(await rt.handle(cmd["wf"]).status())
    if op == "result":
        return plain(await rt.handle(cmd["wf"]).result(timeout=cmd.get("within")))
    if op == "list":
        return plain(await rt.list())
    if op == "feed":
        ks = range(cmd.get("first", 0), cmd.get("first", 0) + cmd["count"])
        jobs = (feed_one(rt, wf, cmd["tag"], ks, cmd.get("pause", 0.0)) for wf in cmd["wfs"])
        return sum(await asyncio.gather(*jobs))
    if op == "whoami":
        store = getattr(rt, "_store", None)
        return {"pid": os.getpid(), "owner": getattr(store, "owner", None)}
    if op == "close":
        closing.set()
        return None
    raise ValueError(f"unknown op {op!r}")


def answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve(rt: af.Runtime, closing: asyncio.Event, cmd: dict[str, Any]) -> None:
    n = cmd["id"]
    try:
        value = await run(rt, cmd["op"], cmd, closing)
    except Exception as exc:
        kinds = [cls.__name__ for cls in type(exc).__mro__]
        answer({"id": n, "error": type(exc).__name__, "kinds": kinds, "message": str(exc)})
    else:
        if cmd["op"] == "close":
            closing.set()
            await closing_done.wait()
        answer({"id": n, "ok": value})


closing_done = asyncio.Event()
"""Set once the runtime is closed: ``close`` answers then."""


async def read_commands(closing: asyncio.Event, rt: af.Runtime, tasks: set[Any]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while not closing.is_set():
        line = await reader.readline()
        if not line:
            closing.set()
            return
        task = asyncio.create_task(serve(rt, closing, json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def main() -> None:
    url, lease = sys.argv[1], float(sys.argv[4])
    closing = asyncio.Event()
    tasks: set[Any] = set()
    async with af.Runtime(url, lease=lease) as rt:
        answer({"ready": True, "pid": os.getpid(), "name": NAME})
        reading = asyncio.create_task(read_commands(closing, rt, tasks))
        await closing.wait()
        reading.cancel()
    closing_done.set()
    await asyncio.gather(*tasks, return_exceptions=True)


def die_with_parent() -> None:
    """Be killed when the test process that started us dies (Linux), or exit now if
    it is gone already."""
    parent = int(os.environ.get("CLUSTER_PARENT", "0"))
    if parent and sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            sys.exit(1)


_PR_SET_PDEATHSIG = 1

if __name__ == "__main__":
    die_with_parent()
    asyncio.run(main())
