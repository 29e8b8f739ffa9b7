"""Where Python time goes in the burst round trip (input for the core rebuild, issue #13).

Run: python benchmarks/profile_roundtrip.py [--n 10000] [--loop asyncio|uvloop]
     [--durability normal] [--top 15] [--no-cprofile] [--json PATH]

N instances park on an event (not profiled); then all N events are sent at once and
every result awaited, under cProfile. Prints the top functions by cumulative and by
self time, and per event: records written, store commits, records folded into
snapshots (``records.apply``), futures and tasks made, and garbage collections (with
their time). ``--py-spy PATH`` samples the burst with py-spy instead (attached to
this process for the burst only; raw stacks written to PATH) and prints the top
functions by inclusive and by self samples.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import re
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import report

import actorflow as af
from actorflow.store.sqlite import SQLiteStore

wake = af.Event("bench.wake", int)
written: Counter[str] = Counter()
gc_runs: Counter[int] = Counter()
gc_seconds = [0.0]
_gc_started = [0.0]


@af.workflow(name="bench.roundtrip")
async def roundtrip(ctx: af.Context[None]) -> int:
    return await ctx.wait_event(wake)


def count_writes() -> None:
    """Count records (by kind) and commits that reach the store."""
    write = SQLiteStore.write

    async def counted(self: SQLiteStore, records: Any, marks: Any = ()) -> None:
        written["commits"] += 1
        for record in records:
            written[type(record).__name__] += 1
        await write(self, records, marks)

    SQLiteStore.write = counted  # type: ignore[method-assign]


def on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        gc_runs[info["generation"]] += 1
        gc_seconds[0] += time.perf_counter() - _gc_started[0]


class Sampler:
    """py-spy attached to this process while the burst runs (its raw stacks to ``path``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        command = ["py-spy", "record", "--pid", str(os.getpid()), "-f", "raw", "-r", "250"]
        self._proc = subprocess.Popen([*command, "-o", self.path], stderr=subprocess.DEVNULL)
        await asyncio.sleep(1.0)  # let it attach before the burst

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            self._proc.wait(timeout=30)


async def burst(
    n: int, path: Path, durability: str, profiler: cProfile.Profile | None, sampler: Sampler | None
) -> float:
    async with af.Runtime(path, durability=durability) as rt:  # type: ignore[arg-type]
        handles = await asyncio.gather(*(rt.start(roundtrip, id=f"w{i}") for i in range(n)))
        while not rt.idle:  # the instances' first waits are written after start returns
            await asyncio.sleep(0.01)
        written.clear()
        gc_runs.clear()
        gc_seconds[0] = 0.0
        gc.callbacks.append(on_gc)
        if sampler is not None:
            await sampler.start()
        if profiler is not None:
            profiler.enable()
        t0 = time.perf_counter()
        await asyncio.gather(*(rt.send(f"w{i}", wake, i) for i in range(n)))
        await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.perf_counter() - t0
        if profiler is not None:
            profiler.disable()
        if sampler is not None:
            sampler.stop()
        gc.callbacks.remove(on_gc)
    return elapsed


def top(stats: pstats.Stats, key: str, count: int) -> str:
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats(key).print_stats(count)
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    return "\n".join(line.replace(str(Path.cwd()) + "/", "") for line in lines[start:] if line)


def calls(stats: pstats.Stats, file_part: str, name: str) -> int:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    return sum(v[1] for (file, _, func), v in raw.items() if func == name and file_part in file)


def sampled(path: str, count: int) -> str:
    """Top functions of py-spy's raw stacks, by inclusive and by self samples (%)."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = [_function(frame) for frame in stack.split(";")]
        total += int(samples)
        leaf[frames[-1]] += int(samples)
        for frame in set(frames):
            inclusive[frame] += int(samples)
    out = [f"{total} samples of the burst"]
    for title, counter in (("inclusive", inclusive), ("self", leaf)):
        out.append(f"\n## py-spy: top {count} by {title} samples\n")
        out += [f"{100 * v / total:6.1f}%  {k}" for k, v in counter.most_common(count)]
    return "\n".join(out)


def _function(frame: str) -> str:
    # "name (path/file.py:123)" -> "name (file.py)": one entry per function, not per line
    return re.sub(r"\((?:.*/)?([^/:]+):\d+\)", r"(\1)", frame.strip())


def run(args: argparse.Namespace) -> None:
    count_writes()
    profiler = None if args.py_spy else cProfile.Profile()
    sampler = Sampler(args.py_spy) if args.py_spy else None
    with tempfile.TemporaryDirectory() as tmp:
        coro = burst(args.n, Path(tmp) / "profile.db", args.durability, profiler, sampler)
        if args.loop == "uvloop":
            import uvloop

            elapsed = uvloop.run(coro)
        else:
            elapsed = asyncio.run(coro)
    n = args.n
    per_event: dict[str, Any] = {
        f"{kind} records": count / n for kind, count in written.items() if kind != "commits"
    }
    per_event["store commits (in all)"] = written["commits"]
    per_event["gc runs (gen 0/1/2)"] = "/".join(str(gc_runs[g]) for g in range(3))
    per_event["gc ms per event"] = 1e3 * gc_seconds[0] / n
    per_event["wall us per event"] = 1e6 * elapsed / n
    if profiler is not None:
        stats = pstats.Stats(profiler)
        per_event["records.apply (folds)"] = calls(stats, "records.py", "apply") / n
        per_event["futures made"] = sum(
            calls(stats, f, "create_future") for f in ("loop.py", "base_events.py")
        ) / n  # fmt: skip
        per_event["tasks made"] = sum(
            calls(stats, f, "create_task") for f in ("loop.py", "base_events.py")
        ) / n  # fmt: skip
        per_event["python calls"] = stats.total_calls / n  # type: ignore[attr-defined]
        print(f"## top {args.top} by cumulative time\n")
        print(top(stats, "cumulative", args.top))
        print(f"\n## top {args.top} by self time\n")
        print(top(stats, "tottime", args.top))
        print()
    if args.py_spy:
        print(sampled(args.py_spy, args.top) + "\n")
    rows = [{"per event": key, "value": value} for key, value in per_event.items()]
    report(f"profile_roundtrip-{args.loop}", rows, {"n": n, "loop": args.loop}, args.json)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--durability", default="normal", choices=["normal", "full"])
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--py-spy", metavar="PATH", help="sample with py-spy, not cProfile")
    parser.add_argument("--json", default=None)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
