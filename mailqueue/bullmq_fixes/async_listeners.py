"""Async event listeners (docs/bullmq-notes.md #6): an `async def` listener is scheduled,
not dropped.

One workaround of bullmq 3.4.4, named after the bug it covers; its canary test
(tests/mailqueue/test_bullmq_canaries.py) fails the day bullmq fixes the bug, and then this
module goes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# bullmq's EventEmitter calls listeners synchronously and drops what they return, so an
# `async def` listener never runs ("coroutine ... was never awaited").

_listener_tasks: set[asyncio.Task[Any]] = set()


def add_listener(emitter: Any, event: str, callback: Callable[..., Any]) -> Callable[..., None]:
    """`emitter.on(event, callback)` that also accepts async callbacks; returns the listener.

    An async callback is run as a task on the running loop (a reference is kept until it
    ends; its exceptions are logged). Pass the returned listener to `emitter.off` to remove it.
    """

    def listener(*args: Any, **kwargs: Any) -> None:
        result = callback(*args, **kwargs)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            _listener_tasks.add(task)
            task.add_done_callback(_listener_done)

    emitter.on(event, listener)
    return listener


def _listener_done(task: asyncio.Task[Any]) -> None:
    _listener_tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("Event listener failed", exc_info=task.exception())
