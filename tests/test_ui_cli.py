"""`actorflow ui` and `examples/agent_approval.py --ui`, as real processes: the printed
link, the refusal without its token, one-line errors, and an agent approved by clicking."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.async_api import expect

import actorflow as af
from tests.ui_support import agent, chromium, parked

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)


@contextmanager
def process(*argv: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``argv`` (a Python script or module), read up to the line with the page's
    link, yield the process and the link; stop it at the end."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "?token=" in line:
                yield proc, line.split()[-1]
                break
        else:
            raise AssertionError(
                f"no link printed; stderr: {proc.stderr.read() if proc.stderr else ''}"
            )
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)


async def test_actorflow_ui_prints_a_tokened_link_and_refuses_requests_without_it(
    db: Path,
) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(agent, "x", id="agent-1")
        await parked(rt, "agent-1")
    with process("-m", "actorflow", "--db", str(db), "ui", "--port", "0") as (proc, link):
        base, _, token = link.partition("/?token=")
        assert base.startswith("http://127.0.0.1:") and len(token) >= 32
        async with httpx.AsyncClient() as c:
            refused = await c.get(base + "/")
            assert refused.status_code == 403 and "agent-1" not in refused.text
            wrong = await c.get(base + "/", params={"token": token[:-1]})
            assert wrong.status_code == 403
            page = await c.get(link)
            assert page.status_code == 200 and 'data-id="agent-1"' in page.text
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert token not in out + err  # no access log with the link in it


@pytest.mark.parametrize(
    ("db", "message"),
    [
        ("mysql://user:secret@localhost/app", "not a mysql:// URL"),
        ("missing.db", "does not exist"),
    ],
)
def test_actorflow_ui_fails_in_one_line_on_a_foreign_url_or_a_missing_file(
    tmp_path: Path, db: str, message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "actorflow", "--db", db, "ui", "--port", "0"],
        capture_output=True, text=True, cwd=tmp_path, timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and message in done.stderr
    assert "secret" not in done.stderr


async def test_the_agent_example_with_ui_is_approved_by_clicking_and_finishes(
    tmp_path: Path,
) -> None:
    script = str(ROOT / "examples" / "agent_approval.py")
    db = tmp_path / "agent.db"
    with process(script, "--ui", "--port", "0", "--db", str(db)) as (proc, link):
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(link)
            await page.get_by_role("link", name="agent-1").click()
            for proposal in ("delete_file", "send_email"):  # two risky calls, two approvals
                await expect(page.locator("#timeline")).to_contain_text(proposal)
                approve = page.get_by_role("button", name="✔ approved")
                await approve.click()
                await expect(page.locator("p.done")).to_contain_text("sent approval")
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "agent-1: finished" in out
    assert "send_email(to='team@example.com', subject='build cache cleared') -> sent" in out
