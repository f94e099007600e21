"""mailqueue: asynchronous e-mail over BullMQ queues in Redis, with a live dashboard.

The public names are importable from the package itself (`from mailqueue import
MailManager, Settings`). They load on first use (PEP 562), so `import mailqueue` alone (the
CLI's `--version`, a type checker) stays cheap, and the web layer (`mailqueue.dashboard`) is
never imported unless it is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC: dict[str, str] = {
    "MailManager": "mailqueue.manager",
    "Settings": "mailqueue.settings",
    "QueueManager": "mailqueue.queues",
    "WorkerManager": "mailqueue.workers",
    "EventManager": "mailqueue.events",
    "FlowManager": "mailqueue.flows",
    "Outbox": "mailqueue.mail.outbox",
    "MailQueueError": "mailqueue.errors",
    "RedisUnavailableError": "mailqueue.errors",
    "RedisFullError": "mailqueue.errors",
    "UnknownQueueError": "mailqueue.errors",
    "JobNotFoundError": "mailqueue.errors",
    "InvalidJobOptionsError": "mailqueue.errors",
    "InvalidScheduleError": "mailqueue.errors",
    "InvalidFlowError": "mailqueue.errors",
    "UnknownJobNameError": "mailqueue.errors",
    "MailError": "mailqueue.mail.errors",
    "PermanentMailError": "mailqueue.mail.errors",
    "TransientMailError": "mailqueue.mail.errors",
    "InvalidMailDataError": "mailqueue.mail.errors",
    "InvalidAddressError": "mailqueue.mail.errors",
    "TemplateNotFoundError": "mailqueue.mail.errors",
}

__all__ = [  # noqa: RUF022 (grouped as _PUBLIC is)
    "__version__",
    "MailManager",
    "Settings",
    "QueueManager",
    "WorkerManager",
    "EventManager",
    "FlowManager",
    "Outbox",
    "MailQueueError",
    "RedisUnavailableError",
    "RedisFullError",
    "UnknownQueueError",
    "JobNotFoundError",
    "InvalidJobOptionsError",
    "InvalidScheduleError",
    "InvalidFlowError",
    "UnknownJobNameError",
    "MailError",
    "PermanentMailError",
    "TransientMailError",
    "InvalidMailDataError",
    "InvalidAddressError",
    "TemplateNotFoundError",
]

if TYPE_CHECKING:
    from mailqueue.errors import (
        InvalidFlowError,
        InvalidJobOptionsError,
        InvalidScheduleError,
        JobNotFoundError,
        MailQueueError,
        RedisFullError,
        RedisUnavailableError,
        UnknownJobNameError,
        UnknownQueueError,
    )
    from mailqueue.events import EventManager
    from mailqueue.flows import FlowManager
    from mailqueue.mail.errors import (
        InvalidAddressError,
        InvalidMailDataError,
        MailError,
        PermanentMailError,
        TemplateNotFoundError,
        TransientMailError,
    )
    from mailqueue.mail.outbox import Outbox
    from mailqueue.manager import MailManager
    from mailqueue.queues import QueueManager
    from mailqueue.settings import Settings
    from mailqueue.workers import WorkerManager


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'mailqueue' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
