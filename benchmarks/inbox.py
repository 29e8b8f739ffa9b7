"""How fast a running runtime picks up requests from another process (the inbox).

Run: python benchmarks/inbox.py [--n 200] [--json PATH]

A child process owns the database and runs N instances that each wait for one
event; this process submits one ``send`` request at a time through
``actorflow.inbox`` (what the CLI does), with a random pause before each (so the
runtime's poll has backed off to its slowest rate, as on an idle system), and
measures submit-to-accepted latency. Baseline: the same pause and a plain SQLite
INSERT + SELECT on the same file, i.e. the floor of any cross-process hand-off
through the file. The issue's target is pick-up within 100 ms.
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

from _common import percentile, report

from actorflow.inbox import SendRequest, receipt, submit

CHILD = """
import asyncio, sys, actorflow as af
wake = af.Event("bench.inbox", int)
@af.workflow(name="bench.inbox")
async def waiter(ctx) -> int:
    return await ctx.wait_event(wake)
async def main(db, n):
    async with af.Runtime(db) as rt:
        for i in range(n):
            await rt.start(waiter, id=f"w{i}")
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--json", dest="out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "inbox.db"
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), str(args.n)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "READY"
        pickup: list[float] = []
        for i in range(args.n):
            time.sleep(random.uniform(0.2, 0.4))  # let the poll back off fully
            t0 = time.perf_counter()
            seq = submit(db, SendRequest(f"w{i}", "bench.inbox", str(i)))
            while receipt(db, seq).status == "pending":
                time.sleep(0.001)
            pickup.append((time.perf_counter() - t0) * 1e3)
        child.stdin.close()
        child.wait(timeout=30)
        floor: list[float] = []
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (x)")
        for i in range(min(args.n, 200)):
            t0 = time.perf_counter()
            conn.execute("INSERT INTO bench_floor VALUES (?)", (i,))
            conn.execute("SELECT count(*) FROM bench_floor").fetchone()
            floor.append((time.perf_counter() - t0) * 1e3)
        conn.close()
    rows = [
        {"path": "sqlite insert+select (floor)", "p50_ms": percentile(floor, 50),
         "p99_ms": percentile(floor, 99), "max_ms": max(floor)},
        {"path": "inbox submit -> accepted", "p50_ms": percentile(pickup, 50),
         "p99_ms": percentile(pickup, 99), "max_ms": max(pickup)},
    ]  # fmt: skip
    report("inbox", rows, {"requests": args.n, "target_ms": 100}, args.out)


if __name__ == "__main__":
    main()
