"""The examples: each one's ``main()`` in this process (small, with a ManualClock where
time matters), their workflows driven directly, and every script run as a newcomer
runs it (a subprocess), including the agent killed with SIGKILL while it waits."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import actorflow as af
from actorflow import inbox

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
Make = Callable[..., af.Runtime]


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` once per process (workflow and event names are
    registered per process, so a second import under another name would clash)."""
    module_name = f"example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # msgspec resolves the Structs' annotations here
    spec.loader.exec_module(module)
    return module


async def parked(h: af.Handle[Any], waits: int = 1) -> af.Status:
    """Poll until the instance waits (on at least ``waits`` things); return its status."""
    for _ in range(2000):
        st = await h.status()
        if st.state == "waiting" and len(st.waiting_on) >= waits:
            return st
        await asyncio.sleep(0.002)
    raise AssertionError(f"{h.id} never parked: {st}")


# -- order_payment ---------------------------------------------------------------------
async def test_order_payment_main_pays_one_order_and_declines_the_other(tmp_path: Path) -> None:
    orders = load("order_payment")
    db = tmp_path / "orders.db"
    outcomes = await orders.main(db)
    assert outcomes == {
        "order-1001": "completed: paid pay_81x, tracking 1Z999AA10123456784",
        "order-1002": "failed: PaymentDeclined: order-1002: card declined",
    }
    async with af.Runtime(db) as rt:  # the outcomes are stored, not just printed
        paid = await rt.handle("order-1001").status()
        declined = await rt.handle("order-1002").status()
    assert paid.state == "completed"
    assert [e.name for e in paid.events] == ["payment_received", "order_shipped"]
    assert declined.state == "failed"
    assert declined.error is not None
    assert declined.error.startswith("PaymentDeclined: order-1002: card declined")


async def test_order_payment_unpaid_order_is_cancelled_after_three_days(
    runtime: Make, clock: af.testing.ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = load("order_payment")
    async with runtime() as rt:
        order = orders.Order("order-9", "eve", ["mug"], 1_200)
        h = await rt.start(orders.fulfil, order, id="order-9")
        await parked(h)
        await clock.advance(timedelta(days=3))
        with pytest.raises(af.WorkflowFailed, match="not paid within 3 days") as failed:
            await h.result(timeout=5)
    assert failed.value.error_type == "PaymentDeclined"
    assert "released the stock held for order-9" in capsys.readouterr().out


# -- trial_upgrade -----------------------------------------------------------------------
async def test_trial_upgrade_main_upgrades_declines_and_times_out(tmp_path: Path) -> None:
    trial = load("trial_upgrade")
    clock = af.testing.ManualClock()
    outcomes = await trial.main(clock, tmp_path / "trials.db")
    assert outcomes == {
        "ana": "upgraded: paying by card",
        "ben": "downgraded: declined (too pricey)",
        "cleo": "downgraded: no answer within 7 days",
    }


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Upgrade", "upgraded: paying by paypal"),
        ({"type": "upgrade", "payment_method": "paypal"}, "upgraded: paying by paypal"),
        ({"type": "decline"}, "downgraded: declined (no reason given)"),
    ],
)
async def test_trial_upgrade_token_from_the_email_resolves_the_wait(
    runtime: Make, answer: Any, expected: str
) -> None:
    trial = load("trial_upgrade")
    if answer == "Upgrade":
        answer = trial.Upgrade(payment_method="paypal")
    async with runtime() as rt:
        h = await rt.start(trial.trial_ending, "zoe", id="trial-zoe")
        token = trial.token_in(await trial.link_sent_to(h, "zoe"))
        [wait] = (await h.status()).waiting_on
        assert (wait.kind, wait.token) == ("event", token)
        await rt.resolve(token, answer)
        assert await h.result(timeout=5) == expected


async def test_trial_upgrade_downgrades_after_exactly_seven_days(
    runtime: Make, clock: af.testing.ManualClock
) -> None:
    trial = load("trial_upgrade")
    async with runtime() as rt:
        h = await rt.start(trial.trial_ending, "yan", id="trial-yan")
        token = trial.token_in(await trial.link_sent_to(h, "yan"))
        await clock.advance(timedelta(days=6, hours=23))
        assert (await h.status()).state == "waiting"
        await clock.advance(timedelta(hours=1))
        assert await h.result(timeout=5) == "downgraded: no answer within 7 days"
        with pytest.raises(af.ActorflowError, match="already used, or its workflow has finished"):
            await rt.resolve(token, trial.Upgrade(payment_method="late"))


async def test_trial_upgrade_rejects_an_answer_of_the_wrong_shape(runtime: Make) -> None:
    trial = load("trial_upgrade")
    async with runtime() as rt:
        h = await rt.start(trial.trial_ending, "xia", id="trial-xia")
        token = trial.token_in(await trial.link_sent_to(h, "xia"))
        with pytest.raises(af.InvalidPayload):
            await rt.resolve(token, {"type": "upgrade"})  # no payment_method
        await rt.resolve(token, {"type": "decline", "reason": "later"})
        assert await h.result(timeout=5) == "downgraded: declined (later)"


# -- agent_approval ----------------------------------------------------------------------
async def test_agent_approval_main_auto_approves_every_risky_call(tmp_path: Path) -> None:
    agent = load("agent_approval")
    transcript = await agent.main(tmp_path / "agent.db", approve_after=0)
    assert transcript == [
        "list_dir(path='build') -> README, cache.bin",
        "read_file(path='build/README') -> build output; safe to delete",
        "delete_file(path='build/cache.bin') -> deleted",
        "send_email(to='team@example.com', subject='build cache cleared') -> sent",
    ]


async def test_agent_approval_runs_approved_calls_once_and_skips_denied_ones(
    runtime: Make, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = load("agent_approval")
    async with runtime() as rt:
        h = await rt.start(agent.agent, "tidy up", id="agent-t")
        st = await parked(h)
        assert [(w.kind, w.name) for w in st.waiting_on] == [("event", "approval")]
        await rt.send("agent-t", "approval", {"approved": True})
        st = await parked(h)  # at the next risky call, with the first approval used up
        assert [e.consumed_at is not None for e in st.events] == [True]
        await rt.send("agent-t", agent.approval, agent.Decision(False, "not on a Friday"))
        transcript = await h.result(timeout=5)
    assert transcript[2:] == [
        "delete_file(path='build/cache.bin') -> deleted",
        "send_email(to='team@example.com', subject='build cache cleared') "
        "-> denied: not on a Friday",
    ]
    out = capsys.readouterr().out
    assert out.count("[tool] delete_file") == 1
    assert "[tool] send_email" not in out


async def test_agent_approval_unanswered_request_is_denied_after_a_day(
    runtime: Make, clock: af.testing.ManualClock
) -> None:
    agent = load("agent_approval")
    async with runtime() as rt:
        h = await rt.start(agent.agent, "tidy up", id="agent-u")
        await parked(h)
        await clock.advance(timedelta(hours=24))
        await parked(h)  # the second risky call asks too
        await clock.advance(timedelta(hours=24))
        transcript = await h.result(timeout=5)
    assert [line.split(" -> ")[1] for line in transcript[2:]] == [
        "denied: nobody answered within 24 h",
        "denied: nobody answered within 24 h",
    ]


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 20) -> str:
    """Read ``proc``'s output line by line until a line contains ``marker``."""
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break  # the process ended
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} in the output:\n{''.join(seen)}")


def test_agent_approval_survives_kill_9_while_waiting_for_approval(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    command = [sys.executable, str(EXAMPLES / "agent_approval.py"), "--db", str(db)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def run() -> subprocess.Popen[str]:
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )

    first = run()
    try:
        before = read_until(first, "send agent-1 approval '{\"approved\": true}'")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.communicate()
    assert "[tool] list_dir" in before and "[tool] read_file" in before
    assert "[agent] delete_file(path='build/cache.bin') is risky" in before
    assert "[tool] delete_file" not in before

    # What `actorflow --db agent.db send agent-1 approval '{"approved": true}'` does
    # while nobody runs the database: the request waits in its inbox for the next start.
    inbox.submit(db, inbox.SendRequest("agent-1", "approval", '{"approved": true}'))

    second = run()
    try:
        resumed = read_until(second, "[agent] send_email(")
        # Deny the second risky call while this process runs: it watches the inbox.
        deny = '{"approved": false, "note": "not today"}'
        inbox.submit(db, inbox.SendRequest("agent-1", "approval", deny))
        rest, err = second.communicate(timeout=30)
    finally:
        if second.poll() is None:
            os.kill(second.pid, signal.SIGKILL)
            second.communicate()
    assert second.returncode == 0, err
    after = resumed + rest
    assert "agent-1: found in" in after and "resuming" in after
    assert "[tool] list_dir" not in after and "[llm] proposes list_dir" not in after
    assert (before + after).count("[tool] delete_file") == 1
    assert "[tool] send_email" not in after
    assert "delete_file(path='build/cache.bin') -> deleted" in rest
    assert "-> denied: not today" in rest


# -- team_approvals ----------------------------------------------------------------------
async def test_team_approvals_main(tmp_path: Path) -> None:
    team = load("team_approvals")
    assert await team.main(tmp_path / "team.db") == {
        "release-1.4": "approved by everyone; shipping",
        "release-1.5": "rejected by bob: migration is not reversible",
        "rfc-7": "accepted (dan, erin, frank voted)",
    }


async def test_team_sign_off_waits_for_all_then_the_manager(runtime: Make) -> None:
    team = load("team_approvals")
    async with runtime() as rt:
        h = await rt.start(team.sign_off, "r2", id="r2")
        await rt.send("r2", "approve.carol")  # early: waits in the mailbox for its turn
        await rt.send("r2", "approve.alice")
        st = await parked(h)
        assert [w.name for w in st.waiting_on] == ["approve.bob"]
        await rt.send("r2", "approve.bob")
        assert await h.result(timeout=5) == "approved by everyone; shipping"
        with pytest.raises(af.InvalidPayload):
            await rt.start(team.sign_off, "r3", id="r3")
            await rt.send("r3", "approve.bob", True)  # a gate carries no payload


async def test_team_sign_off_expires_after_two_days(
    runtime: Make, clock: af.testing.ManualClock
) -> None:
    team = load("team_approvals")
    async with runtime() as rt:
        h = await rt.start(team.sign_off, "r4", id="r4")
        await rt.send("r4", "approve.alice")
        await parked(h)
        await clock.advance(timedelta(days=2))
        assert await h.result(timeout=5) == "expired: not every sign-off came within 2 days"


async def test_team_quorum_counts_each_voter_once_across_a_restart(runtime: Make) -> None:
    team = load("team_approvals")
    async with runtime() as rt:
        h = await rt.start(team.quorum, "rfc-8", id="rfc-8")
        await rt.send("rfc-8", team.vote, team.Vote("dan", True))
        await rt.send("rfc-8", team.vote, {"voter": "dan", "approve": True})
        await rt.send("rfc-8", team.vote, {"voter": "mallory", "approve": True})  # not a voter
        assert (await parked(h)).state == "waiting"
        if rt.path is None:
            await rt.send("rfc-8", team.vote, team.Vote("erin", True))
            assert await h.result(timeout=5) == "accepted (dan, erin voted)"
    if rt.path is not None:  # the tally is rebuilt from the stored votes by the handler
        async with runtime() as rt:
            h = rt.handle("rfc-8")
            assert (await parked(h)).state == "waiting"
            await rt.send("rfc-8", team.vote, team.Vote("erin", True))
            assert await h.result(timeout=5) == "accepted (dan, erin voted)"


async def test_team_quorum_without_majority_times_out(
    runtime: Make, clock: af.testing.ManualClock
) -> None:
    team = load("team_approvals")
    async with runtime() as rt:
        h = await rt.start(team.quorum, "rfc-9", id="rfc-9")
        await rt.send("rfc-9", team.vote, team.Vote("frank", False))
        await rt.send("rfc-9", team.vote, team.Vote("erin", True))
        await parked(h)
        await clock.advance(timedelta(days=2))
        assert await h.result(timeout=5) == "no quorum within 2 days (1 approval(s))"


# -- chat_bot ----------------------------------------------------------------------------
async def test_chat_bot_main_answers_every_message_then_idles_out(tmp_path: Path) -> None:
    chat = load("chat_bot")
    clock = af.testing.ManualClock()
    report = await chat.main(5, 4, 30.0, 0.0, clock, tmp_path / "chat.db")
    assert (report.conversations, report.replies, report.goodbyes) == (5, 20, 5)
    assert 0 < report.p50_ms <= report.p99_ms


async def test_chat_bot_conversation_stays_open_until_idle(
    runtime: Make, clock: af.testing.ManualClock
) -> None:
    chat = load("chat_bot")
    async with runtime() as rt:
        h = await rt.start(chat.conversation, "ivy", 30.0, id="chat-ivy")
        client = chat.connections.open("chat-ivy")
        await rt.send("chat-ivy", chat.message, {"text": "hi there"})
        assert await asyncio.wait_for(client.get(), 5) == "#1 got it, ivy: 'hi there' has 2 word(s)"
        await parked(h)
        await clock.advance(29)  # silence, but not long enough
        await rt.send("chat-ivy", chat.message, chat.Msg("still here"))
        assert (await asyncio.wait_for(client.get(), 5)).startswith("#2 got it")
        await parked(h)
        await clock.advance(30)
        assert await h.result(timeout=5) == 2
        assert client.get_nowait() == "bye ivy, talk later!"


async def test_chat_bot_conversation_continues_as_new_and_keeps_counting(
    runtime: Make, clock: af.testing.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = load("chat_bot")
    monkeypatch.setattr(chat, "TURNS_PER_RUN", 3)
    async with runtime() as rt:
        h = await rt.start(chat.conversation, "max", 30.0, id="chat-max")
        client = chat.connections.open("chat-max")
        for i in range(1, 8):
            await rt.send("chat-max", chat.message, chat.Msg(f"m{i}"))
            assert (await asyncio.wait_for(client.get(), 5)).startswith(f"#{i} got it")
        await parked(h)
        assert (await h.status()).run == 3  # after turns 3 and 6
        await clock.advance(30)
        assert await h.result(timeout=5) == 7


# -- every script, as a newcomer runs it ---------------------------------------------------
SCRIPTS = {
    "order_payment.py": [
        "order-1001: completed: paid pay_81x, tracking 1Z999AA10123456784",
        "a malformed webhook is refused at the sender",
        "[step] released the stock held for order-1002",
        "order-1002: failed: PaymentDeclined: order-1002: card declined",
    ],
    "trial_upgrade.py": [
        "ana: upgraded: paying by card",
        "ben: downgraded: declined (too pricey)",
        "ana clicks again: refused",
        "cleo: downgraded: no answer within 7 days",
    ],
    "agent_approval.py": [
        "send agent-1 approval '{\"approved\": true}'",
        "<- approval: approved (auto-approve)",
        "delete_file(path='build/cache.bin') -> deleted",
        "send_email(to='team@example.com', subject='build cache cleared') -> sent",
    ],
    "team_approvals.py": [
        "<- bob approves; waiting on ['approve.alice']",
        "release-1.4: approved by everyone; shipping",
        "release-1.5: rejected by bob: migration is not reversible",
        "rfc-7: accepted (dan, erin, frank voted)",
    ],
    "chat_bot.py": [
        "100 conversations open, 20 messages each",
        "2000 replies in",
        "latency p50",
        "100 goodbyes; 2000 turns answered in all",
    ],
}


def test_every_example_script_runs_by_itself() -> None:
    began = time.monotonic()
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(EXAMPLES / name)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in SCRIPTS
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, f"{name} failed:\n{err}"
        for line in SCRIPTS[name]:
            assert line in out, f"{name}: no {line!r} in:\n{out}"
    assert time.monotonic() - began < 20
