"""The inbox against hostile or broken writers: each row judged alone, tokens checked
before payloads, sizes before decoding, no values in reasons or logs, bounded memory,
and requests queued while no runtime ran applied before ``open()`` returns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from pathlib import Path
from typing import Literal

import msgspec
import pytest

import actorflow as af
from actorflow.inbox import (
    CancelRequest,
    Receipt,
    ResolveRequest,
    SendRequest,
    receipt,
    submit,
)


class Verdict(msgspec.Struct):
    """A reviewer's answer."""

    approved: bool


verdict = af.Event("isec.verdict", Verdict)
gate = af.Event("isec.gate")
numbers = af.Event("isec.numbers", list[float])


@af.workflow(name="isec.review")
async def review(ctx: af.Context[None]) -> bool:
    return (await ctx.wait_event(verdict)).approved


@af.workflow(name="isec.gated")
async def gated(ctx: af.Context[None]) -> str:
    await ctx.wait_event(gate)
    return "opened"


@af.workflow(name="isec.token")
async def token_flow(ctx: af.Context[None]) -> str:
    ref = await ctx.create_event(numbers)
    return f"sum {sum(await ctx.wait_event(ref))}"


# -- helpers ----------------------------------------------------------------------------
def raw_insert(db: Path, value: object, as_text: bool = True) -> int:
    """Write a request column as a raw writer would (``as_text``: bytes stored as TEXT,
    so invalid UTF-8 lands in a text column)."""
    sql = "INSERT INTO inbox (created_at, request) VALUES (?, CAST(? AS TEXT))"
    if not as_text:
        sql = "INSERT INTO inbox (created_at, request) VALUES (?, ?)"
    with sqlite3.connect(db, isolation_level=None) as conn:
        return int(conn.execute(sql, (time.time(), value)).lastrowid or 0)


async def decided(db: Path, seq: int, timeout: float = 10.0) -> Receipt:
    """The verdict on request ``seq``, polled without blocking the loop."""
    deadline = time.monotonic() + timeout
    while True:
        found = receipt(db, seq)
        if found.status != "pending" or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.01)


async def token_of(rt: af.Runtime, instance: str) -> str:
    for _ in range(500):
        events = (await rt.handle(instance).status()).events
        if events and events[0].token:
            return events[0].token
        await asyncio.sleep(0.01)
    raise AssertionError("no token made")


# -- 1. one malformed row does not block the rows after it ------------------------------
async def test_a_row_of_bad_utf8_does_not_block_a_cancel_queued_after_it(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(review, id="w")
    bad = raw_insert(db, b'{"type": "cancel", "instance": "w\xff\xfe"}')
    cancel = submit(db, CancelRequest("w"))
    async with af.Runtime(db) as rt:
        rejected = await decided(db, bad)
        assert rejected.status == "rejected" and "UTF-8" in (rejected.reason or "")
        assert (await decided(db, cancel)).status == "accepted"
        with pytest.raises(af.WorkflowCancelled):
            await rt.handle("w").result(timeout=5)


async def test_malformed_rows_are_rejected_alone_while_the_runtime_runs(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(review, id="w")
        bad = [
            raw_insert(db, b"\xc3\x28 not utf-8"),
            raw_insert(db, "{not json"),
            raw_insert(db, '{"type": "launch", "instance": "w"}'),
            raw_insert(db, "[1, 2, 3]"),
            raw_insert(db, 42),
            raw_insert(db, b'{"type": "cancel", "instance": "w"}\x00\xff', as_text=False),
        ]
        good = submit(db, SendRequest("w", verdict.name, '{"approved": true}'))
        for seq in bad:
            found = await decided(db, seq)
            assert found.status == "rejected" and found.reason, found
        assert (await decided(db, good)).status == "accepted"
        assert await rt.handle("w").result(timeout=5) is True


# -- 2, 3. the token before the payload, the size before decoding ----------------------
async def test_an_unusable_token_gets_one_error_whatever_the_payload(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(token_flow, id="t")
        live = await token_of(rt, "t")
        await rt.start(token_flow, id="u")
        used = await token_of(rt, "u")
        await rt.resolve(used, [1.0])
        assert await rt.handle("u").result(timeout=5) == "sum 1.0"
        with pytest.raises(af.ActorflowError) as direct:
            await rt.resolve("tUnknownTokenAAAAAAAAAAAAAAAA", [1.0])

        huge = "[" + "1e300," * 300_000 + "1]"  # over the limit, and slow for msgspec
        reasons = set()
        for token in ("tUnknownTokenAAAAAAAAAAAAAAAA", used):
            for payload in ("{bad json", "[1.5]", huge, None):
                seq = submit(db, ResolveRequest(token, payload), max_payload_bytes=len(huge))
                found = await decided(db, seq)
                assert found.status == "rejected", found
                assert token not in (found.reason or "")
                reasons.add(found.reason)
        assert reasons == {str(direct.value)}

        # A live token with bad JSON is refused for its payload and stays usable.
        seq = submit(db, ResolveRequest(live, "{bad json"))
        found = await decided(db, seq)
        assert found.status == "rejected" and "not valid JSON" in (found.reason or "")
        assert (await decided(db, submit(db, ResolveRequest(live, "[2, 3]")))).status == "accepted"
        assert await rt.handle("t").result(timeout=5) == "sum 5.0"


async def test_a_payload_over_the_limit_is_refused_before_it_is_decoded(db: Path) -> None:
    async with af.Runtime(db, max_payload_bytes=1000) as rt:
        await rt.start(review, id="w")
        # Over the limit and broken at its end: decoding it would say "not valid JSON".
        oversized = '{"approved": true, "pad": [' + "1e300," * 400 + "x]}"
        seq = submit(db, SendRequest("w", verdict.name, oversized), max_payload_bytes=10_000)
        found = await decided(db, seq)
        assert found.status == "rejected"
        assert "over the limit of 1000" in (found.reason or ""), found.reason
        # A whole row over the limit is not even read.
        row = msgspec.json.encode(SendRequest("w", verdict.name, "[" + "1," * 40_000 + "x]"))
        seq = raw_insert(db, row.decode())
        found = await decided(db, seq)
        assert found.status == "rejected" and "bytes, over the limit" in (found.reason or "")
        await rt.send("w", verdict, Verdict(approved=False))
        assert await rt.handle("w").result(timeout=5) is False


async def test_submit_refuses_a_payload_over_the_limit(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(review, id="w")
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
    big = "[" + "1e300," * 200_000 + "1]"  # 1.2 MB, over the default 1 MiB
    with pytest.raises(af.InvalidPayload, match="over the limit"):
        submit(db, SendRequest("w", verdict.name, big))
    with pytest.raises(af.InvalidPayload, match="over the limit"):
        submit(db, SendRequest("w", verdict.name, '{"approved": true}'), max_payload_bytes=5)
    with pytest.raises(af.InvalidPayload, match="over the limit"):
        submit(db, ResolveRequest("tAny", None, "x" * 2_000_000))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == before


# -- 4. no values in errors, reasons, logs ----------------------------------------------
async def test_reasons_and_logs_name_types_not_values(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actorflow")
    secret = "hunter2-" + "s" * 5000
    async with af.Runtime(db) as rt:
        await rt.start(gated, id="g")
        with pytest.raises(af.InvalidPayload) as raised:
            await rt.send("g", gate, {"password": secret})
        assert "hunter2" not in str(raised.value) and "password" not in str(raised.value)
        seqs = [
            submit(db, SendRequest("g", gate.name, f'{{"password": "{secret}"}}')),
            submit(db, SendRequest("g", verdict.name, f'{{"approved": "{secret}"}}')),
            raw_insert(db, msgspec.json.encode(CancelRequest(secret)).decode()),
            raw_insert(db, msgspec.json.encode(SendRequest("g", secret)).decode()),
            raw_insert(db, f'{{"type": "{secret}"}}'),
            raw_insert(db, f'{{"type": "notify", "topics": "{secret}"}}'),
        ]
        for seq in seqs:
            found = await decided(db, seq)
            assert found.status == "rejected", found
            assert "hunter2" not in (found.reason or "") and len(found.reason or "") <= 500
        with pytest.raises(af.ActorflowError) as long_id:
            await rt.send(secret, gate)
        assert "hunter2" not in str(long_id.value)
        with pytest.raises(af.ActorflowError) as bad_error:
            await rt.send("g", gate, error=42)  # type: ignore[arg-type]
        assert "42" not in str(bad_error.value) and "int" in str(bad_error.value)
    assert "hunter2" not in caplog.text and "password" not in caplog.text


class Pick(msgspec.Struct, forbid_unknown_fields=True):
    """A strict payload with a literal field."""

    color: Literal["red", "blue"]


pick = af.Event("isec.pick", Pick)


@af.workflow(name="isec.picker")
async def picker(ctx: af.Context[None]) -> str:
    return (await ctx.wait_event(pick)).color


async def test_validation_errors_do_not_quote_the_value(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(picker, id="p")
        for value in ({"color": "s3cr3t"}, {"color": "red", "s3cr3t": 1}):
            with pytest.raises(af.InvalidPayload) as raised:
                await rt.send("p", pick, value)
            assert "s3cr3t" not in str(raised.value), raised.value


# -- 5. memory per applied request is bounded -------------------------------------------
async def test_applied_requests_are_not_remembered_forever(db: Path) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(gated, id="g")
        for _ in range(30):
            seq = submit(db, SendRequest("g", "isec.unknown-event"))
            assert (await decided(db, seq)).status == "rejected"
        assert len(rt._inbox_done) <= 1  # the last request, until the next read


# -- 6. queued requests go first at open --------------------------------------------------
async def test_requests_queued_while_no_runtime_ran_are_applied_before_open_returns(
    db: Path,
) -> None:
    async with af.Runtime(db) as rt:
        await rt.start(review, id="w")
        await rt.start(gated, id="g")
    deny = submit(db, SendRequest("w", verdict.name, '{"approved": false}'))
    cancel = submit(db, CancelRequest("g"))
    async with af.Runtime(db) as rt:
        # Decided before open() returned, in the order they were queued.
        assert [receipt(db, s).status for s in (deny, cancel)] == ["accepted"] * 2
        # The app's own send right after open comes after the deny queued earlier.
        with contextlib.suppress(af.ActorflowError):  # w may have finished already
            await rt.send("w", verdict, Verdict(approved=True))
        assert await rt.handle("w").result(timeout=5) is False
        with pytest.raises(af.WorkflowCancelled):
            await rt.handle("g").result(timeout=5)
