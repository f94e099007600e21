"""WorkerManager listing the workers Redis sees (CLIENT LIST), by queue."""

from __future__ import annotations

from typing import Any

from bullmq import Job

from tests.mailqueue.conftest import Stack
from tests.waiting import eventually


async def test_list_workers_sees_running_python_workers(stack: Stack) -> None:
    async def noop(data: Any, job: Job) -> None:
        return None

    one = stack.workers.start_worker("listed", {"x": noop})
    two = stack.workers.start_worker("listed", {"x": noop})
    stack.workers.start_worker("other", {"x": noop})
    # The workers name their connections as they start.
    listed = await eventually(lambda: stack.workers.list_workers("listed"), 5,
                              "both workers listed", accept=lambda found: len(found) == 2)
    assert {w["name"] for w in listed} == {one.name, two.name}
    for worker in listed:
        assert worker["queue"] == "listed" and worker["language"] == "python"
        assert worker["connections"] == 2 and worker["addr"]
        assert worker["age_s"] >= 0 and worker["idle_s"] >= 0
    everyone = await stack.workers.list_workers()
    assert sorted(w["queue"] for w in everyone) == ["listed", "listed", "other"]
    await stack.workers.stop_worker("listed")
    # The sockets are closed; Redis drops them from CLIENT LIST a moment later.
    await eventually(lambda: stack.workers.list_workers("listed"), 2, "no worker listed",
                     accept=lambda found: found == [])
    assert len(await stack.workers.list_workers("other")) == 1
