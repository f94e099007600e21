"""The audit log: capped and newest first, and the audit listeners that record each job's
outcome once."""

from __future__ import annotations

import asyncio
from typing import Any

from mailqueue.bullmq_fixes import connection_options
from mailqueue.events import EventManager
from mailqueue.manager import MailManager
from mailqueue.settings import Settings
from tests.mailqueue.event_support import WorkerFactory, boom, ok
from tests.waiting import eventually


async def test_audit_log_is_capped_and_newest_first(
    settings: Settings, mail: MailManager
) -> None:
    capped = settings.model_copy(update={"audit_log_max": 10})
    manager = EventManager(connection_options(settings.redis_url or ""), mail.client,
                           settings.queue_prefix, capped)
    try:
        ids = [await manager.record_audit("ada", "retry", f"q/{i}", "ok", f"#{i}")
               for i in range(400)]
        log = await manager.get_audit_log(5)
        assert [e["id"] for e in log] == ids[::-1][:5]
        assert log[0]["actor"] == "ada" and log[0]["target"] == "q/399"
        assert log[0]["detail"] == "#399" and log[0]["result"] == "ok"
        assert log[0]["time"].endswith("+00:00")
        length = await mail.client.xlen(f"{settings.queue_prefix}:__mailqueue__:audit")
        assert length < 400 and length <= 10 + 100  # MAXLEN ~ trims whole stream nodes
        assert await manager.get_audit_log(0) == []
    finally:
        await manager.close()


async def test_audit_listeners_record_job_lifecycle(
    mail: MailManager, worker_factory: WorkerFactory
) -> None:
    await mail.setup_audit_listeners()
    await mail.setup_audit_listeners()  # idempotent: still one entry per event
    good = await mail.add_job("au", "x")
    bad = await mail.add_job("au", "y", attempts=1)
    worker_factory("au", lambda job, token: ok(job, token) if job.id == good.id
                   else boom(job, token))

    async def outcomes() -> list[dict[str, Any]]:
        return [e for e in await mail.get_audit_log() if e["actor"] == "system"
                and e["action"] in ("completed", "failed")]

    await eventually(outcomes, 10, "both jobs' outcomes audited",
                     accept=lambda found: len(found) >= 2)
    await asyncio.sleep(0.5)  # the window in which a second listener's copy would show
    entries = [e for e in await mail.get_audit_log() if e["actor"] == "system"]
    targets = {(e["action"], e["target"], e["result"]) for e in entries}
    assert ("completed", f"au/{good.id}", "ok") in targets
    assert ("failed", f"au/{bad.id}", "error") in targets
    assert len([e for e in entries if e["action"] == "failed"]) == 1
    failed = next(e for e in entries if e["action"] == "failed")
    assert failed["detail"] == "smtp down for y"
