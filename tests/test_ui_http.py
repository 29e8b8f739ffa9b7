"""The page's server without a browser: the access token and the same-origin check, HTML
escaping, mounting beside an app's routes, every action, and errors worded as the
runtime and the CLI word them."""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote_plus

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import actorflow as af
import actorflow.ui
from actorflow import cli
from tests.ui_support import Decision, agent, approval, gated, napper, parked, token_flow

BASE = "http://127.0.0.1:8765"
SAME_ORIGIN = {"origin": BASE}


def client(app: object, base: str = BASE) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)  # type: ignore[arg-type]


@pytest.fixture
async def rt(db: Path) -> AsyncIterator[af.Runtime]:
    async with af.Runtime(db) as runtime:
        yield runtime


@contextlib.asynccontextmanager
async def signed_in(ui: actorflow.ui.UI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that visited the tokened link, so it holds the cookie."""
    async with client(ui) as c:
        assert (await c.get("/", params={"token": ui.token})).status_code == 200
        yield c


async def act(c: httpx.AsyncClient, **form: str) -> httpx.Response:
    return await c.post("/act", data={"form": "f", **form}, headers=SAME_ORIGIN)


async def test_every_request_needs_the_access_token(rt: af.Runtime) -> None:
    ui = actorflow.ui.app(rt, token="s3cret-token")
    async with client(ui) as c:
        for url in ("/", "/?token=wrong", "/instance?id=x", "/events", "/static/page.js"):
            refused = await c.get(url)
            assert refused.status_code == 403, url
            assert "access token" in refused.text
        refused = await c.post("/act", data={"action": "cancel", "id": "x"}, headers=SAME_ORIGIN)
        assert refused.status_code == 403

        by_header = await c.get("/", headers={"x-actorflow-token": "s3cret-token"})
        assert by_header.status_code == 200 and "set-cookie" not in by_header.headers

        by_url = await c.get("/?token=s3cret-token")
        assert by_url.status_code == 200
        cookie = by_url.headers["set-cookie"]
        assert cookie.startswith("actorflow_ui_8765=s3cret-token;")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert (await c.get("/static/page.js")).status_code == 200  # the cookie now


async def test_a_post_from_another_origin_is_refused_and_stores_nothing(rt: af.Runtime) -> None:
    await rt.start(agent, "x", id="agent-1")
    await parked(rt, "agent-1")
    ui = actorflow.ui.app(rt)
    form = {
        "action": "send",
        "id": "agent-1",
        "event": "ui.approval",
        "payload": '{"approved": true}',
    }
    async with signed_in(ui) as c:
        for headers in (
            {"origin": "http://evil.example"},
            {"origin": "null"},
            {"referer": "http://evil.example/page"},
            {},  # no Origin, no Referer, no Sec-Fetch-Site: not known to be the page's own
            {"origin": "http://127.0.0.1:9999"},  # another port is another origin
        ):
            refused = await c.post("/act", data=form, headers=headers)
            assert refused.status_code == 403, headers
            assert "another origin" in refused.text
        assert (await rt.handle("agent-1").status()).events == []

        fetched = await c.post("/act", data=form, headers={"sec-fetch-site": "same-origin"})
        assert fetched.status_code == 303
    assert (await rt.handle("agent-1").result(timeout=5)) == "deleted"


async def test_a_script_with_the_token_in_a_header_needs_no_origin(rt: af.Runtime) -> None:
    await rt.start(agent, "x", id="agent-1")
    await parked(rt, "agent-1")
    ui = actorflow.ui.app(rt)
    async with client(ui) as c:
        done = await c.post(
            "/act",
            data={"action": "send", "id": "agent-1", "event": "ui.approval", "typed": "1",
                  "field.approved": "false", "field.note": "no"},
            headers={"x-actorflow-token": ui.token},
        )  # fmt: skip
        assert done.status_code == 303
    assert await rt.handle("agent-1").result(timeout=5) == "denied: no"


async def test_names_payloads_and_errors_are_escaped(rt: af.Runtime) -> None:
    hostile = "<script>alert(1)</script>"
    await rt.start(agent, '<img src=x onerror="alert(2)">', id=hostile)
    await parked(rt, hostile)
    ui = actorflow.ui.app(rt)
    async with signed_in(ui) as c:
        listed = (await c.get("/")).text
        shown = (await c.get("/instance", params={"id": hostile})).text
        bad = await act(
            c, action="send", id=hostile, event="ui.approval", payload='"<b>x</b>"', form="send-any"
        )
    for page in (listed, shown, bad.text):
        assert "<script>alert" not in page and "<img src=x" not in page and "<b>x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown
    assert "&lt;b&gt;x&lt;/b&gt;" in bad.text  # the typed payload, kept in its box


async def test_mounted_beside_an_apps_own_routes(rt: af.Runtime) -> None:
    await rt.start(agent, "x", id="agent-1")
    await parked(rt, "agent-1")
    ui = actorflow.ui.app(rt)
    host = Starlette(
        routes=[Route("/hello", lambda request: PlainTextResponse("hi")), Mount("/flows", app=ui)]
    )
    async with client(host) as c:
        assert (await c.get("/hello")).text == "hi"
        assert (await c.get("/flows/")).status_code == 403
        page = await c.get("/flows/", params={"token": ui.token})
        assert page.status_code == 200 and "Path=/flows" in page.headers["set-cookie"]
        assert 'href="/flows/instance?id=agent-1"' in page.text
        assert 'src="/flows/static/page.js"' in page.text
        assert 'data-events="/flows/events?since=' in page.text
        shown = await c.get("/flows/instance", params={"id": "agent-1"})
        assert 'action="/flows/act"' in shown.text
        sent = await c.post(
            "/flows/act",
            data={"action": "send", "id": "agent-1", "event": "ui.approval", "typed": "1",
                  "field.approved": "true"},
            headers=SAME_ORIGIN,
        )  # fmt: skip
        assert sent.status_code == 303
        assert sent.headers["location"].startswith("/flows/instance?id=agent-1&done=")
    assert await rt.handle("agent-1").result(timeout=5) == "deleted"


async def test_a_gate_gets_two_buttons_send_and_cancel(rt: af.Runtime) -> None:
    ui = actorflow.ui.app(rt)
    async with signed_in(ui) as c:
        for instance, choice, result in (("g1", "send", "went"), ("g2", "cancel", "stopped")):
            await rt.start(gated, id=instance)
            await parked(rt, instance)
            page = (await c.get("/instance", params={"id": instance})).text
            assert 'name="gate" value="send"' in page and 'name="gate" value="cancel"' in page
            await act(c, action="send", id=instance, event="ui.go", gate=choice)
            assert await rt.handle(instance).result(timeout=5) == result


async def test_a_token_is_resolved_or_rejected_and_then_is_spent(rt: af.Runtime) -> None:
    ui = actorflow.ui.app(rt)
    async with signed_in(ui) as c:
        tokens = {}
        for instance in ("t1", "t2"):
            await rt.start(token_flow, id=instance)
            status = await parked(rt, instance)
            tokens[instance] = token = status.waiting_on[0].token or ""
            page = (await c.get("/instance", params={"id": instance})).text
            assert f'name="token" value="{token}"' in page
        resolved = await act(
            c, action="resolve", token=tokens["t1"], id="t1", event="ui.approval", typed="1",
            **{"field.approved": "true"},
        )  # fmt: skip
        assert resolved.status_code == 303
        assert await rt.handle("t1").result(timeout=5) == "resolved: True"

        unexplained = await act(c, action="reject", token=tokens["t2"], id="t2")
        assert unexplained.status_code == 400
        assert "say why you reject it" in unexplained.text
        await act(c, action="reject", token=tokens["t2"], id="t2", error="not this one")
        assert await rt.handle("t2").result(timeout=5) == "rejected: not this one"

        spent = await act(c, action="resolve", token=tokens["t1"], id="t1", payload="{}")
        assert spent.status_code == 400
        with pytest.raises(af.ActorflowError) as direct:
            await rt.resolve(tokens["t1"], {})
        assert _alert(spent.text) == str(direct.value)
        assert tokens["t1"] not in str(direct.value)


async def test_cancel_ends_the_instance(rt: af.Runtime) -> None:
    await rt.start(napper, id="n1")
    await parked(rt, "n1")
    ui = actorflow.ui.app(rt)
    async with signed_in(ui) as c:
        done = await act(c, action="cancel", id="n1")
        assert done.status_code == 303
        with pytest.raises(af.WorkflowCancelled):
            await rt.handle("n1").result(timeout=5)
        page = (await c.get("/instance", params={"id": "n1"})).text
        assert 'class="badge cancelled"' in page and "Cancel instance" not in page


async def test_errors_are_the_runtimes_own_one_liners(rt: af.Runtime) -> None:
    await rt.start(agent, "x", id="agent-1")
    await parked(rt, "agent-1")
    ui = actorflow.ui.app(rt)
    cases = [
        ({"event": "no.such.event", "payload": "{}"}, rt.send("agent-1", "no.such.event", {})),
        (
            {"event": "ui.approval", "payload": '{"approved": 1}'},
            rt.send("agent-1", "ui.approval", {"approved": 1}),
        ),
    ]
    async with signed_in(ui) as c:
        for form, direct in cases:
            with pytest.raises(af.ActorflowError) as expected:
                await direct
            shown = await act(c, action="send", id="agent-1", form="send-any", **form)
            assert shown.status_code == 400
            assert _alert(shown.text) == str(expected.value)
        not_json = await act(c, action="send", id="agent-1", event="ui.approval", payload="{nope")
        assert _alert(not_json.text).startswith("the payload is not valid JSON:")
        missing = await act(
            c, action="send", id="nobody", event="ui.approval", payload='{"approved": true}'
        )
        assert missing.status_code == 400
        assert _alert(missing.text) == "no workflow instance with id 'nobody'"
    assert (await rt.handle("agent-1").status()).events == []


async def test_a_file_without_a_running_owner_queues_and_errs_as_the_cli_does(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with af.Runtime(db) as owner:
        await owner.start(agent, "x", id="agent-1")
        await parked(owner, "agent-1")
    ui = actorflow.ui.file_app(str(db))
    payload = '{"approved": true}'
    async with signed_in(ui) as c:
        missing = await act(c, action="cancel", id="nobody")
        queued = await act(c, action="send", id="agent-1", event="ui.approval", payload=payload)
    with pytest.raises(SystemExit):
        cli.main(["--db", str(db), "cancel", "nobody"])
    assert capsys.readouterr().err.strip() == "actorflow: error: " + _alert(missing.text)
    assert missing.status_code == 400

    assert queued.status_code == 303
    done = unquote_plus(queued.headers["location"].partition("done=")[2])
    assert cli.main(["--db", str(db), "send", "agent-1", "ui.approval", payload]) == 0
    said = capsys.readouterr().out.strip()
    assert re.sub(r"#\d+", "#N", done) == re.sub(r"#\d+", "#N", said)
    assert "queued; it will be applied when a runtime starts" in done
    async with af.Runtime(db) as owner:  # applies both queued sends; the first one wins
        assert await owner.handle("agent-1").result(timeout=5) == "deleted"


def _alert(page: str) -> str:
    """The text of the page's error line (HTML-unescaped)."""
    found = re.search(r'<p class="error" role="alert">(.*?)</p>', page)
    assert found is not None, page
    return html.unescape(found.group(1))


async def test_the_list_filters_and_puts_people_first(rt: af.Runtime) -> None:
    await rt.start(napper, id="a-napper")
    await rt.start(agent, "x", id="b-agent")
    await rt.start(gated, id="c-gate")
    for instance in ("a-napper", "b-agent", "c-gate"):
        await parked(rt, instance)
    await rt.send("c-gate", "ui.go")
    await rt.handle("c-gate").result(timeout=5)
    ui = actorflow.ui.app(rt)
    async with signed_in(ui) as c:
        page = (await c.get("/")).text
        assert _order(page) == ["b-agent", "a-napper", "c-gate"]
        assert "3 instances, 1 waiting for a person" in page
        only = (await c.get("/", params=[("state", "waiting")])).text
        assert _order(only) == ["b-agent", "a-napper"]
        both = (await c.get("/", params=[("state", "waiting"), ("state", "completed")])).text
        assert _order(both) == ["b-agent", "a-napper", "c-gate"]
        agents = (await c.get("/", params={"workflow": "ui.agent"})).text
        assert _order(agents) == ["b-agent"]


def _order(page: str) -> list[str]:
    return re.findall(r'<tr class="instance[^"]*" data-id="([^"]*)"', page)


async def test_an_instance_shows_its_error_traceback_state_and_steps(
    db: Path, restore_workflow_registry: None
) -> None:
    import msgspec

    class Tally(msgspec.Struct):
        seen: int = 0

    def fetch() -> dict[str, int]:
        return {"rows": 3}

    @af.workflow(name="ui.breaks", state=Tally)
    async def breaks(ctx: af.Context[Tally]) -> None:
        ctx.state.seen = (await ctx.step(fetch))["rows"]
        await ctx.sleep(0)
        raise LookupError("<no such row>")

    async with af.Runtime(db) as rt:
        h = await rt.start(breaks, id="broken")
        with pytest.raises(af.WorkflowFailed):
            await h.result(timeout=5)
        ui = actorflow.ui.app(rt)
        async with signed_in(ui) as c:
            page = (await c.get("/instance", params={"id": "broken"})).text
    assert "LookupError: &lt;no such row&gt;" in page
    assert "Traceback" in page and "raise LookupError" in page
    assert "fetch → {&quot;rows&quot;:3}" in page
    assert "&quot;seen&quot;: 3" in page  # ctx.state
    assert "instance failed" in page


async def test_runtime_changed_returns_after_a_commit(rt: af.Runtime) -> None:
    import asyncio

    waiter = asyncio.ensure_future(rt.changed())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await rt.start(napper, id="n1")
    await asyncio.wait_for(waiter, 5)


def test_deadlines_and_ages_read_as_two_units() -> None:
    from actorflow.ui.pages import span, until

    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert until(now + timedelta(days=7) - timedelta(seconds=5), now) == "in 6 d 23 h"
    assert until(now + timedelta(minutes=4, seconds=10), now) == "in 4 m 10 s"
    assert until(now - timedelta(seconds=1), now) == "due"
    assert until(None, now) == "-"
    assert span(0) == "0 s" and span(3_725) == "1 h 2 m"


def test_a_held_instance_is_marked() -> None:
    from actorflow.ui.pages import Filters, list_page

    now = datetime(2026, 12, 1, tzinfo=UTC)
    held = af.Status(
        id="h1", workflow="gone.workflow", state="waiting", waiting_on=[], created_at=now,
        updated_at=now, finished_at=None, error=None,
        detail="workflow 'gone.workflow' is not registered in this process", events=[],
    )  # fmt: skip
    page = list_page([held], Filters(), root="", now=now)
    assert '<span class="badge held">held</span>' in page


def test_a_typed_form_becomes_the_json_the_cli_would_send() -> None:
    import msgspec

    from actorflow.ui.web import _typed_payload

    class Order(msgspec.Struct):
        item: str
        count: int
        rush: bool = False
        note: str | None = None

    form = {"field.item": "pens", "field.count": "12", "field.rush": "true", "field.note": ""}
    assert msgspec.json.decode(_typed_payload(form, Order)) == {
        "item": "pens", "count": 12, "rush": True
    }  # fmt: skip
    assert msgspec.json.decode(_typed_payload({"field.count": "a dozen"}, Order))["count"] == (
        "a dozen"  # kept as text: validation then says an int was expected
    )
    _ = Decision, approval


async def test_an_in_memory_runtime_is_served_too() -> None:
    async with af.Runtime() as rt:
        await rt.start(agent, "x", id="agent-1")
        await parked(rt, "agent-1")
        ui = actorflow.ui.app(rt)
        async with signed_in(ui) as c:
            assert "in-memory runtime" in (await c.get("/")).text
            page = (await c.get("/instance", params={"id": "agent-1"})).text
            assert "waiting on event ui.approval" in page and "✔ approved" in page
            sent = await act(
                c, action="send", id="agent-1", event="ui.approval", typed="1",
                **{"field.approved": "true"},
            )  # fmt: skip
            assert sent.status_code == 303
        assert await rt.handle("agent-1").result(timeout=5) == "deleted"


def test_a_run_number_is_shown_when_the_status_has_one() -> None:
    from actorflow.reader import Details
    from actorflow.ui.pages import instance_page

    class RunStatus(af.Status, frozen=True):  # as a store with continue-as-new reports it
        run: int = 1

    now = datetime(2026, 12, 1, tzinfo=UTC)
    status = RunStatus(
        id="r1", workflow="ui.agent", state="waiting", waiting_on=[], created_at=now,
        updated_at=now, finished_at=None, error=None, detail=None, events=[], run=3,
    )  # fmt: skip
    page = instance_page(
        Details(status, args=[], state=None, result=None, traceback=None, steps=[]),
        lambda name: None, root="", now=now,
    )  # fmt: skip
    assert "<dt>Run</dt><dd>3</dd>" in page


async def test_payload_and_form_sizes_are_limited_before_anything_is_decoded(db: Path) -> None:
    async with af.Runtime(db, max_payload_bytes=100) as rt:
        await rt.start(agent, "x", id="agent-1")
        await parked(rt, "agent-1")
        ui = actorflow.ui.app(rt)
        big = '{"approved": true, "note": "' + "x" * 200 + '"}'
        async with signed_in(ui) as c:
            refused = await act(c, action="send", id="agent-1", event="ui.approval", payload=big)
            assert _alert(refused.text) == (
                f"the payload is {len(big)} bytes, over the limit of 100 (max_payload_bytes)"
            )
            huge = await c.post(
                "/act", content=b"payload=" + b"x" * 2_300_000, headers={
                    **SAME_ORIGIN, "content-type": "application/x-www-form-urlencoded"
                },
            )  # fmt: skip
            assert huge.status_code == 413 and "over the limit" in huge.text
        assert (await rt.handle("agent-1").status()).events == []


def test_a_long_list_shows_the_first_rows_and_says_so() -> None:
    from actorflow.ui.pages import MAX_ROWS, Filters, list_page

    now = datetime(2026, 12, 1, tzinfo=UTC)
    statuses = [
        af.Status(
            id=f"i{n}",
            workflow="w",
            state="completed",
            waiting_on=[],
            created_at=now,
            updated_at=now,
            finished_at=now,
            error=None,
            detail=None,
            events=[],
        )
        for n in range(MAX_ROWS + 3)
    ]
    page = list_page(statuses, Filters(), root="", now=now)
    assert len(_order(page)) == MAX_ROWS
    assert f"{MAX_ROWS + 3} instances, 0 waiting for a person; the first {MAX_ROWS} are shown" in (
        page
    )
