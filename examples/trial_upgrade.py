"""A trial that ends: email an upgrade link, wait up to 7 days for the answer, else downgrade.

Shows: a pre-created event (``ctx.create_event``) whose token travels in a link, so
whoever holds the link can answer with ``rt.resolve(token, value)`` without knowing
the instance; a payload that is a msgspec tagged union (``Upgrade | Decline``); and
a 7-day timeout (``af.WaitTimeout``) driven in seconds by ``af.testing.ManualClock``.

Run: ``python examples/trial_upgrade.py [--db PATH]``. The demo fast-forwards a week
with a ManualClock; a real application passes no clock and simply waits.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import msgspec

import actorflow as af


class Upgrade(msgspec.Struct, tag="upgrade"):
    payment_method: str


class Decline(msgspec.Struct, tag="decline"):
    reason: str = ""


# As JSON: {"type": "upgrade", "payment_method": "card"} or {"type": "decline"}.
decision: af.Event[Upgrade | Decline] = af.Event("trial.decision", Upgrade | Decline)

DECISION_WINDOW = timedelta(days=7)

# Stands in for the mail server: the last link sent to each user.
OUTBOX: dict[str, str] = {}


# -- side effects ---------------------------------------------------------------------
def email_upgrade_link(user: str, link: str) -> None:
    OUTBOX[user] = link
    print(f"  [step] emailed {user}: your trial ends soon, upgrade here: {link[:48]}...")


def charge(user: str, payment_method: str) -> None:
    print(f"  [step] charged {user} via {payment_method}; plan is now Pro")


def downgrade(user: str) -> None:
    print(f"  [step] moved {user} to the free plan")


# -- the workflow ---------------------------------------------------------------------
@af.workflow(name="trial.ending")
async def trial_ending(ctx: af.Context[None], user: str) -> str:
    """Ask ``user`` to upgrade; upgrade, downgrade on a decline, or downgrade after 7 days."""
    answer = await ctx.create_event(decision)  # the token is fixed now and on replay
    await ctx.step(email_upgrade_link, user, f"https://example.com/upgrade?token={answer.id}")
    try:
        choice = await ctx.wait_event(answer, timeout=DECISION_WINDOW)
    except af.WaitTimeout:
        await ctx.step(downgrade, user)
        return "downgraded: no answer within 7 days"
    match choice:
        case Upgrade(payment_method=method):
            await ctx.step(charge, user, method)
            return f"upgraded: paying by {method}"
        case Decline(reason=reason):
            await ctx.step(downgrade, user)
            return f"downgraded: declined ({reason or 'no reason given'})"


# -- the driver: plays the users clicking (or not clicking) their links ----------------
def token_in(link: str) -> str:
    """What the web handler behind the link does: take the token from the URL."""
    return parse_qs(urlparse(link).query)["token"][0]


async def link_sent_to(h: af.Handle[Any], user: str) -> str:
    """Poll until the instance waits for the answer (its email is out); return the link.

    An instance that an earlier run of this script left in the database emailed its
    link then, to a mail server (``OUTBOX``) long gone: the link is rebuilt from the
    token that the instance's status shows."""
    async with asyncio.timeout(10):
        while (st := await h.status()).state == "running":
            await asyncio.sleep(0.005)
    if user not in OUTBOX:
        [token] = [e.token for e in st.events if e.name == decision.name and e.token]
        OUTBOX[user] = f"https://example.com/upgrade?token={token}"
    return OUTBOX[user]


async def decided(h: af.Handle[str]) -> bool:
    """Whether the trial has ended already (in an earlier run on this database)."""
    if (await h.status()).state == "waiting":
        return False
    print("  (already decided in this database, by an earlier run)")
    return True


async def main(
    clock: af.testing.ManualClock | None = None, db: Path | None = None
) -> dict[str, str]:
    """Three trials end: one user upgrades, one declines, one never answers. Run again
    on the same database, it shows the stored outcomes instead of deciding twice."""
    clock = clock or af.testing.ManualClock()
    outcomes: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with af.Runtime(db or Path(tmp) / "trials.db", clock=clock) as rt:
            handles = {}
            for user in ("ana", "ben", "cleo"):
                print(f"{user}: trial ending")
                handles[user] = h = await rt.start(trial_ending, user, id=f"trial-{user}")
                await link_sent_to(h, user)

            print("ana clicks 'Upgrade' and pays by card")
            if not await decided(handles["ana"]):
                await rt.resolve(token_in(OUTBOX["ana"]), Upgrade(payment_method="card"))
            outcomes["ana"] = await handles["ana"].result(timeout=10)
            print(f"ana: {outcomes['ana']}")

            print("ben clicks 'No thanks' (the form posts JSON, validated like the Struct)")
            if not await decided(handles["ben"]):
                answer = {"type": "decline", "reason": "too pricey"}
                await rt.resolve(token_in(OUTBOX["ben"]), answer)
            outcomes["ben"] = await handles["ben"].result(timeout=10)
            print(f"ben: {outcomes['ben']}")

            try:  # a link is single-use
                await rt.resolve(token_in(OUTBOX["ana"]), Upgrade(payment_method="card"))
            except af.ActorflowError as exc:
                print(f"ana clicks again: refused ({exc})")

            print("cleo never answers; a week goes by...")
            if not await decided(handles["cleo"]):
                await clock.advance(DECISION_WINDOW)
            outcomes["cleo"] = await handles["cleo"].result(timeout=10)
            print(f"cleo: {outcomes['cleo']}")
    return outcomes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="database file (default: a temporary one)")
    asyncio.run(main(db=parser.parse_args().db))
