"""How fast a running runtime picks up requests from another process (the inbox), and
what a runtime doing nothing costs in CPU.

Run: python benchmarks/inbox.py [--n 100] [--idle 3] [--loop asyncio|uvloop] [--json PATH]

A child process owns the database and runs N instances that each wait for one
event; this process submits one ``send`` request at a time through
``actorflow.inbox`` (what the CLI does), with a random pause before each (so the
runtime is idle, as on a quiet system), and measures submit-to-accepted latency.
The child runs twice: as shipped (``submit`` wakes it through ``<db>.wake``) and with
the wake socket disabled (the 5-50 ms poll, as before issue #13 item 4).

Baselines of the same run: a plain SQLite INSERT + SELECT on the same file (the floor
of any cross-process hand-off through the file), and the CPU of an event loop in the
child that only sleeps. Idle CPU is the child's process time (``time.process_time``)
over ``--idle`` seconds of doing nothing, as % of one core. Targets (issue #13):
submit -> accepted p50 < 5 ms, idle CPU 0 %. ``submit_call``: the ``submit`` call
itself (in the submitting process: open, insert, commit, ring); ``pickup``: from its
return until the verdict is read (the runtime's part, plus the poll's granularity).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import percentile, report

from actorflow.inbox import SendRequest, receipt, submit

CHILD = """
import asyncio, sys, time, actorflow as af
from actorflow.store import wake
if sys.argv[3] == "poll":  # the wake socket unavailable: the runtime polls as before
    wake.InboxBell.listen = classmethod(lambda cls, database: cls(None, None))
signal = af.Event("bench.inbox", int)
@af.workflow(name="bench.inbox")
async def waiter(ctx) -> int:
    return await ctx.wait_event(signal)
async def idle_cpu(seconds):
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    return 100 * (time.process_time() - c0) / (time.perf_counter() - t0)
async def main(db, n, seconds):
    loop = asyncio.get_running_loop()
    bare = await idle_cpu(seconds)  # the loop alone, before any runtime
    async with af.Runtime(db) as rt:
        for i in range(n):
            await rt.start(waiter, id=f"w{i}")
        await asyncio.sleep(0.5)  # let start-up work settle
        print("IDLE", bare, await idle_cpu(seconds), flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
if sys.argv[4] == "uvloop":
    import uvloop
    uvloop.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[5])))
else:
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[5])))
"""


def run_child(db: Path, n: int, mode: str, loop: str, idle: float) -> dict[str, Any]:
    """Pick-up latencies (ms) and idle CPU (% of a core) of one child runtime."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(n), mode, loop, str(idle)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    word, bare, busy = child.stdout.readline().split()
    assert word == "IDLE"
    total: list[float] = []
    pickup: list[float] = []
    calls: list[float] = []
    # The verdict is polled on one connection kept open (as wait_for_receipt does), so
    # that opening one per poll (~0.7 ms here) is not counted as the runtime's time.
    watch = sqlite3.connect(db, isolation_level=None)
    for i in range(n):
        time.sleep(random.uniform(0.2, 0.4))  # let the runtime go idle
        t0 = time.perf_counter()
        seq = submit(db, SendRequest(f"w{i}", "bench.inbox", str(i)))
        t1 = time.perf_counter()
        while status(watch, seq) == "pending":
            time.sleep(0.0002)
        t2 = time.perf_counter()
        total.append((t2 - t0) * 1e3)
        pickup.append((t2 - t1) * 1e3)
        calls.append((t1 - t0) * 1e3)
        assert receipt(db, seq).status == "accepted"
    watch.close()
    child.stdin.close()
    child.wait(timeout=30)
    return {
        "total": total, "pickup": pickup, "submit": calls,
        "bare_cpu": float(bare), "idle_cpu": float(busy),
    }  # fmt: skip


def status(conn: sqlite3.Connection, seq: int) -> str:
    """Request ``seq``'s status, read on ``conn``."""
    row = conn.execute("SELECT status FROM inbox WHERE seq = ?", (seq,)).fetchone()
    return str(row[0])


def sqlite_floor(db: Path, n: int) -> list[float]:
    """INSERT + SELECT on the same file: any hand-off through the file costs this."""
    floor: list[float] = []
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (x)")
    for i in range(n):
        t0 = time.perf_counter()
        conn.execute("INSERT INTO bench_floor VALUES (?)", (i,))
        conn.execute("SELECT count(*) FROM bench_floor").fetchone()
        floor.append((time.perf_counter() - t0) * 1e3)
    conn.close()
    return floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle measured")
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--json", dest="out")
    args = parser.parse_args()
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("wake", "poll"):
            runs[mode] = run_child(Path(tmp) / f"{mode}.db", args.n, mode, args.loop, args.idle)
        floor = sqlite_floor(Path(tmp) / "wake.db", min(args.n, 200))
    p50 = percentile(floor, 50)
    rows = [
        {"path": "sqlite insert+select (floor)", "p50_ms": p50, "p99_ms": percentile(floor, 99),
         "max_ms": max(floor), "p50_vs_floor": 1.0, "submit_call_p50_ms": None,
         "pickup_p50_ms": None, "idle_cpu_pct": None},
        {"path": "event loop alone (idle baseline)", "p50_ms": None,
         "p99_ms": None, "max_ms": None, "p50_vs_floor": None, "submit_call_p50_ms": None,
         "pickup_p50_ms": None, "idle_cpu_pct": runs["wake"]["bare_cpu"]},
    ]  # fmt: skip
    for mode, label in (("wake", "submit -> accepted (wake)"), ("poll", "... poll only (before)")):
        run = runs[mode]
        rows.append(
            {"path": label, "p50_ms": percentile(run["total"], 50),
             "p99_ms": percentile(run["total"], 99), "max_ms": max(run["total"]),
             "p50_vs_floor": percentile(run["total"], 50) / p50,
             "submit_call_p50_ms": percentile(run["submit"], 50),
             "pickup_p50_ms": percentile(run["pickup"], 50),
             "idle_cpu_pct": run["idle_cpu"]}
        )  # fmt: skip
    extra = {
        "requests": args.n,
        "loop": args.loop,
        "idle_seconds": args.idle,
        "target_p50_ms": 5,
        "target_idle_cpu_pct": 0,
    }
    report(f"inbox-{args.loop}", rows, extra, args.out)


if __name__ == "__main__":
    main()
