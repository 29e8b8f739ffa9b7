"""The page in a real headless browser (Debian's chromium, driven by Playwright):
approving an agent by clicking, a rejected payload, live updates, the access token,
a database file owned by another runtime, and a phone-sized screen."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

import actorflow as af
import actorflow.ui
from tests.ui_support import Decision, agent, approval, chromium, napper, parked, serving

pytestmark = pytest.mark.timeout(60)


async def open_page(base: str, ui: actorflow.ui.UI, page: Page, path: str = "/") -> None:
    """Visit the tokened link once (as a person does), then ``path`` with the cookie."""
    response = await page.goto(ui.url(base))
    assert response is not None and response.status == 200
    if path != "/":
        await page.goto(base + path)


async def test_approving_a_pending_tool_call_by_clicking_lets_the_agent_finish(db: Path) -> None:
    async with af.Runtime(db) as rt:
        finished = await rt.start(napper, id="a-napper")
        waiting = await rt.start(agent, "build/cache.bin", id="agent-1")
        await parked(rt, "agent-1")
        await parked(rt, "a-napper")
        ui = actorflow.ui.app(rt)
        async with serving(ui) as base, chromium() as browser:
            page = await browser.new_page()
            await open_page(base, ui, page)
            rows = page.locator("tr.instance")
            # The one waiting for a person comes first, with its event and deadline.
            await expect(rows.first).to_have_attribute("data-id", "agent-1")
            await expect(rows.first).to_contain_text("event ui.approval")
            await expect(rows.first).to_contain_text("in 6 d 23 h")
            await expect(rows.nth(1)).to_have_attribute("data-id", finished.id)
            await expect(rows.nth(1)).to_contain_text("timer")

            await page.get_by_role("link", name="agent-1").click()
            await expect(page.locator("#timeline")).to_contain_text("delete_file")
            await expect(page.locator("#timeline")).to_contain_text("waiting on event ui.approval")
            await page.get_by_role("button", name="✔ approved").click()

            assert await waiting.result(timeout=10) == "deleted"
            await expect(page.locator("#facts")).to_contain_text("completed")
            await expect(page.locator("#timeline")).to_contain_text("event ui.approval consumed")
            await expect(page.locator("#data")).to_contain_text('"deleted"')
            await expect(page.locator("p.done")).to_contain_text("sent ui.approval to agent-1")


async def test_a_bad_payload_is_shown_beside_the_form_and_nothing_is_stored(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(agent, "x", id="agent-2")
        await parked(rt, "agent-2")
        ui = actorflow.ui.app(rt)
        async with serving(ui) as base, chromium() as browser:
            page = await browser.new_page()
            await open_page(base, ui, page, "/instance?id=agent-2")
            form = page.locator('form[data-form="send:ui.approval:json"]')
            await form.locator("summary").click()
            await form.locator("textarea").fill('{"approved": "yes"}')
            await form.get_by_role("button", name="Send JSON").click()

            form = page.locator('form[data-form="send:ui.approval:json"]')
            await expect(form.get_by_role("alert")).to_have_text(
                "payload for event 'ui.approval' does not fit Decision: "
                "Expected `bool`, got `str` - at `$.approved`"
            )
            await expect(form.locator("textarea")).to_have_value('{"approved": "yes"}')
            status = await rt.handle("agent-2").status()
            assert status.state == "waiting" and status.events == []


async def test_the_page_updates_by_itself_without_a_reload(db: Path) -> None:
    async with af.Runtime(db) as rt:
        ui = actorflow.ui.app(rt)
        async with serving(ui) as base, chromium() as browser:
            page = await browser.new_page()
            await open_page(base, ui, page)
            await expect(page.locator("#live")).to_have_class("live on")
            await page.evaluate("window.sameDocument = 'yes'")  # gone if the page reloads

            h = await rt.start(agent, "x", id="agent-3")
            row = page.locator('tr[data-id="agent-3"]')
            await expect(row).to_contain_text("waiting")
            await rt.send(h.id, approval, Decision(approved=False, note="not today"))
            await expect(row).to_contain_text("completed")
            assert await page.evaluate("window.sameDocument") == "yes"


async def test_a_request_without_the_access_token_is_refused(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(agent, "x", id="agent-4")
        ui = actorflow.ui.app(rt)
        async with serving(ui) as base, chromium() as browser:
            page = await browser.new_page()
            for url in (base + "/", base + "/?token=wrong", base + "/instance?id=agent-4"):
                response = await page.goto(url)
                assert response is not None and response.status == 403, url
                await expect(page.locator("body")).to_contain_text("access token")
                await expect(page.locator("body")).not_to_contain_text("agent-4")

            await open_page(base, ui, page)
            await expect(page.locator("tr.instance")).to_have_count(1)
            assert "token" not in page.url  # dropped from the address bar
            response = await page.goto(base + "/instance?id=agent-4")  # the cookie now
            assert response is not None and response.status == 200


async def test_a_file_owned_by_another_runtime_acts_through_its_inbox(db: Path) -> None:
    async with af.Runtime(db) as owner:
        h = await owner.start(agent, "x", id="agent-5")
        await parked(owner, "agent-5")
        ui = actorflow.ui.file_app(str(db))
        async with serving(ui) as base, chromium() as browser:
            page = await browser.new_page()
            await open_page(base, ui, page, "/instance?id=agent-5")
            # The owner's types are not known here: a JSON box, validated by the owner.
            form = page.locator('form[data-form="send:ui.approval"]')
            await form.locator("textarea").fill('{"approved": "yes"}')
            await form.get_by_role("button", name="Send").click()
            form = page.locator('form[data-form="send:ui.approval"]')
            await expect(form.get_by_role("alert")).to_have_text(
                re.compile(
                    r"request #\d+ \(send\) rejected: payload for event 'ui.approval' does not "
                    r"fit Decision: Expected `bool`, got `str` - at `\$.approved`"
                )
            )
            await form.locator("textarea").fill('{"approved": true}')
            await form.get_by_role("button", name="Send").click()
            await expect(page.locator("p.done")).to_have_text(
                re.compile(rf"request #\d+ \(send\) accepted by process {os.getpid()}")
            )
            assert await h.result(timeout=10) == "deleted"
            await expect(page.locator("#facts")).to_contain_text("completed")

            # Live: the server watches the file, and the page follows without a reload.
            await page.goto(base + "/")
            await page.evaluate("window.sameDocument = 'yes'")
            await owner.start(agent, "y", id="agent-6")
            await expect(page.locator('tr[data-id="agent-6"]')).to_contain_text("waiting")
            assert await page.evaluate("window.sameDocument") == "yes"


@pytest.mark.parametrize("width", [390, 1280])
async def test_the_page_fits_a_phone_and_a_desktop(db: Path, width: int) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(agent, "a-long-task-name-" * 4, id="agent-7-" + "x" * 40)
        await parked(rt, "agent-7-" + "x" * 40)
        ui = actorflow.ui.app(rt)
        async with serving(ui) as base, chromium() as browser:
            page = await browser.new_page(viewport={"width": width, "height": 800})
            await open_page(base, ui, page)
            fits = "document.documentElement.scrollWidth <= window.innerWidth"
            assert await page.evaluate(fits)
            await page.locator("tr.instance a").first.click()
            await expect(page.get_by_role("button", name="✔ approved")).to_be_visible()
            assert await page.evaluate(fits)


async def test_a_live_update_leaves_a_form_being_filled_in_alone(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(agent, "x", id="agent-8")
        await parked(rt, "agent-8")
        ui = actorflow.ui.app(rt)
        async with serving(ui) as base, chromium() as browser:
            page = await browser.new_page()
            await open_page(base, ui, page, "/instance?id=agent-8")
            await expect(page.locator("#live")).to_have_class("live on")
            note = page.locator('input[name="field.note"]')
            await note.fill("only the cache, not the sources")

            await rt.start(napper, id="elsewhere")  # a change: every open page refetches
            await expect(page.locator("body")).to_have_attribute(
                "data-refreshes", re.compile(r"\d")
            )
            await expect(note).to_have_value("only the cache, not the sources")
            await page.get_by_role("button", name="✘ not approved").click()
            assert await rt.handle("agent-8").result(timeout=10) == (
                "denied: only the cache, not the sources"
            )
