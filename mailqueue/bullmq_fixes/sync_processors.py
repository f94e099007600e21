"""Sync processors (docs/bullmq-notes.md #9): a plain `def` handler runs in a thread.

One workaround of bullmq 3.4.4, named after the bug it covers; its canary test
(tests/mailqueue/test_bullmq_canaries.py) fails the day bullmq fixes the bug, and then this
module goes.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

# bullmq awaits whatever the processor returns, so a plain `def` fails every job with
# "object int can't be used in 'await' expression". Handlers may be sync or async here: a
# sync one runs in a thread so that it cannot block the event loop (and the lock renewals).


async def call_handler(handler: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async handler and return its result, never blocking the loop."""
    if inspect.iscoroutinefunction(handler):
        return await handler(*args)
    result = await asyncio.to_thread(handler, *args)
    if inspect.isawaitable(result):  # e.g. an object whose __call__ is async
        result = await result
    return result
