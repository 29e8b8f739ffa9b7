"""The benchmark scripts still run: each with its smallest settings, as a person runs it
(a subprocess), its JSON checked for the fields and sane values, never for timings."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(script: str, out: Path, *args: str) -> dict[str, object]:
    """Run ``benchmarks/<script>`` on this checkout's actorflow; its JSON output."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--out", str(out)],
        check=True, cwd=ROOT, env=env, timeout=120, capture_output=True,
    )  # fmt: skip
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_parked_smoke(tmp_path: Path) -> None:
    found = run_benchmark("parked.py", tmp_path / "parked.json", "--smoke")
    rows = found["rows"]
    assert isinstance(rows, list)
    assert [(r["run"], r["n"]) for r in rows] == [
        ("asyncio future+task", 2000),
        ("actorflow sqlite", 2000),
    ]
    flow = rows[1]
    for row in rows:
        for key in ("create_per_s", "bytes_per_parked", "resume_p50_ms", "resume_p99_ms"):
            assert positive(row[key]), (row["run"], key, row[key])
        assert row["resume_p50_ms"] <= row["resume_p99_ms"]
        assert math.isfinite(row["timer_late_max_ms"])
        assert row["timer_late_p50_ms"] <= row["timer_late_p99_ms"] <= row["timer_late_max_ms"]
    assert flow["max_loaded"] == 20
    assert positive(flow["open_s"]) and positive(flow["open_rss_mb"])
    details = found["actorflow_2000"]
    assert isinstance(details, dict)
    assert details["loaded_after_create"] == 20  # the rest were unloaded
    assert details["loaded_after_open"] == 0  # nothing was due: nothing replayed at open
    assert details["timers_unloaded"] is True
    assert details["timers_missed"] == 0
    assert set(found["ratios_2000"]) == {  # type: ignore[arg-type]
        "bytes_vs_futures", "create_vs_futures", "resume_p50_vs_futures",
        "timer_late_p50_vs_futures",
    }  # fmt: skip
    assert set(found["targets_met_2000"]) == {"bytes_per_parked", "open_s", "resume_p50_ms"}  # type: ignore[arg-type]


def test_long_history_smoke(tmp_path: Path) -> None:
    found = run_benchmark("long_history.py", tmp_path / "long.json", "--quick")
    rows = found["rows"]
    assert isinstance(rows, list)
    assert rows[0]["events"] == 0
    assert [r["events"] for r in rows] == sorted(r["events"] for r in rows)
    assert rows[-1]["events"] >= 5_000
    for row in rows:
        for key in (
            "event_p50_ms",
            "event_vs_fresh",
            "checkpoint_p50_ms",
            "checkpoint_vs_fresh",
            "checkpoint_kb",
            "load_s",
            "reopen_s",
        ):
            assert positive(row[key]), (row["events"], key, row[key])
        assert row["event_p50_ms"] <= row["event_p99_ms"]
    assert rows[0]["event_ratio"] == rows[0]["checkpoint_ratio"] == 1.0
    assert set(found["targets"]) == {  # type: ignore[arg-type]
        "event_flat_1.5x", "checkpoint_flat_1.5x", "reopen_under_1s_at_largest",
        "load_under_1s_at_largest",
    }  # fmt: skip


def test_event_roundtrip_smoke(tmp_path: Path) -> None:
    found = run_benchmark(
        "event_roundtrip.py", tmp_path / "rt.json", "--n", "200", "--single", "10", "--repeat", "2"
    )
    rows = {r["run"]: r for r in found["rows"]}  # type: ignore[attr-defined]
    flow = rows["actorflow sqlite (normal)"]
    for key in ("burst_events_per_s", "steady_p50_ms", "single_p50_ms", "bytes_per_waiter"):
        assert positive(flow[key]), key
    assert positive(rows["actorflow, Python heap only (tracemalloc)"]["bytes_per_waiter"])
    assert found["rounds"] == 2 and len(found["each_round"]) == 2  # type: ignore[arg-type]
    for key in ("burst_vs_group_commit", "steady_p50_vs_group_commit", "single_p50_vs_raw_commit"):
        assert positive(found[key]), key
    phases = {(c["run"], c["phase"]) for c in found["costs"]}  # type: ignore[attr-defined]
    assert ("actorflow sqlite (normal)", "burst") in phases


def test_chat_bot_smoke(tmp_path: Path) -> None:
    found = run_benchmark(
        "chat_bot.py", tmp_path / "chat.json", "--conversations", "5", "--messages", "3"
    )
    runs = [r["run"] for r in found["rows"]]  # type: ignore[attr-defined]
    assert runs == ["asyncio bot + sqlite3 group commit", "actorflow examples/chat_bot.py"]
    for row in found["rows"]:  # type: ignore[attr-defined]
        assert positive(row["p50_ms"]) and row["p50_ms"] <= row["p99_ms"]
    assert positive(found["p50_vs_baseline"])


def test_long_conversation_smoke(tmp_path: Path) -> None:
    found = run_benchmark("long_conversation.py", tmp_path / "talk.json", "--quick")
    rows = found["rows"]
    assert isinstance(rows, list) and len(rows) == 10
    assert [r["messages"] for r in rows] == list(range(500, 5_001, 500))
    assert rows[-1]["run"] == 11  # a new run every 500 messages
    for row in rows:
        for key in ("us_per_message", "rss_mb", "gc_objects", "file_kb", "us_per_message_ratio"):
            assert positive(row[key]), (row["messages"], key, row[key])
    assert set(found["flat_within_1.5x"]) == {"us_per_message", "rss_mb", "gc_objects", "file_kb"}  # type: ignore[arg-type]


def test_event_roundtrip_postgresql_smoke(tmp_path: Path, pg_url: str) -> None:
    found = run_benchmark(
        "event_roundtrip.py", tmp_path / "pg.json", "--db", pg_url, "--procs", "1,2",
        "--n", "30", "--single", "5",
    )  # fmt: skip
    rows = found["rows"]
    assert isinstance(rows, list)
    assert [(r["run"], r["procs"], r["round_trips"]) for r in rows] == [
        ("raw asyncpg group commit", 1, 30),
        ("actorflow, own instances", 1, 30),
        ("raw asyncpg group commit", 2, 60),
        ("actorflow, own instances", 2, 60),
        ("actorflow, next process's (50 in flight)", 2, 60),
    ]
    for row in rows:
        for key in ("round_trips_per_s", "burst_p50_ms", "single_p50_ms", "scaling"):
            assert positive(row[key]), (row["run"], key, row[key])
        assert row["burst_p50_ms"] <= row["burst_p99_ms"]
        assert row["single_p50_ms"] <= row["single_p99_ms"]
        flow = row["run"].startswith("actorflow")
        assert (row["vs_raw"] is not None) == (row["starts_per_s"] is not None) == flow
        if flow:
            assert positive(row["vs_raw"]) and positive(row["single_p50_vs_raw"])
    assert found["n_per_process"] == 30


def test_event_roundtrip_postgresql_failover_smoke(tmp_path: Path, pg_url: str) -> None:
    found = run_benchmark(
        "event_roundtrip.py", tmp_path / "fo.json", "--db", pg_url, "--failover",
        "--lease", "1.0", "--n", "5",
    )  # fmt: skip
    rows = found["rows"]
    assert isinstance(rows, list) and len(rows) == 1
    row = rows[0]
    assert row["lease_s"] == 1.0 and row["instances"] == 5
    assert row["exactly_once"] is True
    assert 0 < row["taken_over_s"] <= row["last_s"]
    assert 0 < row["first_s"] <= row["p50_s"] <= row["last_s"]
    assert positive(row["last_vs_lease"]) and positive(row["send_returned_p50_s"])
    taken = found["taken_over_by"]
    assert isinstance(taken, list) and len(taken) == 1
    assert sorted(taken[0]) == ["survivor 1", "survivor 2"] and sum(taken[0].values()) == 5
