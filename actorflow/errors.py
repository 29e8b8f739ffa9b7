"""The public exceptions. Every one derives from :class:`ActorflowError`."""

from __future__ import annotations


class ActorflowError(Exception):
    """Base of every error actorflow raises on purpose."""


class InvalidPayload(ActorflowError):
    """A value does not fit the event's type (or is too large); nothing was stored."""


class EventFailed(ActorflowError):
    """The awaited event was sent with ``error=``: ``.event`` is its name, ``.error`` the text."""

    def __init__(self, event: str, error: str) -> None:
        super().__init__(f"event {event!r} failed: {error}")
        self.event = event
        self.error = error


class EventCancelled(ActorflowError):
    """The awaited event was sent with ``cancelled=True``; ``.event`` is its name."""

    def __init__(self, event: str) -> None:
        super().__init__(f"event {event!r} was cancelled")
        self.event = event


class WaitTimeout(ActorflowError, TimeoutError):
    """A wait's ``timeout`` passed first (also a :class:`TimeoutError`)."""


class StepFailed(ActorflowError):
    """A step raised on its last attempt: ``.step``, ``.error_type`` and ``.message`` say how."""

    def __init__(self, step: str, error_type: str, message: str) -> None:
        super().__init__(f"step {step!r} failed: {error_type}: {message}")
        self.step = step
        self.error_type = error_type
        self.message = message


class NonDeterminismError(ActorflowError):
    """Replay made a different call than the journal holds; the instance is held, not failed."""


class WorkflowFailed(ActorflowError):
    """The workflow raised: ``.error_type`` (the exception's ``__qualname__``), ``.message``."""

    def __init__(self, workflow_id: str, error_type: str, message: str) -> None:
        super().__init__(f"workflow {workflow_id!r} failed: {error_type}: {message}")
        self.workflow_id = workflow_id
        self.error_type = error_type
        self.message = message


class WorkflowCancelled(ActorflowError):
    """The workflow was cancelled and let the cancellation propagate."""


class RuntimeClosed(ActorflowError):
    """The runtime is closed (or closed while the caller was waiting)."""


class StoreError(ActorflowError):
    """The database cannot be used: not actorflow's, newer schema, corrupt, or a write failed."""


class DatabaseLocked(StoreError):
    """Another live process owns the database file; ``.pid`` is its process ID."""

    def __init__(self, path: str, pid: int) -> None:
        super().__init__(
            f"{path} is owned by process {pid}, which is still running; "
            "stop it first, or send through the inbox (the CLI does this)"
        )
        self.path = path
        self.pid = pid


class ContinueAsNew(BaseException):
    """Raised by :meth:`Context.continue_as_new` to end the run; the runtime starts the
    next one. Derived from ``BaseException`` so that ``except Exception`` does not stop it:
    code that catches ``BaseException`` must raise it again."""

    def __init__(self, args: list[bytes]) -> None:
        super().__init__("the run continues as new")
        self.encoded_args = args
