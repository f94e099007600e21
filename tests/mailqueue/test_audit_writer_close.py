"""Closing the audit writer (mailqueue/events/audit_writer.py) stops it at any moment.

`mailqueue worker` closes it last, after its workers: a writer that did not stop kept the
worker printing "Stopping: waiting for active jobs..." and never exiting, about one Ctrl-C in
ten (tests/cli/test_errors.py::test_the_worker_closes_its_smtp_pool_at_shutdown). Here the
unlucky moment is made to happen every time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mailqueue.manager import MailManager
from tests.waiting import eventually


async def test_a_close_as_an_event_read_returns_stops_the_writer(mail: MailManager) -> None:
    """Python 3.11's asyncio.wait_for swallows a cancel that comes in the gap between its read
    returning and the waiting task resuming: the task goes on. A close made in that gap must
    stop the writer all the same."""
    await mail.events.setup_audit_listeners(lease_ms=60_000)
    writer = mail.events.audit_writer
    assert writer is not None and writer.holding
    await mail.create_queue("ac")
    await mail.add_job("ac", "x")  # an events stream: the writer now reads it (XREAD)
    closes: list[asyncio.Task[None]] = []

    def close_in_the_gap(read: asyncio.Future[Any]) -> None:
        # A done-callback of the read: called before the writer's task is woken with its
        # reply, and the close's first step (its cancel) is scheduled before that wake-up too.
        if not closes:
            closes.append(asyncio.ensure_future(mail.events.close()))

    def task_factory(loop: asyncio.AbstractEventLoop, coro: Any,
                     **kwargs: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        creator = asyncio.current_task(loop)
        if creator is not None and creator.get_name() == "mailqueue-audit-writer":
            task.add_done_callback(close_in_the_gap)  # the task wait_for makes of its XREAD
        return task

    loop = asyncio.get_running_loop()
    loop.set_task_factory(task_factory)
    try:
        await eventually(lambda: closes, 10, "a read by the audit writer")
    finally:
        loop.set_task_factory(None)
    done, _ = await asyncio.wait(closes, timeout=10)
    assert done, "the audit writer's close did not return"
    assert not writer.holding
    assert await mail.client.get(writer.lease_key) is None  # handed over
