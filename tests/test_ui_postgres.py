"""`actorflow ui --db postgresql://...` as a real process beside a runtime on PostgreSQL
(tests/cli_app.py in another process): the list and instance pages, a send through the
page accepted by the runtime, live updates from the polled fingerprint, and the URL's
password never shown."""

from __future__ import annotations

import asyncio
import html
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote_plus

import httpx
import pytest

from tests.conftest import CI
from tests.test_cli import App, run, wait_state
from tests.test_cli_postgres import PASSWORD, inbox, start_app, with_password

try:
    import asyncpg
except ImportError:  # in CI a failure (the import error), elsewhere a skip saying why
    if CI:
        raise
    pytest.skip(
        "asyncpg is not installed (pip install 'actorflow[postgres]')", allow_module_level=True
    )

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(90)


@contextmanager
def ui_process(url: str) -> Iterator[tuple[subprocess.Popen[str], str, list[str]]]:
    """``actorflow --db URL ui --port 0``: the process, the printed link, and every line
    it printed up to the link; stopped at the end."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "actorflow", "--db", url, "ui", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    printed: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            printed.append(line)
            if "?token=" in line:
                yield proc, line.split()[-1], printed
                break
        else:
            raise AssertionError(f"no link; stderr: {proc.stderr.read() if proc.stderr else ''}")
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)


@pytest.fixture
def url(pg_url: str) -> str:
    """The test's database, with a password in its URL (which must never be shown)."""
    return with_password(pg_url)


@pytest.fixture
def pg_app(url: str, tmp_path: Path) -> Iterator[App]:
    running = start_app(url, tmp_path)
    yield running
    if running.proc.poll() is None:
        running.stop()


async def test_the_page_reads_and_sends_through_a_postgres_runtime(pg_app: App, url: str) -> None:
    with ui_process(url) as (proc, link, printed):
        base = link.partition("/?token=")[0]
        async with httpx.AsyncClient(base_url=base, timeout=20) as c:
            listed = await c.get(link)  # sets the cookie
            assert listed.status_code == 200
            for instance in ("r1", "r2", "t1", "q1"):
                assert f'data-id="{instance}"' in listed.text
            assert "postgresql://postgres:***@" in listed.text
            shown = await c.get("/instance", params={"id": "r1"})
            assert shown.status_code == 200
            assert "cli.approval" in shown.text and "draft of doc-1" in shown.text

            rejected = await c.post(
                "/act",
                data={"form": "f", "action": "send", "id": "r1", "event": "cli.approval",
                      "payload": '{"approved": "maybe"}'},
                headers={"origin": base},
            )  # fmt: skip
            assert rejected.status_code == 400 and "rejected" in rejected.text
            sent = await c.post(
                "/act",
                data={"form": "f", "action": "send", "id": "r1", "event": "cli.approval",
                      "payload": '{"approved": true, "note": "by page"}'},
                headers={"origin": base},
            )  # fmt: skip
            assert sent.status_code == 303, sent.text
            done = unquote_plus(sent.headers["location"].partition("done=")[2])
            assert re.fullmatch(r"request #\d+ \(send\) accepted by its runtime", done), done
            r1 = wait_state(url, "r1", "completed")
            assert r1["result"] == "draft of doc-1: approved by page"
            after = await c.get("/instance", params={"id": "r1"})
            assert "draft of doc-1: approved by page" in html.unescape(after.text)
            pages = [listed, shown, rejected, sent, after]
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    decided = await asyncio.to_thread(inbox, url)
    assert [status for status, _ in decided] == ["rejected", "accepted"]
    banner = printed[0]
    assert banner.startswith("actorflow ui for postgresql://postgres:***@127.0.0.1:"), banner
    for text in [*printed, out, err, *(p.text for p in pages), *(str(p.headers) for p in pages)]:
        assert PASSWORD not in text


async def test_the_page_hears_a_commit_by_another_process(pg_app: App, url: str) -> None:
    with ui_process(url) as (_, link, _printed):
        base = link.partition("/?token=")[0]
        async with httpx.AsyncClient(base_url=base, timeout=20) as c:
            page = await c.get(link)
            found = re.search(r'data-events="([^"]*)"', page.text)
            assert found is not None, page.text
            events = html.unescape(found.group(1))
            async with c.stream("GET", events) as stream:
                lines = stream.aiter_lines()
                assert (await anext(lines)).startswith("retry:")
                # another process commits: the CLI's send, applied by the runtime
                await asyncio.sleep(1)  # the watcher's first look, the baseline, is taken
                sent = await asyncio.to_thread(
                    run, url, "send", "r2", "cli.approval", '{"approved": true}', "--wait"
                )
                assert sent.returncode == 0, sent.stderr
                line = await asyncio.wait_for(anext(lines), 10)
                while not line.startswith("event: change"):
                    line = await asyncio.wait_for(anext(lines), 10)
            again = await c.get("/instance", params={"id": "r2"})
            assert "completed" in again.text


def test_a_database_without_actorflow_fails_in_one_line(url: str) -> None:
    done = run(url, "ui", "--port", "0")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "holds no actorflow schema" in done.stderr
    assert "postgresql://postgres:***@" in done.stderr and PASSWORD not in done.stderr


async def test_the_watcher_notices_a_purge_that_bypasses_the_log(url: str, tmp_path: Path) -> None:
    from actorflow.ui.pg_watch import PgWatch

    await asyncio.to_thread(lambda: start_app(url, tmp_path).stop())  # closed: checkpointed
    watch = PgWatch(url)
    try:
        assert not await watch.moved()  # the first look takes the baseline
        assert not await watch.moved()
        conn = await asyncpg.connect(url)
        try:  # what retention does: rows deleted, nothing appended to the log or inbox
            assert await conn.execute("DELETE FROM actorflow.instances WHERE id = 'r1'") == (
                "DELETE 1"
            )
        finally:
            await conn.close()
        for _ in range(400):  # the server's statistics count it within seconds
            if await watch.moved():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the deletion was not noticed")
    finally:
        await watch.close()


def _label(order: str) -> str:
    return f"label for {order}"


async def test_the_page_inside_a_runtime_shows_another_runtimes_instance_whole(url: str) -> None:
    # The page's runtime has the URL without its password: it reads through the runtime,
    # which also reaches the instances another runtime runs.
    import actorflow as af
    import actorflow.ui
    from tests.test_ui_http import signed_in

    gate = af.Event("uipg.gate", str)

    @af.workflow(name="uipg.order")
    async def order(ctx: af.Context[None], number: str) -> str:
        label = await ctx.step(_label, number, name="uipg.label")
        return label + await ctx.wait_event(gate)

    async with af.Runtime(url) as here, af.Runtime(url) as there:
        await there.start(order, "A-7", id="o1")
        for _ in range(200):
            if (await here.handle("o1").status()).state == "waiting":
                break
            await asyncio.sleep(0.02)
        async with signed_in(actorflow.ui.app(here)) as c:
            page = (await c.get("/instance", params={"id": "o1"})).text
        assert "uipg.label" in page and "label for A-7" in page and "A-7" in page
        assert PASSWORD not in page
