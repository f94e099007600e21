"""Interop with Node BullMQ on one Redis: what Node writes, Python reads and processes, and back.

The Node side is tests/node/harness.mjs with `bullmq` pinned in tests/node/package.json; the
`node_harness` fixture installs it once per session (see tests/node_support.py). Without npm
these tests skip with a loud reason; under CI (`CI` set) they fail instead.
"""

from __future__ import annotations

from typing import Any

import pytest

from mailqueue.manager import MailManager
from tests.waiting import eventually

# --- jobs ------------------------------------------------------------------------------------


async def test_node_jobs_are_discovered_and_processed_by_a_python_worker(
    mail: MailManager, node: Any
) -> None:
    queue = "node-made"
    events = await node.run("add", queue=queue, jobs=[
        {"name": "double", "data": {"n": n}, "opts": {"attempts": 2}} for n in (1, 2, 3)
    ])
    ids = [e["id"] for e in events if e["event"] == "added"]
    assert len(ids) == 3

    # Python never touched this queue: discovery finds it from the keys Node wrote.
    assert queue in await mail.queues.list_queues(refresh=True)
    counts = await mail.queues.get_job_counts(queue)
    assert counts["waiting"] == 3 and counts["completed"] == 0

    async def double(data: dict[str, Any], job: Any) -> dict[str, Any]:
        return {"by": "python", "doubled": data["n"] * 2}

    mail.start_worker(queue, {"double": double}, concurrency=2)
    counts = await eventually(lambda: mail.queues.get_job_counts(queue),
                              accept=lambda c: c["completed"] == 3)
    assert counts["waiting"] == 0 and counts["failed"] == 0 and counts["active"] == 0

    for job_id, n in zip(ids, (1, 2, 3), strict=True):
        job = await mail.queues.get_job(queue, job_id)
        assert job["state"] == "completed"
        assert job["name"] == "double" and job["data"] == {"n": n}
        assert job["return_value"] == {"by": "python", "doubled": n * 2}
        assert job["opts"].get("attempts") == 2
        assert job["finished_on"] and job["processed_on"]

    page = await mail.queues.get_jobs(queue, "completed", per_page=10)
    assert page["total"] == 3
    assert sorted(j["id"] for j in page["jobs"]) == sorted(ids)


async def test_python_jobs_are_processed_by_a_node_worker(mail: MailManager, node: Any) -> None:
    queue = "python-made"
    ok = await mail.add_job(queue, "greet", {"to": "ada@example.com"})
    bad = await mail.add_job(queue, "greet", {"fail": "mailbox full"}, attempts=1)

    events = await node.run("work", queue=queue, jobs=2, seconds=15)
    finished = {e["id"]: e for e in events if e["event"] in ("completed", "failed")}
    assert finished[str(ok.id)]["event"] == "completed"
    assert finished[str(bad.id)]["event"] == "failed"

    job = await mail.queues.get_job(queue, str(ok.id))
    assert job["state"] == "completed"
    assert job["return_value"] == {
        "by": "node", "name": "greet", "id": str(ok.id), "echo": {"to": "ada@example.com"},
    }
    failed = await mail.queues.get_job(queue, str(bad.id))
    assert failed["state"] == "failed"
    assert failed["failed_reason"] == "mailbox full"
    assert failed["stacktrace"], "Node's stack trace is readable from Python"

    counts = await mail.queues.get_job_counts(queue)
    assert (counts["completed"], counts["failed"], counts["waiting"]) == (1, 1, 0)


async def test_node_job_progress_and_logs_are_readable(mail: MailManager, node: Any) -> None:
    queue = "node-progress"
    progress = [10, {"step": "rendered", "pct": 50}]
    logs = ["rendering template welcome", "sent via smtp"]
    added = await node.run("add", queue=queue, jobs=[
        {"name": "send", "data": {"progress": progress, "logs": logs}},
    ])
    job_id = added[0]["id"]
    await node.run("work", queue=queue, jobs=1, seconds=15)

    job = await mail.queues.get_job(queue, job_id)
    assert job["state"] == "completed"
    assert job["progress"] == {"step": "rendered", "pct": 50}
    assert await mail.queues.get_job_logs(queue, job_id) == logs


# --- flows and schedulers ----------------------------------------------------------------


async def test_node_flow_across_two_queues_reads_as_a_tree(mail: MailManager, node: Any) -> None:
    events = await node.run("flow", flow={
        "name": "newsletter", "queueName": "flow-parent", "data": {"issue": 7},
        "children": [
            {"name": "render", "queueName": "flow-child", "data": {"part": "html"}},
            {"name": "render", "queueName": "flow-child", "data": {"part": "text"}},
        ],
    })
    made = next(e["tree"] for e in events if e["event"] == "flow")
    child_ids = sorted(c["id"] for c in made["children"])

    tree = await mail.get_flow("flow-parent", made["id"])
    assert str(tree["id"]) == made["id"]
    assert tree["queue"] == "flow-parent"
    assert tree["state"] == "waiting-children"
    assert sorted(str(c["id"]) for c in tree["children"]) == child_ids
    assert {c["queue"] for c in tree["children"]} == {"flow-child"}
    assert {c["state"] for c in tree["children"]} == {"waiting"}
    assert tree["name"] == "newsletter" and tree["pending"] == 2

    async def render(data: dict[str, Any], job: Any) -> str:
        return f"<{data['part']}>"

    # Python finishes Node's children; the Node-made parent moves on to waiting.
    mail.start_worker("flow-child", {"render": render})
    tree = await eventually(lambda: mail.get_flow("flow-parent", made["id"]),
                            accept=lambda t: t["state"] == "waiting")
    assert {c["state"] for c in tree["children"]} == {"completed"}
    assert sorted(c["return_value"] for c in tree["children"]) == ["<html>", "<text>"]
    assert (tree["pending"], tree["processed"]) == (0, 2)
    assert set(await mail.queues.list_queues(refresh=True)) >= {"flow-parent", "flow-child"}


async def test_node_job_scheduler_is_listed(mail: MailManager, node: Any) -> None:
    queue = "node-cron"
    await node.run("schedule", queue=queue, id="hourly-digest",
                   repeat={"pattern": "0 * * * *"},
                   template={"name": "send-digest", "data": {"list": "weekly"}})

    schedules = [s for s in await mail.list_schedules() if s["queue"] == queue]
    assert len(schedules) == 1
    schedule = schedules[0]
    assert schedule["id"] == "hourly-digest"
    assert schedule["name"] == "send-digest"
    assert schedule["cron"] == "0 * * * *"
    assert isinstance(schedule["next_run"], int) and schedule["next_run"] % 3_600_000 == 0
    assert schedule["template"].get("data") == {"list": "weekly"}
    assert await mail.list_schedules(queue) == schedules

    assert await mail.remove_schedule(queue, "hourly-digest") is True
    assert await mail.list_schedules(queue) == []


# --- workers -------------------------------------------------------------------------------


async def test_a_running_node_worker_is_listed_once_as_node(mail: MailManager, node: Any) -> None:
    queue = "mixed-workers"
    await mail.create_queue(queue)

    async def noop(data: Any, job: Any) -> None:
        return None

    mail.start_worker(queue, {"noop": noop}, concurrency=3)
    worker = await node.start("work", queue=queue, concurrency=4, seconds=30)
    await worker.wait_for("ready")

    workers = await eventually(
        lambda: mail.workers.list_workers(queue),
        accept=lambda ws: sorted(w["language"] for w in ws) == ["node", "python"],
    )
    assert len(workers) == 2, f"one worker each, not one per connection: {workers}"

    done = await worker.stop()
    assert done[-1]["reason"] == "signal"
    workers = await eventually(lambda: mail.workers.list_workers(queue),
                               accept=lambda ws: [w["language"] for w in ws] == ["python"])
    assert len(workers) == 1


async def test_an_idle_named_node_worker_on_another_queue_is_not_listed(
    mail: MailManager, node: Any
) -> None:
    await mail.create_queue("quiet")
    worker = await node.start("work", queue="elsewhere", name="reporter", seconds=30)
    await worker.wait_for("ready")
    workers = await eventually(lambda: mail.workers.list_workers("elsewhere"),
                               accept=lambda ws: len(ws) == 1)
    assert workers[0]["language"] == "node"
    assert await mail.workers.list_workers("quiet") == []
    await worker.stop()


# Node names its connections `<prefix>:<base64(queue)>`: names whose base64 holds '+', '/' or
# '=' padding, non-ASCII names, and a name that is itself valid base64 text.
@pytest.mark.parametrize("queue", ["emails", "courriels-été", "a?b>c", "Zm9v", "with space"])
async def test_node_workers_are_found_whatever_the_queue_name(
    mail: MailManager, node: Any, queue: str
) -> None:
    worker = await node.start("work", queue=queue, seconds=30)
    await worker.wait_for("ready")
    mine = await eventually(lambda: mail.workers.list_workers(queue),
                            accept=lambda ws: len(ws) == 1)
    assert mine[0]["language"] == "node" and mine[0]["queue"] == queue
    everywhere = await mail.workers.list_workers()
    assert [(w["queue"], w["language"]) for w in everywhere] == [(queue, "node")]
    await worker.stop()


# --- events --------------------------------------------------------------------------------


async def test_events_of_a_node_worker_reach_python_listeners(
    mail: MailManager, node: Any
) -> None:
    queue = "node-events"
    seen: list[dict[str, Any]] = []
    mail.on_event(queue, None, seen.append)
    completed: list[dict[str, Any]] = []

    async def on_completed(event: dict[str, Any]) -> None:
        completed.append(event)

    mail.on_event(queue, "completed", on_completed)

    added = await node.run("add", queue=queue, jobs=[
        {"name": "send", "data": {"progress": [40]}},
    ])
    job_id = added[0]["id"]
    await node.run("work", queue=queue, jobs=1, seconds=15)

    await eventually(lambda: completed, accept=lambda c: len(c) == 1)
    assert completed[0]["jobId"] == job_id and completed[0]["queue"] == queue
    assert completed[0]["returnvalue"]["by"] == "node"
    kinds = [e["event"] for e in seen if e.get("jobId") == job_id]
    assert {"added", "active", "progress", "completed"} <= set(kinds)
    assert kinds.index("active") < kinds.index("completed")
    progress = next(e for e in seen if e["event"] == "progress")
    assert progress["data"] == 40


