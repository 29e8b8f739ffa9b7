"""Helpers shared by the benchmark scripts: memory, percentiles, table and JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
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


def report(name: str, rows: list[dict[str, Any]], extra: dict[str, Any], out: str | None) -> None:
    """Print ``rows`` as a table and write everything to JSON."""
    columns = list(rows[0])
    widths = [max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(_fmt(r[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))
    for key, value in extra.items():
        print(f"{key}: {_fmt(value)}")
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count()}
    path.write_text(json.dumps({"rows": rows, **extra, "machine": machine}, indent=2))
    print(f"wrote {path}")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
    return str(value)
