"""Fault scenario 1 (issue 5): a worker process SIGKILLed in the middle of 2,000 sends.

Two `mailqueue worker` processes send to an SMTP sink in the test process; one is killed
with SIGKILL while mail flows. Every message must be delivered (distinct Message-IDs in the
sink's outbox), the dead worker's active jobs must come back as stalled jobs and complete,
and duplicates are counted (target 0; the one window left is documented in docs/mail.md).

Figures are printed (pytest -s) and written to test-artifacts/reliability/<scenario>.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from tests.faults.system import MailqueueProcess, start_worker
from tests.mailqueue.mail.test_mail_faults import (  # noqa: F401 - big_sink is a fixture
    NOTIFY,
    big_sink,
    drained,
    message_ids,
)
from tests.waiting import eventually

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"
# Short locks: a dead worker's jobs come back in seconds (README settings), not 30 s.
FAST_STALLS = {"WORKER_LOCK_DURATION_MS": "2000", "WORKER_STALLED_INTERVAL_MS": "1000"}


def report(scenario: str, figures: dict[str, Any]) -> None:
    """Print a scenario's figures and keep them for docs/reliability.md."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{scenario}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n[{scenario}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


async def stalled_job_ids(redis: aioredis.Redis, prefix: str, queue: str) -> set[str]:
    """Jobs a stalled-job check moved back to wait, from the queue's events stream."""
    entries: Any = await redis.xrange(f"{prefix}:{queue}:events")
    return {fields["jobId"] for _, fields in entries if fields.get("event") == "stalled"}


async def test_worker_sigkilled_during_2000_sends(
    mail: MailManager, big_sink: MailSink, redis_client: aioredis.Redis,  # noqa: F811
    tmp_path: Path, redis_url: str, prefix: str,
) -> None:
    total, concurrency = 2000, 20
    await mail.create_queue("emails")
    # Attempts to spare: a job that died mid-send finds its send claim held (30 s) and is
    # retried every second until the claim ends.
    opts = {"attempts": 80, "backoff": {"type": "fixed", "delay": 1000},
            "removeOnComplete": False}  # every job stays to be checked
    jobs = []
    for start in range(0, total, 500):
        jobs += await mail.add_jobs("emails", [
            {"name": "send-notification", "data": {**NOTIFY, "to": f"u{i}@example.com"},
             "opts": opts} for i in range(start, start + 500)
        ])
    expected = {f"<emails.{job.id}@localhost>" for job in jobs}
    env = {**FAST_STALLS, "SMTP_URL": big_sink.url}
    workers: list[MailqueueProcess] = []
    try:
        for _ in range(2):
            workers.append(start_worker(tmp_path, redis_url=redis_url, prefix=prefix,
                                        concurrency=concurrency, **env))
        victim, survivor = workers

        async def a_quarter_sent() -> bool:
            return await big_sink.outbox.count() >= total // 4

        await eventually(a_quarter_sent, 60)
        active_at_kill = (await mail.queues.get_job_counts("emails")).get("active", 0)
        victim.kill()
        killed_at = time.monotonic()
        sent_at_kill = await big_sink.outbox.count()
        assert sent_at_kill < total, "the workers finished before the kill"

        async def all_delivered() -> bool:
            return len(await message_ids(big_sink)) >= total and await drained(mail)

        # Stalled jobs come back after ~lock + stalled interval; a job killed mid-send then
        # waits for its send claim (30 s) to end: 90 s is generous on a loaded machine.
        await eventually(all_delivered, 90)
        recovery_s = time.monotonic() - killed_at
        assert survivor.process.poll() is None, survivor.output()
    finally:
        for worker in workers:
            worker.stop()

    ids = await message_ids(big_sink)
    duplicates = sum(count - 1 for count in ids.values())
    stalled = await stalled_job_ids(redis_client, prefix, "emails")
    counts = await mail.queues.get_job_counts("emails")
    report("worker_killed", {
        "messages": total,
        "sent_before_kill": sent_at_kill,
        "active_at_kill": active_at_kill,
        "delivered_distinct": len(ids),
        "duplicates": duplicates,
        "stalled_jobs_recovered": len(stalled),
        "recovery_s": round(recovery_s, 1),
        "failed_jobs": counts.get("failed", 0),
    })
    assert set(ids) == expected  # every message, and nothing else
    assert counts.get("failed", 0) == 0
    # The killed worker held jobs: they came back through the stalled-job check and completed.
    assert stalled, "no stalled job was recovered"
    for job_id in stalled:
        info = await mail.queues.get_job("emails", job_id)
        assert info["state"] == "completed", info
    # The one window left (killed after the server accepted, before the delivery record was
    # written) can only hit jobs the victim had in flight.
    assert duplicates <= concurrency
