"""Waiting in tests: poll a condition until it holds, never sleep a fixed time.

`await eventually(check)` calls `check()` (a plain or an async callable) every `interval` s
until its value is truthy — or, given `accept`, until `accept(value)` holds — and returns
that value; after `timeout` s it fails the test saying `what` it waited for and the last
value seen. `eventually_sync` is the same for code outside an event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def eventually(check: Callable[[], Any], timeout: float = 20.0,
                     what: str = "the condition", *,
                     accept: Callable[[Any], Any] | None = None,
                     interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if accept(value) if accept is not None else value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s; last value: {value!r}")
        await asyncio.sleep(interval)


def eventually_sync(check: Callable[[], Any], timeout: float = 20.0,
                    what: str = "the condition", *,
                    accept: Callable[[Any], Any] | None = None,
                    interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if accept(value) if accept is not None else value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s; last value: {value!r}")
        time.sleep(interval)
