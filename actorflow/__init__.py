"""actorflow: durable workflows inside one asyncio process.

Workflows are ``async def`` code that can pause until an event arrives, a condition
holds or a timer fires, and that survive crashes and restarts: every outcome is
journaled in SQLite before the workflow sees it, and replay rebuilds the rest.
"""

from actorflow import testing
from actorflow.backup import backup
from actorflow.context import Context
from actorflow.errors import (
    ActorflowError,
    ContinueAsNew,
    DatabaseLocked,
    EventCancelled,
    EventFailed,
    InvalidPayload,
    NonDeterminismError,
    RuntimeClosed,
    StepFailed,
    StoreError,
    WaitTimeout,
    WorkflowCancelled,
    WorkflowFailed,
)
from actorflow.events import Event, EventRef
from actorflow.handle import Handle
from actorflow.log import configure_logging
from actorflow.runtime import Runtime
from actorflow.status import EventRecord, Status, Wait
from actorflow.steps import Retry
from actorflow.workflow import Workflow, workflow

__version__ = "0.1.0"

__all__ = [
    "ActorflowError",
    "Context",
    "ContinueAsNew",
    "DatabaseLocked",
    "Event",
    "EventCancelled",
    "EventFailed",
    "EventRecord",
    "EventRef",
    "Handle",
    "InvalidPayload",
    "NonDeterminismError",
    "Retry",
    "Runtime",
    "RuntimeClosed",
    "Status",
    "StepFailed",
    "StoreError",
    "Wait",
    "WaitTimeout",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowFailed",
    "__version__",
    "backup",
    "configure_logging",
    "testing",
    "workflow",
]
