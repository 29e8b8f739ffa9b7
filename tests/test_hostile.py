"""Hostile and bad input: each is refused with a clear ``af.ActorflowError`` and nothing
is stored; damaged database files are refused untouched; workflow code that raises is
recorded as failed with its traceback. And tokens: unguessable, single use, no oracle.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

import actorflow as af
import actorflow.events
from actorflow.store.sqlite import SCHEMA_VERSION


class Order(msgspec.Struct):
    sku: str
    qty: int


class StrictOrder(msgspec.Struct, forbid_unknown_fields=True):
    sku: str
    qty: int


order = af.Event("hostile.order", Order)
strict = af.Event("hostile.strict", StrictOrder)
note = af.Event("hostile.note", str)
gate = af.Event("hostile.gate")


@af.workflow(name="hostile.take")
async def take(ctx: af.Context[None]) -> str:
    o = await ctx.wait_event(order)
    return f"{o.sku}x{o.qty}"


@af.workflow(name="hostile.note")
async def take_note(ctx: af.Context[None], prefix: str) -> str:
    return prefix + await ctx.wait_event(note)


def wal_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM wal").fetchone()[0])


async def settled(rt: af.Runtime, db: Path) -> int:
    """WAL rows once what the instances write on their own (their waits) is written."""
    await asyncio.sleep(0.02)
    await rt.checkpoint()
    return wal_rows(db)


async def events_of(rt: af.Runtime, instance: str) -> list[af.EventRecord]:
    return (await rt.handle(instance).status()).events


# -- payloads ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        "not an order",
        42,
        None,
        {"sku": "a"},  # missing field
        {"sku": "a", "qty": "three"},  # wrong field type
        {"sku": 1, "qty": 1},
        ["a", 1, 2],
        {"sku": "\ud800", "qty": 1},  # lone surrogate: not storable as UTF-8
        {"sku": "a", "qty": 2**70},  # does not fit an int
    ],
)
async def test_bad_payload_is_refused_and_nothing_stored(db: Path, value: Any) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(take, id="t")
        rows = await settled(rt, db)
        with pytest.raises(af.InvalidPayload, match=re.escape("hostile.order")):
            await rt.send("t", order, value)
        assert wal_rows(db) == rows
        assert await events_of(rt, "t") == []
        await rt.send("t", order, {"sku": "ok", "qty": 1})
        assert await rt.handle("t").result(timeout=5) == "okx1"


async def test_extra_fields_are_ignored_unless_the_struct_forbids_them(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(take, id="t")
        await rt.send("t", order, {"sku": "a", "qty": 1, "evil": "x" * 100})
        assert await rt.handle("t").result(timeout=5) == "ax1"

        @af.workflow(name="hostile.strict")
        async def take_strict(ctx: af.Context[None]) -> int:
            return (await ctx.wait_event(strict)).qty

        await rt.start(take_strict, id="s")
        rows = await settled(rt, db)
        # The unknown key is part of the payload: the error says what, not which.
        with pytest.raises(af.InvalidPayload, match="unknown field") as raised:
            await rt.send("s", strict, {"sku": "a", "qty": 1, "evil": 1})
        assert "evil" not in str(raised.value)
        assert wal_rows(db) == rows and await events_of(rt, "s") == []


async def test_gate_takes_no_payload(db: Path) -> None:
    @af.workflow(name="hostile.gated")
    async def gated(ctx: af.Context[None]) -> None:
        await ctx.wait_event(gate)

    async with af.Runtime(db) as rt:
        await rt.start(gated, id="g")
        rows = await settled(rt, db)
        for value in (0, "", {}, b"x"):
            with pytest.raises(af.InvalidPayload, match="gate"):
                await rt.send("g", gate, value)
        with pytest.raises(af.InvalidPayload, match="not both"):
            await rt.send("g", gate, error="x", cancelled=True)
        with pytest.raises(af.InvalidPayload, match="carries no value"):
            await rt.send("g", order, {"sku": "a", "qty": 1}, error="x")
        assert wal_rows(db) == rows and await events_of(rt, "g") == []


async def test_oversized_payload_and_error_text(db: Path) -> None:
    async with af.Runtime(db, max_payload_bytes=1000) as rt:
        await rt.start(take_note, "", id="n")
        rows = await settled(rt, db)
        with pytest.raises(af.InvalidPayload, match="over the limit of 1000"):
            await rt.send("n", note, "x" * 1000)
        with pytest.raises(af.InvalidPayload, match="over the limit of 1000"):
            await rt.send("n", note, error="e" * 1001)
        assert wal_rows(db) == rows and await events_of(rt, "n") == []
        await rt.send("n", note, "x" * 900)
        assert await rt.handle("n").result(timeout=5) == "x" * 900


async def test_default_limit_is_one_mebibyte() -> None:
    async with af.Runtime() as rt:
        assert rt.max_payload_bytes == 1_048_576
        await rt.start(take_note, "", id="n")
        with pytest.raises(af.InvalidPayload, match="1048576"):
            await rt.send("n", note, "x" * 1_048_576)
        assert await events_of(rt, "n") == []


# -- strings that are not valid Unicode, names out of range -------------------------------
LONE = "bad\ud800name"


async def test_lone_surrogates_are_refused_everywhere(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(take_note, "", id="n")
        rows = await settled(rt, db)
        with pytest.raises(af.InvalidPayload):
            await rt.send("n", note, LONE)
        with pytest.raises(af.InvalidPayload, match="not valid Unicode"):
            await rt.send("n", note, error=LONE)
        with pytest.raises(af.InvalidPayload):
            await rt.start(take_note, LONE, id="arg")
        with pytest.raises(af.ActorflowError, match="valid Unicode"):
            await rt.start(take_note, "", id=LONE)
        with pytest.raises(af.ActorflowError, match="valid Unicode"):
            await rt.send(LONE, note, "x")
        with pytest.raises(af.ActorflowError, match="valid Unicode"):
            await rt.send("n", LONE, "x")
        with pytest.raises(af.ActorflowError, match="valid Unicode"):
            rt.handle(LONE)
        with pytest.raises(af.ActorflowError, match="valid Unicode"):
            af.Event(LONE, str)
        with pytest.raises(af.ActorflowError, match="valid Unicode"):
            af.workflow(name=LONE)(take_note.fn)
        assert wal_rows(db) == rows
        assert [s.id for s in await rt.list()] == ["n"]
        assert await events_of(rt, "n") == []
        # Unicode that is valid is fine, in names and payloads.
        await rt.start(take_note, "é", id="zürich-🚀")
        await rt.send("zürich-🚀", note, "ok ✓")
        assert await rt.handle("zürich-🚀").result(timeout=5) == "éok ✓"


@pytest.mark.parametrize("name", ["", "x" * 256, 7, None])
async def test_empty_too_long_or_non_string_names_are_refused(db: Path, name: Any) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(take_note, "", id="n")
        rows = await settled(rt, db)
        if name is not None:  # no id: a random one
            with pytest.raises(af.ActorflowError, match="1 to 255 characters"):
                await rt.start(take_note, "", id=name)
        with pytest.raises(af.ActorflowError, match="1 to 255 characters"):
            await rt.send(name, note, "x")
        with pytest.raises(af.ActorflowError, match="1 to 255 characters"):
            rt.handle(name)
        with pytest.raises(af.ActorflowError, match="1 to 255 characters"):
            af.Event(name, str)
        if isinstance(name, str):
            with pytest.raises(af.ActorflowError, match="1 to 255 characters"):
                await rt.send("n", name, "x")
        assert wal_rows(db) == rows and [s.id for s in await rt.list()] == ["n"]
        longest = "i" * 255
        await rt.start(take_note, "", id=longest)
        await rt.send(longest, af.Event("e" * 255, str), "x")
        assert len(await events_of(rt, longest)) == 1


async def test_unknown_event_name_and_instance(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(take_note, "", id="n")
        rows = await settled(rt, db)
        with pytest.raises(af.ActorflowError, match="no event named"):
            await rt.send("n", "hostile.nobody-defined-this", "x")
        with pytest.raises(af.ActorflowError, match="no workflow instance"):
            await rt.send("nobody", note, "x")
        assert wal_rows(db) == rows


# -- values msgspec cannot encode --------------------------------------------------------
class Opaque:
    pass


async def test_workflow_returning_an_unencodable_value_fails_cleanly(db: Path) -> None:
    @af.workflow(name="hostile.returns_opaque")
    async def returns_opaque(ctx: af.Context[None]) -> Any:
        return Opaque()

    async with af.Runtime(db) as rt:
        h = await rt.start(returns_opaque, id="o")
        with pytest.raises(af.WorkflowFailed) as info:
            await h.result(timeout=5)
        assert info.value.error_type == "TypeError"
        assert "return value cannot be stored" in info.value.message
        await rt.start(take_note, "", id="n")  # the runtime runs on
        await rt.send("n", note, "fine")
        assert await rt.handle("n").result(timeout=5) == "fine"
    async with af.Runtime(db) as rt:
        assert (await rt.handle("o").status()).state == "failed"


async def test_step_returning_an_unencodable_value_fails_the_step(db: Path) -> None:
    runs: list[int] = []

    def make() -> Any:
        runs.append(1)
        return {"thing": Opaque()}

    @af.workflow(name="hostile.step_opaque")
    async def step_opaque(ctx: af.Context[None]) -> str:
        try:
            await ctx.step(make, name="make")
        except af.StepFailed as exc:
            return f"{exc.error_type}: {exc.message}"
        return "stored?"

    async with af.Runtime(db) as rt:
        result = await (await rt.start(step_opaque, id="s")).result(timeout=5)
        assert result.startswith("TypeError: the result of step 'make' cannot be stored")
    async with af.Runtime(db) as rt:  # the failure is what was stored: no re-run
        assert (await rt.handle("s").result()).startswith("TypeError")
    assert runs == [1]


# -- workflow code that raises -----------------------------------------------------------
class Boom(Exception):
    pass


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def explode(depth: int) -> None:
    if depth == 0:
        raise Boom("it went off")
    explode(depth - 1)


async def test_raising_workflow_is_failed_with_its_traceback(db: Path) -> None:
    @af.workflow(name="hostile.raises")
    async def raises(ctx: af.Context[None]) -> None:
        await ctx.wait_event(gate)
        explode(2)

    async with af.Runtime(db) as rt:
        h = await rt.start(raises, id="r")
        bystander = await rt.start(take_note, "", id="n")
        await rt.send("r", gate)
        with pytest.raises(af.WorkflowFailed) as info:
            await h.result(timeout=5)
        assert (info.value.error_type, info.value.message) == ("Boom", "it went off")
        await rt.send("n", note, "still here")
        assert await bystander.result(timeout=5) == "still here"
        for st in (await h.status(), (await rt.list(status="failed"))[0]):
            assert st.state == "failed"
            assert st.error is not None
            assert st.error.startswith("Boom: it went off\n")
            assert "Traceback (most recent call last)" in st.error
            assert "in explode" in st.error and "in raises" in st.error
    async with af.Runtime(db) as rt:  # stored, not only in memory
        st = await rt.handle("r").status()
        assert st.error is not None and "in explode" in st.error


@pytest.mark.parametrize(
    ("exc", "error_type", "message"),
    [
        (Unprintable(), "Unprintable", "<Unprintable: str() failed>"),
        (ValueError("bad \udcff byte"), "ValueError", "bad \\udcff byte"),
    ],
)
async def test_exceptions_that_resist_storing_still_fail_cleanly(
    db: Path, exc: Exception, error_type: str, message: str
) -> None:
    @af.workflow(name=f"hostile.resists.{error_type}")
    async def resists(ctx: af.Context[None]) -> None:
        raise exc

    async with af.Runtime(db) as rt:
        h = await rt.start(resists, id="x")
        with pytest.raises(af.WorkflowFailed) as info:
            await h.result(timeout=5)
        assert (info.value.error_type, info.value.message) == (error_type, message)
        await rt.start(take_note, "", id="n")
        await rt.send("n", note, "ok")
        assert await rt.handle("n").result(timeout=5) == "ok"


# -- damaged database files --------------------------------------------------------------
async def real_database(path: Path) -> None:
    """An actorflow file with data in it, cleanly closed (no -wal left)."""
    async with af.Runtime(path) as rt:
        for i in range(60):
            await rt.start(take_note, f"p{i}-" + "z" * 300, id=f"n{i}")
            if i % 2:
                await rt.send(f"n{i}", note, "y" * 500)
    conn = sqlite3.connect(path)
    conn.execute("VACUUM")  # no free pages: any damaged page is one in use
    conn.close()  # the last connection folds the -wal file into the database
    assert not Path(f"{path}-wal").exists()


def truncate_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def truncate_100(data: bytes) -> bytes:
    return data[:100]


def garbage_middle(data: bytes) -> bytes:
    page = 4096
    start = (len(data) // page // 2) * page
    noise = os.urandom(3 * page)
    return data[:start] + noise + data[start + len(noise) :]


def zero_middle(data: bytes) -> bytes:
    page = 4096
    start = (len(data) // page // 2) * page
    return data[:start] + b"\x00" * (2 * page) + data[start + 2 * page :]


@pytest.mark.parametrize("damage", [truncate_half, truncate_100, garbage_middle, zero_middle])
async def test_damaged_database_is_refused_untouched(db: Path, damage: Any) -> None:
    await real_database(db)
    db.write_bytes(damage(db.read_bytes()))
    before = db.read_bytes()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    with contextlib.suppress(sqlite3.DatabaseError):  # the damage is real
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok"
    conn.close()
    assert db.read_bytes() == before
    with pytest.raises(af.StoreError, match=re.escape(str(db))):
        async with af.Runtime(db) as rt:
            await rt.list()  # a damage only seen on use must be a StoreError too
            for s in await rt.list():
                await rt.handle(s.id).status()
    assert db.read_bytes() == before


async def test_newer_schema_is_refused_untouched(db: Path) -> None:
    await real_database(db)
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 7}")
    before = db.read_bytes()
    with pytest.raises(af.StoreError, match="newer"):
        async with af.Runtime(db):
            pass
    assert db.read_bytes() == before


# -- tokens ------------------------------------------------------------------------------
@af.workflow(name="hostile.token")
async def token_flow(ctx: af.Context[None]) -> str:
    ref = await ctx.create_event(note)
    await ctx.step(_publish, ctx.workflow_id, ref.id, name="publish")
    return await ctx.wait_event(ref)


published: dict[str, str] = {}


def _publish(instance: str, token: str) -> None:
    published[instance] = token


async def _token_of(rt: af.Runtime, instance: str) -> str:
    for _ in range(500):
        if instance in published:
            return published[instance]
        await asyncio.sleep(0.002)
    raise AssertionError("no token published")


async def test_tokens_are_128_random_bits_from_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    real = actorflow.events.secrets.token_urlsafe

    def spy(nbytes: int | None = None) -> str:
        assert nbytes is not None
        asked.append(nbytes)
        return real(nbytes)

    monkeypatch.setattr(actorflow.events.secrets, "token_urlsafe", spy)
    async with af.Runtime() as rt:
        tokens = set()
        for i in range(50):
            await rt.start(token_flow, id=f"k{i}")
            tokens.add(await _token_of(rt, f"k{i}"))
    assert len(tokens) == 50 and asked and min(asked) >= 16  # 16 bytes = 128 bits
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{22,}", token), token


def _shape(message: str, token: str) -> str:
    return message.replace(repr(token), "<token>")


async def test_unknown_tokens_give_the_same_error_whatever_exists(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(token_flow, id="a")
        real = await _token_of(rt, "a")
        rows = await settled(rt, db)
        flipped = real[:-1] + ("A" if real[-1] != "A" else "B")
        candidates = [
            flipped,  # one character off a live token
            real[:-4],  # a prefix of it
            real + "x",  # an extension of it
            real.upper() if real.upper() != real else real.lower(),
            "t" + "A" * 22,  # nothing like it
            "",
            "t" + "\ud800",
        ]
        shapes = set()
        for candidate in candidates:
            for call in (rt.resolve(candidate, "v"), rt.reject(candidate, "no")):
                with pytest.raises(af.ActorflowError) as info:
                    await call
                assert type(info.value) is af.ActorflowError
                shapes.add(_shape(str(info.value), candidate))
        assert len(shapes) == 1, shapes
        assert wal_rows(db) == rows and await events_of(rt, "a") == [
            af.EventRecord(
                "hostile.note", real, None, (await events_of(rt, "a"))[0].created_at, None, None
            )
        ]
        await rt.resolve(real, "mine")
        assert await rt.handle("a").result(timeout=5) == "mine"
        # A used token and a finished instance's token read exactly like an unknown one.
        for call in (rt.resolve(real, "again"), rt.reject(real, "again")):
            with pytest.raises(af.ActorflowError) as info:
                await call
            assert _shape(str(info.value), real) in shapes


async def test_token_resolves_once_even_when_raced(db: Path) -> None:
    async with af.Runtime(db) as rt:
        h = await rt.start(token_flow, id="r")
        token = await _token_of(rt, "r")
        outcomes = await asyncio.gather(
            *(rt.resolve(token, f"v{i}") for i in range(5)),
            rt.reject(token, "nope"),
            return_exceptions=True,
        )
        accepted = [o for o in outcomes if o is None]
        refused = [o for o in outcomes if isinstance(o, af.ActorflowError)]
        assert len(accepted) == 1 and len(refused) == 5
        result = await h.result(timeout=5)
        assert result in {f"v{i}" for i in range(5)}
        events = await events_of(rt, "r")
        assert len(events) == 1 and events[0].token == token
    async with af.Runtime(db) as rt:  # still used after a restart
        with pytest.raises(af.ActorflowError, match="unknown, already used"):
            await rt.resolve(token, "late")
        assert len(await events_of(rt, "r")) == 1


async def test_token_resolved_before_the_wait_is_still_single_use(db: Path) -> None:
    @af.workflow(name="hostile.token_late")
    async def late(ctx: af.Context[None]) -> str:
        ref = await ctx.create_event(note)
        await ctx.step(_publish, ctx.workflow_id, ref.id, name="publish")
        await ctx.wait_event(gate)
        return await ctx.wait_event(ref)

    async with af.Runtime(db) as rt:
        h = await rt.start(late, id="l")
        token = await _token_of(rt, "l")
        await rt.resolve(token, "early")
        with pytest.raises(af.ActorflowError):
            await rt.resolve(token, "second")
        await rt.send("l", gate)
        assert await h.result(timeout=5) == "early"


async def test_token_of_a_finished_instance_is_refused(db: Path) -> None:
    @af.workflow(name="hostile.token_unused")
    async def unused(ctx: af.Context[None]) -> str:
        ref = await ctx.create_event(note)
        await ctx.step(_publish, ctx.workflow_id, ref.id, name="publish")
        return "done without waiting"

    async with af.Runtime(db) as rt:
        h = await rt.start(unused, id="f")
        token = await _token_of(rt, "f")
        await h.result(timeout=5)
        rows = await settled(rt, db)
        with pytest.raises(af.ActorflowError, match="unknown, already used"):
            await rt.resolve(token, "late")
        await rt.checkpoint()
        with pytest.raises(af.ActorflowError, match="unknown, already used"):
            await rt.reject(token, "late")
        assert wal_rows(db) <= rows
    async with af.Runtime(db) as rt:
        with pytest.raises(af.ActorflowError, match="unknown, already used"):
            await rt.resolve(token, "late")
        assert await events_of(rt, "f") == [
            af.EventRecord(
                "hostile.note", token, None, (await events_of(rt, "f"))[0].created_at, None, None
            )
        ]
