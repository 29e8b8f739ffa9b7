"""Model-based test: random sequences of starts, sends, resolves, clock moves, notifies,
cancels, checkpoints and crashes on a real SQLite file, each step checked against a
small plain-Python model of what every instance must show.

Profiles: ``ci`` (default; bounded well under a minute) and ``long`` for a local soak,
chosen with ``HYPOTHESIS_PROFILE=long``. They apply to this module's machine only.

Crashes come in three strengths:

* ``close``: ``await rt.close()`` (flush + checkpoint), then open again;
* ``abandon``: the runtime is dropped at a quiet moment without flushing or
  checkpointing: the writer task is cancelled, timers and tasks stopped, and the
  SQLite connection closed, so the next open recovers from the WAL table like after
  ``kill -9``;
* ``torn`` (``sends_in_flight(crash=True)``): sends are issued as tasks and the
  runtime is abandoned while some are in flight (a random number of loop turns in).
  The model then learns from the reopened file which of the unacknowledged sends
  were stored, and checks that every acknowledged send was, and that the stored ones
  are a prefix of the issue order.

Passivation is invisible to the model: the runtime opens with a random ``max_loaded``
(0 to 3, none, or the default) and ``set_max_loaded`` changes it at random, so that
instances are unloaded and loaded again by replay between any two steps.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import actorflow as af
from actorflow.clock import to_datetime

settings.register_profile(
    "ci",
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=1000,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# -- the workflows under test ---------------------------------------------------------

ping = af.Event("model.ping", int)
tick = af.Event("model.tick", int)
go = af.Event("model.go")
tok = af.Event("model.tok", int)
NAMES = [ping.name, tick.name, go.name, tok.name]
TIMEOUT = 10.0
TOPIC = "model.board"
BOARD: dict[str, int] = {}  # outside data that model.watch queries


@af.workflow(name="model.collect")
async def collect(ctx: af.Context[None], n: int) -> list[int]:
    """Waits for ``model.ping`` n times; returns the payloads in order."""
    return [await ctx.wait_event(ping) for _ in range(n)]


@af.workflow(name="model.token")
async def token_flow(ctx: af.Context[None], gated: bool) -> str:
    """Makes a token, (if gated: waits for ``model.go``), then waits on the token."""
    ref = await ctx.create_event(tok)
    if gated:
        await ctx.wait_event(go)
    try:
        value = await ctx.wait_event(ref)
    except af.EventFailed as exc:
        return f"failed:{exc.error}"
    return f"value:{value}"


@af.workflow(name="model.ticks")
async def ticks(ctx: af.Context[None], n: int) -> list[int | None]:
    """Waits n times for ``model.tick`` with a timeout; a timeout is recorded as None."""
    out: list[int | None] = []
    for _ in range(n):
        try:
            out.append(await ctx.wait_event(tick, timeout=TIMEOUT))
        except af.WaitTimeout:
            out.append(None)
    return out


def read_board(key: str) -> int:
    return BOARD.get(key, 0)


@af.workflow(name="model.watch")
async def watch(ctx: af.Context[None], key: str) -> int:
    """Waits until the board has a non-zero value under ``key`` and returns it."""
    return await ctx.wait_for(read_board, key, on=TOPIC)


@af.workflow(name="model.relay")
async def relay(ctx: af.Context[None], n: int, got: list[int] | None = None) -> list[int]:
    """Like ``model.collect``, but each ping is taken by a run of its own: the run that
    takes it continues as new (``ctx.continue_as_new``) until n were taken."""
    got = [*(got or []), await ctx.wait_event(ping)]
    if len(got) < n:
        ctx.continue_as_new(n, got)
    return got


WORKFLOWS: dict[str, af.Workflow[Any]] = {
    "collect": collect,
    "relay": relay,
    "token": token_flow,
    "ticks": ticks,
    "watch": watch,
}

# -- the model ---------------------------------------------------------------------------


@dataclass
class MEvent:
    name: str
    token: str | None
    outcome: str  # value | failed | cancelled
    payload: int | None
    error: str | None
    created_at: float
    sent_at: float
    consumed_at: float | None = None


@dataclass
class MInstance:
    id: str
    kind: str
    arg: Any
    started_at: float
    state: str = "waiting"
    got: list[int | None] = field(default_factory=list)
    events: list[MEvent] = field(default_factory=list)
    token: str | None = None
    token_used: bool = False
    gate_open: bool = False
    deadline: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: str | None = None
    run: int = 1

    @property
    def live(self) -> bool:
        return self.state == "waiting"

    def wait(self) -> tuple[str, str | None, str | None] | None:
        """What the instance waits on now: (kind, name, token)."""
        if not self.live:
            return None
        if self.kind in ("collect", "relay"):
            return ("event", ping.name, None)
        if self.kind == "ticks":
            return ("event", tick.name, None)
        if self.kind == "token":
            if self.arg and not self.gate_open:
                return ("event", go.name, None)
            return ("event", tok.name, self.token)
        return ("query", f"{__name__}.{read_board.__qualname__}", None)

    def finish(self, state: str, at: float, result: Any = None, error: str | None = None) -> None:
        self.state, self.finished_at, self.result, self.error = state, at, result, error
        self.deadline = None

    def pump(self, now: float) -> None:
        """Feed buffered events to the current wait, oldest first, while one fits."""
        while (wait := self.wait()) is not None and wait[0] == "event":
            _, name, token = wait
            event = next(
                (
                    e
                    for e in self.events
                    if e.consumed_at is None and e.name == name and e.token == token
                ),
                None,
            )
            if event is None:
                return
            event.consumed_at = now
            self.feed(event, now)

    def feed(self, event: MEvent, now: float) -> None:
        on_token = self.kind == "token" and event.token is not None
        if event.outcome != "value" and not on_token:
            if event.outcome == "failed":
                error = f"EventFailed: event {event.name!r} failed: {event.error}"
            else:
                error = f"EventCancelled: event {event.name!r} was cancelled"
            self.finish("failed", now, error=error)
            return
        if self.kind == "token":
            if event.token is None:
                self.gate_open = True
            elif event.outcome == "value":
                self.finish("completed", now, result=f"value:{event.payload}")
            else:
                self.finish("completed", now, result=f"failed:{event.error}")
            return
        self.got.append(event.payload)
        if len(self.got) == self.arg:
            self.finish("completed", now, result=list(self.got))
        elif self.kind == "relay":  # a new run: only the mailbox's unconsumed events remain
            self.run += 1
            self.events = [e for e in self.events if e.consumed_at is None and e.token is None]
        elif self.kind == "ticks":
            self.deadline = now + TIMEOUT

    def expire(self, until: float) -> None:
        """Fire this instance's timeouts due by ``until``."""
        while self.live and self.deadline is not None and self.deadline <= until:
            at = self.deadline
            self.got.append(None)
            if len(self.got) == self.arg:
                self.finish("completed", at, result=list(self.got))
            else:
                self.deadline = at + TIMEOUT
            self.pump(at)

    def query(self, now: float) -> None:
        """The instance's query ran now."""
        if self.live and self.kind == "watch" and (value := BOARD.get(self.arg, 0)):
            self.finish("completed", now, result=value)

    def accept(self, event: MEvent, now: float) -> None:
        self.events.append(event)
        if event.token is not None:
            self.token_used = True
        self.pump(now)


def _dt(ts: float | None) -> Any:
    return None if ts is None else to_datetime(ts)


# -- crashing --------------------------------------------------------------------------


async def abandon(rt: af.Runtime) -> None:
    """Drop ``rt`` as a crash would: nothing queued is flushed, no checkpoint is taken.

    Reaches into the runtime's parts on purpose (a crash has no public API), then uses
    theirs. What was committed stays in the WAL table; what the writer had not committed
    is lost.
    """
    rt._state = "closed"  # every public call now raises RuntimeClosed
    writer = rt._writer.abort()  # later appends are dropped, as in a dead process
    rt._timers.close()
    executor = rt._executor.abort()  # steps and queries stop where they are
    await asyncio.gather(writer, executor)
    rt._directory.close()  # no more loads
    for actor in rt._directory.loaded.values():
        actor.loop.drop()
    # A write already handed to aiosqlite's thread finishes (or not) before the close
    # runs on that thread: the file then holds whole committed batches and nothing else.
    await rt._store.close()


# -- the machine -----------------------------------------------------------------------


class RuntimeModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="af-model-"))
        self.path = self.dir / "model.db"
        self.clock = af.testing.ManualClock()
        self.now = self.clock.now()
        self.instances: list[MInstance] = []
        self.by_id: dict[str, MInstance] = {}
        self.payload = 0
        self.checkpoint_every = 50_000
        self.max_loaded: int | None = 10_000
        self.rt: af.Runtime | None = None
        BOARD.clear()

    # -- plumbing ----------------------------------------------------------------------
    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @property
    def runtime(self) -> af.Runtime:
        assert self.rt is not None
        return self.rt

    async def open(self) -> None:
        self.rt = af.Runtime(
            self.path,
            clock=self.clock,
            checkpoint_every=self.checkpoint_every,
            max_loaded=self.max_loaded,
        )
        await self.rt.open()
        await self.clock.settle()

    def next_payload(self) -> int:
        self.payload += 1
        return self.payload

    def pick(self, index: int, kind: str | None = None) -> MInstance:
        pool = [i for i in self.instances if kind is None or i.kind == kind]
        return pool[index % len(pool)]

    def has(self, kind: str) -> bool:
        return any(i.kind == kind for i in self.instances)

    def teardown(self) -> None:
        try:
            if self.rt is not None and not self.rt.closed:
                self.run(self.rt.close())
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)
            BOARD.clear()

    # -- rules -------------------------------------------------------------------------
    @initialize(
        checkpoint_every=st.sampled_from([3, 10, 50_000]),
        max_loaded=st.sampled_from([0, 1, 2, 3, None, 10_000]),
    )
    def begin(self, checkpoint_every: int, max_loaded: int | None) -> None:
        self.checkpoint_every = checkpoint_every
        self.max_loaded = max_loaded
        self.run(self.open())

    @rule(max_loaded=st.sampled_from([0, 1, 2, 3, None]))
    def set_max_loaded(self, max_loaded: int | None) -> None:
        """Passivation is invisible: lowering the limit unloads parked instances now,
        raising it lets later loads stay, and nothing the model sees changes."""
        self.max_loaded = max_loaded
        self.runtime.max_loaded = max_loaded
        self.run(self.clock.settle())

    @rule(
        kind=st.sampled_from(sorted(WORKFLOWS)),
        n=st.integers(1, 3),
        gated=st.booleans(),
    )
    def start(self, kind: str, n: int, gated: bool) -> None:
        instance_id = f"i{len(self.instances)}"
        arg: Any = {"collect": n, "relay": n, "ticks": n, "token": gated, "watch": f"k{n}"}[kind]
        inst = MInstance(instance_id, kind, arg, self.now)

        async def go_() -> None:
            h = await self.runtime.start(WORKFLOWS[kind], arg, id=instance_id)
            assert h.id == instance_id
            await self.clock.settle()
            if kind == "token":
                st_ = await h.status()
                [made] = [e for e in st_.events if e.outcome is None]
                assert made.token is not None and made.token[0].isalpha()
                inst.token = made.token

        self.run(go_())
        self.instances.append(inst)
        self.by_id[instance_id] = inst
        if kind == "ticks":
            inst.deadline = self.now + TIMEOUT
        inst.query(self.now)

    @precondition(lambda self: self.instances)
    @rule(index=st.integers(0, 50), same=st.booleans())
    def start_existing(self, index: int, same: bool) -> None:
        inst = self.pick(index)
        other = {
            "collect": "ticks", "relay": "collect", "ticks": "collect", "token": "watch",
            "watch": "token",
        }  # fmt: skip

        async def go_() -> None:
            if same:
                arg = {"collect": 9, "relay": 9, "ticks": 9, "token": True, "watch": "zz"}[
                    inst.kind
                ]
                h = await self.runtime.start(WORKFLOWS[inst.kind], arg, id=inst.id)
                assert h.id == inst.id and h.workflow == WORKFLOWS[inst.kind].name
            else:
                with pytest.raises(af.ActorflowError, match="already exists"):
                    await self.runtime.start(WORKFLOWS[other[inst.kind]], 1, id=inst.id)
            await self.clock.settle()

        self.run(go_())

    @precondition(lambda self: self.instances)
    @rule(
        index=st.integers(0, 50),
        names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=4),
        how=st.sampled_from(["value", "value", "value", "failed", "cancelled"]),
        together=st.booleans(),
    )
    def send(self, index: int, names: list[str], how: str, together: bool) -> None:
        """Send one or more events by name, one after the other or all at once."""
        inst = self.pick(index)
        sends = []
        for name in names:
            payload = None if name == go.name or how != "value" else self.next_payload()
            error = f"boom{self.next_payload()}" if how == "failed" else None
            sends.append((name, payload, error))

        def call(name: str, payload: int | None, error: str | None) -> Any:
            return self.runtime.send(
                inst.id, name, payload, error=error, cancelled=how == "cancelled"
            )

        async def go_() -> list[Any]:
            if together:
                out = await asyncio.gather(*(call(*s) for s in sends), return_exceptions=True)
            else:
                out = []
                for s in sends:
                    try:
                        out.append(await call(*s))
                    except af.ActorflowError as exc:
                        out.append(exc)
                    await self.clock.settle()
            await self.clock.settle()
            return out

        # Sends made together are all accepted in one loop turn, before any of them
        # can finish the instance; the rest go one by one, each to a settled instance.
        live_before = inst.live
        outcomes = self.run(go_())
        for (name, payload, error), outcome in zip(sends, outcomes, strict=True):
            if not (live_before if together else inst.live):
                assert isinstance(outcome, af.ActorflowError), outcome
                assert not isinstance(outcome, af.InvalidPayload)
                assert "has finished" in str(outcome)
                continue
            assert outcome is None, outcome
            event = MEvent(name, None, how, payload, error, self.now, self.now)
            inst.accept(event, self.now)

    @precondition(lambda self: self.instances)
    @rule(index=st.integers(0, 50), bad=st.sampled_from(["str", "gate", "both", "float"]))
    def send_invalid(self, index: int, bad: str) -> None:
        inst = self.pick(index)
        call = {
            "str": lambda: self.runtime.send(inst.id, ping, "seven"),
            "gate": lambda: self.runtime.send(inst.id, go, 1),
            "both": lambda: self.runtime.send(inst.id, tick, error="x", cancelled=True),
            "float": lambda: self.runtime.send(inst.id, tok.name, 1.5),
        }[bad]

        async def go_() -> None:
            with pytest.raises(af.InvalidPayload):
                await call()
            await self.clock.settle()

        self.run(go_())

    @rule(which=st.sampled_from(["missing", "unknown-event"]))
    def send_unknown(self, which: str) -> None:
        async def go_() -> None:
            if which == "missing":
                with pytest.raises(af.ActorflowError, match="no workflow instance") as info:
                    await self.runtime.send("nobody", ping, 1)
            else:
                with pytest.raises(af.ActorflowError, match="no event named") as info:
                    await self.runtime.send(self.instances[0].id if self.instances else "x", "m")
            assert not isinstance(info.value, af.InvalidPayload)

        self.run(go_())

    @precondition(lambda self: self.has("token"))
    @rule(
        index=st.integers(0, 50),
        how=st.sampled_from(["resolve", "resolve", "reject", "invalid", "twice"]),
    )
    def resolve(self, index: int, how: str) -> None:
        inst = self.pick(index, "token")
        assert inst.token is not None
        token = inst.token
        payload = self.next_payload()
        error = f"no{payload}"

        async def attempt() -> None:
            if how == "reject":
                await self.runtime.reject(token, error)
            elif how == "invalid":
                await self.runtime.resolve(token, "not an int")
            else:
                await self.runtime.resolve(token, payload)

        async def go_() -> BaseException | None:
            try:
                await attempt()
            except af.ActorflowError as exc:
                await self.clock.settle()
                return exc
            await self.clock.settle()
            if how == "twice":  # a token is single use
                with pytest.raises(af.ActorflowError, match="already used") as info:
                    await self.runtime.resolve(token, payload + 1)
                assert not isinstance(info.value, af.InvalidPayload)
                await self.clock.settle()
            return None

        raised = self.run(go_())
        if not inst.live or inst.token_used:
            assert isinstance(raised, af.ActorflowError), raised
            assert not isinstance(raised, af.InvalidPayload)
            assert "unknown, already used" in str(raised)
            return
        if how == "invalid":
            assert isinstance(raised, af.InvalidPayload), raised
            return
        assert raised is None, raised
        made = inst.started_at  # the token was made when the instance started
        if how == "reject":
            event = MEvent(tok.name, token, "failed", None, error, made, self.now)
        else:
            event = MEvent(tok.name, token, "value", payload, None, made, self.now)
        inst.accept(event, self.now)

    @rule()
    def resolve_unknown(self) -> None:
        async def go_() -> None:
            with pytest.raises(af.ActorflowError, match="unknown"):
                await self.runtime.resolve("tno-such-token-anywhere", 1)

        self.run(go_())

    @rule(quarters=st.integers(0, 100))
    def advance(self, quarters: int) -> None:
        delta = quarters / 4
        self.run(self.clock.advance(delta))
        target = self.now + delta
        for inst in self.instances:
            inst.expire(target)
        self.now = target

    @precondition(lambda self: self.has("watch"))
    @rule(index=st.integers(0, 50), value=st.integers(0, 3), notify=st.booleans())
    def set_board(self, index: int, value: int, notify: bool) -> None:
        inst = self.pick(index, "watch")
        BOARD[inst.arg] = value
        if notify:
            self.notify()

    @rule()
    def notify(self) -> None:
        async def go_() -> None:
            await self.runtime.notify(TOPIC, "model.nobody-listens")
            await self.clock.settle()

        self.run(go_())
        for inst in self.instances:
            inst.query(self.now)

    @precondition(lambda self: self.instances)
    @rule(index=st.integers(0, 50), twice=st.booleans())
    def cancel(self, index: int, twice: bool) -> None:
        inst = self.pick(index)

        async def go_() -> None:
            h = self.runtime.handle(inst.id)
            await h.cancel()
            if twice:
                await h.cancel()
            await self.clock.settle()

        self.run(go_())
        if inst.live:
            inst.finish("cancelled", self.now)

    @rule()
    def checkpoint(self) -> None:
        async def go_() -> None:
            await self.runtime.checkpoint()
            await self.clock.settle()

        self.run(go_())

    @rule(how=st.sampled_from(["close", "abandon"]))
    def crash_and_reopen(self, how: str) -> None:
        async def go_() -> None:
            if how == "close":
                await self.runtime.close()
            else:
                await abandon(self.runtime)
            await self.open()

        self.run(go_())
        self.reopened()

    def reopened(self) -> None:
        """What a fresh runtime does at once: overdue timers fire, queries run."""
        for inst in self.instances:
            inst.expire(self.now)
            inst.query(self.now)

    @precondition(lambda self: self.instances)  # not on liveness: it may depend on a crash
    @rule(
        picks=st.lists(st.integers(0, 50), min_size=1, max_size=8),
        gaps=st.lists(st.integers(0, 2), min_size=8, max_size=8),
        turns=st.integers(0, 12),
        crash=st.booleans(),
    )
    def sends_in_flight(self, picks: list[int], gaps: list[int], turns: int, crash: bool) -> None:
        """Sends issued as tasks a few loop turns apart, so that some are accepted while
        earlier ones are being written; with ``crash`` the process dies ``turns`` turns
        after the last one is issued (a torn tail). Checks: every acknowledged send is
        stored, the stored ones are a prefix of the issue order, and the model (told by
        the file which unacknowledged ones made it) agrees on everything after."""
        # Which sends were stored is learnt from how many events status() lists: not for
        # a relay, whose new runs list only the events not consumed yet.
        live = [i for i in self.instances if i.live and i.kind != "relay"]
        if not live:
            return
        plan = []
        for n, index in enumerate(picks):
            inst = live[index % len(live)]
            name = {"collect": ping.name, "ticks": tick.name}.get(inst.kind, go.name)
            payload = None if name == go.name else self.next_payload()
            plan.append((inst, name, payload, gaps[n]))
        known = {i.id: sum(1 for e in i.events if e.token is None) for i in self.instances}

        async def go_() -> tuple[list[asyncio.Task[None]], dict[str, int]]:
            rt = self.runtime
            tasks = []
            for inst, name, payload, gap in plan:
                tasks.append(asyncio.ensure_future(rt.send(inst.id, name, payload)))
                for _ in range(gap):
                    await asyncio.sleep(0)
            for _ in range(turns):
                await asyncio.sleep(0)
            if crash:
                await abandon(rt)
                for task in tasks:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if crash:
                await self.open()
            await self.clock.settle()
            stored = {}
            for inst in {p[0].id for p in plan}:
                status = await self.runtime.handle(inst).status()
                stored[inst] = sum(1 for e in status.events if e.token is None) - known[inst]
            return tasks, stored

        tasks, stored = self.run(go_())
        # Which sends reached the file: per instance, the first `stored` of those not refused.
        flags: list[bool] = []
        taken = dict.fromkeys(stored, 0)
        accepted = []
        for (inst, name, payload, _), task in zip(plan, tasks, strict=True):
            refused = None if task.cancelled() else task.exception()
            if refused is not None:
                # Refused before anything was queued: it reached a finished instance,
                # or it first ran after the crash had begun.
                assert isinstance(refused, af.ActorflowError), refused
                assert isinstance(refused, af.RuntimeClosed) or "has finished" in str(refused)
                continue
            on_file = taken[inst.id] < stored[inst.id]
            taken[inst.id] += on_file
            acked = not task.cancelled()
            assert on_file or not acked, f"acknowledged send to {inst.id} was lost"
            flags.append(on_file)
            if on_file:
                accepted.append((inst, name, payload))
        assert taken == stored, (taken, stored)
        assert flags == sorted(flags, reverse=True), f"stored sends are not a prefix: {flags}"
        for inst, name, payload in accepted:
            # Accepted even if an earlier one in flight finished the instance.
            inst.accept(MEvent(name, None, "value", payload, None, self.now, self.now), self.now)
        if crash:
            self.reopened()

    # -- the check ---------------------------------------------------------------------
    @invariant()
    def matches_model(self) -> None:
        if self.rt is None:
            return
        self.run(self.check())

    async def check(self) -> None:
        rt = self.runtime
        for inst in self.instances:
            h = rt.handle(inst.id)
            status = await h.status()
            where = f"{inst.id} ({inst.kind} {inst.arg!r})"
            assert status.workflow == WORKFLOWS[inst.kind].name
            assert status.state == inst.state, (where, status)
            wait = inst.wait()
            expected_waits = []
            if wait is not None:
                kind, name, token = wait
                expected_waits = [af.Wait(kind, name, token, _dt(inst.deadline))]  # type: ignore[arg-type]
            assert status.waiting_on == expected_waits, (where, status.waiting_on)
            events = [
                (e.name, e.token, e.outcome, e.created_at, e.sent_at, e.consumed_at)
                for e in status.events
            ]
            expected = [
                (e.name, e.token, e.outcome, _dt(e.created_at), _dt(e.sent_at), _dt(e.consumed_at))
                for e in inst.events
            ]
            if inst.token is not None and not inst.token_used:
                expected.append((tok.name, inst.token, None, _dt(inst.started_at), None, None))
            assert events == expected, where
            assert status.finished_at == _dt(inst.finished_at), where
            headline = None if status.error is None else status.error.split("\n\n")[0]
            assert headline == inst.error, (where, status.error)  # then maybe a traceback
            assert status.created_at == _dt(inst.started_at)
            assert status.run == inst.run, (where, status.run)
            if inst.state == "completed":
                assert await h.result() == inst.result, where
            elif inst.state == "failed":
                with pytest.raises(af.WorkflowFailed) as info:
                    await h.result()
                assert inst.error is not None
                assert inst.error.startswith(info.value.error_type + ":")
            elif inst.state == "cancelled":
                with pytest.raises(af.WorkflowCancelled):
                    await h.result()
        listed = {s.id: s.state for s in await rt.list()}
        assert listed == {i.id: i.state for i in self.instances}


TestRuntimeModel = RuntimeModel.TestCase
TestRuntimeModel.settings = PROFILE


# -- regressions found by the machine, as plain tests --------------------------------


async def test_a_later_send_does_not_overtake_one_still_being_written(db: Path) -> None:
    # Send 2 is accepted while the batch with send 1 (bound to the first wait) is being
    # written; once it commits the workflow waits again, and send 3 arrives while send 2
    # is still not committed. Send 3 used to be bound to that wait at once: [1, 3, 2].
    async with af.Runtime(db) as rt:
        h = await rt.start(collect, 3)
        first = asyncio.ensure_future(rt.send(h.id, ping, 1))
        await asyncio.sleep(0)
        while rt._writer.queued_instances() or not rt._writer.writing:
            await asyncio.sleep(0)
        second = asyncio.ensure_future(rt.send(h.id, ping, 2))
        await first
        await rt.send(h.id, ping, 3)
        await second
        assert await h.result(timeout=5) == [1, 2, 3]
