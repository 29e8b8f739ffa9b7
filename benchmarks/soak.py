"""Kill -9 soak: a mixed workload in a child process, interrupted hundreds of times.

Run: python benchmarks/soak.py [--kills 1000] [--instances 200] [--close-every 5]
                               [--seed 1] [--json PATH]

Not part of the default test run (it takes minutes). A child process runs a round of
``--instances`` workflow instances on one database file; the parent interrupts it at
a random moment (5-300 ms after the runtime opened, or, one time in five, after the
child booted, so also during recovery), restarts it, and checks the database after
every interruption. Most interruptions are SIGKILL; one in ``--close-every`` is a
SIGINT instead, which the child turns into a graceful close (``asyncio.run`` cancels
the main task, ``async with Runtime`` closes) so that the close path is soaked too.
When a round completes, the next one starts on the same file, until ``--kills``
interruptions are done; then the last round runs to completion.

Each instance does: a step with a side effect, a token made ahead of time, ``p``
events by name, a wait that times out, a durable sleep, ``asyncio.gather`` of two
event waits, the wait on its token, ``ctx.first`` of an event and a sleep, and a last
step. Side effects and acknowledgements go to append-only side files (one
``write(2)`` each: they survive SIGKILL) so that the parent can check:

* every acknowledged send is stored exactly once, and every event is stored at most
  once (the child sends ping ``k`` only when ``k`` pings are stored, so a send that
  was stored but not acknowledged before a kill is never repeated); no event is
  consumed by two calls; when a round completes, every acknowledged event was
  delivered to exactly one wait (``go`` to none when ``first`` took the sleep);
* no stored step ran again. A step may legitimately run again if it was killed before
  its result was stored, so the check is: the nonce a step returned is in the
  side-effect log, the stored result of a step never changes once stored, and at the
  end each step's stored result is the *last* execution of that step in the log: any
  execution after the stored one would be a re-run of a stored step;
* a graceful close loses no step result: every step execution logged during a life
  that ended with SIGINT has its result stored (the close waits for running steps
  and starts none), so it can never run again;
* a graceful close ends by itself (within ``--close-timeout`` seconds), with no error;
* the write-ahead log and the snapshots agree: a read-only fold of a copy of the
  file (bases + journals + WAL tail, with ``read_committed``) equals what ``SQLiteStore.open``
  recovers from another copy; every consumed event names an outcome that consumed it;
* every instance reaches the expected end (its result, and the state of the ``first``
  race's losing event).

Prints a table of what was survived and checked, writes it as JSON (``--json``),
and exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

import actorflow as af
from actorflow.records import (
    RECORD_ENCODER,
    EventState,
    Outcome,
    Snapshot,
)
from actorflow.store import SQLiteStore
from actorflow.store.sqlite import read_committed

ping = af.Event("soak.ping", int)
left = af.Event("soak.left", int)
right = af.Event("soak.right", int)
approve = af.Event("soak.approve", int)
go = af.Event("soak.go", int)
never = af.Event("soak.never")
FINAL = ("completed", "failed", "cancelled")
CLOSED_BY_SIGINT = 130  # the child's exit status after a graceful close on SIGINT
_side: dict[str, int] = {}


def _append(workdir: Path, name: str, line: str) -> None:
    """One write(2) of a whole line to an O_APPEND file: survives SIGKILL, never torn."""
    fd = _side.get(name)
    if fd is None:
        fd = _side[name] = os.open(workdir / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (line + "\n").encode())


# -- the child -------------------------------------------------------------------------
WORKDIR = Path(".")


def effect(instance: str, step: str) -> str:
    """A side effect: log a fresh nonce for this execution, return it."""
    nonce = f"{random.getrandbits(64):016x}"
    _append(WORKDIR, "steps.log", f"{instance} {step} {nonce}")
    return nonce


@af.workflow(name="soak.flow")
async def flow(ctx: af.Context[None], p: int) -> dict[str, Any]:
    a = await ctx.step(effect, ctx.workflow_id, "a")
    ref = await ctx.create_event(approve)
    got = [await ctx.wait_event(ping) for _ in range(p)]
    try:
        await ctx.wait_event(never, timeout=0.03)
        timed_out = False
    except af.WaitTimeout:
        timed_out = True
    await ctx.sleep(0.01 + ctx.random() * 0.04)
    both = await asyncio.gather(ctx.wait_event(left), ctx.wait_event(right))
    approved = await ctx.wait_event(ref)
    first, value = await ctx.first(ctx.wait_event(go), ctx.sleep(0.05))
    b = await ctx.step(effect, ctx.workflow_id, "b")
    return {
        "a": a, "got": got, "timed_out": timed_out, "both": list(both),
        "approved": approved, "first": first, "go": value, "b": b,
    }  # fmt: skip


def plan(instance: str) -> tuple[int, bool]:
    """How many pings an instance takes and whether it is sent ``go``."""
    n = int(instance.rsplit("-", 1)[1])
    return 1 + n % 3, n % 4 != 0


async def feed(rt: af.Runtime, instance: str) -> Any:
    """Send what the instance still needs, judging by what is stored; log each ack."""
    p, send_go = plan(instance)
    h = rt.handle(instance)
    st = await h.status()
    if st.state not in FINAL:
        sent = Counter(e.name for e in st.events if e.sent_at is not None)
        for k in range(sent[ping.name], p):
            await rt.send(instance, ping, k)
            _append(WORKDIR, "acks.log", f"{instance} ping {k}")
        for event, value in ((left, 1), (right, 2)):
            if not sent[event.name]:
                await rt.send(instance, event, value)
                _append(WORKDIR, "acks.log", f"{instance} {event.name} {value}")
        delay = 0.005
        while True:
            st = await h.status()
            made = [e for e in st.events if e.name == approve.name]
            if st.state in FINAL or (made and made[0].outcome is not None):
                break
            if made and made[0].token is not None:
                await rt.resolve(made[0].token, 3)
                _append(WORKDIR, "acks.log", f"{instance} approve {made[0].token}")
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        if send_go and not sent[go.name]:
            try:
                await rt.send(instance, go, 4)
            except af.ActorflowError:
                # Its sleep won the race against `go` and it finished: refused, not lost.
                with contextlib.suppress(af.ActorflowError):
                    await h.result(timeout=30)  # its end may still be being written
                if (await h.status()).state not in FINAL:
                    raise
            else:
                _append(WORKDIR, "acks.log", f"{instance} {go.name} 4")
    return await h.result()


async def child(db: str, round_no: int, instances: int, seed: int) -> None:
    rng = random.Random(seed)
    async with af.Runtime(db, checkpoint_every=rng.choice([100, 1_000, 20_000])) as rt:
        print("OPEN", flush=True)
        ids = [f"r{round_no}-{i}" for i in range(instances)]
        await asyncio.gather(*(rt.start(flow, plan(i)[0], id=i) for i in ids))
        results = await asyncio.gather(*(feed(rt, i) for i in ids))
    out = WORKDIR / f"results-{round_no}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(zip(ids, results, strict=True))))
    tmp.replace(out)
    print("DONE", flush=True)


# -- the parent: checks ----------------------------------------------------------------
class Violations(list[str]):
    def add(self, what: str) -> None:
        if len(self) < 50:
            print("VIOLATION:", what, flush=True)
        self.append(what)


def kind_of(violation: str) -> str:
    """A violation without its instance, numbers and stacks: what kind of thing broke."""
    first_line = violation.split("\n", 1)[0]
    text = re.sub(r"^r\d+-\d+: ", "", first_line)
    return re.sub(r"\b[0-9a-f]{16}\b|\b\d+\b", "N", text)


def read_log(path: Path, start: int = 0) -> list[list[str]]:
    """The lines of a side file (from byte ``start`` on), each split into its words."""
    if not path.exists():
        return []
    with path.open("rb") as f:
        f.seek(start)
        text = f.read().decode()
    return [line.split(" ") for line in text.splitlines() if line]


def log_size(path: Path) -> int:
    """Where the next line of a side file will start."""
    return path.stat().st_size if path.exists() else 0


def acked_events(s: Snapshot, kind: str, detail: str) -> list[EventState]:
    """The stored events that an acknowledgement (``kind detail`` in acks.log) names."""
    if kind == "ping":
        return [
            e for e in s.events if e.name == ping.name and ping.decode(e.payload) == int(detail)
        ]
    if kind == "approve":
        return [e for e in s.events if e.token == detail]
    return [e for e in s.events if e.name == kind]


def stored_step_results(s: Snapshot) -> set[str]:
    """The nonces that the instance's stored step outcomes hold."""
    return {
        msgspec.msgpack.decode(o.value, type=str)
        for o in s.history
        if isinstance(o, Outcome) and o.kind == "step" and o.value is not None
    }


def copy_db(db: Path, into: Path) -> Path:
    into.mkdir()
    copy = into / db.name
    for suffix in ("", "-wal", "-journal"):
        source = Path(f"{db}{suffix}")
        if source.exists():
            shutil.copyfile(source, f"{copy}{suffix}")
    return copy


def fold_read_only(db: Path) -> dict[str, Snapshot]:
    """Bases + journals + WAL tail folded, from a file opened read-only."""
    if not db.exists() or db.stat().st_size == 0:
        return {}  # killed before the database was created
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    try:
        return read_committed(conn)
    finally:
        conn.close()


def recovered(db: Path, ids: list[str]) -> dict[str, Snapshot]:
    """What the store's own recovery makes of the file."""

    async def run() -> dict[str, Snapshot]:
        store = SQLiteStore(db)
        found = {s.id: s for s in await store.open()}
        try:
            for i in ids:
                if i not in found:
                    s = await store.load(i)
                    if s is not None:
                        found[i] = s
        finally:
            await store.close()
        return found

    return asyncio.run(run())


class Checker:
    def __init__(self, db: Path, workdir: Path) -> None:
        self.db = db
        self.workdir = workdir
        self.violations = Violations()
        self.stored_steps: dict[tuple[str, int], str] = {}
        self.checks = 0
        self.check_seconds = 0.0

    def check_file(self) -> dict[str, Snapshot]:
        """After a kill: fold a copy read-only, compare with recovery, check invariants."""
        self.checks += 1
        began = time.perf_counter()
        try:
            return self._check_file()
        finally:
            self.check_seconds += time.perf_counter() - began

    def _check_file(self) -> dict[str, Snapshot]:
        with tempfile.TemporaryDirectory() as tmp:
            folded = fold_read_only(copy_db(self.db, Path(tmp) / "a"))
            store_view = recovered(copy_db(self.db, Path(tmp) / "b"), list(folded))
        v = self.violations
        if set(folded) != set(store_view):
            v.add(f"fold and recovery disagree on instances: {set(folded) ^ set(store_view)}")
        for i, s in folded.items():
            other = store_view.get(i)
            if other is not None and RECORD_ENCODER.encode(s) != RECORD_ENCODER.encode(other):
                v.add(f"{i}: read-only fold and SQLiteStore recovery disagree")
        self._check_events(folded)
        self._check_steps(folded)
        return folded

    def _check_events(self, folded: dict[str, Snapshot]) -> None:
        v = self.violations
        for instance, kind, detail in read_log(self.workdir / "acks.log"):
            s = folded.get(instance)
            if s is None:
                v.add(f"{instance}: acknowledged {kind} {detail} but the instance is not stored")
                continue
            n = len(acked_events(s, kind, detail))
            if n != 1:
                v.add(f"{instance}: acknowledged {kind} {detail} stored {n} times")
        for instance, s in folded.items():
            names = Counter(
                (e.name, e.token, ping.decode(e.payload) if e.name == ping.name else None)
                for e in s.events
            )
            for key, n in names.items():
                if n > 1:
                    v.add(f"{instance}: event {key} stored {n} times")
            outcomes = {o.seq: o for o in s.history if isinstance(o, Outcome)}
            for e in s.events:
                if e.consumed_by is not None:
                    o = outcomes.get(e.consumed_by)
                    if o is None or o.event != e.id:
                        v.add(f"{instance}: event {e.id} consumed by a call with no such outcome")

    def _check_steps(self, folded: dict[str, Snapshot]) -> None:
        v = self.violations
        logged: dict[str, set[str]] = {}
        for instance, _step, nonce in read_log(self.workdir / "steps.log"):
            logged.setdefault(instance, set()).add(nonce)  # by instance: one lookup each
        for instance, s in folded.items():
            seen: set[int] = set()
            for o in s.history:
                if not isinstance(o, Outcome) or o.kind != "step":
                    continue
                if o.seq in seen:
                    v.add(f"{instance}: step call #{o.seq} has two stored outcomes")
                seen.add(o.seq)
                if o.value is None:
                    v.add(f"{instance}: step call #{o.seq} failed: {o.error}")
                    continue
                nonce = msgspec.msgpack.decode(o.value, type=str)
                key = (instance, o.seq)
                before = self.stored_steps.setdefault(key, nonce)
                if before != nonce:
                    v.add(f"{instance}: stored result of step #{o.seq} changed")
                if nonce not in logged.get(instance, ()):
                    v.add(f"{instance}: stored step result {nonce} was never executed")

    def check_closed(self, folded: dict[str, Snapshot], steps_from: int) -> None:
        """After a graceful close: each step that ran in that life has its result stored
        (``steps_from``: where that life's executions start in steps.log)."""
        for instance, step, nonce in read_log(self.workdir / "steps.log", steps_from):
            s = folded.get(instance)
            if s is None or nonce not in stored_step_results(s):
                self.violations.add(
                    f"{instance}: step {step} ran before a graceful close but its result"
                    " was not stored (it will run again)"
                )

    def check_delivered(self, folded: dict[str, Snapshot], results: dict[str, Any]) -> None:
        """At the end of a round: each acknowledged event was consumed by a wait (the
        ``go`` that lost ``first``'s race to the sleep: by none). With "stored once"
        and the values the workflow returned (each ping once, in order), that is
        "delivered exactly once". (An outcome that once bound an event may remain in
        the history after the event was given back, so outcomes are not counted.)"""
        for instance, kind, detail in read_log(self.workdir / "acks.log"):
            s, r = folded.get(instance), results.get(instance)
            if s is None or r is None:
                continue  # another round's instance, or one that did not complete
            expect_consumed = not (kind == go.name and r["first"] == 1)
            for e in acked_events(s, kind, detail):
                if (e.consumed_by is not None) != expect_consumed:
                    state = "consumed" if e.consumed_by is not None else "not consumed"
                    self.violations.add(f"{instance}: acknowledged {kind} {detail} {state}")

    def check_round(self, round_no: int, instances: int) -> dict[str, int]:
        """After a round completed: results as expected; stored steps not re-run."""
        v = self.violations
        results = json.loads((self.workdir / f"results-{round_no}.json").read_text())
        folded = self.check_file()
        self.check_delivered(folded, results)
        runs: dict[tuple[str, str], list[str]] = {}
        for instance, step, nonce in read_log(self.workdir / "steps.log"):
            runs.setdefault((instance, step), []).append(nonce)
        reruns = 0
        for n in range(instances):
            instance = f"r{round_no}-{n}"
            p, send_go = plan(instance)
            r = results.get(instance)
            s = folded.get(instance)
            if r is None or s is None or s.status != "completed":
                v.add(f"{instance}: did not complete ({s.status if s else 'missing'})")
                continue
            expected = {"got": list(range(p)), "timed_out": True, "both": [1, 2], "approved": 3}
            for key, value in expected.items():
                if r[key] != value:
                    v.add(f"{instance}: {key} = {r[key]!r}, expected {value!r}")
            gos = [e for e in s.events if e.name == go.name]
            if r["first"] == 0:
                if not send_go or r["go"] != 4 or len(gos) != 1 or gos[0].consumed_at is None:
                    v.add(f"{instance}: first() took go but go was not sent/consumed once")
            elif r["first"] == 1:
                if any(e.consumed_at is not None for e in gos):
                    v.add(f"{instance}: first() timed out but its go event was consumed")
            else:
                v.add(f"{instance}: first() returned index {r['first']}")
            for step in ("a", "b"):
                done = runs.get((instance, step), [])
                if not done or done[-1] != r[step]:
                    v.add(f"{instance}: step {step} ran after its result was stored")
                reruns += len(done) - 1
        return {"instances": instances, "step_reruns_before_store": reruns}


# -- the parent: the kill loop ---------------------------------------------------------
def spawn(
    db: Path, workdir: Path, round_no: int, instances: int, seed: int
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", str(db), str(workdir), str(round_no),
         str(instances), str(seed)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_line(proc: subprocess.Popen[str], word: str) -> bool:
    assert proc.stdout is not None
    return any(line.strip() == word for line in proc.stdout)


class Interruptions:
    """How the lives of the child ended, and the choice of the next interruption."""

    def __init__(self, wanted: int, close_every: int) -> None:
        self.wanted = wanted
        self.close_every = close_every
        self.kills = self.kills_in_recovery = 0
        self.closes = self.closes_in_recovery = 0

    @property
    def done(self) -> int:
        return self.kills + self.closes

    def next_is_close(self) -> bool:
        """One interruption in ``close_every`` is a SIGINT (a graceful close)."""
        return self.close_every > 0 and (self.done + 1) % self.close_every == 0


def close_gracefully(
    proc: subprocess.Popen[str], timeout: float, violations: Violations
) -> int | None:
    """SIGINT the child and wait for its graceful close; its exit status, or ``None``
    when it hung (then it is killed) or failed (both are violations)."""
    os.kill(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGUSR1)  # faulthandler: every thread's stack, to stderr
        time.sleep(1)
        os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        violations.add(f"graceful close did not end within {timeout:g} s; stacks:\n{err[-6000:]}")
        return None
    if proc.returncode == -signal.SIGINT and not err:
        # SIGINT during interpreter shutdown (handlers are reset then): the round had
        # finished; the caller sees whether its results were written.
        return 0
    if proc.returncode not in (0, CLOSED_BY_SIGINT) or "Traceback" in err:
        last = err.strip().splitlines()[-1] if err.strip() else "no output"
        violations.add(f"graceful close failed (exit {proc.returncode}): {last}\n{err[-2000:]}")
        return None
    return proc.returncode


def soak(
    kills_wanted: int,
    instances: int,
    seed: int,
    workdir: Path,
    era_rounds: int,
    close_every: int = 5,
    close_timeout: float = 20.0,
) -> dict[str, Any]:
    rng = random.Random(seed)
    root = workdir
    eras = [root / "era0"]
    workdir = eras[0]
    workdir.mkdir()
    db = workdir / "soak.db"
    checker = Checker(db, workdir)
    violations: list[str] = []
    checks = acks = executions = 0
    check_seconds = 0.0
    stops = Interruptions(kills_wanted, close_every)
    rounds = round_no = lives = reruns = 0
    began = time.perf_counter()
    while True:
        if rounds >= len(eras) * era_rounds:
            # A fresh file every few rounds keeps the per-kill check (a full fold of
            # the file and both logs) from growing with the whole run.
            violations += checker.violations
            checks += checker.checks
            check_seconds += checker.check_seconds
            acks += len(read_log(workdir / "acks.log"))
            executions += len(read_log(workdir / "steps.log"))
            workdir = root / f"era{len(eras)}"
            eras.append(workdir)
            workdir.mkdir()
            db = workdir / "soak.db"
            checker = Checker(db, workdir)
        interrupting = stops.done < kills_wanted
        lives += 1
        steps_from = log_size(workdir / "steps.log")
        status: int | None = None  # how a graceful close ended, if this life gets one
        proc = spawn(db, workdir, round_no, instances, rng.getrandbits(32))
        during_recovery = interrupting and rng.random() < 0.2
        if interrupting and wait_line(proc, "BOOT" if during_recovery else "OPEN"):
            time.sleep(rng.uniform(0.005, 0.3))
            if proc.poll() is None:
                if stops.next_is_close():
                    status = close_gracefully(proc, close_timeout, checker.violations)
                    stops.closes += 1
                    stops.closes_in_recovery += during_recovery
                    folded = checker.check_file()
                    if status == CLOSED_BY_SIGINT:
                        checker.check_closed(folded, steps_from)
                else:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    stops.kills += 1
                    stops.kills_in_recovery += during_recovery
                    checker.check_file()
                if stops.done % 20 == 0:
                    elapsed = time.perf_counter() - began
                    print(f"{stops.done} interruptions ({stops.closes} closes), round"
                          f" {round_no}, {elapsed:.0f} s", flush=True)  # fmt: skip
                if status != 0:  # 0: the round finished before the SIGINT took effect
                    continue
        _, err = proc.communicate(timeout=600)
        finished = proc.returncode == 0 or (proc.returncode == -signal.SIGINT and status == 0)
        if not finished or not (workdir / f"results-{round_no}.json").exists():
            checker.violations.add(
                f"child failed (exit {proc.returncode}) in round {round_no}:\n{(err or '')[-3000:]}"
            )
            break
        reruns += checker.check_round(round_no, instances)["step_reruns_before_store"]
        rounds += 1
        round_no += 1
        if stops.done >= kills_wanted:
            break
    seconds = time.perf_counter() - began
    with tempfile.TemporaryDirectory() as tmp:
        final = recovered(copy_db(db, Path(tmp) / "c"), [])
    violations += checker.violations
    return {
        "interruptions": stops.done,
        "sigkills": stops.kills,
        "sigkills_during_recovery": stops.kills_in_recovery,
        "sigint_closes": stops.closes,
        "sigint_closes_during_recovery": stops.closes_in_recovery,
        "lives": lives,
        "rounds_completed": rounds,
        "instances": rounds * instances,
        "unfinished_at_end": len(final),
        "databases": len(eras),
        "file_checks": checks + checker.checks,
        "step_reruns_before_store": reruns,
        "acks": acks + len(read_log(workdir / "acks.log")),
        "step_executions": executions + len(read_log(workdir / "steps.log")),
        "seconds": round(seconds, 1),
        "seconds_checking_files": round(check_seconds + checker.check_seconds, 1),
        "interruptions_per_minute": round(stops.done * 60 / seconds, 1) if seconds else 0.0,
        "violations": len(violations),
        "violation_kinds": dict(Counter(kind_of(v) for v in violations).most_common()),
        "first_violations": violations[:20],
        "ok": not violations,
    }


def table(summary: dict[str, Any]) -> str:
    """The summary as a two-column Markdown table (for notes and reports)."""
    rows = [(k, v) for k, v in summary.items() if k not in ("first_violations", "violation_kinds")]
    rows += [(f"violations: {k[:80]}", n) for k, n in summary["violation_kinds"].items()]
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'what':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        global WORKDIR
        db, WORKDIR = sys.argv[2], Path(sys.argv[3])
        faulthandler.register(signal.SIGUSR1)  # the parent asks where a hung close hangs
        print("BOOT", flush=True)
        try:
            # On SIGINT asyncio.run cancels child(), whose ``async with Runtime`` then
            # closes gracefully, and raises KeyboardInterrupt once that is done.
            asyncio.run(child(db, int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])))
        except KeyboardInterrupt:
            sys.exit(CLOSED_BY_SIGINT)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the round is done: nothing to close
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kills", type=int, default=200, help="interruptions in all (SIGKILL or SIGINT)"
    )
    parser.add_argument("--instances", type=int, default=200, help="instances per round")
    parser.add_argument(
        "--close-every", type=int, default=5, help="every Nth interruption is a SIGINT (0: none)"
    )
    parser.add_argument(
        "--close-timeout", type=float, default=20.0, help="seconds a graceful close may take"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", help="keep the database and logs here")
    parser.add_argument(
        "--era-rounds", type=int, default=5, help="start a fresh database every N rounds"
    )
    parser.add_argument("--json", help="write the summary here too")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="actorflow-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    summary = soak(
        args.kills, args.instances, args.seed, workdir, args.era_rounds,
        args.close_every, args.close_timeout,
    )  # fmt: skip
    summary["workdir"] = str(workdir)
    print(f"survived {summary['sigkills']} kills and {summary['sigint_closes']} closes over "
          f"{summary['rounds_completed']} rounds ({summary['instances']} instances) in "
          f"{summary['seconds']} s: {summary['violations']} violations")  # fmt: skip
    print(table(summary))
    text = json.dumps(summary, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    else:
        print(text)
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
