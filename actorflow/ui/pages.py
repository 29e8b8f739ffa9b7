"""The HTML of the page: the list of instances and one instance, rendered on the server.

Every value that comes from the database or the request (IDs, names, payloads, errors)
goes through :func:`esc`; nothing is ever placed in a script. Elements that live updates
replace carry ``data-live`` and an ``id``.
"""

from __future__ import annotations

import html
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import msgspec

from actorflow.reader import Details
from actorflow.status import STATES, Status, Wait
from actorflow.ui.source import UNKNOWN_TYPE

SIMPLE_FIELDS = (str, int, float, bool)
MAX_ROWS = 500
"""Instances the list shows at most (people's first); filters narrow the rest."""


def esc(value: object) -> str:
    """``value`` as text safe inside HTML elements and quoted attributes."""
    return html.escape(str(value), quote=True)


def span(seconds: float) -> str:
    """A duration to two units: ``6 d 23 h``, ``4 m 10 s``, ``12 s``."""
    left = max(int(seconds), 0)
    parts: list[str] = []
    for name, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        count, left = divmod(left, size)
        if count or parts:
            parts.append(f"{count} {name}")
    return " ".join(parts[:2]) or "0 s"


def until(moment: datetime | None, now: datetime) -> str:
    """A deadline as the page says it: ``in 6 d 23 h``, ``due``, or ``-``."""
    if moment is None:
        return "-"
    left = (moment - now).total_seconds()
    return "due" if left <= 0 else f"in {span(left)}"


def when(moment: datetime | None) -> str:
    """An absolute time, UTC, to the second."""
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _time(moment: datetime | None, text: str) -> str:
    if moment is None:
        return esc(text)
    stamp = esc(moment.isoformat())
    return f'<time datetime="{stamp}" title="{esc(when(moment))}">{esc(text)}</time>'


def is_held(status: Status) -> bool:
    """Unfinished, and its runtime cannot run it (``detail`` says why)."""
    return status.detail is not None and status.finished_at is None


def waits_for_person(status: Status) -> bool:
    """Parked on an event (by name or token): someone has to send it."""
    return status.finished_at is None and any(w.kind == "event" for w in status.waiting_on)


def ordered(statuses: Iterable[Status]) -> list[Status]:
    """Instances waiting for a person first, then other unfinished ones (oldest first),
    then finished ones (most recent first)."""
    statuses = list(statuses)
    person = [s for s in statuses if waits_for_person(s)]
    other = [s for s in statuses if s.finished_at is None and not waits_for_person(s)]
    done = [s for s in statuses if s.finished_at is not None]
    by_age = sorted(person, key=lambda s: (s.created_at, s.id))
    by_age += sorted(other, key=lambda s: (s.created_at, s.id))
    return by_age + sorted(done, key=lambda s: (s.finished_at or s.updated_at, s.id), reverse=True)


def wait_text(wait: Wait) -> str:
    """One wait, without its deadline: ``event approval``, ``token …``, ``timer``."""
    if wait.kind == "event":
        return f"event {wait.name}" + (f" (token {wait.token})" if wait.token else "")
    if wait.kind == "timer" or not wait.name:
        return wait.kind
    return f"{wait.kind} {wait.name}"


def _badge(status: Status) -> str:
    held = ' <span class="badge held">held</span>' if is_held(status) else ""
    return f'<span class="badge {esc(status.state)}">{esc(status.state)}</span>{held}'


def _json(value: Any) -> str:
    try:
        text = msgspec.json.format(msgspec.json.encode(value), indent=2).decode()
    except (TypeError, msgspec.EncodeError):
        text = repr(value)
    return f"<pre>{esc(text)}</pre>"


def link(root: str, path: str, **query: str) -> str:
    """A URL under the page's root, with ``query`` encoded."""
    return f"{root}/{path}" + (f"?{urlencode(query)}" if query else "")


def layout(title: str, body: str, *, root: str, label: str, events: str) -> str:
    """A whole page around ``body``; ``events`` is the URL of its live updates."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · actorflow</title>
<link rel="stylesheet" href="{esc(root)}/static/page.css">
<script src="{esc(root)}/static/page.js" defer></script>
</head><body data-events="{esc(events)}">
<header><a class="home" href="{esc(root)}/">actorflow</a>
<span class="db" title="{esc(label)}">{esc(label)}</span>
<span id="live" class="live" title="updates by itself">live</span></header>
<main>{body}</main></body></html>"""


# -- the list ---------------------------------------------------------------------------
@dataclass
class Filters:
    """What the list shows: only these states / this workflow, when given."""

    states: set[str] = field(default_factory=set)
    workflow: str = ""

    def keep(self, status: Status) -> bool:
        """Whether ``status`` passes the filters."""
        return (not self.states or status.state in self.states) and (
            not self.workflow or status.workflow == self.workflow
        )


def list_page(statuses: list[Status], filters: Filters, *, root: str, now: datetime) -> str:
    """The body of the list of instances."""
    shown = ordered(s for s in statuses if filters.keep(s))
    workflows = sorted({s.workflow for s in statuses} | ({filters.workflow} - {""}))
    state_options = "".join(
        f'<label class="check"><input type="checkbox" name="state" value="{esc(s)}"'
        f"{' checked' if s in filters.states else ''}> {esc(s)}</label>"
        for s in sorted(STATES)
    )
    workflow_options = '<option value="">all workflows</option>' + "".join(
        f'<option value="{esc(w)}"{" selected" if w == filters.workflow else ""}>{esc(w)}</option>'
        for w in workflows
    )
    form = f"""<form class="filters" method="get" action="{esc(root)}/">
<fieldset><legend>State</legend>{state_options}</fieldset>
<label>Workflow <select name="workflow">{workflow_options}</select></label>
<button type="submit">Filter</button></form>"""
    rows = "".join(_row(s, root=root, now=now) for s in shown[:MAX_ROWS])
    waiting = sum(1 for s in shown if waits_for_person(s))
    plural = "s" if len(shown) != 1 else ""
    summary = f"{len(shown)} instance{plural}, {waiting} waiting for a person"
    if len(shown) > MAX_ROWS:  # a page a browser can still draw; filters narrow it
        summary += f"; the first {MAX_ROWS} are shown"
    table = (
        f"""<table class="instances"><thead><tr><th>Instance</th><th>Workflow</th><th>State</th>
<th>Waiting on</th><th>Deadline</th><th>Age</th></tr></thead><tbody>{rows}</tbody></table>"""
        if shown
        else '<p class="empty">No instances.</p>'
    )
    return f"""<h1>Instances</h1>{form}
<section id="list" data-live><p class="summary">{esc(summary)}</p>{table}</section>"""


def _row(s: Status, *, root: str, now: datetime) -> str:
    waits = "<br>".join(esc(wait_text(w)) for w in s.waiting_on) or "-"
    deadlines = [w.deadline for w in s.waiting_on if w.deadline is not None]
    soonest = min(deadlines) if deadlines else None
    person = " person" if waits_for_person(s) else ""
    href = link(root, "instance", id=s.id)
    return f"""<tr class="instance{person}" data-id="{esc(s.id)}">
<td data-label="Instance"><a href="{esc(href)}">{esc(s.id)}</a></td>
<td data-label="Workflow">{esc(s.workflow)}</td>
<td data-label="State">{_badge(s)}</td>
<td data-label="Waiting on">{waits}</td>
<td data-label="Deadline">{_time(soonest, until(soonest, now))}</td>
<td data-label="Age">{_time(s.created_at, span((now - s.created_at).total_seconds()))}</td></tr>"""


# -- one instance -------------------------------------------------------------------------
@dataclass
class Feedback:
    """What the last action said: an error next to the form that sent it (and the text
    the person had typed there), or a line saying what was done."""

    form: str = ""
    error: str = ""
    payload: str = ""
    done: str = ""


def instance_page(
    d: Details,
    event_type: typing.Callable[[str], Any],
    *,
    root: str,
    now: datetime,
    feedback: Feedback | None = None,
) -> str:
    """The body of one instance's page."""
    s = d.status
    feedback = feedback or Feedback()
    run = getattr(s, "run", None)  # stores with continue-as-new number their runs
    facts = [
        ("Workflow", esc(s.workflow)),
        ("State", _badge(s)),
        ("Created", _time(s.created_at, when(s.created_at))),
        ("Updated", _time(s.updated_at, when(s.updated_at))),
    ]
    if run is not None:
        facts.append(("Run", esc(run)))
    if s.finished_at is not None:
        facts.append(("Finished", _time(s.finished_at, when(s.finished_at))))
    if s.detail:
        facts.append(("Held because" if is_held(s) else "Detail", esc(s.detail)))
    facts_html = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    done = f'<p class="done" role="status">{esc(feedback.done)}</p>' if feedback.done else ""
    actions = _actions(d, event_type, root, feedback)
    sections = [
        f'<section id="facts" data-live><dl class="facts">{facts_html}</dl></section>',
        f'<section id="actions" data-live>{done}{actions}</section>',
        f'<section id="timeline" data-live><h2>Timeline</h2>{_timeline(d, now)}</section>',
        f'<section id="data" data-live>{_data(d)}</section>',
    ]
    return f'<p><a href="{esc(root)}/">← all instances</a></p><h1>{esc(s.id)}</h1>' + "".join(
        sections
    )


def _data(d: Details) -> str:
    s = d.status
    parts = []
    if s.error:
        first, _, rest = s.error.partition("\n")
        trace = d.traceback or rest.strip()
        parts.append(f'<h2>Error</h2><p class="error">{esc(first)}</p>')
        if trace:
            parts.append(
                f"<details open><summary>Traceback</summary><pre>{esc(trace)}</pre></details>"
            )
    if s.state == "completed":
        parts.append(f"<h2>Result</h2>{_json(d.result)}")
    if d.state is not None:
        parts.append(f"<h2>State <code>ctx.state</code></h2>{_json(d.state)}")
    if d.args:
        parts.append(f"<h2>Arguments</h2>{_json(d.args)}")
    return "".join(parts)


def _timeline(d: Details, now: datetime) -> str:
    s = d.status
    entries: list[tuple[datetime, int, str]] = [(s.created_at, 0, "instance started")]
    for e in s.events:
        what = f"event {e.name}" + (f" (token {e.token})" if e.token else "")
        outcome = "" if e.outcome in (None, "value") else f" ({e.outcome})"
        if e.token is not None:
            entries.append((e.created_at, 1, f"{what} created"))
        if e.sent_at is not None:
            entries.append((e.sent_at, 2, f"{what} sent{outcome}"))
        if e.consumed_at is not None:
            entries.append((e.consumed_at, 3, f"{what} consumed"))
    for step in d.steps:
        if step.error:
            text = f"step #{step.seq} {step.name} failed: {step.error}"
            entries.append((step.finished_at, 2, text))
        else:
            result = msgspec.json.encode(step.result).decode() if _encodable(step.result) else "?"
            short = result if len(result) <= 160 else result[:157] + "..."
            entries.append((step.finished_at, 2, f"step #{step.seq} {step.name} → {short}"))
    if s.finished_at is not None:
        entries.append((s.finished_at, 4, f"instance {s.state}"))
    items = "".join(
        f"<li>{_time(at, when(at))} <span>{esc(text)}</span></li>"
        for at, _, text in sorted(entries, key=lambda e: (e[0], e[1]))
    )
    waits = "".join(
        f"<li><span>waiting on {esc(wait_text(w))}</span>"
        + (
            f" · deadline {_time(w.deadline, until(w.deadline, now))}"
            if w.deadline is not None
            else ""
        )
        + "</li>"
        for w in s.waiting_on
    )
    return f'<ol class="timeline">{items}{waits}</ol>'


def _encodable(value: Any) -> bool:
    try:
        msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError):
        return False
    return True


# -- acting ---------------------------------------------------------------------------------
def _actions(
    d: Details, event_type: typing.Callable[[str], Any], root: str, feedback: Feedback
) -> str:
    s = d.status
    if s.finished_at is not None:  # nothing left to do; say why the last try failed
        return f'<p class="error" role="alert">{esc(feedback.error)}</p>' if feedback.error else ""
    forms: list[str] = []
    by_name = [w.name for w in s.waiting_on if w.kind == "event" and w.name and not w.token]
    tokens = [w for w in s.waiting_on if w.kind == "event" and w.token]
    for name in dict.fromkeys(by_name):
        target = {"action": "send", "id": s.id, "event": name}
        payload_type = event_type(name)
        forms.append(
            _event_form(f"send:{name}", f"Send {name}", target, payload_type, root, feedback)
        )
    seen = {w.token for w in tokens}
    pending = [e for e in s.events if e.token and e.outcome is None and e.token not in seen]
    for token, name in [(w.token or "", w.name or "") for w in tokens] + [
        (e.token or "", e.name) for e in pending
    ]:
        target = {"action": "resolve", "token": token, "id": s.id}
        title = f"Resolve {name} (token {token})"
        key = f"resolve:{token}"
        forms.append(_event_form(key, title, target, event_type(name), root, feedback))
        forms.append(_reject_form(token, s.id, root, feedback))
    forms.append(_any_event_form(s.id, root, feedback))
    forms.append(
        _form(
            "cancel",
            {"action": "cancel", "id": s.id},
            "<details><summary>Cancel this instance…</summary>"
            '<button type="submit" class="danger">Cancel instance</button></details>',
            root,
            feedback,
        )
    )
    html_forms = "".join(forms)
    stray = ""
    if feedback.error and f'data-form="{esc(feedback.form)}"' not in html_forms:
        stray = f'<p class="error" role="alert">{esc(feedback.error)}</p>'  # its form is gone
    return "<h2>Act</h2>" + stray + html_forms


def _form(key: str, target: Mapping[str, str], inner: str, root: str, feedback: Feedback) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in target.items()
    )
    error = ""
    if feedback.form == key:  # show the error, and the folded part it came from, open
        error = f'<p class="error" role="alert">{esc(feedback.error)}</p>'
        inner = inner.replace("<details>", "<details open>")
    return (
        f'<form class="act" method="post" action="{esc(root)}/act" data-form="{esc(key)}">'
        f'<input type="hidden" name="form" value="{esc(key)}">{hidden}{inner}{error}</form>'
    )


def _json_box(key: str, feedback: Feedback, placeholder: str = '{"field": "value"}') -> str:
    typed = feedback.payload if feedback.form == key else ""
    return (
        f'<label>JSON payload (empty: none) <textarea name="payload" rows="3" spellcheck="false" '
        f'placeholder="{esc(placeholder)}">{esc(typed)}</textarea></label>'
    )


def _event_form(
    key: str, title: str, target: dict[str, str], payload_type: Any, root: str, feedback: Feedback
) -> str:
    head = f"<h3>{esc(title)}</h3>"
    if payload_type is None:  # a gate: send it, or cancel the wait
        go = '<button type="submit" name="gate" value="send">Send</button>'
        stop = (
            '<button type="submit" name="gate" value="cancel" class="secondary">'
            "Cancel event</button>"
        )
        return _form(key, target, f'{head}<div class="buttons">{go}{stop}</div>', root, feedback)
    fields = simple_fields(payload_type)
    if fields is None:  # not known here, or not a flat Struct: a JSON box
        box = _json_box(key, feedback)
        button = '<button type="submit">Send</button>'
        return _form(key, target, f"{head}{box}{button}", root, feedback)
    inputs, bools = [], [f for f in fields if f[1] is bool]
    for name, kind, required in fields:
        if kind is bool and len(bools) == 1:
            continue  # the one boolean becomes the two buttons
        if kind is bool:
            inputs.append(
                '<label class="check"><input type="checkbox" '
                f'name="field.{esc(name)}" value="true"> {esc(name)}</label>'
            )
            continue
        mode = 'inputmode="decimal" ' if kind in (int, float) else ""
        need = " required" if required else ""
        inputs.append(
            f'<label>{esc(name)} <input type="text" {mode}name="field.{esc(name)}"'
            f' data-kind="{esc(kind.__name__)}"{need}></label>'
        )
    if len(bools) == 1:
        flag = esc(bools[0][0])
        buttons = (
            f'<button type="submit" name="field.{flag}" value="true" class="yes">'
            f"✔ {flag}</button>"
            f'<button type="submit" name="field.{flag}" value="false" class="no">'
            f"✘ not {flag}</button>"
        )
    else:
        buttons = '<button type="submit">Send</button>'
    typed = f'<div class="buttons">{buttons}</div>'
    raw = _form(
        key + ":json",
        target,
        f"<details><summary>…or send JSON</summary>{_json_box(key + ':json', feedback)}"
        '<button type="submit">Send JSON</button></details>',
        root,
        feedback,
    )
    generated = _form(key, target | {"typed": "1"}, head + "".join(inputs) + typed, root, feedback)
    return generated + raw


def simple_fields(payload_type: Any) -> list[tuple[str, type, bool]] | None:
    """``(name, type, required)`` of each field when ``payload_type`` is a Struct of
    str / int / float / bool fields (optionally ``| None``); else ``None``."""
    if payload_type is UNKNOWN_TYPE or not (
        isinstance(payload_type, type) and issubclass(payload_type, msgspec.Struct)
    ):
        return None
    found = []
    for f in msgspec.structs.fields(payload_type):
        kind = f.type
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            rest = [a for a in typing.get_args(kind) if a is not type(None)]
            kind = rest[0] if len(rest) == 1 else None
        if kind not in SIMPLE_FIELDS:
            return None
        found.append((f.encode_name, kind, f.required))
    return found


def _reject_form(token: str, instance: str, root: str, feedback: Feedback) -> str:
    key = f"reject:{token}"
    typed = feedback.payload if feedback.form == key else ""
    inner = (
        "<details><summary>Reject it…</summary>"
        f'<label>Error the workflow sees <input type="text" name="error" value="{esc(typed)}"'
        ' required></label><button type="submit" class="no">Reject</button></details>'
    )
    return _form(key, {"action": "reject", "token": token, "id": instance}, inner, root, feedback)


def _any_event_form(instance: str, root: str, feedback: Feedback) -> str:
    key = "send-any"
    inner = (
        "<details><summary>Send any event…</summary>"
        '<label>Event name <input type="text" name="event" required></label>'
        f'{_json_box(key, feedback)}<button type="submit">Send</button></details>'
    )
    return _form(key, {"action": "send", "id": instance}, inner, root, feedback)
