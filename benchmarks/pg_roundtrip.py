"""event_roundtrip.py on PostgreSQL: round trips with 1, 2 and 4 runtime processes beside
raw asyncpg, and the failover time after SIGKILL of one of three processes.

Run: python benchmarks/event_roundtrip.py --db postgresql://... [--procs 1,2,4]
       [--route own,next] [--n 2000] [--single 300] [--repeat 1] [--json PATH]
     python benchmarks/event_roundtrip.py --db postgresql://... --failover
       [--lease 2.0] [--n 20] [--repeat 1] [--json PATH]

``--db pg`` starts a throwaway server instead (tests/pg_server.py: PostgreSQL 15's
initdb; its ``fsync`` is off, so the numbers are the clients' and the round trips',
not the disk's).

Round trips, for each process count N (a run of its own, fresh processes): each of
the N processes opens ``af.Runtime(url)`` and starts its own ``--n`` instances, each
parked on ``ctx.wait_event``; the processes wait at a barrier, then each measures, as
event_roundtrip.py does, a burst (``--n`` events sent at once, each awaited until its
result is out: round trips/s over all processes from the first send to the last
result; send-to-resume p50/p99) and, after a second barrier, single events (one at a
time per process, send then result; ``--single`` of them). Each process sends to its
own instances (route ``own``) and, in a run of its own with 2 processes or more, to
the next process's (``next``: every send goes to another runtime; at most
:data:`IN_FLIGHT` round trips in flight per process). The same-run
baseline: N processes of raw asyncpg with the same batching, a group commit (what one
loop turn queued goes in one ``INSERT ... SELECT FROM unnest(...)`` of one row per
event, one transaction, then each event's future is resolved: commit = round trip),
started at a barrier too. Per row: ``vs_raw``, round trips/s over the baseline's of
the same process count (higher is better); ``single_p50_vs_raw``, single p50 over the
baseline's (lower is better); ``scaling``, round trips/s over the same run's at the
first process count. With ``--repeat K`` the table shows the last round and each
ratio's median over the rounds is beside it (``*_median``).

Failover (``--failover``): three runtime processes with ``lease=--lease`` each start
``--n`` instances parked on an event; the first is killed (SIGKILL); at once one of
the survivors sends an event to each of the dead one's instances (at most
:data:`IN_FLIGHT` at a time) and waits for their results: a survivor must take them
over and replay them. Reported: the seconds from the kill until no instance is owned
by the dead runtime any more (``taken_over_s``, read from actorflow's ``instances``
table; the design's promise: within one lease plus one second) and until the first,
median and last result, against the lease; when the sends returned (durable while
nobody ran the instances); which survivor took them over; and that each took its
event exactly once. Each round runs in a fresh scratch database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import signal
import statistics
import sys
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Callable, Coroutine, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from _common import percentile, report

import actorflow as af
from actorflow.store.url import redact

wake = af.Event("bench.pg.wake", int)
resumed: dict[str, float] = {}  # workflow id -> when it resumed (a probe, not durable)
Stats = dict[str, Any]
RAW_TABLE = "public.bench_roundtrip_raw"
BARRIER_TIMEOUT = 300.0
START_CHUNK = 100
"""Instances started at once (each start is a transaction of its own on the runtime's
pool of 4 connections: thousands at once only queue there)."""
IN_FLIGHT = 50
"""Round trips in flight at once per process when the instances are another process's:
each send and result is a few reads and a transaction on the pool, and the owner's
verdict, one request after the other; a bounded number in flight gives latencies of
the path rather than of a queue thousands long (the throughput is the same)."""
ctx_mp = multiprocessing.get_context("fork")  # the children inherit the registered workflows


@af.workflow(name="bench.pg.roundtrip")
async def roundtrip(ctx: af.Context[None]) -> int:
    value = await ctx.wait_event(wake)
    resumed[ctx.workflow_id] = time.perf_counter()
    return value


@af.workflow(name="bench.pg.failover")
async def parked(ctx: af.Context[None]) -> list[int]:
    """Takes one event; says which process ran it to the end (the one that took it over)."""
    value = await ctx.wait_event(wake)
    return [value, os.getpid()]


def latency_stats(prefix: str, lat_ms: list[float]) -> Stats:
    """``prefix``_p50_ms and _p99_ms of ``lat_ms`` (``None`` if empty)."""
    if not lat_ms:
        return {f"{prefix}_p50_ms": None, f"{prefix}_p99_ms": None}
    return {f"{prefix}_p50_ms": percentile(lat_ms, 50), f"{prefix}_p99_ms": percentile(lat_ms, 99)}


async def start_all(rt: af.Runtime, workflow: Any, ids: list[str]) -> None:
    """Start an instance of ``workflow`` for each of ``ids``, :data:`START_CHUNK` at once."""
    for chunk in range(0, len(ids), START_CHUNK):
        await asyncio.gather(*(rt.start(workflow, id=i) for i in ids[chunk : chunk + START_CHUNK]))


# -- the children of a round-trip run ------------------------------------------------------
class Barrier:
    """The processes of one run start each phase together (``await barrier.wait()``)."""

    def __init__(self, barrier: Any) -> None:
        self._barrier = barrier

    async def wait(self) -> None:
        """Wait (in a thread, so the runtime's background work goes on) for the others."""
        await asyncio.get_running_loop().run_in_executor(None, self._barrier.wait)

    def abort(self) -> None:
        """Break the barrier: the others stop waiting (this process failed)."""
        self._barrier.abort()


Measure = Callable[[str, int, int, Barrier, str, str], Coroutine[Any, Any, Stats]]


def dump_tasks() -> None:
    """Print every task's stack to stderr (``kill -USR1`` a child that seems stuck)."""
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()


async def debuggable(work: Coroutine[Any, Any, Stats]) -> Stats:
    """``work``, with :func:`dump_tasks` on SIGUSR1."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
    return await work


def child(
    measure: Measure, url: str, n: int, singles: int, barrier: Any, tag: str, peer: str, out: Any
) -> None:
    """One process of a run: ``measure``'s stats, or the error, on queue ``out``."""
    wait = Barrier(barrier)
    try:
        stats = asyncio.run(debuggable(measure(url, n, singles, wait, tag, peer)))
    except BaseException:
        wait.abort()
        out.put((tag, None, traceback.format_exc()))
    else:
        out.put((tag, stats, None))


async def flow_measure(
    url: str, n: int, singles: int, barrier: Barrier, tag: str, peer: str
) -> Stats:
    """One runtime process: starts ``n`` + ``singles`` parked instances named after
    ``tag``; then sends to those named after ``peer`` (its own, or another process's): a
    burst, then ``singles`` one by one. Its send times and its instances' resume times
    go to the parent, which pairs them."""
    stats: Stats = {}
    async with af.Runtime(url, max_loaded=None) as rt:
        began = time.perf_counter()
        ids = [f"{tag}b{i}" for i in range(n)] + [f"{tag}s{i}" for i in range(singles)]
        await start_all(rt, roundtrip, ids)
        stats["starts_per_s"] = len(ids) / (time.perf_counter() - began)
        sent_at: dict[str, float] = {}

        async def send(wf: str, value: int) -> None:
            sent_at[wf] = time.perf_counter()
            await rt.send(wf, wake, value)

        stats["sent_burst"] = sent_at
        burst_ids = [f"{peer}b{i}" for i in range(n)]
        await barrier.wait()  # every process's instances are parked
        stats["burst_began"] = time.perf_counter()
        if peer == tag:
            await asyncio.gather(*(send(wf, i) for i, wf in enumerate(burst_ids)))
            results = await asyncio.gather(*(rt.handle(wf).result() for wf in burst_ids))
        else:
            in_flight = asyncio.Semaphore(IN_FLIGHT)

            async def trip(wf: str, value: int) -> int:
                async with in_flight:
                    await send(wf, value)
                    return int(await rt.handle(wf).result())

            results = await asyncio.gather(*(trip(wf, i) for i, wf in enumerate(burst_ids)))
        stats["burst_ended"] = time.perf_counter()
        assert results == list(range(n)), "an event was lost or taken twice"

        await barrier.wait()
        stats["sent_single"] = sent_at = {}
        for i in range(singles):
            await send(f"{peer}s{i}", i)
            assert await rt.handle(f"{peer}s{i}").result() == i
        await barrier.wait()  # nobody closes (a burst of checkpoints) while others measure
        stats["resumed"] = dict(resumed)
    return stats


class RawGroupCommit:
    """The baseline's writer: the events queued in one loop turn go to the database in
    one INSERT of one row each, in one transaction (one round trip); then each event's
    future is resolved."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._queue: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def append(self, wf: str, record: bytes) -> asyncio.Future[None]:
        """Queue one row; the future is done once its commit is."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((wf, record, future))
        self._wakeup.set()
        return future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._queue = self._queue, []
            if batch:
                await self._conn.execute(
                    f"INSERT INTO {RAW_TABLE} (wf, record)"
                    " SELECT * FROM unnest($1::text[], $2::bytea[])",
                    [wf for wf, _, _ in batch],
                    [record for _, record, _ in batch],
                )
                for _, _, future in batch:
                    future.set_result(None)

    async def close(self) -> None:
        """Stop the writer."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def raw_measure(
    url: str, n: int, singles: int, barrier: Barrier, tag: str, peer: str
) -> Stats:
    """One baseline process: ``n`` parked futures, a burst, then ``singles`` one by one,
    each woken once its event's row is committed (``peer``: unused, all is local)."""
    conn = await asyncpg.connect(url)
    log = RawGroupCommit(conn)
    stats: Stats = {}
    try:
        for phase, count in (("burst", n), ("single", singles)):
            await barrier.wait()
            stats.update(await raw_phase(log, phase, count, f"{tag}{phase[0]}"))
        await barrier.wait()
    finally:
        await log.close()
        await conn.close()
    return stats


async def raw_phase(log: RawGroupCommit, phase: str, count: int, prefix: str) -> Stats:
    """``count`` events on ``log``: all at once (``burst``) or one by one (``single``)."""
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[int]] = [loop.create_future() for _ in range(count)]
    woke = [0.0] * count
    sent = [0.0] * count

    async def waiter(i: int) -> None:
        await futures[i]
        woke[i] = time.perf_counter()

    async def send(i: int) -> None:
        sent[i] = time.perf_counter()
        record = msgspec.msgpack.encode(["event", f"{prefix}{i}", "bench.pg.wake", i])
        await log.append(f"{prefix}{i}", record)
        futures[i].set_result(i)

    waiters = [loop.create_task(waiter(i)) for i in range(count)]
    began = time.perf_counter()
    if phase == "burst":
        await asyncio.gather(*(send(i) for i in range(count)))
    else:
        for i in range(count):
            await send(i)
            await waiters[i]
    await asyncio.gather(*waiters)
    return {
        f"{phase}_began": began,
        f"{phase}_ended": time.perf_counter(),
        f"{phase}_ms": [(woke[i] - sent[i]) * 1e3 for i in range(count)],
    }


def run_children(
    measure: Measure, url: str, procs: int, n: int, singles: int, tag: str, shift: int = 0
) -> list[Stats]:
    """``procs`` processes of ``measure``, started together, process k sending to the
    instances of process k + ``shift`` (modulo ``procs``); their stats (raises with the
    children's errors if one failed)."""
    barrier = ctx_mp.Barrier(procs, timeout=BARRIER_TIMEOUT)
    out = ctx_mp.Queue()
    children = [
        ctx_mp.Process(
            target=child,
            args=(
                measure,
                url,
                n,
                singles,
                barrier,
                f"{tag}p{k}",
                f"{tag}p{(k + shift) % procs}",
                out,
            ),
        )
        for k in range(procs)
    ]
    for process in children:
        process.start()
    found: list[Stats] = []
    errors: list[str] = []
    try:
        for _ in children:
            name, stats, error = out.get(timeout=BARRIER_TIMEOUT * 2)
            if error is not None:
                errors.append(f"{name}: {error}")
            else:
                found.append(stats)
    finally:
        for process in children:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {procs} processes failed:\n" + "\n".join(errors))
    return found


def paired(found: list[Stats]) -> list[Stats]:
    """Runtime processes' stats with their latencies: each send's time paired with the
    time its instance resumed, in whichever process owns it (``perf_counter`` is the
    machine's monotonic clock, the same in every process)."""
    resumed = {wf: at for stats in found for wf, at in stats["resumed"].items()}
    for stats in found:
        for phase in ("burst", "single"):
            sent = stats[f"sent_{phase}"]
            stats[f"{phase}_ms"] = [(resumed[wf] - at) * 1e3 for wf, at in sent.items()]
    return found


def combined(name: str, procs: int, n: int, found: list[Stats]) -> Stats:
    """The row of one run: round trips/s over all processes (first send to last result)
    and the latencies of all of them."""
    seconds = max(s["burst_ended"] for s in found) - min(s["burst_began"] for s in found)
    burst = [ms for s in found for ms in s["burst_ms"]]
    single = [ms for s in found for ms in s["single_ms"]]
    return {
        "run": name,
        "procs": procs,
        "round_trips": procs * n,
        "round_trips_per_s": procs * n / seconds,
        "starts_per_s": sum(s["starts_per_s"] for s in found)
        if "starts_per_s" in found[0]
        else None,
        **latency_stats("burst", burst),
        **latency_stats("single", single),
    }


async def scratch_table(url: str, create: bool) -> None:
    """Create (or drop) the baseline's table."""
    conn = await asyncpg.connect(url)
    try:
        if create:
            await conn.execute(
                f"DROP TABLE IF EXISTS {RAW_TABLE}; CREATE TABLE {RAW_TABLE}"
                " (seq BIGSERIAL PRIMARY KEY, wf TEXT NOT NULL, record BYTEA NOT NULL)"
            )
        else:
            await conn.execute(f"DROP TABLE IF EXISTS {RAW_TABLE}")
    finally:
        await conn.close()


RAW, OWN, NEXT = (
    "raw asyncpg group commit",
    "actorflow, own instances",
    f"actorflow, next process's ({IN_FLIGHT} in flight)",
)


def roundtrips(url: str, counts: list[int], n: int, singles: int, routes: list[str]) -> list[Stats]:
    """Each process count: the raw baseline, then actorflow with each process sending to
    its own instances (``own`` in ``routes``) and to the next process's (``next``, with
    2 processes or more: every send goes to another runtime, through the inbox); a row
    each, with its ratios to the baseline of its process count and to itself at the
    first count (``scaling``)."""
    asyncio.run(scratch_table(url, create=True))
    rows: list[Stats] = []
    stamp = f"{os.getpid()}x{int(time.time())}"  # ids unique across runs on one database
    try:
        for procs in counts:
            raw = combined(RAW, procs, n, run_children(raw_measure, url, procs, n, singles, "x"))
            rows.append(raw)
            for route, shift, name in (("own", 0, OWN), ("next", 1, NEXT)):
                if route not in routes or (shift and procs == 1):
                    continue
                tag = f"{route[0]}{stamp}n{procs}"
                found = paired(run_children(flow_measure, url, procs, n, singles, tag, shift))
                flow = combined(name, procs, n, found)
                flow["vs_raw"] = flow["round_trips_per_s"] / raw["round_trips_per_s"]
                flow["single_p50_vs_raw"] = (
                    flow["single_p50_ms"] / raw["single_p50_ms"] if singles else None
                )
                rows.append(flow)
    finally:
        asyncio.run(scratch_table(url, create=False))
    first: dict[str, float] = {}
    for row in rows:
        row.setdefault("vs_raw", None)
        row.setdefault("single_p50_vs_raw", None)
        # next process's at 1 process is its own: scale it against own instances there
        if row["run"] not in first:
            first[row["run"]] = first.get(OWN) or row["round_trips_per_s"]
        row["scaling"] = row["round_trips_per_s"] / first[row["run"]]
    return rows


# -- failover --------------------------------------------------------------------------------
def failover_child(url: str, name: str, n: int, lease: float, conn: Connection) -> None:
    """One of the three runtime processes: start ``n`` instances, say ``ready``, then
    do what the parent says: ``drive`` (send to the given instances, wait for their
    results) or ``stop``."""
    try:
        asyncio.run(failover_runtime(url, name, n, lease, conn))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


async def failover_runtime(url: str, name: str, n: int, lease: float, conn: Connection) -> None:
    """:func:`failover_child`'s runtime: its instances are ``{name}i0``, ``{name}i1``..."""
    loop = asyncio.get_running_loop()
    async with af.Runtime(url, lease=lease, max_loaded=None) as rt:
        await start_all(rt, parked, [f"{name}i{j}" for j in range(n)])
        conn.send(("ready", os.getpid()))
        command, *argv = await loop.run_in_executor(None, conn.recv)
        if command == "drive":
            victims, killed_at, timeout = argv
            sent: dict[str, float] = {}
            took: dict[str, float] = {}
            results: dict[str, list[int]] = {}

            in_flight = asyncio.Semaphore(IN_FLIGHT)

            async def one(value: int, wf: str) -> None:
                async with in_flight:
                    await rt.send(wf, wake, value)
                    sent[wf] = time.perf_counter() - killed_at
                    results[wf] = await rt.handle(wf).result()
                    took[wf] = time.perf_counter() - killed_at

            await asyncio.wait_for(
                asyncio.gather(*(one(v, wf) for v, wf in enumerate(victims))), timeout
            )
            conn.send(("done", {"sent_s": sent, "took_s": took, "results": results}))
            command, *argv = await loop.run_in_executor(None, conn.recv)
        assert command == "stop", command


async def owner_of(url: str, instance_id: str) -> str:
    """The runtime that owns ``instance_id`` (actorflow's ``instances`` table)."""
    conn = await asyncpg.connect(url)
    try:
        sql = "SELECT owner FROM actorflow.instances WHERE id = $1"
        return str(await conn.fetchval(sql, instance_id))
    finally:
        await conn.close()


async def taken_over(
    url: str, victims: list[str], dead: str, killed_at: float, timeout: float
) -> float:
    """Seconds from ``killed_at`` until runtime ``dead`` owns none of ``victims`` (read
    from actorflow's ``instances`` table every 10 ms)."""
    conn = await asyncpg.connect(url)
    try:
        sql = "SELECT count(*) FROM actorflow.instances WHERE id = ANY($1) AND owner = $2"
        while await conn.fetchval(sql, victims, dead):
            if time.perf_counter() - killed_at > timeout:
                raise RuntimeError(f"the dead runtime's instances not taken over in {timeout} s")
            await asyncio.sleep(0.01)
        return time.perf_counter() - killed_at
    finally:
        await conn.close()


def failover(url: str, n: int, lease: float, prefix: str) -> Stats:
    """Three runtimes; SIGKILL the first; the seconds until a survivor ran its instances
    (their ids begin with ``prefix``)."""
    prefix = f"{prefix}x{os.getpid()}x{int(time.time())}"
    pipes = [ctx_mp.Pipe() for _ in range(3)]
    children = [
        ctx_mp.Process(target=failover_child, args=(url, f"{prefix}p{k}", n, lease, pipes[k][1]))
        for k in range(3)
    ]
    for process in children:
        process.start()

    def answer(k: int, timeout: float) -> Any:
        if not pipes[k][0].poll(timeout):
            raise RuntimeError(f"runtime process {k} said nothing in {timeout} s")
        kind, payload = pipes[k][0].recv()
        if kind == "error":
            raise RuntimeError(f"runtime process {k} failed:\n{payload}")
        return payload

    try:
        pids = [answer(k, BARRIER_TIMEOUT) for k in range(3)]
        victims = [f"{prefix}p0i{j}" for j in range(n)]
        dead = asyncio.run(owner_of(url, victims[0]))
        killed_at = time.perf_counter()
        os.kill(children[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
        pipes[1][0].send(("drive", victims, killed_at, lease * 10 + 30))
        moved = asyncio.run(taken_over(url, victims, dead, killed_at, lease * 10 + 30))
        done = answer(1, lease * 10 + 60)
        for k in (1, 2):
            pipes[k][0].send(("stop",))
        for k in (1, 2):
            children[k].join(timeout=60)
    finally:
        for process in children:
            if process.is_alive():
                process.kill()
            process.join()
    took = sorted(done["took_s"].values())
    results = done["results"]
    owners = {pid: sum(1 for _, p in results.values() if p == pid) for pid in pids[1:]}
    return {
        "lease_s": lease,
        "instances": n,
        "taken_over_s": moved,
        "first_s": took[0],
        "p50_s": percentile(took, 50),
        "last_s": took[-1],
        "last_vs_lease": took[-1] / lease,
        "taken_within_lease_plus_1s": moved <= lease + 1.0,
        "send_returned_p50_s": percentile(sorted(done["sent_s"].values()), 50),
        "taken_over_by": {f"survivor {k}": owners[pid] for k, pid in enumerate(pids[1:], 1)},
        "exactly_once": all(results[wf][0] == v for v, wf in enumerate(victims)),
    }


# -- entry point -------------------------------------------------------------------------------
@contextlib.contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """A fresh database on ``url``'s server for one invocation (dropped at the end), so
    that no instance of an earlier run is taken over meanwhile; ``url`` itself if this
    user may not create databases."""
    name = f"actorflow_bench_{uuid.uuid4().hex[:12]}"
    parts = urllib.parse.urlsplit(url)
    fresh = urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f"CREATE DATABASE {name}"))
    except asyncpg.InsufficientPrivilegeError:
        print(f"cannot create a scratch database: running in {redact(url)} itself")
        yield url
        return
    try:
        yield fresh
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def run(args: argparse.Namespace) -> None:
    """What event_roundtrip.py runs when ``--db`` is a PostgreSQL URL (or ``pg``)."""
    server = None
    url = args.db
    if url == "pg":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.pg_server import PgServer

        server = PgServer()
        server.start()
        url = server.url()
    try:
        measure(args, url, server is not None)
    finally:
        if server is not None:
            server.stop()


def measure(args: argparse.Namespace, url: str, throwaway: bool) -> None:
    """Round trips or, with ``--failover``, the failover, each round in a scratch
    database on ``url``'s server."""
    where = "throwaway, fsync off" if throwaway else "a scratch database on --db's server"
    if args.failover:
        n = args.n if args.n is not None else 20
        found = []
        for k in range(args.repeat):
            with scratch_database(url) as scratch:
                found.append(failover(scratch, n, args.lease, f"f{k}"))
        rows = [{k: v for k, v in f.items() if not isinstance(v, dict)} for f in found]
        extra = {
            "last_s_median": statistics.median(f["last_s"] for f in found),
            "taken_over_by": [f["taken_over_by"] for f in found],
            "server": where,
        }
        report("pg_failover", rows, extra, args.json)
        return
    n = args.n if args.n is not None else 2000
    counts = [int(c) for c in args.procs.split(",")]
    with scratch_database(url) as scratch:
        rounds = [
            roundtrips(scratch, counts, n, args.single, args.route.split(","))
            for _ in range(args.repeat)
        ]
    rows = rounds[-1]  # the table shows the last round; the ratios' medians are beside
    for i, row in enumerate(rows):
        for key in ("vs_raw", "single_p50_vs_raw", "scaling"):
            values = [r[i][key] for r in rounds if r[i][key] is not None]
            row[f"{key}_median"] = statistics.median(values) if values else None
    extra = {
        "n_per_process": n,
        "single_per_process": args.single,
        "rounds": len(rounds),
        "server": where,
    }
    report("event_roundtrip-postgresql", rows, extra, args.json)
