"""A long run of short workflows, without and with retention: file size and event rate.

Run: python benchmarks/retention.py [--seconds 60] [--retention 10] [--batch 200] [--json PATH]

Each round starts ``batch`` instances that each wait for one event, sends each its
event and waits for them all to finish, again and again for ``--seconds``. Once a
second it notes the file's size (database + ``-wal``) and the events completed in
that second. With ``--retention`` seconds, finished instances are deleted in the
background while the load goes on: nothing is due in the first ``--retention``
seconds, after which the background purge runs all the time (about once per 1% of
the retention period). Targets: with retention the file stays flat (SQLite reuses the
freed pages), and the rate while purging is not below the rate before anything was
due, nor below the rate of the same run without retention.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import report

import actorflow as af
from actorflow.store.sqlite import connect_outside

done = af.Event("bench.retention.done", int)


@af.workflow(name="bench.retention.short")
async def short(ctx: af.Context[None]) -> int:
    return await ctx.wait_event(done)


def file_bytes(path: Path) -> int:
    """The database and its write-ahead log, as they are on disk now."""
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def stored_instances(path: Path) -> int:
    conn = connect_outside(path)  # holds the file's descriptor: safe beside the runtime
    try:
        return int(conn.execute("SELECT count(*) FROM snapshots").fetchone()[0])
    finally:
        conn.close()


async def long_run(
    path: Path, seconds: float, batch: int, retention: float | None
) -> dict[str, Any]:
    """Rounds of ``batch`` short workflows for ``seconds``; one sample a second."""
    ids = itertools.count()
    samples: list[dict[str, Any]] = []
    async with af.Runtime(path, retention=retention) as rt:
        began = time.perf_counter()
        window_start, events = began, 0
        while time.perf_counter() - began < seconds:
            names = [f"w{next(ids)}" for _ in range(batch)]
            handles = await asyncio.gather(*(rt.start(short, id=n) for n in names))
            await asyncio.gather(*(rt.send(n, done, i) for i, n in enumerate(names)))
            await asyncio.gather(*(h.result() for h in handles))
            events += batch
            now = time.perf_counter()
            if now - window_start >= 1.0:
                count = stored_instances(path)
                samples.append(
                    {
                        "t": round(now - began, 1),
                        "events_per_s": events / (now - window_start),
                        "file_bytes": file_bytes(path),
                        "stored": count,
                    }
                )
                window_start, events = now, 0
    return {"samples": samples, "total": next(ids)}


def summary(name: str, run: dict[str, Any], due: float) -> dict[str, Any]:
    """Rates before anything is due (``t < due``) and once the purging goes on."""
    samples = run["samples"][1:]  # the first second warms up
    before = [s["events_per_s"] for s in samples if s["t"] < due]
    after = [s["events_per_s"] for s in samples if s["t"] >= due + 1]
    half = len(samples) // 2
    return {
        "run": name,
        "instances": run["total"],
        "events_per_s": statistics.mean(s["events_per_s"] for s in samples),
        "rate_before_due": statistics.mean(before) if before else float("nan"),
        "rate_while_purging": statistics.mean(after) if after else float("nan"),
        "worst_second": min(s["events_per_s"] for s in samples),
        "mb_at_half": samples[half]["file_bytes"] / 1e6,
        "mb_at_end": samples[-1]["file_bytes"] / 1e6,
        "stored_at_end": samples[-1]["stored"],
    }


def timeline(run: dict[str, Any]) -> list[float]:
    """The file's size in MB every ten seconds."""
    return [round(s["file_bytes"] / 1e6, 2) for s in run["samples"][9::10]]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--retention", type=float, default=10.0, help="seconds")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        kept = await long_run(Path(tmp) / "kept.db", args.seconds, args.batch, None)
        purged = await long_run(Path(tmp) / "purged.db", args.seconds, args.batch, args.retention)
    rows = [
        summary("keep forever", kept, args.retention),
        summary(f"retention {args.retention:g}s", purged, args.retention),
    ]
    extra = {
        "seconds": args.seconds,
        "batch": args.batch,
        "size_growth_with_retention": rows[1]["mb_at_end"] / rows[1]["mb_at_half"],
        "rate_while_purging_vs_before": rows[1]["rate_while_purging"] / rows[1]["rate_before_due"],
        "rate_while_purging_vs_keep_forever": rows[1]["rate_while_purging"]
        / rows[0]["rate_while_purging"],
        "mb_every_10s_keep_forever": timeline(kept),
        "mb_every_10s_retention": timeline(purged),
    }
    report("retention", rows, extra, args.json)


if __name__ == "__main__":
    asyncio.run(main())
