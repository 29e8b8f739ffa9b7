"""Sign-offs from a team: everyone must approve, or a majority must.

Shows two ways to collect approvals:

* all-of: one payload-less gate per person (``af.Event("approve.alice")``), awaited
  together with ``asyncio.gather``, then the manager's gate; a rejection is the same
  event sent with ``error="why"``, which the waiter sees as ``af.EventFailed``;
* quorum: votes update the instance's state through a ``@workflow.on`` handler, and
  the workflow waits for a condition over that state with ``ctx.wait_until``.

Run: ``python examples/team_approvals.py [--db PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec

import actorflow as af

TEAM = ("alice", "bob")
MANAGER = "carol"
VOTERS = ("dan", "erin", "frank")
QUORUM = 2  # of the three voters

# A gate carries no payload: it is either sent (approved) or sent with error= (rejected).
gates = {person: af.Event(f"approve.{person}") for person in (*TEAM, MANAGER)}


def announce(release: str, verdict: str) -> None:
    print(f"  [step] {release}: {verdict}")


# -- all-of: every team member, then the manager --------------------------------------
@af.workflow(name="team.sign_off")
async def sign_off(ctx: af.Context[None], release: str) -> str:
    """Ship ``release`` once the whole team and then the manager approved it."""
    window = timedelta(days=2)
    try:
        await asyncio.gather(*(ctx.wait_event(gates[p], timeout=window) for p in TEAM))
        await ctx.wait_event(gates[MANAGER], timeout=window)
    except af.EventFailed as exc:
        verdict = f"rejected by {exc.event.removeprefix('approve.')}: {exc.error}"
    except af.WaitTimeout:
        verdict = "expired: not every sign-off came within 2 days"
    else:
        verdict = "approved by everyone; shipping"
    await ctx.step(announce, release, verdict)
    return verdict


# -- quorum: a majority of the voters --------------------------------------------------
class Vote(msgspec.Struct):
    voter: str
    approve: bool


class Tally(msgspec.Struct):
    """The quorum workflow's state: who voted which way (each voter counts once)."""

    approvals: int = 0
    rejections: int = 0
    voted: list[str] = []


vote = af.Event("team.vote", Vote)


@af.workflow(name="team.quorum", state=Tally)
async def quorum(ctx: af.Context[Tally], proposal: str) -> str:
    """Accept ``proposal`` when a majority approves, reject it when a majority rejects."""
    try:
        await ctx.wait_until(
            lambda: ctx.state.approvals >= QUORUM or ctx.state.rejections >= QUORUM,
            timeout=timedelta(days=2),
        )
    except af.WaitTimeout:
        verdict = f"no quorum within 2 days ({ctx.state.approvals} approval(s))"
    else:
        accepted = ctx.state.approvals >= QUORUM
        verdict = f"{'accepted' if accepted else 'rejected'} ({', '.join(ctx.state.voted)} voted)"
    await ctx.step(announce, proposal, verdict)
    return verdict


@quorum.on(vote)
def count(tally: Tally, v: Vote) -> None:
    # Runs when a vote arrives (and again on replay): keep it pure, no I/O here.
    if v.voter in VOTERS and v.voter not in tally.voted:
        tally.voted.append(v.voter)
        if v.approve:
            tally.approvals += 1
        else:
            tally.rejections += 1


# -- the driver -----------------------------------------------------------------------
async def waiting_on(h: af.Handle[Any]) -> list[str]:
    """Poll until the instance is parked; return what it waits on (for printing).
    An instance that has finished waits on nothing: the list is empty."""
    async with asyncio.timeout(10):
        while (st := await h.status()).state == "running":
            await asyncio.sleep(0.005)
    return [w.name or w.kind for w in st.waiting_on]


async def start(rt: af.Runtime, wf: af.Workflow[str], subject: str) -> af.Handle[str] | None:
    """Start ``wf`` on ``subject``; ``None`` when a previous run on this database already
    finished it (starting a known ID returns that instance: nothing is left to send)."""
    h = await rt.start(wf, subject, id=subject)
    if (await h.status()).state in ("completed", "failed", "cancelled"):
        print("  already decided in this database, by an earlier run")
        return None
    return h


async def main(
    db: Path | None = None, clock: af.testing.ManualClock | None = None
) -> dict[str, str]:
    """Three sign-offs (approved, rejected, quorum reached); return their verdicts. Run
    again on the same database, it shows the stored verdicts instead of deciding twice."""
    verdicts: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with af.Runtime(db or Path(tmp) / "approvals.db", clock=clock) as rt:
            print("release-1.4: needs alice and bob, then carol")
            if h := await start(rt, sign_off, "release-1.4"):
                print(f"  waiting on {await waiting_on(h)}")
                await rt.send(h.id, "approve.bob")
                print(f"  <- bob approves; waiting on {await waiting_on(h)}")
                await rt.send(h.id, "approve.alice")
                print(f"  <- alice approves; waiting on {await waiting_on(h)}")
                await rt.send(h.id, "approve.carol")
                print("  <- carol approves")
            verdicts["release-1.4"] = await rt.handle("release-1.4").result(timeout=10)

            print("release-1.5: bob finds a problem")
            if h := await start(rt, sign_off, "release-1.5"):
                await rt.send(h.id, "approve.alice")
                await rt.send(h.id, "approve.bob", error="migration is not reversible")
                print("  <- alice approves, bob rejects")
            verdicts["release-1.5"] = await rt.handle("release-1.5").result(timeout=10)

            print("rfc-7: any two of dan, erin and frank decide")
            if h := await start(rt, quorum, "rfc-7"):
                print(f"  waiting on {await waiting_on(h)}: the tally reaching a majority")
                votes = [("dan", True), ("dan", True), ("erin", False), ("frank", True)]
                for voter, approve in votes:
                    await rt.send(h.id, vote, Vote(voter, approve))
                    print(f"  <- {voter} votes {'yes' if approve else 'no'}")
                # dan's second vote counts once; frank's yes makes two and releases the wait.
            verdicts["rfc-7"] = await rt.handle("rfc-7").result(timeout=10)
    for name, verdict in verdicts.items():
        print(f"{name}: {verdict}")
    return verdicts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="database file (default: a temporary one)")
    asyncio.run(main(parser.parse_args().db))
