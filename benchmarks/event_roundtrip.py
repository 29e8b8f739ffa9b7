"""N instances each wait for one event; send them; measure the durable round trip.

Run: python benchmarks/event_roundtrip.py [--n 10000] [--durability normal|full]
     [--loop asyncio|uvloop] [--steady 0.5] [--single 300] [--max-loaded none|N]
     [--repeat 1] [--gc-freeze] [--json PATH]
     python benchmarks/event_roundtrip.py --db postgresql://... [--procs 1,2,4]
     [--route own,next] [--failover]
     (PostgreSQL, several runtime processes, failover: see benchmarks/pg_roundtrip.py)

Three measurements, each for actorflow and for same-run baselines:

- burst: all N events sent at once (events/s, send-to-resume p50/p99);
- steady: N events sent at a fixed rate, ``--steady`` (0.5) times actorflow's burst
  rate of this run, the same rate for every run (latency p50/p99);
- single: one event at a time with N instances parked (send-to-resume p50/p99).

Baselines: plain asyncio futures (no durability at all); asyncio + sqlite3 group
commit (the durable floor: a writer task commits everything queued in one loop turn
with one ``executemany`` in one transaction on one worker thread, as aiosqlite does,
then resolves one future per event); and, for single events, a raw sqlite3 INSERT +
COMMIT with the same ``synchronous`` (``FULL`` with ``--durability full``). Ratios
compare actorflow with the group-commit baseline: burst events/s, and steady p50
latency (baseline p50 / actorflow p50, so higher is better, 1.0 is parity).
Targets (issue #13): burst and steady >= 0.25; single p50 < 0.2 ms (normal) and
within 2x of the raw sqlite3 commit (full).

Where the time goes, per event of each phase: ``cpu_us`` (CPU time of the process,
every thread, so the store's too), ``gc_us`` (garbage collections), ``gen2`` (full
collections: each walks every loaded instance's objects) and the checkpoints that ran
(they stop commits meanwhile). The machine this runs on is usually shared: ``--repeat
K`` runs K rounds and reports the median of each ratio (the tables show the last
round). ``--gc-freeze``: ``gc.freeze()`` once the instances parked, as an application
may (README, Performance).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sqlite3
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
from _common import GcMeter, percentile, report, rss_bytes

import actorflow as af
from actorflow.host.commits import Commits

wake = af.Event("bench.wake", int)
resumed: dict[str, float] = {}
Stats = dict[str, Any]
checkpoints = [0, 0.0]  # how many the runtime made, and the seconds they took


def count_checkpoints() -> None:
    """Count the runtime's checkpoints and their time (they stop its commits meanwhile)."""
    checkpoint = Commits.checkpoint

    async def counted(self: Commits) -> None:
        t0 = time.perf_counter()
        await checkpoint(self)
        checkpoints[0] += 1
        checkpoints[1] += time.perf_counter() - t0

    Commits.checkpoint = counted  # type: ignore[method-assign]


class Phase:
    """CPU time, collections and checkpoints of one measured phase, per event."""

    def __init__(self, meter: GcMeter) -> None:
        self._meter = meter
        self._cpu = time.process_time()
        self._gc = meter.snapshot()
        self._checkpoints = list(checkpoints)

    def stats(self, prefix: str, events: int) -> Stats:
        """``prefix``_cpu_us (process CPU, all threads), _gc_us (collections), _gen2 (full
        collections, in all) and _checkpoints (in all, with their seconds)."""
        runs, seconds, _ = self._meter.snapshot()
        return {
            f"{prefix}_cpu_us": (time.process_time() - self._cpu) / events * 1e6,
            f"{prefix}_gc_us": (seconds - self._gc[1]) / events * 1e6,
            f"{prefix}_gen2": runs[2] - self._gc[0][2],
            f"{prefix}_checkpoints": checkpoints[0] - self._checkpoints[0],
            f"{prefix}_checkpoint_s": checkpoints[1] - self._checkpoints[1],
        }


@af.workflow(name="bench.roundtrip")
async def roundtrip(ctx: af.Context[None]) -> int:
    value = await ctx.wait_event(wake)
    resumed[ctx.workflow_id] = time.perf_counter()  # benchmark probe, not durable state
    return value


COST_COLUMNS = ["cpu_us", "gc_us", "gen2", "checkpoints", "checkpoint_s"]


def latency_stats(prefix: str, lat_ms: list[float]) -> Stats:
    if not lat_ms:
        return {}
    return {f"{prefix}_p50_ms": percentile(lat_ms, 50), f"{prefix}_p99_ms": percentile(lat_ms, 99)}


async def paced(n: int, rate: float, send: Callable[[int], Awaitable[None]]) -> float:
    """Send events 0..n-1 at ``rate`` per second, each in its own task; the seconds it took."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    t0 = loop.time()
    for i in range(n):
        due = t0 + i / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        tasks.append(loop.create_task(send(i)))  # type: ignore[arg-type]
    await asyncio.gather(*tasks)
    return loop.time() - t0


# -- baseline 1: plain futures ------------------------------------------------------------
async def futures_baseline(n: int) -> Stats:
    """n tasks park on a future each; resolving it is the 'event'."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(n)]
    woke: list[float] = [0.0] * n

    async def waiter(i: int) -> int:
        value: int = await futures[i]
        woke[i] = time.perf_counter()
        return value

    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    tasks = [loop.create_task(waiter(i)) for i in range(n)]
    await asyncio.sleep(0)
    started = time.perf_counter() - t0
    rss1 = rss_bytes()
    sent_at = [0.0] * n
    t1 = time.perf_counter()
    for i, f in enumerate(futures):
        sent_at[i] = time.perf_counter()
        f.set_result(i)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t1
    lat = [(woke[i] - sent_at[i]) * 1e3 for i in range(n)]
    return {
        "starts_per_s": n / started,
        "burst_events_per_s": n / elapsed,
        **latency_stats("burst", lat),
        "bytes_per_waiter": (rss1 - rss0) / n,
    }


# -- baseline 2: asyncio + sqlite3 group commit --------------------------------------------
class GroupCommitLog:
    """The durable floor: events queued in one loop turn are committed by one writer task
    in one transaction (one ``executemany``) on one worker thread; each event's future is
    resolved after its commit."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.execute("CREATE TABLE IF NOT EXISTS log (wf TEXT, record BLOB)")
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="group-commit")
        self._queue: list[tuple[tuple[str, bytes], asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def append(self, wf: str, record: bytes) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self._queue.append(((wf, record), future))
        self._wakeup.set()
        return future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._queue = self._queue, []
            if batch:
                await loop.run_in_executor(self._thread, self._commit, [row for row, _ in batch])
                for _, future in batch:
                    future.set_result(None)

    def _commit(self, rows: list[tuple[str, bytes]]) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.executemany("INSERT INTO log VALUES (?, ?)", rows)
        self._conn.execute("COMMIT")

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._thread.shutdown()
        self._conn.close()


async def group_commit_baseline(
    path: Path, synchronous: str, n: int, rate: float | None, singles: int
) -> Stats:
    """Parked tasks woken after their event is committed by the group-commit writer."""
    log = GroupCommitLog(path, synchronous)
    stats: Stats = {}
    try:
        stats.update(await group_commit_mode(log, "single", singles, None))
        stats.update(await group_commit_mode(log, "burst", n, None))
        if rate is not None:
            stats.update(await group_commit_mode(log, "steady", n, rate))
    finally:
        await log.close()
    return stats


async def group_commit_mode(
    log: GroupCommitLog, mode: str, count: int, rate: float | None
) -> Stats:
    """One measurement (single, burst or steady) of ``count`` events on ``log``."""
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[int]] = [loop.create_future() for _ in range(count)]
    woke = [0.0] * count
    sent = [0.0] * count

    async def waiter(i: int) -> None:
        await futures[i]
        woke[i] = time.perf_counter()

    async def send(i: int) -> None:
        sent[i] = time.perf_counter()
        await log.append(f"w{i}", msgspec.msgpack.encode(["event", f"w{i}", "bench.wake", i]))
        futures[i].set_result(i)

    waiters = [loop.create_task(waiter(i)) for i in range(count)]
    await asyncio.sleep(0)
    t0, cpu0 = time.perf_counter(), time.process_time()
    if mode == "single":
        for i in range(count):
            await send(i)
            await waiters[i]
    elif mode == "burst":
        await asyncio.gather(*(send(i) for i in range(count)))
    else:
        assert rate is not None
        await paced(count, rate, send)
    await asyncio.gather(*waiters)
    elapsed = time.perf_counter() - t0
    stats = latency_stats(mode, [(woke[i] - sent[i]) * 1e3 for i in range(count)])
    stats[f"{mode}_cpu_us"] = (time.process_time() - cpu0) / count * 1e6
    if mode == "burst":
        stats["burst_events_per_s"] = count / elapsed
    return stats


# -- baseline 3: one raw sqlite3 commit -----------------------------------------------------
def raw_commit_baseline(path: Path, synchronous: str, samples: int) -> Stats:
    """One INSERT + COMMIT at a time, no event loop: what one durable event costs at least."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE IF NOT EXISTS log (wf TEXT, record BLOB)")
    record = msgspec.msgpack.encode(["event", "w0", "bench.wake", 0])
    lat = []
    for i in range(samples):
        t0 = time.perf_counter()
        conn.execute("INSERT INTO log VALUES (?, ?)", (f"w{i}", record))
        lat.append((time.perf_counter() - t0) * 1e3)
    conn.close()
    return latency_stats("single", lat)


# -- actorflow -------------------------------------------------------------------------------
async def actorflow_run(
    n: int,
    path: Path | None,
    durability: str,
    steady: float | None,
    singles: int,
    max_loaded: int | None,
    freeze: bool = False,
) -> Stats:
    """n instances (plus ``singles`` for the single-event samples) park on an event;
    then single sends, a burst, and (n more instances, parked after the burst) a paced
    run: each with n instances parked. ``freeze``: ``gc.freeze()`` once they parked."""
    resumed.clear()
    gc.collect()
    rss0 = rss_bytes()
    stats: Stats = {}
    meter = GcMeter()
    runtime = af.Runtime(path, durability=durability, max_loaded=max_loaded)  # type: ignore[arg-type]
    async with runtime as rt:
        t0 = time.perf_counter()
        burst_ids = [f"b{i}" for i in range(n)]
        handles = await asyncio.gather(*(rt.start(roundtrip, id=i) for i in burst_ids))
        stats["starts_per_s"] = n / (time.perf_counter() - t0)
        gc.collect()
        stats["bytes_per_waiter"] = (rss_bytes() - rss0) / n
        single_ids = [f"s{i}" for i in range(singles)]
        await asyncio.gather(*(rt.start(roundtrip, id=i) for i in single_ids))
        if freeze:
            gc.freeze()
        meter.start()
        sent_at: dict[str, float] = {}

        async def send(wf: str, value: int) -> None:
            sent_at[wf] = time.perf_counter()
            await rt.send(wf, wake, value)

        def lat(ids: list[str]) -> list[float]:
            return [(resumed[i] - sent_at[i]) * 1e3 for i in ids]

        # Single events first, with all of the others parked.
        phase = Phase(meter)
        for i, wf in enumerate(single_ids):
            await send(wf, i)
            await rt.handle(wf).result()
        stats.update(latency_stats("single", lat(single_ids)))
        stats.update(phase.stats("single", max(singles, 1)))

        phase = Phase(meter)
        t1 = time.perf_counter()
        await asyncio.gather(*(send(wf, i) for i, wf in enumerate(burst_ids)))
        results = await asyncio.gather(*(h.result() for h in handles))
        stats["burst_events_per_s"] = n / (time.perf_counter() - t1)
        stats.update(phase.stats("burst", n))
        assert results == list(range(n))
        stats.update(latency_stats("burst", lat(burst_ids)))

        if steady is not None:
            steady_ids = [f"r{i}" for i in range(n)]
            await asyncio.gather(*(rt.start(roundtrip, id=i) for i in steady_ids))
            if freeze:
                gc.freeze()
            rate = steady * stats["burst_events_per_s"]

            async def paced_send(i: int) -> None:
                await send(steady_ids[i], i)
                await rt.handle(steady_ids[i]).result()

            stats["steady_rate"] = rate
            phase = Phase(meter)
            stats["steady_seconds"] = await paced(n, rate, paced_send)
            stats.update(phase.stats("steady", n))
            stats.update(latency_stats("steady", lat(steady_ids)))
    meter.stop()
    if freeze:
        gc.unfreeze()
    return stats


async def traced_bytes(n: int) -> Stats:
    """Python heap per parked instance (tracemalloc, in-memory store): what RSS holds
    for each without the allocator's and SQLite's caches."""
    async with af.Runtime(None, max_loaded=None) as rt:
        await asyncio.gather(*(rt.start(roundtrip, id=f"warm{i}") for i in range(200)))
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await asyncio.gather(*(rt.start(roundtrip, id=f"t{i}") for i in range(n)))
        await rt.checkpoint()
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    return {"bytes_per_waiter": traced / n}


async def measure(args: argparse.Namespace, synchronous: str) -> list[tuple[str, Stats]]:
    """One round: every baseline and actorflow, each (name, stats)."""
    base = await futures_baseline(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        flow = await actorflow_run(
            args.n, Path(tmp) / "bench.db", args.durability, args.steady, args.single,
            args.max_loaded, args.gc_freeze,
        )  # fmt: skip
        rate = flow.get("steady_rate")
        group = await group_commit_baseline(
            Path(tmp) / "group.db", synchronous, args.n, rate, args.single
        )
        raw = raw_commit_baseline(Path(tmp) / "raw.db", synchronous, max(args.single, 200))
        memory = await actorflow_run(
            args.n, None, args.durability, None, 0, args.max_loaded, args.gc_freeze
        )
        memory.pop("bytes_per_waiter")  # the same objects as on SQLite; RSS noise here
        traced = await traced_bytes(min(args.n, 5000))
    return [
        ("asyncio futures (no durability)", base),
        (f"asyncio+sqlite3 group commit ({synchronous})", group),
        (f"raw sqlite3 commit ({synchronous})", raw),
        (f"actorflow sqlite ({args.durability})", flow),
        ("actorflow in memory", memory),
        ("actorflow, Python heap only (tracemalloc)", traced),
    ]


def ratios_of(runs: list[tuple[str, Stats]]) -> dict[str, float | None]:
    """actorflow against the baselines of the same round (see the module docstring)."""
    base, group, raw, flow = (stats for _, stats in runs[:4])
    steady = flow.get("steady_p50_ms")
    return {
        "burst_vs_group_commit": flow["burst_events_per_s"] / group["burst_events_per_s"],
        "steady_p50_vs_group_commit": group["steady_p50_ms"] / steady if steady else None,
        "single_p50_vs_group_commit": flow["single_p50_ms"] / group["single_p50_ms"],
        "single_p50_vs_raw_commit": flow["single_p50_ms"] / raw["single_p50_ms"],
        "burst_cpu_vs_group_commit": flow["burst_cpu_us"] / group["burst_cpu_us"],
        "burst_vs_futures": flow["burst_events_per_s"] / base["burst_events_per_s"],
        "bytes_vs_futures": flow["bytes_per_waiter"] / max(base["bytes_per_waiter"], 1),
    }


async def run(args: argparse.Namespace) -> None:
    synchronous = "FULL" if args.durability == "full" else "NORMAL"
    loop_kind = type(asyncio.get_running_loop()).__module__.split(".")[0]
    rounds = []
    first: list[tuple[str, Stats]] = []
    for _ in range(args.repeat):
        runs = await measure(args, synchronous)
        rounds.append(ratios_of(runs))
        first = first or runs
    # RSS grows only in the first round: later ones reuse the memory it freed.
    for (_, stats), (_, was) in zip(runs, first, strict=True):
        stats["bytes_per_waiter"] = was.get("bytes_per_waiter")
    for later in rounds[1:]:
        later["bytes_vs_futures"] = rounds[0]["bytes_vs_futures"]
    columns = [
        "burst_events_per_s", "burst_p50_ms", "burst_p99_ms", "steady_p50_ms", "steady_p99_ms",
        "single_p50_ms", "single_p99_ms", "starts_per_s", "bytes_per_waiter",
    ]  # fmt: skip
    rows = [{"run": name, **{c: stats.get(c) for c in columns}} for name, stats in runs]
    # Where actorflow's time goes, per event of each phase (CPU: the process, all threads).
    costs = [
        {"run": name, "phase": phase, **{c: stats.get(f"{phase}_{c}") for c in COST_COLUMNS}}
        for name, stats in runs[1:]
        for phase in ("single", "burst", "steady")
        if stats.get(f"{phase}_cpu_us") is not None
    ]
    # The ratios: the median of the rounds (the tables show the last round).
    ratios = {
        key: statistics.median(values) if (values := [r[key] for r in rounds if r[key]]) else None
        for key in rounds[0]
    }
    extra = {
        "n": args.n,
        "max_loaded": args.max_loaded,
        "loop": loop_kind,
        "durability": args.durability,
        "steady_rate_per_s": runs[3][1].get("steady_rate"),
        "single_samples": args.single,
        "gc_freeze": args.gc_freeze,
        "rounds": len(rounds),
        **ratios,
        "targets": "burst/steady >= 0.25; single p50 < 0.2 ms (normal), <= 2x raw (full)",
    }
    name = f"event_roundtrip-{loop_kind}-{args.durability}" + ("-frozen" if args.gc_freeze else "")
    report(name, rows, {"costs": costs, **extra, "each_round": rounds}, args.json, tables=[costs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help="instances (default 10,000; on PostgreSQL: per "
        "process, 2,000; with --failover, 20 per process)",
    )
    parser.add_argument("--durability", default="normal", choices=["normal", "full"])
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--steady", type=float, default=0.5, help="fraction of burst rate")
    parser.add_argument("--single", type=int, default=300, help="single-event samples")
    parser.add_argument(
        "--max-loaded",
        type=lambda v: None if v == "none" else int(v),
        default=None,
        help="the runtime's max_loaded (default none: every instance stays loaded, so "
        "this measures the hot path; parked.py measures unloaded instances)",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() once the instances parked (an application's choice: the "
        "collector then skips them)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the ratios are their median")
    parser.add_argument("--json", "--out", dest="json", default=None)
    parser.add_argument(
        "--db",
        default=None,
        help="a postgresql:// URL, or 'pg' for a throwaway server: "
        "run benchmarks/pg_roundtrip.py's measurements instead (SQLite without it)",
    )
    parser.add_argument("--procs", default="1,2,4", help="PostgreSQL: runtime process counts")
    parser.add_argument(
        "--failover",
        action="store_true",
        help="PostgreSQL: SIGKILL one of three runtime "
        "processes, time the takeover of its instances",
    )
    parser.add_argument(
        "--route",
        default="own,next",
        help="PostgreSQL: each process sends to its own instances (own), to the next "
        "process's (next), or both",
    )
    parser.add_argument("--lease", type=float, default=2.0, help="PostgreSQL --failover: lease=")
    args = parser.parse_args()
    if args.db is not None:
        import pg_roundtrip

        pg_roundtrip.run(args)
        return
    if args.n is None:
        args.n = 10_000
    count_checkpoints()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(run(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
