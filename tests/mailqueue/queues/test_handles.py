"""Queue handles (mailqueue/queues/handles.py): an unknown queue is a clear error, a bad name
is refused before anything is stored."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mailqueue.errors import MailQueueError, UnknownQueueError
from mailqueue.queues import QueueManager


async def test_unknown_queue_is_a_clear_error(qm: QueueManager, prefix: str) -> None:
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: qm.get_queue("nope"),
        lambda: qm.get_job("nope", "1"),
        lambda: qm.get_jobs("nope", "waiting"),
        lambda: qm.get_job_counts("nope"),
        lambda: qm.pause("nope"),
        lambda: qm.resume("nope"),
        lambda: qm.is_paused("nope"),
        lambda: qm.clean("nope", "completed"),
        lambda: qm.drain("nope"),
        lambda: qm.obliterate("nope"),
        lambda: qm.retry_failed("nope"),
        lambda: qm.promote_delayed("nope"),
        lambda: qm.get_metrics("nope"),
        lambda: qm.list_schedules("nope"),
        lambda: qm.remove_schedule("nope", "x"),
    ]
    for call in calls:
        with pytest.raises(UnknownQueueError, match=rf"'nope'.*{prefix}"):
            await call()


@pytest.mark.parametrize("name", ["", " emails", "emails ", "a:b", "x" * 201, None, 42])
async def test_bad_queue_names_are_refused(qm: QueueManager, name: Any) -> None:
    with pytest.raises(MailQueueError, match="Bad queue name"):
        await qm.create_queue(name)
    with pytest.raises(MailQueueError, match="Bad queue name"):
        await qm.add_job(name, "job", {})
    assert await qm.list_queues(refresh=True) == []
