"""Several runtime processes on one PostgreSQL database (DESIGN §3.4, issue 14).

Each runtime is a real child process (tests/cluster_child.py) driven over its stdin:
instances started in one are driven from another; the owner is killed with SIGKILL
(with instances parked and a step in flight), closed cleanly, or paused with SIGSTOP
past its lease (a network partition). Checks, as the crash test of the core: every
acknowledged send is delivered exactly once, in order per sender, and before any sent
after it returned, whichever process sent that (oldest first); no step whose result
was stored runs again; a takeover happens within the lease plus one second (asserted
with slack, and printed); a paused owner that lost its lease writes nothing more for
the instances it lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CI

try:
    import asyncpg
except ImportError:  # in CI a failure (the import error), elsewhere a skip saying why
    if CI:
        raise
    pytest.skip(
        "asyncpg is not installed (pip install 'actorflow[postgres]')", allow_module_level=True
    )

CHILD = Path(__file__).with_name("cluster_child.py")
LEASE = 2.0
"""The lease of the runtimes (seconds): short, so that takeovers are quick."""
SLACK = 2.0
"""Added to the contract's bound (lease + 1 s) before a takeover time fails a test:
the machine is small and shared."""
PING = "cluster.ping"
APPROVAL = "cluster.approval"


class ChildError(Exception):
    """A command failed in the child: ``kind`` is the exception's type name, ``kinds``
    the names of its classes (its own first), which the text shows too."""

    def __init__(self, kind: str, kinds: list[str], message: str) -> None:
        super().__init__(f"{kind} ({', '.join(kinds)}): {message}")
        self.kind = kind
        self.kinds = kinds


class Child:
    """One runtime process (tests/cluster_child.py) and the commands sent to it."""

    def __init__(self, url: str, work: Path, name: str, lease: float) -> None:
        self.name = name
        self._err = work / f"{name}.stderr"
        env = {**os.environ, "CLUSTER_PARENT": str(os.getpid())}
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        with open(self._err, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHILD), url, str(work), name, str(lease)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
            )
        self.pid = self.proc.pid
        self._ready: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self._pending: dict[int, concurrent.futures.Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._gone = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue  # not ours (a library printing): ignored
            if message.get("ready"):
                self._ready.set_result(message)
                continue
            with self._lock:
                future = self._pending.pop(message["id"], None)
            if future is not None:
                future.set_result(message)
        rc = self.proc.wait()
        gone = RuntimeError(f"runtime process {self.name} exited ({rc}): {self.stderr()}")
        with self._lock:
            self._gone = True
            pending, self._pending = list(self._pending.values()), {}
        if not self._ready.done():
            self._ready.set_exception(gone)
        for future in pending:
            future.set_exception(gone)

    def stderr(self) -> str:
        """The tail of the child's stderr (what it said before failing)."""
        try:
            return self._err.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the child's runtime is open."""
        self._ready.result(timeout)

    def submit(self, op: str, **args: Any) -> concurrent.futures.Future[dict[str, Any]]:
        """Send a command; its future gets the child's answer."""
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        with self._lock:
            if self._gone:
                raise RuntimeError(f"runtime process {self.name} is gone: {self.stderr()}")
            self._next += 1
            n = self._next
            self._pending[n] = future
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": n, "op": op, **args}) + "\n")
        self.proc.stdin.flush()
        return future

    @staticmethod
    def outcome(future: concurrent.futures.Future[dict[str, Any]], timeout: float) -> Any:
        """The value of an answered command, or its error raised as :class:`ChildError`."""
        message = future.result(timeout)
        if "error" in message:
            raise ChildError(message["error"], message.get("kinds", []), message["message"])
        return message["ok"]

    def call(self, op: str, timeout: float = 30.0, **args: Any) -> Any:
        """Run a command in the child and return its value (or raise its error)."""
        return self.outcome(self.submit(op, **args), timeout)

    def status(self, wf: str) -> dict[str, Any]:
        """``rt.handle(wf).status()`` in this process, as builtins."""
        return dict(self.call("status", wf=wf))

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the child."""
        os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        """A clean close: the runtime leaves ``async with``, the process exits."""
        self.call("close")
        self.proc.wait(30)

    def destroy(self) -> None:
        """Kill the process whatever its state (paused included) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        finally:
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


@pytest.fixture
def spawn(pg_url: str, tmp_path: Path) -> Iterator[Callable[..., list[Child]]]:
    """Starts runtime processes on the test's database (all at once, then waits until
    each is open); every one of them is killed at the end of the test."""
    children: list[Child] = []

    def start(*names: str, lease: float = LEASE) -> list[Child]:
        started = [Child(pg_url, tmp_path, name, lease) for name in names]
        children.extend(started)
        for child in started:
            child.wait_ready()
        return started

    try:
        yield start
    finally:
        for child in children:
            child.destroy()


# -- reading what the children left behind -----------------------------------------------
def poll(what: str, probe: Callable[[], Any], timeout: float = 20.0, every: float = 0.02) -> Any:
    """Call ``probe`` until it returns something truthy (a functional bound, not a
    timing assert); fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(every)


def whole_lines(path: Path) -> list[str]:
    """The lines of a log a child appends to, without a last one still being written."""
    try:
        return path.read_text().split("\n")[:-1]
    except FileNotFoundError:
        return []


class Execution:
    """One execution of a step, from the step log: who ran it, when, and its result."""

    def __init__(self, pid: int, started: float) -> None:
        self.pid = pid
        self.started = started
        self.nonce: str | None = None
        self.ended: float | None = None

    def __repr__(self) -> str:
        return f"Execution(pid={self.pid}, started={self.started:.3f}, nonce={self.nonce})"


def executions(work: Path) -> dict[tuple[str, str], list[Execution]]:
    """Every execution of every step, by (instance, step), in the order they started."""
    runs: dict[tuple[str, str], list[Execution]] = {}
    for line in whole_lines(work / "steps.log"):
        parts = line.split()
        if parts[0] == "START":
            _, instance, what, pid, at = parts
            runs.setdefault((instance, what), []).append(Execution(int(pid), float(at)))
        else:
            _, instance, what, nonce, pid, at = parts
            for run in runs[(instance, what)]:
                if run.pid == int(pid) and run.nonce is None:
                    run.nonce, run.ended = nonce, float(at)
                    break
    return runs


def acked(work: Path) -> list[tuple[str, str, int]]:
    """Every acknowledged send of a ``feed``: (sender, instance, k) (each line also
    says when, for a person reading the log)."""
    lines = whole_lines(work / "acks.log")
    return [(s, i, int(k)) for s, i, k, _ in (line.split() for line in lines)]


def send_errors(work: Path) -> list[str]:
    """Sends of a ``feed`` that raised (each was tried again): the first few, and how
    many there were."""
    try:
        lines = (work / "send-errors.log").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [*lines[:5], f"({len(lines)} sends raised)"] if lines else []


def ping_problems(
    results: dict[str, dict[str, Any]], acks: list[tuple[str, str, int]], senders: dict[str, int]
) -> list[str]:
    """What is wrong with the pings the instances took: each instance must have taken,
    from each sender, that sender's pings 0..n-1 exactly once and in order, every
    acknowledged one among them."""
    problems = []
    for wf, result in results.items():
        got = [tuple(p) for p in result["got"]]
        twice = [p for p, n in Counter(got).items() if n > 1]
        if twice:
            problems.append(f"{wf}: pings delivered more than once: {twice}")
        for sender, n in senders.items():
            seq = [k for s, k in got if s == sender]
            if seq != list(range(n)):
                problems.append(f"{wf}: pings of {sender} are {seq}, not 0..{n - 1} in order")
    for sender, wf, k in acks:
        if wf in results and [sender, k] not in results[wf]["got"]:
            problems.append(f"{wf}: ping {sender}/{k} was acknowledged and never delivered")
    return problems


def results_of(child: Child, wfs: list[str], work: Path, within: float = 20.0) -> dict[str, Any]:
    """The results of ``wfs``, awaited in ``child``; if some do not come within
    ``within`` seconds in all, fail saying where each of those stands (its status, the
    pings acknowledged for it, its steps' executions)."""
    deadline = time.monotonic() + within
    results: dict[str, Any] = {}
    missing = []
    for wf in wfs:
        left = max(0.5, deadline - time.monotonic())
        try:
            results[wf] = child.call("result", wf=wf, within=left, timeout=left + 10)
        except ChildError as exc:
            if "WaitTimeout" not in exc.kinds:
                raise
            missing.append(wf)
    if missing:
        acks = Counter(wf for _, wf, _ in acked(work))
        runs = executions(work)
        lines = []
        for wf in missing:
            st = child.status(wf)
            taken = sum(e["consumed_at"] is not None for e in st["events"])
            steps = {what: rs for (i, what), rs in runs.items() if i == wf}
            lines.append(
                f"{wf}: no result within {within} s: {st['state']}, waits on "
                f"{st['waiting_on']}, took {taken} of {len(st['events'])} events "
                f"({acks[wf]} pings acknowledged), detail {st['detail']!r}, steps {steps}"
            )
        raise AssertionError("\n".join(lines))
    return results


def until(
    child: Child, wf: str, what: str, test: Callable[[dict[str, Any]], bool], timeout: float = 20.0
) -> dict[str, Any]:
    """``wf``'s status read in ``child`` once ``test`` holds of it (see :func:`poll`)."""

    def probe() -> dict[str, Any] | None:
        st = child.status(wf)
        return st if test(st) else None

    return dict(poll(f"{wf}: {what} (seen from {child.name})", probe, timeout))


def consumed_times(status: dict[str, Any]) -> list[float]:
    """When each consumed event of a status was consumed (epoch seconds)."""
    return sorted(
        datetime.fromisoformat(e["consumed_at"]).timestamp()
        for e in status["events"]
        if e["consumed_at"] is not None
    )


def waits_on(status: dict[str, Any], kind: str, name: str | None = None) -> bool:
    """Whether the instance is parked on a wait of that kind (and name)."""
    return any(
        w["kind"] == kind and (name is None or w["name"] == name) for w in status["waiting_on"]
    )


async def _query(url: str, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def query(url: str, sql: str, *args: Any) -> list[Any]:
    """Rows of ``sql`` on ``url`` (a connection of its own, outside any runtime)."""
    return asyncio.run(_query(url, sql, *args))


# -- 1. from anywhere to anywhere --------------------------------------------------------
def test_instances_started_in_one_process_are_driven_from_another(
    spawn: Callable[..., list[Child]], tmp_path: Path
) -> None:
    a, b = spawn("A", "B")
    # (instance, the process that starts it, the one that drives it, token verdict)
    cases = [
        ("d1", a, b, "resolve"),
        ("d2", b, a, "resolve"),
        ("d3", a, b, "reject"),
        ("d4", b, a, "reject"),
    ]
    for wf, starter, driver, _ in cases:
        assert starter.call("start", workflow="cluster.drive", args=[2], wf=wf) == wf
        # Starting an existing id from the other process returns its handle (idempotent).
        assert driver.call("start", workflow="cluster.drive", args=[9], wf=wf) == wf
    # Results awaited in the driving process, before anything was driven.
    results = {wf: driver.submit("result", wf=wf, within=30) for wf, _, driver, _ in cases}

    for wf, starter, driver, verdict in cases:
        st = until(driver, wf, "waits for a ping", lambda s: waits_on(s, "event", PING))
        assert st["workflow"] == "cluster.drive"
        for k in range(2):
            driver.call("send", wf=wf, value={"sender": driver.name, "k": k})
        st = until(driver, wf, "waits on its token", lambda s: waits_on(s, "event", APPROVAL))
        [token] = [w["token"] for w in st["waiting_on"] if w["token"]]
        if verdict == "resolve":
            driver.call("resolve", token=token, value=f"yes-{wf}")
        else:
            driver.call("reject", token=token, error=f"no-{wf}")
        # The starter sees the wait on the query (status read across processes).
        until(starter, wf, "waits on its query", lambda s: waits_on(s, "query"))
        # A token is single-use, whoever uses it.
        with pytest.raises(ChildError, match="ActorflowError"):
            starter.call("resolve", token=token, value="again")
        (tmp_path / f"flag-{wf}").write_text(f"up-{wf}")
        driver.call("notify", topics=["cluster.flags"])

    for wf, starter, driver, verdict in cases:
        value = Child.outcome(results[wf], 30)
        expected_verdict = f"resolved:yes-{wf}" if verdict == "resolve" else f"rejected:no-{wf}"
        assert value["got"] == [[driver.name, 0], [driver.name, 1]], (wf, value)
        assert value["verdict"] == expected_verdict, (wf, value)
        assert value["flag"] == f"up-{wf}", (wf, value)
        assert starter.call("result", wf=wf, within=10, timeout=20) == value
        events = starter.status(wf)["events"]
        assert [e["consumed_at"] is not None for e in events] == [True] * 3, events

    # Cancel from the other process; the cancelled result is seen in both.
    for wf, starter, other in (("p1", a, b), ("p2", b, a)):
        starter.call("start", workflow="cluster.park", wf=wf)
        until(other, wf, "parks", lambda s: s["state"] == "waiting")
        pending = other.submit("result", wf=wf, within=30)
        other.call("cancel", wf=wf)
        with pytest.raises(ChildError, match="WorkflowCancelled"):
            Child.outcome(pending, 30)
        assert starter.status(wf)["state"] == "cancelled"
        other.call("cancel", wf=wf)  # idempotent, from anywhere

    # A send to an unknown instance is refused in any process.
    with pytest.raises(ChildError, match="ActorflowError"):
        b.call("send", wf="nobody", value={"sender": "B", "k": 0})

    # Each instance ran its step once: one runtime ran it, the other only routed.
    runs = executions(tmp_path)
    for wf, starter, _, _ in cases:
        assert [r.pid for r in runs[(wf, "a")]] == [starter.pid], runs[(wf, "a")]

    # list() in either process shows every instance of the database, the same way.
    expected = {"d1": "completed", "d2": "completed", "d3": "completed", "d4": "completed",
                "p1": "cancelled", "p2": "cancelled"}  # fmt: skip
    for child in (a, b):
        seen = {wf: child.status(wf)["state"] for wf in expected}
        assert seen == expected, f"status() in {child.name}"
        listed = {s["id"]: s["state"] for s in child.call("list")}
        assert listed == expected, f"list() in {child.name}"


def test_what_another_process_acknowledged_comes_first(
    spawn: Callable[..., list[Child]], tmp_path: Path
) -> None:
    """A send or resolve acknowledged in one process is older than one made after it in
    the owner: the mailbox takes it first (oldest first), and the token it used is
    spent (single-use) — the owner's own later call must not overtake it."""
    a, b = spawn("A", "B")
    instances = [f"o{i}" for i in range(8)]
    for wf in instances:
        (tmp_path / f"flag-{wf}").write_text("set")
        a.call("start", workflow="cluster.drive", args=[2], wf=wf)
    for wf in instances:
        until(b, wf, "waits for a ping", lambda s: waits_on(s, "event", PING))
        b.call("send", wf=wf, value={"sender": "B", "k": 0})
        a.call("send", wf=wf, value={"sender": "A", "k": 0})
    problems = []
    for wf in instances:
        st = until(b, wf, "waits on its token", lambda s: waits_on(s, "event", APPROVAL))
        [token] = [w["token"] for w in st["waiting_on"] if w["token"]]
        b.call("resolve", token=token, value="from-B")
        try:
            a.call("resolve", token=token, value="from-A")
        except ChildError as exc:
            if "ActorflowError" not in exc.kinds:
                problems.append(f"{wf}: the second resolve raised {exc}")
        else:
            problems.append(f"{wf}: the owner's resolve after B's acknowledged one was accepted")
    for wf in instances:
        value = b.call("result", wf=wf, within=30, timeout=40)
        if value["got"] != [["B", 0], ["A", 0]]:
            problems.append(f"{wf}: took {value['got']}: B's acknowledged ping is the older")
        if value["verdict"] != "resolved:from-B":
            problems.append(f"{wf}: {value['verdict']}: B's acknowledged resolve was lost")
    assert not problems, "\n".join(problems)


# -- 2. SIGKILL of the owner ---------------------------------------------------------------
PARKED = 8
"""Instances parked on a ping in the killed owner, besides the one with a step in flight."""
OWN = 4
"""Pings each instance gets from its owner itself before the kill."""
BEFORE = 25
"""Pings each instance gets from each other process, sent around the kill."""
AFTER = 5
"""Pings each instance gets from each other process once the takeover is seen."""


def test_sigkill_of_the_owner_others_take_over_and_lose_nothing(
    spawn: Callable[..., list[Child]], tmp_path: Path
) -> None:
    a, b, c = spawn("A", "B", "C")
    parked = [f"f{i}" for i in range(PARKED)]
    every = [*parked, "slow"]
    expect = OWN + 2 * (BEFORE + AFTER)
    for wf in parked:
        a.call("start", workflow="cluster.flow", args=[expect], wf=wf)
    a.call("start", workflow="cluster.flow", args=[expect, True], wf="slow")
    # Two more to drive in the takeover window: one to cancel, one waiting on a token.
    a.call("start", workflow="cluster.park", wf="victim")
    (tmp_path / "flag-token").write_text("set")
    a.call("start", workflow="cluster.drive", args=[0], wf="token")
    for wf in parked:  # parked: step a stored, waiting for pings (seen from another process)
        until(b, wf, "parks", lambda s: waits_on(s, "event", PING))
    until(b, "victim", "parks", lambda s: waits_on(s, "event", APPROVAL))
    st = until(b, "token", "waits on its token", lambda s: waits_on(s, "event", APPROVAL))
    [token] = [w["token"] for w in st["waiting_on"] if w["token"]]
    poll("the slow step runs in A", lambda: executions(tmp_path).get(("slow", "a")))
    assert a.call("feed", wfs=every, tag="A", count=OWN) == 0  # acknowledged by the owner
    feeds = [x.submit("feed", wfs=every, tag=x.name, count=BEFORE, pause=0.03) for x in (b, c)]
    poll("B and C sent some pings", lambda: len(acked(tmp_path)) >= (OWN + 2 * 3) * len(every))

    killed = time.time()
    a.kill()
    # A cancel and a resolve acknowledged while the owner is dead are not lost.
    c.call("cancel", wf="victim")
    b.call("resolve", token=token, value="while-dead")
    # The in-flight step starts again in a survivor: the slow instance was taken over.
    rerun = poll(
        "a survivor runs the slow step again",
        lambda: [r for r in executions(tmp_path)[("slow", "a")] if r.pid != a.pid],
        timeout=LEASE + 15,
    )
    slow_takeover = rerun[0].started - killed
    (tmp_path / "release").touch()
    for feed in feeds:
        assert Child.outcome(feed, 60) == 0, send_errors(tmp_path)
    after = [x.submit("feed", wfs=every, tag=x.name, first=BEFORE, count=AFTER) for x in (b, c)]
    for feed in after:
        assert Child.outcome(feed, 60) == 0, send_errors(tmp_path)

    results = results_of(b, every, tmp_path)
    with pytest.raises(ChildError, match="WorkflowCancelled"):
        c.call("result", wf="victim", within=20, timeout=30)
    assert b.call("result", wf="token", within=20, timeout=30)["verdict"] == "resolved:while-dead"
    statuses = {wf: c.status(wf) for wf in every}
    # Each parked instance was taken over: the first event it took after the kill.
    takeovers = {
        wf: min(t for t in consumed_times(st) if t > killed) - killed
        for wf, st in statuses.items()
        if wf != "slow"
    }
    print(
        f"takeover after SIGKILL (lease {LEASE} s): slow step re-run after "
        f"{slow_takeover:.2f} s; first event taken after "
        f"{min(takeovers.values()):.2f}..{max(takeovers.values()):.2f} s"
    )

    problems = ping_problems(results, acked(tmp_path), {"A": OWN, "B": BEFORE + AFTER,
                                                        "C": BEFORE + AFTER})  # fmt: skip
    problems += [f"a send raised: {line}" for line in send_errors(tmp_path)]
    runs = executions(tmp_path)
    for wf in every:
        first, last = runs[(wf, "a")], runs[(wf, "b")]
        if wf != "slow" and len(first) != 1:
            problems.append(f"{wf}: step a, stored before the kill, ran again: {first}")
        if len(last) != 1:
            problems.append(f"{wf}: step b ran {len(last)} times: {last}")
        if results[wf]["first"] != first[-1].nonce or results[wf]["last"] != last[-1].nonce:
            problems.append(f"{wf}: a step ran again after its result was stored: {first} {last}")
    slow = runs[("slow", "a")]
    if len(slow) > 2:
        problems.append(f"slow: the step in flight at the kill ran {len(slow)} times: {slow}")
    if any(r.pid == a.pid for r in slow if r.nonce is not None):
        problems.append(f"slow: the killed process finished its step: {slow}")
    assert not problems, "\n".join(problems)
    bound = LEASE + 1 + SLACK
    assert slow_takeover <= bound, f"takeover took {slow_takeover:.2f} s (lease {LEASE} s)"
    assert max(takeovers.values()) <= bound, f"takeovers took {takeovers} (lease {LEASE} s)"


def test_the_runtime_that_took_over_dies_too_and_the_last_one_takes_all(
    spawn: Callable[..., list[Child]], tmp_path: Path
) -> None:
    """Two deaths in a row, the step still in flight: the instances (and the log rows of
    both dead runtimes) end up with the last process, and nothing is lost or repeated."""
    a, b, c = spawn("A", "B", "C")
    parked = [f"f{i}" for i in range(4)]
    every = [*parked, "slow"]
    first, then = 5, 10
    expect = 2 * first + then
    for wf in parked:
        a.call("start", workflow="cluster.flow", args=[expect], wf=wf)
    a.call("start", workflow="cluster.flow", args=[expect, True], wf="slow")
    for wf in parked:
        until(b, wf, "parks", lambda s: waits_on(s, "event", PING))
    poll("the slow step runs in A", lambda: executions(tmp_path).get(("slow", "a")))
    for x in (b, c):
        assert x.call("feed", wfs=every, tag=x.name, count=first) == 0, send_errors(tmp_path)

    killed = time.time()
    a.kill()
    [rerun] = poll(
        "a survivor runs the slow step again",
        lambda: [r for r in executions(tmp_path)[("slow", "a")] if r.pid != a.pid],
        timeout=LEASE + 15,
    )
    first_takeover = rerun.started - killed
    heir, last = (b, c) if rerun.pid == b.pid else (c, b)
    feed = last.submit("feed", wfs=every, tag=last.name, first=first, count=then, pause=0.03)
    poll("some pings sent", lambda: len(acked(tmp_path)) >= (2 * first + 2) * len(every))
    killed = time.time()
    heir.kill()
    [rerun] = poll(
        f"{last.name} runs the slow step again",
        lambda: [r for r in executions(tmp_path)[("slow", "a")] if r.pid == last.pid],
        timeout=LEASE + 15,
    )
    second_takeover = rerun.started - killed
    (tmp_path / "release").touch()
    assert Child.outcome(feed, 60) == 0, send_errors(tmp_path)
    results = results_of(last, every, tmp_path)
    print(
        f"takeovers (lease {LEASE} s): {first_takeover:.2f} s after A's death, "
        f"{second_takeover:.2f} s after {heir.name}'s"
    )

    senders = {heir.name: first, last.name: first + then}
    problems = ping_problems(results, acked(tmp_path), senders)
    problems += [f"a send raised: {line}" for line in send_errors(tmp_path)]
    runs = executions(tmp_path)
    for wf in parked:
        if [r.pid for r in runs[(wf, "a")]] != [a.pid]:
            problems.append(f"{wf}: step a, stored before the kills, ran again: {runs[(wf, 'a')]}")
    for wf in every:
        done = runs[(wf, "b")]
        if [r.pid for r in done] != [last.pid] or results[wf]["last"] != done[0].nonce:
            problems.append(f"{wf}: step b should have run once, in {last.name}: {done}")
    slow = runs[("slow", "a")]
    if [r.pid for r in slow] != [a.pid, heir.pid, last.pid]:
        problems.append(f"slow: the step in flight should have run once in each process: {slow}")
    if results["slow"]["first"] != slow[-1].nonce:
        problems.append(f"slow: the stored result is not {last.name}'s: {slow}")
    assert not problems, "\n".join(problems)
    bound = LEASE + 1 + SLACK
    assert max(first_takeover, second_takeover) <= bound, (first_takeover, second_takeover)


# -- 3. a partition: SIGSTOP past the lease ------------------------------------------------
NAP = 1.5
"""Seconds the nap instance sleeps: it is started just before the pause, and its timer
falls due during it."""


def test_a_paused_owner_that_lost_its_lease_writes_nothing_when_it_resumes(
    spawn: Callable[..., list[Child]], tmp_path: Path, pg_url: str
) -> None:
    a, b = spawn("A", "B")
    parked = [f"f{i}" for i in range(4)]
    every = [*parked, "slow", "nap"]
    own, others, late = 3, 10, 3  # pings: A before the pause, B during it, B after it
    expect = own + others + late
    for wf in parked:
        a.call("start", workflow="cluster.flow", args=[expect], wf=wf)
    a.call("start", workflow="cluster.flow", args=[expect, True], wf="slow")
    for wf in parked:
        until(b, wf, "parks", lambda s: waits_on(s, "event", PING))
    poll("the slow step runs in A", lambda: executions(tmp_path).get(("slow", "a")))
    owner = a.call("whoami")["owner"]
    # A timer that falls due while A is paused: A must not fire it when it resumes.
    a.call("start", workflow="cluster.nap", args=[NAP, expect], wf="nap")
    until(b, "nap", "sleeps", lambda s: waits_on(s, "timer"))
    assert a.call("feed", wfs=every, tag="A", count=own) == 0
    assert ("nap", "c") not in executions(tmp_path), "too slow: the nap woke before the pause"
    paused = time.time()
    a.signal(signal.SIGSTOP)
    try:
        assert b.call("feed", wfs=every, tag="B", count=others, pause=0.02) == 0, send_errors(
            tmp_path
        )
        rerun = poll(
            "B runs the slow step again",
            lambda: [r for r in executions(tmp_path)[("slow", "a")] if r.pid == b.pid],
            timeout=LEASE + 15,
        )
        takeover = rerun[0].started - paused
        poll("B fires the nap's timer", lambda: executions(tmp_path).get(("nap", "c")))
        for wf in parked:
            until(b, wf, "B delivers", lambda s: len(consumed_times(s)) >= own + others)
        # Released now: A's own execution of the step, in flight since before the pause,
        # ends when A resumes, and A then tries to store its result.
        (tmp_path / "release").touch()
        poll("B finishes the slow step", lambda: any(
            r.nonce for r in executions(tmp_path)[("slow", "a")] if r.pid == b.pid))  # fmt: skip
        log_mark = wal_mark(pg_url)
    finally:
        resumed = time.time()
        a.signal(signal.SIGCONT)
    print(f"takeover after SIGSTOP (lease {LEASE} s): {takeover:.2f} s; paused "
          f"{resumed - paused:.2f} s")  # fmt: skip

    # Whatever A does now (it finds its lease lost; the contract lets it close), it
    # writes nothing for the instances it lost. Let it run a little, then go on.
    time.sleep(1.5)
    assert b.call("feed", wfs=every, tag="B", first=others, count=late) == 0, send_errors(tmp_path)
    results = results_of(b, every, tmp_path)
    time.sleep(0.3)

    problems = ping_problems(results, acked(tmp_path), {"A": own, "B": others + late})
    problems += [f"a send raised: {line}" for line in send_errors(tmp_path)]
    runs = executions(tmp_path)
    started_by_a = [
        (key, r) for key, rs in runs.items() for r in rs if r.pid == a.pid and r.started > resumed
    ]
    if started_by_a:
        problems.append(f"A started steps of instances it had lost: {started_by_a}")
    for wf in parked:
        first, last = runs[(wf, "a")], runs[(wf, "b")]
        if len(first) != 1 or results[wf]["first"] != first[0].nonce:
            problems.append(f"{wf}: step a, stored before the pause, ran again: {first}")
        if [r.pid for r in last] != [b.pid] or results[wf]["last"] != last[0].nonce:
            problems.append(f"{wf}: step b should have run once, in B: {last}")
    slow = runs[("slow", "a")]
    stored = [r for r in slow if r.nonce == results["slow"]["first"]]
    if [r.pid for r in stored] != [b.pid] or len(slow) != 2:
        problems.append(f"slow: A's late result replaced B's, or the step ran again: {slow}")
    woke = runs[("nap", "c")]
    if [r.pid for r in woke] != [b.pid] or results["nap"]["woke"] != woke[0].nonce:
        problems.append(f"nap: the step after the timer should have run once, in B: {woke}")
    written = wal_rows_since(pg_url, log_mark, owner)
    if written:
        problems.append(f"A wrote {written} log rows after it resumed (its lease was lost)")
    assert not problems, "\n".join(problems)
    bound = LEASE + 1 + SLACK
    assert takeover <= bound, f"takeover took {takeover:.2f} s (lease {LEASE} s)"


def wal_mark(url: str) -> int | None:
    """The last log row's number now (``None`` where the store keeps no such log)."""
    try:
        rows = query(url, "SELECT coalesce(max(seq), 0) FROM actorflow.wal")
    except asyncpg.PostgresError:
        return None
    return int(rows[0][0])


def wal_rows_since(url: str, mark: int | None, owner: str | None) -> int:
    """How many log rows ``owner`` wrote after ``mark`` (rows folded away since are
    not seen: the step and ping checks cover those)."""
    if mark is None or owner is None:
        return 0
    try:
        rows = query(
            url, "SELECT count(*) FROM actorflow.wal WHERE seq > $1 AND owner = $2", mark, owner
        )
    except asyncpg.PostgresError:
        return 0
    return int(rows[0][0])


# -- 4. a clean close hands over at once ---------------------------------------------------
def test_a_clean_close_hands_the_instances_over_at_once(
    spawn: Callable[..., list[Child]], tmp_path: Path
) -> None:
    lease = 10.0
    a, b = spawn("A", "B", lease=lease)
    parked = [f"f{i}" for i in range(4)]
    for wf in parked:
        a.call("start", workflow="cluster.flow", args=[3], wf=wf)
    assert b.call("feed", wfs=parked, tag="B", count=1) == 0
    for wf in parked:  # taken by A, the owner
        until(b, wf, "A takes the first ping", lambda s: len(consumed_times(s)) == 1)
    a.close()
    closed = time.time()
    assert b.call("feed", wfs=parked, tag="B", first=1, count=2) == 0, send_errors(tmp_path)
    results = results_of(b, parked, tmp_path, within=lease + 10)
    handover = max(consumed_times(b.status(wf))[1] for wf in parked) - closed
    print(f"handover after a clean close (lease {lease} s): {handover:.2f} s")

    problems = ping_problems(results, acked(tmp_path), {"B": 3})
    runs = executions(tmp_path)
    for wf in parked:
        if [r.pid for r in runs[(wf, "a")]] != [a.pid]:
            problems.append(f"{wf}: step a, stored before the close, ran again: {runs[(wf, 'a')]}")
        if [r.pid for r in runs[(wf, "b")]] != [b.pid]:
            problems.append(f"{wf}: step b should have run once, in B: {runs[(wf, 'b')]}")
    assert not problems, "\n".join(problems)
    assert handover < lease / 2, f"handover took {handover:.2f} s, not at once (lease {lease} s)"
