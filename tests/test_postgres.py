"""What is PostgreSQL's own (the shared semantics run on it through the ``runtime``
fixture): durability across reopen, kill -9 of a child process, the schema marks, the
inbox woken by NOTIFY, and a URL's password kept out of every message."""

from __future__ import annotations

import asyncio
import logging
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

import actorflow as af
from actorflow import runtime as runtime_module
from actorflow.inbox import SendRequest
from actorflow.store.url import is_postgres_url, redact, scrub
from tests.conftest import CI
from tests.pg_server import PgServer
from tests.test_crash import check_results, run_child

try:
    import asyncpg

    from actorflow.store import postgres
except ImportError:  # in CI a failure (the import error), elsewhere a skip saying why
    if CI:
        raise
    pytest.skip(
        "asyncpg is not installed (pip install 'actorflow[postgres]')", allow_module_level=True
    )

PASSWORD = "s3cret-Pa55word"

ping = af.Event("pg.ping", int)


@af.workflow(name="pg.collect")
async def collect(ctx: af.Context[None], n: int) -> list[int]:
    return [await ctx.wait_event(ping) for _ in range(n)]


@af.workflow(name="pg.nap")
async def nap(ctx: af.Context[None]) -> str:
    await ctx.sleep(3600)
    return "rested"


def with_password(url: str) -> str:
    """``url`` with :data:`PASSWORD` in it (trust authentication ignores it)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


async def fetch(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# -- durability --------------------------------------------------------------------------
async def test_instances_events_and_timers_survive_reopen(
    pg_url: str, clock: af.testing.ManualClock
) -> None:
    async with af.Runtime(pg_url, clock=clock, checkpoint_every=3) as rt:
        await rt.start(collect, 5, id="c")
        for k in range(3):
            await rt.send("c", ping, k)
        await rt.start(nap, id="n")
        await asyncio.sleep(0)
    async with af.Runtime(pg_url, clock=clock) as rt:
        st = await rt.handle("c").status()
        assert st.state == "waiting" and len(st.events) == 3
        await rt.send("c", ping, 3)
    async with af.Runtime(pg_url, clock=clock) as rt:
        await rt.send("c", ping, 4)
        assert await rt.handle("c").result() == [0, 1, 2, 3, 4]
        n = rt.handle("n")
        assert (await n.status()).state == "waiting"
        await clock.advance(3601)
        assert await n.result() == "rested"
        listed = {s.id: s.state for s in await rt.list()}
        assert listed == {"c": "completed", "n": "completed"}
    # Everything is in actorflow's own schema; the log was folded at close.
    rows = await fetch(pg_url, "SELECT count(*) FROM actorflow.wal")
    assert rows[0][0] == 0
    # A clean close released the instances to whichever runtime opens next.
    rows = await fetch(pg_url, "SELECT id, owner IS NULL FROM actorflow.instances ORDER BY id")
    assert [tuple(r) for r in rows] == [("c", True), ("n", True)]


def test_kill_9_loses_nothing_and_repeats_no_stored_step(pg_url: str, tmp_path: Path) -> None:
    """tests/test_crash.py's check, against the server: every acknowledged send is
    delivered exactly once, no step whose result was stored runs again."""
    rng = random.Random(11)
    kills = 0
    for _ in range(20):
        if run_child(pg_url, tmp_path, rng.uniform(0.4, 0.9)):  # type: ignore[arg-type]
            break
        kills += 1
    assert run_child(pg_url, tmp_path, None)  # type: ignore[arg-type]
    assert kills >= 3, "the child finished before it could be killed often enough"
    check_results(tmp_path)


# -- the schema is actorflow's --------------------------------------------------------
async def test_an_apps_tables_in_other_schemas_are_left_alone(pg_url: str) -> None:
    await execute(pg_url, "CREATE TABLE public.orders (id int); INSERT INTO orders VALUES (1)")
    async with af.Runtime(pg_url) as rt:
        await rt.start(collect, 1, id="c")
    assert [r[0] for r in await fetch(pg_url, "SELECT id FROM public.orders")] == [1]


async def test_a_schema_with_someone_elses_tables_is_refused(pg_url: str) -> None:
    await execute(pg_url, "CREATE SCHEMA actorflow; CREATE TABLE actorflow.things (id int)")
    with pytest.raises(af.StoreError, match="not actorflow's"):
        async with af.Runtime(pg_url):
            pass
    rows = await fetch(
        pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'actorflow' ORDER BY 1"
    )
    assert [r[0] for r in rows] == ["things"]  # nothing was created beside them


async def test_a_newer_schema_is_refused(pg_url: str) -> None:
    async with af.Runtime(pg_url):
        pass
    await execute(pg_url, "UPDATE actorflow.meta SET version = version + 1")
    with pytest.raises(af.StoreError, match="newer"):
        async with af.Runtime(pg_url):
            pass


approval = af.Event("pg.approval", str)


@af.workflow(name="pg.approve")
async def approve(ctx: af.Context[None]) -> str:
    ref = await ctx.create_event(approval)
    await ctx.step(_publish, ctx.workflow_id, ref.id, name="pg.publish")
    return await ctx.wait_event(ref)


_published: dict[str, str] = {}


def _publish(instance: str, token: str) -> None:
    _published[instance] = token


@af.workflow(name="pg.watch")
async def watch(ctx: af.Context[None]) -> int:
    return await ctx.wait_for(_level, on=("level",), name="pg.level")


_levels = {"now": 0}


def _level() -> int | None:
    return _levels["now"] or None


async def test_two_runtimes_share_a_database_each_reaching_the_others_instances(
    pg_url: str,
) -> None:
    _levels["now"] = 0
    async with af.Runtime(pg_url) as a, af.Runtime(pg_url) as b:
        ha = await a.start(collect, 2, id="c-a")
        hb = await b.start(collect, 2, id="c-b")
        # Each sends to the other's instance: durable on return, taken by the owner.
        await b.send("c-a", ping, 1)
        await a.send("c-b", ping, 10)
        await b.send("c-a", ping, 2)
        await a.send("c-b", ping, 20)
        assert await b.handle("c-a").result(timeout=10) == [1, 2]
        assert await a.handle("c-b").result(timeout=10) == [10, 20]
        assert await ha.result() == [1, 2] and await hb.result() == [10, 20]
        # The same id started in both: one instance; of another workflow, refused.
        assert (await b.start(collect, 5, id="c-a")).id == "c-a"
        with pytest.raises(af.ActorflowError, match="already exists"):
            await b.start(nap, id="c-a")
        # A token made in a's instance is resolved from b; a cancel from b ends a's.
        await a.start(approve, id="ap")
        for _ in range(200):
            if "ap" in _published:
                break
            await asyncio.sleep(0.01)
        await b.resolve(_published["ap"], "yes")
        assert await b.handle("ap").result(timeout=10) == "yes"
        with pytest.raises(af.ActorflowError, match="unknown, already used"):
            await b.resolve(_published["ap"], "again")
        await a.start(nap, id="n")
        assert (await b.handle("n").status()).state == "waiting"
        await b.handle("n").cancel()
        with pytest.raises(af.WorkflowCancelled):
            await b.handle("n").result(timeout=10)
        # A notify in one runtime re-runs the queries of the other's instances.
        await a.start(watch, id="w")
        _levels["now"] = 7
        await b.notify("level")
        assert await b.handle("w").result(timeout=10) == 7
        # Both list every instance of the database.
        ids = {"c-a", "c-b", "ap", "n", "w"}
        for rt in (a, b):
            assert {s.id for s in await rt.list()} == ids
        with pytest.raises(af.ActorflowError, match="no workflow instance"):
            await b.send("nobody", ping, 1)
        with pytest.raises(af.ActorflowError, match="has finished"):
            await b.send("c-a", ping, 3)


async def test_a_damaged_log_is_a_store_error_at_open(pg_url: str) -> None:
    async with af.Runtime(pg_url) as rt:
        await rt.start(collect, 1, id="c")
    await execute(pg_url, "INSERT INTO actorflow.wal (owner, record) VALUES ('x', '\\xc1')")
    with pytest.raises(af.StoreError, match="cannot open"):
        async with af.Runtime(pg_url):
            pass
    # The failed open let go of everything (its owner lock too): once repaired, it opens.
    await execute(pg_url, "DELETE FROM actorflow.wal WHERE owner = 'x'")
    async with af.Runtime(pg_url) as rt:
        assert (await rt.handle("c").status()).state == "waiting"


# -- the inbox: other processes' requests, woken by NOTIFY -----------------------------
@pytest.fixture
def no_fallback_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Push the watcher's fallback poll out of reach: only a NOTIFY applies a request."""
    monkeypatch.setattr(runtime_module, "INBOX_FALLBACK_MIN", 3600.0)
    monkeypatch.setattr(runtime_module, "INBOX_FALLBACK_MAX", 3600.0)


async def verdict(url: str, seq: int) -> tuple[str, str | None]:
    """The stored verdict on request ``seq``, once there is one (a functional bound far
    above a NOTIFY, far below the unreachable poll)."""
    for _ in range(400):
        rows = await fetch(url, f"SELECT status, reason FROM actorflow.inbox WHERE seq = {seq}")
        if rows and rows[0][0] != "pending":
            return rows[0][0], rows[0][1]
        await asyncio.sleep(0.025)
    raise AssertionError(f"request {seq} is still pending")


@pytest.mark.usefixtures("no_fallback_poll")
async def test_a_request_in_the_inbox_is_applied_when_notified(pg_url: str) -> None:
    async with af.Runtime(pg_url) as rt:
        h = await rt.start(collect, 2, id="c")
        await asyncio.sleep(0.05)  # the watcher sleeps on its (unreachable) poll
        for k in range(2):
            request = msgspec.json.encode(SendRequest("c", ping.name, str(k)))
            seq = await postgres.submit(pg_url, request)
            assert await verdict(pg_url, seq) == ("accepted", None)
        assert await h.result() == [0, 1]
        # A malformed request is rejected with its reason, and the inbox goes on.
        seq = await postgres.submit(pg_url, b"\xff not json")
        status, reason = await verdict(pg_url, seq)
        assert status == "rejected" and reason


@pytest.mark.usefixtures("no_fallback_poll")
async def test_a_lost_listening_connection_is_made_again(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "RELISTEN_DELAY", 0.05)
    async with af.Runtime(pg_url) as rt:
        h = await rt.start(collect, 2, id="c")
        store = rt._store
        assert isinstance(store, postgres.PostgresStore)
        first = store._listener
        assert first is not None
        await execute(pg_url, f"SELECT pg_terminate_backend({first.get_server_pid()})")
        for _ in range(400):  # a functional bound: it listens again after 0.05 s
            if store._listener not in (None, first) and store.inbox_bell().listening:
                break
            await asyncio.sleep(0.025)
        else:
            raise AssertionError("the store did not listen again")
        # NOTIFY reaches it again (the poll is out of reach), and it owns the database.
        seq = await postgres.submit(pg_url, msgspec.json.encode(SendRequest("c", ping.name, "1")))
        assert await verdict(pg_url, seq) == ("accepted", None)
        await rt.send("c", ping, 2)
        assert await h.result() == [1, 2]


async def test_requests_queued_while_no_runtime_ran_apply_at_open(pg_url: str) -> None:
    async with af.Runtime(pg_url) as rt:
        h = await rt.start(collect, 1, id="c")
    request = msgspec.json.encode(SendRequest("c", ping.name, "7"))
    seq = await postgres.submit(pg_url, request)
    async with af.Runtime(pg_url) as rt:
        assert await rt.handle("c").result() == [7]
    assert await verdict(pg_url, seq) == ("accepted", None)
    assert h.id == "c"


# -- the URL's password ------------------------------------------------------------------
def test_urls_are_told_from_paths_and_shown_without_password() -> None:
    assert is_postgres_url("postgresql://u:p@h/db") and is_postgres_url("POSTGRES://h/db")
    assert not is_postgres_url("app.db") and not is_postgres_url(Path("postgresql://x"))
    assert not is_postgres_url("sqlite:///x") and not is_postgres_url(None)
    for url in ("postgresql://h/db", "postgres://u:p@h:5432/db"):  # chosen, not yet connected
        assert isinstance(af.Runtime(url)._store, postgres.PostgresStore)
    assert redact("postgresql://u:pw@h:5/db?sslmode=require") == (
        "postgresql://u:***@h:5/db?sslmode=require"
    )
    assert redact("postgres://u@h/db?password=pw&x=1") == "postgres://u@h/db?password=***&x=1"
    assert redact("postgresql://u:p%40ss@[::1]:5/db") == "postgresql://u:***@[::1]:5/db"
    assert scrub("failed for p@ss and p%40ss", "postgresql://u:p%40ss@h/db") == (
        "failed for *** and ***"
    )


@pytest.fixture
def log_text(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    af.configure_logging("DEBUG", json=True)
    yield
    stdlib = logging.getLogger("actorflow")
    for handler in [h for h in stdlib.handlers if not isinstance(h, logging.NullHandler)]:
        stdlib.removeHandler(handler)
    stdlib.setLevel(logging.NOTSET)
    stdlib.propagate = True


@pytest.mark.usefixtures("log_text")
async def test_the_password_is_never_shown(
    pg_url: str, pg_server: PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = with_password(pg_url)
    shown: list[str] = []
    async with af.Runtime(url, retention=60) as rt:
        shown += [repr(rt), str(rt.path), repr(rt._store)]
        h = await rt.start(collect, 1, id="c")
        await rt.send("c", ping, 1)
        await h.result()
        with pytest.raises(af.StoreError) as backup:
            await rt.backup("/tmp/never")
        shown.append(str(backup.value))
    assert rt.path == redact(url) and "***" in rt.path
    # Errors: no server there, no such database, a bad URL.
    for bad in (
        url.replace(f":{pg_server.port}/", f":{_closed_port()}/"),
        url.rsplit("/", 1)[0] + "/no_such_database",
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:notaport/db",
    ):
        with pytest.raises(af.StoreError) as failed:
            async with af.Runtime(bad):
                pass
        shown.append(str(failed.value))
        assert "***" in str(failed.value)
    out = capsys.readouterr()
    shown += [out.out, out.err]
    assert "recovery.done" in out.out + out.err  # the log did say things
    for text in shown:
        assert PASSWORD not in text
    # The CLI refuses a command it cannot serve on a URL, without quoting the password.
    cli = subprocess.run(
        [sys.executable, "-m", "actorflow", "backup", "out.db", "--db", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode != 0 and "***" in cli.stderr
    assert PASSWORD not in cli.stdout + cli.stderr


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- without asyncpg, and the lease -------------------------------------------------------
def test_without_asyncpg_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # import asyncpg now fails
    monkeypatch.delitem(sys.modules, "actorflow.store.postgres")
    with pytest.raises(af.StoreError, match=r"pip install 'actorflow\[postgres\]'") as raised:
        af.Runtime(f"postgresql://u:{PASSWORD}@localhost/db")
    assert PASSWORD not in str(raised.value)


@pytest.mark.parametrize("where", ["memory", "sqlite", "postgres"])
def test_lease_is_accepted_by_every_store_and_checked(where: str, tmp_path: Path) -> None:
    target = {"memory": None, "sqlite": tmp_path / "x.db", "postgres": "postgresql://h/db"}[where]
    assert af.Runtime(target).lease == 10.0
    assert af.Runtime(target, lease=2.5).lease == 2.5
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lease"):
            af.Runtime(target, lease=bad)
    for wrong in ("10", True, None):
        with pytest.raises(TypeError, match="lease"):
            af.Runtime(target, lease=wrong)  # type: ignore[arg-type]


# -- the test server: mandatory in CI --------------------------------------------------
@pytest.mark.parametrize("ci", [True, False], ids=["ci", "elsewhere"])
def test_without_a_server_ci_fails_and_elsewhere_skips(ci: bool, tmp_path: Path) -> None:
    """With ``initdb`` off PATH, the tests that need the server fail when CI is set
    (as .ci/run sets it) and skip, saying why, elsewhere."""
    import os

    path = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not (Path(d) / "initdb").exists()
    ]
    env = {**os.environ, "PATH": os.pathsep.join(path), "CI": "true" if ci else ""}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs",
         "tests/test_postgres.py::test_a_newer_schema_is_refused"],
        capture_output=True, text=True, timeout=120, env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    out = run.stdout + run.stderr
    if ci:
        assert run.returncode != 0 and "PostgreSQL is mandatory in CI" in out, out
        assert "initdb is not on PATH" in out, out
    else:
        assert run.returncode == 0 and "1 skipped" in out, out
        assert "no PostgreSQL server for the tests: initdb is not on PATH" in out, out


async def test_a_schema_1_database_is_migrated_and_its_instances_go_on(pg_url: str) -> None:
    # Schema 1 (one runtime per database) had no runtimes table nor inbox targets, and a
    # per-instance lease_until; its runtime ids are no live runtime's.
    async with af.Runtime(pg_url) as rt:
        await rt.start(collect, 3, id="c")
        await rt.send("c", ping, 1)
    await execute(
        pg_url,
        "DROP TABLE actorflow.runtimes;"
        " DROP INDEX actorflow.wal_by_owner; DROP INDEX actorflow.instances_by_owner;"
        " ALTER TABLE actorflow.inbox DROP COLUMN target, DROP COLUMN origin;"
        " ALTER TABLE actorflow.wal DROP COLUMN wfs;"
        " ALTER TABLE actorflow.instances ADD COLUMN lease_until TIMESTAMPTZ;"
        " CREATE INDEX instances_by_owner ON actorflow.instances (owner, lease_until);"
        " UPDATE actorflow.instances SET owner = 'old-host:1:deadbeef', lease_until = now();"
        " UPDATE actorflow.meta SET version = 1",
    )
    request = msgspec.json.encode(SendRequest("c", ping.name, "2"))
    await execute(
        pg_url,
        f"INSERT INTO actorflow.inbox (created_at, request) VALUES (0, '\\x{request.hex()}')",
    )
    async with af.Runtime(pg_url) as rt:
        await rt.send("c", ping, 3)
        assert await rt.handle("c").result(timeout=10) == [1, 2, 3]
    rows = await fetch(pg_url, "SELECT version FROM actorflow.meta")
    assert rows[0][0] == postgres.SCHEMA_VERSION
