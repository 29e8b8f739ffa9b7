"""Group commit on PostgreSQL: one batch of records per transaction, ways to write it.

Run: python benchmarks/pg_write.py [--db postgresql://...] [--batches 1,10,100,1000]
       [--n 300] [--out PATH]

Without ``--db`` a throwaway server is started (tests/pg_server.py: PostgreSQL 15's
initdb and pg_ctl; its fsync is off, so the numbers are the client's and the round
trips', not the disk's). For each batch size (records per group commit), p50 latency
of one commit and records/s of sequential commits, for:

- ``store``: :meth:`PostgresStore.write` (the batch as one msgpack row: one statement);
- ``raw_blob``: the same INSERT of the same bytes through raw asyncpg (the baseline);
- ``unnest_rows``: one row per record, one ``INSERT ... SELECT FROM unnest`` statement;
- ``executemany_rows``: one row per record, ``executemany`` inside a transaction.

``store_vs_raw`` is the store's p50 over the baseline's, same run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from _common import percentile, report

from actorflow.records import RECORD_ENCODER, Record, Value
from actorflow.store.postgres import PostgresStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def batch_of(size: int) -> list[Record]:
    return [Value(f"wf{i % 50}", i, "now", "", b"\x00" * 24, 1.0 + i) for i in range(size)]


async def timed(n: int, one: Callable[[], Awaitable[object]]) -> list[float]:
    for _ in range(min(20, n)):  # warm up: prepared statements, pool
        await one()
    times = []
    for _ in range(n):
        began = time.perf_counter()
        await one()
        times.append(time.perf_counter() - began)
    return times


async def measure(url: str, sizes: list[int], n: int) -> list[dict[str, Any]]:
    store = PostgresStore(url)
    await store.open()
    conn = await asyncpg.connect(url)
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS public.bench_blob (seq BIGSERIAL PRIMARY KEY,"
        " owner TEXT NOT NULL, record BYTEA NOT NULL);"
        "CREATE TABLE IF NOT EXISTS public.bench_rows (seq BIGSERIAL PRIMARY KEY,"
        " wf TEXT NOT NULL, record BYTEA NOT NULL)"
    )
    rows: list[dict[str, Any]] = []
    try:
        for size in sizes:
            batch = batch_of(size)
            blob = RECORD_ENCODER.encode(batch)
            wfs = [r.wf for r in batch]
            parts = [RECORD_ENCODER.encode(r) for r in batch]

            async def raw_blob(blob: bytes = blob) -> None:
                await conn.execute(
                    "INSERT INTO public.bench_blob (owner, record) VALUES ($1, $2)", "me", blob
                )

            async def unnest_rows(wfs: list[str] = wfs, parts: list[bytes] = parts) -> None:
                await conn.execute(
                    "INSERT INTO public.bench_rows (wf, record)"
                    " SELECT * FROM unnest($1::text[], $2::bytea[])",
                    wfs,
                    parts,
                )

            async def executemany_rows(wfs: list[str] = wfs, parts: list[bytes] = parts) -> None:
                async with conn.transaction():
                    await conn.executemany(
                        "INSERT INTO public.bench_rows (wf, record) VALUES ($1, $2)",
                        list(zip(wfs, parts, strict=True)),
                    )

            async def store_write(batch: list[Record] = batch) -> None:
                await store.write(batch)

            found: dict[str, float] = {}
            for name, one in (
                ("raw_blob", raw_blob),
                ("store", store_write),
                ("unnest_rows", unnest_rows),
                ("executemany_rows", executemany_rows),
            ):
                times = await timed(n, one)
                found[name] = percentile(times, 50)
                rows.append(
                    {
                        "batch": size,
                        "way": name,
                        "p50_ms": percentile(times, 50) * 1000,
                        "p99_ms": percentile(times, 99) * 1000,
                        "records_per_s": size * len(times) / sum(times),
                    }
                )
            rows[-3]["store_vs_raw"] = found["store"] / found["raw_blob"]
            await store.checkpoint([])  # the log folds away between sizes
    finally:
        await conn.execute("DROP TABLE public.bench_blob, public.bench_rows")
        await conn.close()
        await store.close()
    for row in rows:
        row.setdefault("store_vs_raw", None)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None, help="postgresql:// URL (default: a throwaway one)")
    parser.add_argument("--batches", default="1,10,100,1000")
    parser.add_argument("--n", type=int, default=300, help="commits measured per way and size")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.batches.split(",")]
    server = None
    url = args.db
    if url is None:
        from tests.pg_server import PgServer

        server = PgServer()
        server.start()
        url = server.url()
    try:
        rows = asyncio.run(measure(url, sizes, args.n))
    finally:
        if server is not None:
            server.stop()
    report("pg_write", rows, {"n": args.n}, args.out)


if __name__ == "__main__":
    main()
