"""An order that waits for its payment and its shipment, and fails cleanly when declined.

Shows: typed events (msgspec Structs validated at the sender), two waits in a row,
a compensating step (release the reserved stock) before failing with a domain error,
and how that failure looks from outside (``af.WorkflowFailed`` naming the error).

Run: ``python examples/order_payment.py [--db PATH]`` (a temporary database by default).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import msgspec

import actorflow as af


class Order(msgspec.Struct):
    id: str
    customer: str
    items: list[str]
    total_cents: int


class Payment(msgspec.Struct):
    """What the payment provider's webhook tells us."""

    status: Literal["approved", "declined"]
    reference: str
    reason: str = ""


class Shipment(msgspec.Struct):
    carrier: str
    tracking: str


class Receipt(msgspec.Struct):
    order_id: str
    payment: str
    tracking: str


payment_received = af.Event("payment_received", Payment)
order_shipped = af.Event("order_shipped", Shipment)


class PaymentDeclined(Exception):
    """A domain error: the order ends ``failed`` with this type and message."""


# -- side effects: each runs once, its result stored --------------------------------
def reserve_stock(order: Order) -> int:
    print(f"  [step] reserved {len(order.items)} item(s) for {order.id}")
    return len(order.items)


def release_stock(order: Order) -> None:
    print(f"  [step] released the stock held for {order.id}")


def email(customer: str, text: str) -> None:
    print(f"  [step] emailed {customer}: {text}")


# -- the workflow ---------------------------------------------------------------------
@af.workflow(name="orders.fulfil")
async def fulfil(ctx: af.Context[None], order: Order) -> Receipt:
    """Reserve stock, wait for payment, then for shipment; undo the reservation if unpaid."""
    await ctx.step(reserve_stock, order)
    try:
        payment = await ctx.wait_event(payment_received, timeout=timedelta(days=3))
    except af.WaitTimeout:
        payment = Payment(status="declined", reference="-", reason="not paid within 3 days")
    if payment.status == "declined":
        await ctx.step(release_stock, order)
        await ctx.step(email, order.customer, f"order {order.id} cancelled: {payment.reason}")
        raise PaymentDeclined(f"{order.id}: {payment.reason}")
    shipment = await ctx.wait_event(order_shipped, timeout=timedelta(days=14))
    await ctx.step(email, order.customer, f"order {order.id} is on its way ({shipment.carrier})")
    return Receipt(order.id, payment.reference, shipment.tracking)


# -- the driver: plays the payment provider and the warehouse -------------------------
async def waiting_on(h: af.Handle[Any]) -> list[str]:
    """Poll until the instance is parked; return what it waits on (for printing only:
    an event sent earlier would simply wait in the instance's mailbox). An instance
    that has finished waits on nothing: the list is empty."""
    async with asyncio.timeout(10):
        while (st := await h.status()).state == "running":
            await asyncio.sleep(0.005)
    return [w.name or w.kind for w in st.waiting_on]


async def outcome_of(h: af.Handle[Receipt]) -> str:
    """How the order ended, as its stored result (or error) says."""
    try:
        receipt = await h.result(timeout=10)
    except af.WorkflowFailed as exc:
        return f"failed: {exc.error_type}: {exc.message}"
    return f"completed: paid {receipt.payment}, tracking {receipt.tracking}"


async def start(rt: af.Runtime, order: Order) -> tuple[af.Handle[Receipt], list[str]]:
    """Start the order's instance (or find the one a previous run left in the database:
    starting a known ID returns it); return its handle and what it waits on."""
    print(f"{order.id}: starting")
    h = await rt.start(fulfil, order, id=order.id)
    waits = await waiting_on(h)
    if waits:
        print(f"  waiting on {waits}")
    else:
        print("  already finished in this database, by an earlier run")
    return h, waits


async def main(db: Path | None = None) -> dict[str, str]:
    """Run a paid order and a declined one; return each order's outcome. Run again on
    the same database, it shows the stored outcomes instead of running them twice."""
    outcomes: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with af.Runtime(db or Path(tmp) / "orders.db") as rt:
            # A happy order: paid, then shipped.
            order = Order("order-1001", "alice", ["book", "lamp"], 4_250)
            h, waits = await start(rt, order)
            if payment_received.name in waits:
                try:
                    await rt.send(order.id, payment_received, {"status": "pending"})
                except af.InvalidPayload as exc:
                    print(f"  a malformed webhook is refused at the sender: {exc}")
                await rt.send(order.id, payment_received, Payment("approved", "pay_81x"))
                print("  <- payment_received: approved (pay_81x)")
                waits = await waiting_on(h)
                print(f"  waiting on {waits}")
            if order_shipped.name in waits:
                await rt.send(order.id, order_shipped, Shipment("UPS", "1Z999AA10123456784"))
                print("  <- order_shipped: UPS 1Z999AA10123456784")
            outcomes[order.id] = await outcome_of(h)
            print(f"{order.id}: {outcomes[order.id]}")

            # A declined order: the workflow releases the stock and fails with a clear error.
            order = Order("order-1002", "bob", ["bicycle"], 89_900)
            h, waits = await start(rt, order)
            if payment_received.name in waits:
                # A JSON body from a webhook works as well as the Struct: it is validated.
                webhook = {"status": "declined", "reference": "pay_82y", "reason": "card declined"}
                await rt.send(order.id, payment_received, webhook)
                print("  <- payment_received: declined (card declined)")
            outcomes[order.id] = await outcome_of(h)
            print(f"{order.id}: {outcomes[order.id]}")
            print(f"  status: {(await h.status()).state}")
    return outcomes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="database file (default: a temporary one)")
    asyncio.run(main(parser.parse_args().db))
