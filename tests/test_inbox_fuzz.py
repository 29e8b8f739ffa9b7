"""Fuzz of the inbox: raw rows written with plain ``sqlite3`` (any type, encoding, size,
nesting) never stop the runtime's watcher, and a valid request behind them is applied.

One runtime (in a thread, as another process would own the file) serves every example;
each example writes a few raw rows and then one valid send, and waits for every verdict.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actorflow as af
from actorflow.inbox import MAX_REASON, Receipt, SendRequest, max_request_bytes, receipt, submit

LIMIT = 2_000  # max_payload_bytes of the fuzzed runtime: rows over ~77 KB are too large
COUNTER = "fuzz-counter-instance"  # a name the strategies never produce
EXAMPLES = 80

tick = af.Event("fuzz.tick", int)


@af.workflow(name="fuzz.counter")
async def counter(ctx: af.Context[None]) -> int:
    total = 0
    while (n := await ctx.wait_event(tick)) >= 0:
        total += n
    return total


class Owner:
    """A runtime owning the database in its own thread and loop, as an app process does."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.result: int | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self.thread.start()
        assert self.ready.wait(20), "the runtime did not open"

    async def _serve(self) -> None:
        async with af.Runtime(self.db, max_payload_bytes=LIMIT) as rt:
            await rt.start(counter, id=COUNTER)
            self.ready.set()
            await asyncio.to_thread(self.stop.wait)
            await rt.send(COUNTER, tick, -1)  # the counter ends with its total
            self.result = await rt.handle(COUNTER).result(timeout=20)

    def finish(self) -> int | None:
        self.stop.set()
        self.thread.join(30)
        return self.result


def allow_null_requests(db: Path) -> None:
    """Drop the NOT NULL of ``inbox.request``, as a careless raw writer's schema might."""
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute(
            "UPDATE sqlite_master SET sql = replace(sql, 'request TEXT NOT NULL', 'request TEXT')"
            " WHERE name = 'inbox'"
        )
        conn.execute("PRAGMA writable_schema = OFF")


# -- what a raw writer may put in the request column ------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
names = st.text(min_size=0, max_size=300) | json_values
payload_texts = (
    json_values.map(json.dumps)
    | st.text(max_size=40)
    | st.integers(1, 4_000).map(lambda n: "[" * n + "]" * n)
    | st.integers(1, 800).map(lambda n: "[" + "1e300," * n + "1]")
    | st.integers(300, 5_000).map(lambda n: "9" * n)
)
request_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["send", "resolve", "cancel", "notify", "launch", ""]) | json_values},
    optional={
        "instance": names,
        "event": st.sampled_from([tick.name, "fuzz.nothing"]) | names,
        "payload": payload_texts | json_values,
        "error": st.text(max_size=30) | json_values,
        "cancelled": json_values,
        "token": names,
        "topics": st.lists(st.text(max_size=5), max_size=3) | json_values,
    },
).map(json.dumps)
big_rows = st.integers(1, 120_000).map(
    lambda n: json.dumps({"type": "notify", "topics": ["a" * n]})
)
deep_rows = st.integers(1, 50_000).map(lambda n: "[" * n + "]" * n)
texts = request_like | st.text(max_size=60) | big_rows | deep_rows | json_values.map(json.dumps)
raw_values = st.one_of(
    texts.map(lambda t: (t, "text")),
    texts.map(lambda t: (t.encode("utf-16"), "text")),  # a foreign encoding stored as TEXT
    st.binary(max_size=120).map(lambda b: (b, "text")),  # mostly invalid UTF-8, as TEXT
    st.binary(max_size=120).map(lambda b: (b, "blob")),
    texts.map(lambda t: (t.encode(), "blob")),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: (i, "value")),
    st.floats().map(lambda f: (f, "value")),
    st.just((None, "value")),
)


def insert(conn: sqlite3.Connection, value: Any, kind: str) -> int:
    cast = "CAST(? AS TEXT)" if kind == "text" else "?"
    sql = f"INSERT INTO inbox (created_at, request) VALUES (?, {cast})"
    return int(conn.execute(sql, (time.time(), value)).lastrowid or 0)


def verdict(db: Path, seq: int, timeout: float = 10.0) -> Receipt:
    deadline = time.monotonic() + timeout
    while (found := receipt(db, seq)).status == "pending" and time.monotonic() < deadline:
        time.sleep(0.002)
    return found


def test_raw_rows_never_stop_the_watcher_and_rows_behind_them_are_applied(db: Path) -> None:
    async def create() -> None:
        async with af.Runtime(db):
            pass

    asyncio.run(create())
    allow_null_requests(db)
    failures: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = failures.append  # type: ignore[method-assign]
    logging.getLogger("actorflow").addHandler(handler)
    owner = Owner(db)
    sent = 0
    rows = 0
    try:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(raw=st.lists(raw_values, min_size=1, max_size=4), n=st.integers(0, 1_000))
        def example(raw: list[tuple[Any, str]], n: int) -> None:
            nonlocal sent, rows
            with sqlite3.connect(db, isolation_level=None) as conn:
                seqs = [insert(conn, value, kind) for value, kind in raw]
            good = submit(db, SendRequest(COUNTER, tick.name, str(n)), max_payload_bytes=LIMIT)
            rows += len(seqs) + 1
            for seq in seqs:
                found = verdict(db, seq)
                assert found.status in ("accepted", "rejected"), found
                if found.status == "rejected":
                    assert found.reason and len(found.reason) <= MAX_REASON, found
            assert verdict(db, good).status == "accepted"
            sent += n

        example()
    finally:
        result = owner.finish()
        logging.getLogger("actorflow").removeHandler(handler)
    assert result == sent, (result, sent)
    assert failures == [], [r.getMessage()[:300] for r in failures]
    assert rows > EXAMPLES and max_request_bytes(LIMIT) < 120_000
