"""One workflow instance, driven by committed records: its life (replay, live, held,
finished), the calls its code has open, and how each committed record changes them.

An actor changes only when a record of its instance is committed (``committed``),
in log order, and replay feeds it the same records in the same order: so the live
instance and the one rebuilt after a crash go through the same states. Workflow
code runs on the instance's own :class:`~actorflow.loop.InstanceLoop`, stepped
synchronously after each change, so an instance never races with itself. What it
writes (through ``services.writer``) is all it does outside: given records and fake
services, an actor runs with no runtime, store or clock (``tests/test_actor.py``).

Its parts: the :class:`~actorflow.journal.Journal` (call positions, stored outcomes,
divergence checks), the :class:`~actorflow.mailbox.Mailbox` (events not consumed yet),
and the calls themselves, one class per kind (:mod:`actorflow.waits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from actorflow import codec
from actorflow.errors import ActorflowError, ContinueAsNew, NonDeterminismError
from actorflow.journal import Journal
from actorflow.log import logger as _log
from actorflow.loop import InstanceLoop
from actorflow.mailbox import Mailbox
from actorflow.records import (
    CancelRequested,
    ContinuedAsNew,
    Effect,
    EventHandled,
    EventReturned,
    EventSent,
    EventState,
    Finished,
    Held,
    Outcome,
    Patched,
    Record,
    Snapshot,
    Value,
    Waiting,
    apply,
    find_event,
)
from actorflow.steps import error_info
from actorflow.store.base import Mark
from actorflow.waits import Call, ConditionWait, QueryWait, Step, Wait

if TYPE_CHECKING:
    from actorflow.clock import Clock
    from actorflow.context import Context
    from actorflow.host.writer import GroupWriter
    from actorflow.timers import TimerWheel
    from actorflow.tracing import Tracing
    from actorflow.workflow import Workflow

C = TypeVar("C", bound=Call)


class Phase(enum.Enum):
    """Where an actor is in its life."""

    REPLAYING = "replaying"  # fed stored effects; nothing it does goes live yet
    LIVE = "live"
    FINISHING = "finishing"  # the workflow returned; its Finished record is being written
    CONTINUING = "continuing"  # it called continue_as_new; its record is being written
    FINISHED = "finished"
    HELD = "held"  # cannot run here (unknown workflow, non-determinism, failed write)
    STOPPED = "stopped"  # its runtime closed (or a new run replaced it): nothing goes live


INERT = frozenset({Phase.HELD, Phase.STOPPED, Phase.CONTINUING})
"""Phases in which workflow code that still runs (unwinding) starts and records nothing."""


class ParkingFuture(asyncio.Future[Any]):
    """The future of a call opened during replay: awaiting it tells its actor first
    (:meth:`Actor.parking`), which may give it its stored outcome at once."""

    __slots__ = ("_actor",)

    def __init__(self, actor: Actor) -> None:
        super().__init__(loop=actor.loop)
        self._actor: Actor | None = actor

    def __await__(self) -> Generator[Any, None, Any]:
        actor, self._actor = self._actor, None  # once
        if actor is not None and not self.done():
            actor.parking(self)
        return (yield from super().__await__())

    __iter__ = __await__

    def forget(self) -> None:
        """It is settled: drop the reference back to the actor."""
        self._actor = None


class Services:
    """What actors use from their runtime."""

    __slots__ = (
        "clock", "on_continued", "on_finished", "run_query", "run_step", "timers", "tracing",
        "writer",
    )  # fmt: skip

    def __init__(
        self,
        writer: GroupWriter,
        clock: Clock,
        timers: TimerWheel,
        run_step: Callable[[Actor, Step], None],
        run_query: Callable[[Actor, QueryWait], None],
        on_finished: Callable[[Actor], None],
        tracing: Tracing | None = None,
        on_continued: Callable[[Actor], None] | None = None,
    ) -> None:
        self.writer = writer
        self.clock = clock
        self.timers = timers
        self.run_step = run_step
        self.run_query = run_query
        self.on_finished = on_finished
        self.tracing = tracing  # None unless Runtime(tracing=...): the hooks check only that
        self.on_continued = on_continued  # starts the next run; None: nothing does


class Actor:
    """A workflow instance in memory; see the module docstring."""

    # Slots: thousands of instances park at once, and each should cost little memory.
    __slots__ = (
        "_context", "_replay_at",
        "calls", "conditions", "definition", "detail", "held", "id", "journal", "loop", "mailbox",
        "next_event_id", "phase", "services", "snapshot", "state", "task",
    )  # fmt: skip

    def __init__(
        self, services: Services, snapshot: Snapshot, definition: Workflow[Any] | None
    ) -> None:
        self.id = snapshot.id
        self.snapshot = snapshot
        self.definition = definition
        self.services = services
        self.phase = Phase.REPLAYING
        self.detail: str | None = None
        self.held: ActorflowError | None = None
        self.loop = InstanceLoop(self.id)  # type: ignore[abstract]
        self.state: Any = None  # built by start(), where a failure holds the instance
        self.journal = Journal(self.id, snapshot.values)
        self.calls: dict[int, Call] = {}
        self.next_event_id = snapshot.events[-1].id + 1 if snapshot.events else 0
        self.task: asyncio.Task[Any] | None = None
        self.mailbox = Mailbox(e.token for e in snapshot.events if e.token is not None)
        self.conditions: dict[int, ConditionWait] = {}  # armed: checked at each change
        self._context: Context[Any] | None = None
        self._replay_at = 0  # the next stored effect replay feeds

    # -- life ------------------------------------------------------------------------
    def start(self) -> None:
        """Replay the stored effects, then go live (or hold, saying why in ``detail``)."""
        from actorflow.context import Context

        definition = self.definition
        if definition is None:
            self._hold(
                f"workflow {self.snapshot.workflow!r} is not defined in this process; "
                "the instance waits, untouched, for a runtime that defines it"
            )
            return
        try:
            args = definition.decode_args(self.snapshot.args)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._hold(f"stored arguments do not fit {definition.name!r}'s parameters: {exc}")
            return
        try:
            self.state = definition.carried_state(self.snapshot.start_state)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._hold(f"the state carried from run {self.snapshot.run - 1} does not fit: {exc}")
            return
        history = self.snapshot.history
        self.journal.replay(history)
        self._context = Context(self)
        self.task = self.loop.create_task(self._main(definition, args))
        self.task.add_done_callback(self._task_done)
        self.loop.run()
        # Effects in log order (code that parks may take the next one itself: parking).
        while self.phase is Phase.REPLAYING and self._replay_at < len(history):
            effect = history[self._replay_at]
            self._replay_at += 1
            self._replay(effect)
        self._check_journal_made()
        if self.phase is Phase.HELD:
            return
        self.journal.end_replay()
        self._go_live()

    async def _main(self, definition: Workflow[Any], args: list[Any]) -> Any:
        return await definition.fn(self._context, *args)

    def _go_live(self) -> None:
        if self.phase is Phase.REPLAYING:
            self.phase = Phase.LIVE
        handlers = self.definition.handlers if self.definition is not None else {}
        late: list[Record] = []
        now = self.services.clock.now()
        if self.snapshot.held is not None and self.phase is Phase.LIVE:
            late.append(Held(self.id, None))  # runs here: no longer held
        for event in self.snapshot.events:
            if event.consumed_at is None or self.mailbox.given_back(event.id):
                if event.name in handlers:  # sent while no code with its handler ran
                    late.append(EventHandled(self.id, event.id, now))
                else:
                    self._to_mailbox(event)
        if late:
            self.services.writer.append(late)
        for call in list(self.calls.values()):
            if not call.future.done():
                call.arm()
        self._check_conditions()
        self._record_waits()

    def _hold(self, why: str, error: type[ActorflowError] | None = ActorflowError) -> None:
        # ``error=None``: held only until the runtime replaces this actor (a failed write).
        self.phase = Phase.HELD
        self.detail = why
        self.held = None if error is None else error(f"instance {self.id!r} is held: {why}")
        if error is not None and self.snapshot.held != why:
            # Stored, so that other processes (the CLI) show why it does not run.
            self.services.writer.append([Held(self.id, why)])
        self.loop.drop()
        if self.task is not None:  # its code stops where it is: no "destroyed pending" log
            self.task._log_destroy_pending = False  # type: ignore[attr-defined]
        for call in self.calls.values():
            call.disarm()
        _log.warning("workflow.held", workflow_id=self.id, detail=why)

    def stop(self) -> None:
        """The runtime closed: drop queued work and discard the parked coroutine now
        (rather than whenever the garbage collector gets to it). Its ``finally`` blocks
        run but start nothing; the instance resumes by replay at the next open."""
        if self.phase not in (Phase.FINISHED, Phase.HELD):
            self.phase = Phase.STOPPED
        self.loop.drop()
        task = self.task
        if task is not None and not task.done():
            task._log_destroy_pending = False  # type: ignore[attr-defined]  # parked on purpose
            with contextlib.suppress(RuntimeError):  # a `finally` that awaits cannot finish
                task.get_coro().close()
            self.loop.drop()

    @property
    def parked(self) -> bool:
        """Whether the instance is live and waits on nothing but events, timers, conditions
        and queries that do not poll and are not running, with nothing of its own being
        decided: it can be unloaded and later replayed to this same point."""
        if self.phase is not Phase.LIVE or self.task is None or self.task.done():
            return False
        if self.mailbox.busy or not self.calls:
            return False
        for call in self.calls.values():
            if call.bound or call.future.done() or not call.parks:
                return False
        return True

    def unload(self) -> None:
        """Drop the parked coroutine and what it holds (timers, query watches, mailbox
        indexes), writing nothing: the instance is replayed when it has work again."""
        if self.services.tracing is not None:
            self.services.tracing.run_suspended(self.id)
        for call in self.calls.values():
            call.disarm()
            # Its callbacks go to the instance loop's queue, which stop() drops: nothing
            # runs, but the task, the futures and this actor no longer refer to each
            # other, so reference counting frees them now, not the cyclic collector.
            call.future.cancel()
            if type(call.future) is ParkingFuture:
                call.future.forget()
        self.stop()
        self.release()

    def release(self) -> None:
        """The instance has finished: drop what refers back to this actor, so that
        reference counting frees it at once instead of the cyclic garbage collector
        (whose passes over every live instance are the hot path's largest cost)."""
        self._context = None
        self.task = None

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if self.phase is Phase.REPLAYING:
            self._check_journal_made(task)
        if self.phase in INERT:
            return
        result: bytes | None = None
        error = None
        if not task.cancelled() and isinstance(task.exception(), ContinueAsNew):
            self._continue_as_new(task.exception())  # type: ignore[arg-type]
            return
        if task.cancelled():
            status = "cancelled"
        elif (failure := task.exception()) is not None:
            status, error = "failed", error_info(failure)
        else:
            try:
                result = codec.encode(task.result(), "the workflow's return value")
                status = "completed"
            except TypeError as exc:
                status, error = "failed", error_info(exc)
        self.phase = Phase.FINISHING
        self._end_calls()
        self.services.writer.append(
            [Finished(self.id, status, self.services.clock.now(), result, error)]  # type: ignore[arg-type]
        )

    def _continue_as_new(self, request: ContinueAsNew) -> None:
        try:
            state = None if self.state is None else codec.encode(self.state, "the state")
        except TypeError as exc:  # the next run could not start from it: this one fails
            self.phase = Phase.FINISHING
            self._end_calls()
            self.services.writer.append(
                [Finished(self.id, "failed", self.services.clock.now(), None, error_info(exc))]
            )
            return
        self.phase = Phase.CONTINUING
        self._end_calls()
        # Events taken by waits whose outcomes are still being written were never seen by
        # the code: they go back to the mailbox, and so on to the next run.
        records: list[Record] = [EventReturned(self.id, i) for i in self.mailbox.reserved_ids()]
        records.append(
            ContinuedAsNew(self.id, request.encoded_args, self.services.clock.now(), state)
        )
        self.services.writer.append(records)

    def _end_calls(self) -> None:
        for call in self.calls.values():
            call.disarm()
        # It waits on nothing now (set at once, as _record_waits does): should a close
        # drop its last record after a checkpoint stored what led to it (an event taken, a
        # cancel), the stored snapshot still says it has work, and the next open loads it.
        self.snapshot.waiting = []

    # -- calls (made by the context) ----------------------------------------------
    def open_call(
        self, cls: type[C], name: str, decoder: msgspec.msgpack.Decoder[Any] | None = None
    ) -> C:
        """Give the workflow's next call, a ``cls`` (a :class:`~actorflow.waits.Call`), its
        sequence number, checking it against the journal."""
        seq = self.journal.next()
        replaying = self.phase is Phase.REPLAYING
        future = ParkingFuture(self) if replaying else self.loop.create_future()
        call = cls(self, seq, name, future, decoder)
        if self.phase in INERT:
            return call  # never resolves: a held instance does not run on
        try:
            self.journal.check_call(seq, cls.kind, name)
        except NonDeterminismError as exc:
            self._diverged(exc)
            return call
        self.calls[seq] = call
        call.future.add_done_callback(call)
        return call

    def parking(self, future: asyncio.Future[Any]) -> None:
        """Replay: workflow code is about to park on ``future``, a call's. If nothing else
        of the workflow's is ready to run and the next stored effect is that call's
        outcome, then live, the code parked here and resumed when that outcome came, with
        nothing run between: so it takes the outcome now and runs on without a trip
        through the loop (which is most of what replaying a long history costs)."""
        if self.phase is not Phase.REPLAYING or not self.loop.quiet:
            return
        history = self.snapshot.history
        at = self._replay_at
        effect = history[at] if at < len(history) else None
        if type(effect) is not Outcome:
            return
        call = self.calls.get(effect.seq)
        if call is None or call.future is not future:
            return
        self._replay_at = at + 1
        del self.calls[effect.seq]
        future.remove_done_callback(call)  # it acts on a cancel only; queued, it would
        # make the loop look busy at the next park
        if self.services.tracing is not None:
            self.services.tracing.wait_ended(self.id, call, effect)
        self._settle(call, effect)

    def start_call(self, call: Call) -> None:
        """Make an opened call take effect (live), or leave it for replay to resolve."""
        if self.phase is Phase.LIVE and not call.future.done() and call.seq in self.calls:
            call.arm()

    def recorded_value(self, kind: str, name: str) -> tuple[int, bytes | None]:
        """The next sequence number and its stored value, if replay has one."""
        seq = self.journal.next()
        if self.phase in INERT:
            return seq, None  # a held instance does not run on: its first divergence stands
        try:
            return seq, self.journal.value(seq, kind, name)
        except NonDeterminismError as exc:
            self._diverged(exc)
            return seq, None

    def _check_journal_made(self, ended: asyncio.Task[Any] | None = None) -> None:
        """During replay, hold the instance if the journal holds a call that its code has
        not made by the time it pauses (``ended=None``) or ends (``ended``, its task).
        Replay feeds every stored outcome, so the same code has made all the calls the
        journal holds by then; running on, or completing, would drop their outcomes."""
        if self.phase is not Phase.REPLAYING:
            return
        if ended is None:
            how = "paused"
        elif ended.cancelled():
            how = "was cancelled"
        elif ended.exception() is not None:
            how = "raised"
        else:
            how = "returned"
        try:
            self.journal.check_made(how)
        except NonDeterminismError as exc:
            self._diverged(exc)

    def record_value(self, seq: int, kind: str, name: str, value: bytes) -> None:
        """Store a value made now by call ``seq`` (written after anything queued before)."""
        if self.phase not in INERT:
            # Into the snapshot only once committed: a value lost with a failed write
            # must not be replayed as if it were stored.
            record = Value(self.id, seq, kind, name, value, self.services.clock.now())
            self.services.writer.append([record])

    def patched(self, patch_id: str) -> bool:
        """``ctx.patched``: the journal's answer, recording the marker on a fresh path
        (written after anything queued before; in the snapshot once committed)."""
        answer, new = self.journal.patched(patch_id, self.snapshot.patches)
        if new and self.phase not in INERT:
            now = self.services.clock.now()
            self.services.writer.append([Patched(self.id, patch_id, now)])
        return answer

    def _diverged(self, error: NonDeterminismError) -> None:
        self._hold(str(error), NonDeterminismError)

    def call_cancelled(self, call: Call) -> None:
        """The workflow cancelled ``call`` before its outcome was decided: it is gone."""
        self.calls.pop(call.seq, None)
        call.disarm()
        if self.services.tracing is not None:
            self.services.tracing.wait_ended(self.id, call, None)

    def bind(self, call: Call, outcome: Outcome) -> None:
        """Decide ``call``'s outcome and write it; the workflow sees it once committed."""
        if call.bound or call.future.done() or self.phase is not Phase.LIVE:
            return
        call.bound = True
        call.disarm()
        self.services.writer.append([outcome])

    def outcome(self, call: Call, **fields: Any) -> Outcome:
        """A new outcome record for ``call``."""
        return Outcome(self.id, call.seq, call.kind, call.name, self.services.clock.now(), **fields)

    # -- events ----------------------------------------------------------------------
    def offer(
        self,
        name: str,
        token: str | None,
        payload: bytes | None,
        error: str | None,
        cancelled: bool,
        created_at: float | None = None,
        marks: Sequence[Mark] = (),
    ) -> asyncio.Future[None]:
        """Accept an event; the future resolves once it is durable (and applied)."""
        if self.phase in (Phase.FINISHING, Phase.FINISHED):
            raise ActorflowError(f"workflow instance {self.id!r} has finished; it takes no events")
        now = self.services.clock.now()
        mailbox = self.mailbox
        if token is not None:
            mailbox.use_token(token)
        event_id = self.next_event_id
        self.next_event_id += 1
        continuing = self.phase is Phase.CONTINUING  # kept for the next run, as it is
        handled = (
            not continuing and self.definition is not None and name in self.definition.handlers
        )
        sent = EventSent(
            self.id, event_id, name, token, payload, error, cancelled,
            now if created_at is None else created_at, now, handled,
        )  # fmt: skip
        records: list[Record] = [sent]
        if not handled:
            live = self.phase is Phase.LIVE
            call = None if continuing else mailbox.accept(event_id, name, token, live)
            if call is not None:
                call.bound = True
                call.disarm()
                records.append(self.outcome(call, event=event_id))
        if self.services.tracing is not None:
            self.services.tracing.event_sent(self.id, event_id, name, token is not None)
        return self.services.writer.append_acked(records, marks)

    def can_take(self, token: str) -> bool:
        """Whether the instance can still take an event for its token ``token``."""
        return self.phase not in (Phase.FINISHING, Phase.FINISHED, Phase.CONTINUING) and not (
            self.mailbox.token_used(token)
        )

    def _to_mailbox(self, event: EventState) -> None:
        call = self.mailbox.put(event)
        if call is not None:
            self.bind(call, self.outcome(call, event=event.id))

    def event(self, event_id: int) -> EventState:
        """An event of this instance by id."""
        return find_event(self.snapshot, event_id)

    # -- committed records -----------------------------------------------------------
    def committed(self, record: Record) -> None:
        """Fold a committed record into the snapshot, then react to it."""
        apply(self.snapshot, record)
        if isinstance(record, ContinuedAsNew):
            self.phase = Phase.STOPPED
            if self.services.on_continued is not None:
                self.services.on_continued(self)
            return
        if self.phase is Phase.CONTINUING:
            return  # folded into what the next run starts from
        if self.phase is Phase.HELD:
            if isinstance(record, CancelRequested) and self.held is not None:
                self._cancel_held()
            return
        match record:
            case Outcome():
                self._deliver(record)
            case EventSent():
                if record.handled:
                    self._handle(record.name, record.payload)
                elif self._handles(record.name):  # sent while the last run was ending
                    now = self.services.clock.now()
                    self.services.writer.append([EventHandled(self.id, record.id, now)])
                elif not self.mailbox.reserved(record.id):  # else its Outcome follows in this batch
                    if record.token is None:
                        self.mailbox.written(record.name)
                    self._to_mailbox(self.event(record.id))
            case EventHandled():
                event = self.event(record.id)
                self._handle(event.name, event.payload)
            case EventReturned():
                if not self.mailbox.returned(record.id):  # else put back when given back
                    self._to_mailbox(self.event(record.id))
            case CancelRequested():
                self._cancel()
            case Finished():
                self.phase = Phase.FINISHED
                self.services.on_finished(self)

    def _cancel_held(self) -> None:
        # A held instance cannot run its code (not defined here, diverged, or failed to
        # apply a record): a cancel ends it as it stands, running nothing.
        self.phase = Phase.FINISHING
        self.held = None  # h.result() now waits for the end, as for any finishing instance
        now = self.services.clock.now()
        self.services.writer.append([Finished(self.id, "cancelled", now)])

    def apply_failed(self, what: str, error: Exception) -> None:
        """Applying ``what`` (committed) to this instance raised: hold it, saying why in
        ``detail``. What was committed stays folded into the snapshot, so it is
        checkpointed, and a runtime whose code applies it resumes the instance by replay."""
        if self.phase in (Phase.HELD, Phase.FINISHED):
            return
        self._hold(
            f"applying {what} failed ({type(error).__name__}: {error}); what was committed "
            "is stored, and the instance resumes by replay at an open once the code is fixed"
        )

    def write_failed(self, records: list[Record], error: Exception) -> None:
        """Records of this instance were not written: freeze it. The runtime then replaces
        it by an actor replayed from what was committed (``held`` stays ``None``)."""
        for record in records:
            if isinstance(record, EventSent) and record.wf == self.id and record.token:
                self.mailbox.free_token(record.token)  # refused: the token may be retried
        if self.phase is not Phase.HELD:
            self._hold(f"a write failed ({error}); it resumes by replay once writes succeed", None)

    def _replay(self, effect: Effect) -> None:
        match effect:
            case Outcome():
                call = self.calls.get(effect.seq)
                if call is None:
                    try:
                        self.journal.check_outcome(effect)
                    except NonDeterminismError as exc:
                        self._diverged(exc)
                    self._give_back(effect)  # the workflow had cancelled that call
                    return
                self._deliver(effect)
            case EventSent():
                self._handle(effect.name, effect.payload)
            case EventHandled():
                event = self.event(effect.id)
                self._handle(event.name, event.payload)
            case CancelRequested():
                self._cancel()

    def _deliver(self, outcome: Outcome) -> None:
        call = self.calls.pop(outcome.seq, None)
        if call is None:
            return
        if self.services.tracing is not None:
            self.services.tracing.wait_ended(self.id, call, outcome)
        if call.future.done():
            self._give_back(outcome)
            return
        self._settle(call, outcome)
        self._run()

    def _settle(self, call: Call, outcome: Outcome) -> None:
        """Give ``call``'s future the result (or error) of ``outcome``."""
        if type(call.future) is ParkingFuture:
            call.future.forget()
        if outcome.event is not None:
            self.mailbox.consumed(outcome.event)
            if self.phase is Phase.LIVE:
                _log.info("event.consumed", workflow_id=self.id, name=call.name, seq=call.seq)
        try:
            call.future.set_result(call.result(outcome))
        except BaseException as exc:
            call.future.set_exception(exc)

    def _give_back(self, outcome: Outcome) -> None:
        # A cancelled wait consumes nothing. Also on replay: a crash may have lost the
        # EventReturned, and the event must not stay taken by a call that is gone.
        if outcome.event is None or self.phase in INERT:
            return
        event = self.event(outcome.event)
        if event.consumed_by != outcome.seq:
            return
        self.mailbox.give_back(event.id)
        self.services.writer.append([EventReturned(self.id, event.id)])
        # Back in the mailbox now, not once its record commits: a later event of the
        # same name, sent meanwhile, must not overtake it to a wait. A wait that takes
        # it now writes its outcome after the EventReturned, so the log agrees.
        if self.phase is Phase.LIVE:
            self._to_mailbox(event)

    def _handles(self, name: str) -> bool:
        return (
            self.phase is Phase.LIVE
            and self.definition is not None
            and name in self.definition.handlers
        )

    def _handle(self, name: str, payload: bytes | None) -> None:
        definition = self.definition
        handler = definition.handlers.get(name) if definition is not None else None
        if handler is None:
            self._hold(
                f"workflow {self.id!r}: event {name!r} was handled by a handler the code "
                "no longer has; restore the code that started this instance",
                NonDeterminismError,
            )
            return
        event, fn = handler
        try:
            fn(self.state, event.decode(payload))
        except Exception as exc:
            _log.error("handler.failed", workflow_id=self.id, name=name, error=repr(exc))
        self._check_conditions()
        if self.phase is Phase.LIVE:
            self._record_waits()

    def _cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            self._run()

    def _run(self) -> None:
        self.loop.run()
        if self.phase is Phase.LIVE:
            if self.conditions:
                self._check_conditions()
            self._record_waits()

    def _record_waits(self) -> None:
        # Stored so that other processes (the CLI) see what the instance waits on.
        waits = [c.describe() for c in self.calls.values() if not c.bound and not c.future.done()]
        state = None
        if self.state is not None:
            try:
                state = codec.encode(self.state, "the state")
            except TypeError as exc:  # shown only; replay rebuilds state from handlers
                _log.warning("state.unencodable", workflow_id=self.id, error=str(exc))
        snapshot = self.snapshot
        if waits != snapshot.waiting or state != snapshot.state:
            snapshot.waiting = waits
            snapshot.state = state
            self.services.writer.append([Waiting(self.id, waits, self.services.clock.now(), state)])

    def _check_conditions(self) -> None:
        if self.phase is not Phase.LIVE:
            return
        for call in list(self.conditions.values()):
            call.check()

    # -- views -----------------------------------------------------------------------
    def open_waits(self) -> list[Wait]:
        """The waits the instance is parked on now, in call order."""
        return [
            c
            for c in self.calls.values()
            if isinstance(c, Wait) and not c.bound and not c.future.done()
        ]

    @property
    def status(self) -> str:
        """``running``, ``waiting`` or the stored final status."""
        if self.phase is Phase.FINISHED:
            return self.snapshot.status
        if any(isinstance(c, Step) for c in self.calls.values()):
            return "running"
        return "waiting" if self.open_waits() else "running"
