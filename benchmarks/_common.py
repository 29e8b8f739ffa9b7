"""Helpers shared by the benchmark scripts: memory, percentiles, table and JSON output."""

from __future__ import annotations

import gc
import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results")


def rss_bytes() -> int:
    """Resident memory of this process now."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize()


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def report(
    name: str,
    rows: list[dict[str, Any]],
    extra: dict[str, Any],
    out: str | None,
    tables: list[list[dict[str, Any]]] = (),  # type: ignore[assignment]
) -> None:
    """Print ``rows`` (and each of ``tables``) as a table and write everything to JSON."""
    for table in [rows, *tables]:
        if table:
            print_table(table)
    for key, value in extra.items():
        if not isinstance(value, list):
            print(f"{key}: {_fmt(value)}")
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()}
    path.write_text(json.dumps({"rows": rows, **extra, "machine": machine}, indent=2))
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print(f"wrote {path}")


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print ``rows`` (dicts with the same keys) as aligned columns."""
    columns = list(rows[0])
    widths = [max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(_fmt(r[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
    return str(value)


class GcMeter:
    """Counts the garbage collector's runs (by generation) and the time they take, from
    :meth:`start` on; ``snapshot()`` gives the totals so far."""

    def __init__(self) -> None:
        self.runs = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._began = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            generation = info["generation"]
            self.runs[generation] += 1
            self.seconds[generation] += time.perf_counter() - self._began

    def start(self) -> None:
        """Begin counting (until :meth:`stop`)."""
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        """Stop counting."""
        gc.callbacks.remove(self._callback)

    def snapshot(self) -> tuple[list[int], float, float]:
        """Runs by generation, seconds in all collections, seconds in full ones (gen 2)."""
        return list(self.runs), sum(self.seconds), self.seconds[2]
