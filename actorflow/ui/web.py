"""The ASGI application: routes, the access-token guard, and live updates.

Every request needs the access token: in the URL (``?token=``, the link printed at
start; it then sets an HttpOnly, SameSite=Strict cookie so that links work), in that
cookie, or in an ``X-Actorflow-Token`` header. A POST authorised by the cookie must also
come from the page's own origin (``Origin``, else ``Referer``), so another site cannot
make a logged-in browser act. Live updates are server-sent events: one task per app
waits for the source to change and wakes every open page, which then fetches itself.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actorflow.errors import ActorflowError
from actorflow.ui import pages
from actorflow.ui.source import Action, Source

TOKEN_HEADER = "x-actorflow-token"
KEEPALIVE = 15.0  # seconds between comments on a quiet event stream
SETTLE = 0.05  # seconds to let a burst of commits finish before pages refetch
MAX_FORM_BYTES = 2_200_000  # a payload at the default limit, form-encoded, and the rest

Form = dict[str, str]
_ASSETS = {
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    # Same-origin: links out never carry the page's URL, and the browser still sends
    # ``Origin`` on the page's own POSTs (under no-referrer it sends ``Origin: null``).
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


class Changes:
    """A counter of changes of the source that pages wait on; one task follows the source."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.version = 0
        self._bumped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def follow(self) -> int:
        """Start following the source (once); return the current version."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._follow())
        return self.version

    async def after(self, seen: int) -> int:
        """Wait until the version is past ``seen``; return it."""
        self.follow()
        while self.version <= seen:
            await self._bumped.wait()
        return self.version

    async def _follow(self) -> None:
        while True:
            await self.source.changed()
            await asyncio.sleep(SETTLE)  # an instance parks right after its commit
            self.version += 1
            self._bumped.set()
            self._bumped = asyncio.Event()

    def stop(self) -> None:
        """Stop following the source."""
        if self._task is not None:
            self._task.cancel()


class UI:
    """The page as an ASGI app over ``source``, guarded by ``token``.

    Mount it in a Starlette or FastAPI app (``app.mount("/flows", ui)``) or serve it
    with uvicorn; :meth:`url` is the link to give the person.
    """

    def __init__(self, source: Source, *, token: str | None = None) -> None:
        self.source = source
        self.token = token or secrets.token_urlsafe(32)
        self.changes = Changes(source)
        routes = [
            Route("/", self._list),
            Route("/instance", self._instance),
            Route("/act", self._act, methods=["POST"]),
            Route("/events", self._events),
            Route("/static/{name}", self._asset),
        ]
        self._app: ASGIApp = TokenGuard(Starlette(routes=routes), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    def url(self, base: str) -> str:
        """The link that opens the page at ``base`` (e.g. ``http://127.0.0.1:8765``)."""
        return f"{base.rstrip('/')}/?token={self.token}"

    # -- pages -------------------------------------------------------------------------------
    async def _list(self, request: Request) -> Response:
        filters = pages.Filters(
            states=set(request.query_params.getlist("state")),
            workflow=request.query_params.get("workflow", ""),
        )
        statuses = await self.source.list()
        body = pages.list_page(statuses, filters, root=_root(request), now=_now())
        return self._page("Instances", body, request)

    async def _instance(self, request: Request) -> Response:
        instance = request.query_params.get("id", "")
        feedback = pages.Feedback(done=request.query_params.get("done", "")[:300])
        return await self._instance_page(request, instance, feedback)

    async def _instance_page(
        self, request: Request, instance: str, feedback: pages.Feedback, status_code: int = 200
    ) -> Response:
        try:
            details = await self.source.show(instance)
        except ActorflowError as exc:
            if feedback.error:  # the action failed on an instance there is no page for
                body = f'<p class="error" role="alert">{pages.esc(feedback.error)}</p>'
                return self._page("Refused", body, request, status_code)
            body = f'<h1>Not found</h1><p class="error">{pages.esc(exc)}</p>'
            return self._page("Not found", body, request, 404)
        body = pages.instance_page(
            details, self.source.event_type, root=_root(request), now=_now(), feedback=feedback
        )
        return self._page(instance, body, request, status_code)

    def _page(self, title: str, body: str, request: Request, status_code: int = 200) -> Response:
        # The version the page shows: its event stream reports any change after it, even
        # one that lands before the browser connects.
        events = pages.link(_root(request), "events", since=str(self.changes.follow()))
        page = pages.layout(
            title, body, events=events, label=self.source.label, root=_root(request)
        )
        return HTMLResponse(page, status_code, headers=SECURITY_HEADERS)

    # -- acting ------------------------------------------------------------------------------
    async def _act(self, request: Request) -> Response:
        try:
            form = await _form(request)
        except ActorflowError as exc:
            return self._page("Refused", f'<p class="error">{pages.esc(exc)}</p>', request, 413)
        instance = _field(form, "id")
        key = _field(form, "form")
        typed = _field(form, "payload") or _field(form, "error")
        try:
            action = self._action(form)
            done = await self.source.act(action)
        except ActorflowError as exc:
            # Nothing was stored: the same page, the reason beside the form that sent it.
            feedback = pages.Feedback(form=key, error=str(exc), payload=typed)
            return await self._instance_page(request, instance, feedback, 400)
        target = pages.link(_root(request), "instance", id=instance, done=done)
        return RedirectResponse(target, 303, headers=SECURITY_HEADERS)

    def _action(self, form: Form) -> Action:
        kind = _field(form, "action")
        payload: str | None = _field(form, "payload").strip() or None
        if _field(form, "typed"):
            payload = _typed_payload(form, self.source.event_type(_field(form, "event")))
        error = _field(form, "error") or None
        if kind == "reject" and error is None:
            raise ActorflowError("say why you reject it: the workflow sees that text")
        return Action(
            kind=kind,
            instance=_field(form, "id"),
            event=_field(form, "event"),
            token=_field(form, "token"),
            payload=payload,
            error=error,
            cancelled=_field(form, "gate") == "cancel",
        )

    # -- live updates and assets ------------------------------------------------------------
    async def _events(self, request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            yield "retry: 1000\n\n"
            seen = min(_int(request.query_params.get("since")), self.changes.follow())
            while True:
                try:
                    seen = await asyncio.wait_for(self.changes.after(seen), KEEPALIVE)
                except TimeoutError:
                    yield ": still here\n\n"
                    continue
                yield f"event: change\ndata: {seen}\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def _asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _ASSETS:
            return Response("not found", 404)
        text = resources.files("actorflow.ui").joinpath(name).read_text("utf-8")
        return Response(text, media_type=_ASSETS[name], headers=SECURITY_HEADERS)


def _int(text: str | None) -> int:
    try:
        return int(text or "")
    except ValueError:
        return -1


def _now() -> datetime:
    return datetime.now(UTC)


def _root(request: Request) -> str:
    """Where this app is mounted ('' at the top of a server)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


async def _form(request: Request) -> Form:
    """The fields of a POSTed form (``application/x-www-form-urlencoded``), first value
    of each; larger than :data:`MAX_FORM_BYTES` raises :class:`ActorflowError`."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ActorflowError(f"the form is over the limit of {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ActorflowError(f"the form cannot be read: {type(exc).__name__}") from None
    form: Form = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


def _field(form: Form, name: str) -> str:
    return form.get(name, "")


def _typed_payload(form: Form, payload_type: Any) -> str:
    """The JSON of a payload built from a generated form's ``field.NAME`` inputs."""
    fields = pages.simple_fields(payload_type)
    if fields is None:
        raise ActorflowError("this event's type is not known here; send it as JSON")
    value: dict[str, Any] = {}
    for name, kind, required in fields:
        raw = _field(form, f"field.{name}")
        if kind is bool:
            value[name] = raw == "true"
        elif raw == "" and not required:
            continue
        elif kind in (int, float):
            value[name] = _number(raw)
        else:
            value[name] = raw
    return json.dumps(value)


def _number(text: str) -> Any:
    # Not a number: kept as text, so that validation says what was expected.
    try:
        return json.loads(text)
    except ValueError:
        return text


class TokenGuard:
    """Refuses requests without the access token, and cross-origin POSTs (ASGI middleware)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    def _is_token(self, candidate: str | None) -> bool:
        return candidate is not None and secrets.compare_digest(
            candidate.encode("utf-8", "surrogateescape"), self.token.encode()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        cookie = _cookie_name(request)
        by_url = self._is_token(request.query_params.get("token"))
        by_header = self._is_token(request.headers.get(TOKEN_HEADER))
        by_cookie = self._is_token(request.cookies.get(cookie))
        if not (by_url or by_header or by_cookie):
            await _refuse(
                "this page needs its access token: open the link that `actorflow ui` printed",
                scope, receive, send,
            )  # fmt: skip
            return
        if request.method not in ("GET", "HEAD") and not by_header and not _same_origin(request):
            await _refuse("a request from another origin was refused", scope, receive, send)
            return
        if not by_url:
            await self.app(scope, receive, send)
            return
        path = _root(request) or "/"
        set_cookie = f"{cookie}={self.token}; Path={path}; HttpOnly; SameSite=Strict".encode(
            "latin-1"
        )

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"set-cookie", set_cookie)]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _cookie_name(request: Request) -> str:
    # Cookies ignore the port: two pages on one host keep one cookie each.
    port = request.url.port or 0
    return f"actorflow_ui_{port}"


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        # A browser's own word (a page cannot set Sec-Fetch-* headers).
        return request.headers.get("sec-fetch-site") == "same-origin"
    parts = urlsplit(origin)
    return f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.url.netloc}"


async def _refuse(reason: str, scope: Scope, receive: Receive, send: Send) -> None:
    # A bare page: its stylesheet would be refused too.
    body = f"<!doctype html><title>Forbidden</title><h1>Forbidden</h1><p>{pages.esc(reason)}</p>"
    await HTMLResponse(body, 403, headers=SECURITY_HEADERS)(scope, receive, send)
