"""Mail through the real path for tests: the built-in handlers in a worker of this process,
and waits for jobs to reach a final state (completed or failed)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from mailqueue.mail.handlers import EmailHandlers, create_email_handlers
from mailqueue.manager import MailManager
from tests.waiting import eventually

FINAL_STATES = ("completed", "failed")


@contextlib.asynccontextmanager
async def email_worker(mail: MailManager, smtp_url: str, queue: str = "emails",
                       concurrency: int = 5) -> AsyncIterator[EmailHandlers]:
    """The built-in handlers sending to `smtp_url`, run by a worker on `queue`."""
    handlers = create_email_handlers(mail.settings.model_copy(update={"smtp_url": smtp_url}))
    await mail.create_queue(queue)
    mail.start_worker(queue, handlers, concurrency=concurrency)
    try:
        yield handlers
    finally:
        await mail.stop_worker(queue)
        await handlers.close()


@contextlib.asynccontextmanager
async def campaign_handlers(mail: MailManager, smtp_url: str) -> AsyncIterator[EmailHandlers]:
    """The built-in handlers for campaigns to serve; on exit, every campaign worker stops."""
    handlers = create_email_handlers(mail.settings.model_copy(update={"smtp_url": smtp_url}))
    try:
        yield handlers
    finally:
        await mail.stop_serving_campaigns()
        await mail.workers.close()
        await handlers.close()


async def settled(mail: MailManager, queue: str, job_ids: list[str], timeout: float = 60,
                  min_attempts: int = 0) -> list[Any]:
    """Every job's info, in order, once all are completed or failed (after at least
    `min_attempts` runs each: a retried job is final again only after its new run)."""

    async def infos() -> list[Any]:  # each a job's info, as `mail.queues.get_job` gives
        return [await mail.queues.get_job(queue, job_id) for job_id in job_ids]

    def final(found: list[Any]) -> bool:
        return all(info["state"] in FINAL_STATES and info["attempts_made"] >= min_attempts
                   for info in found)

    found: list[Any] = await eventually(
        infos, timeout, f"jobs {job_ids} completed or failed", accept=final)
    return found


async def failed_once(mail: MailManager, queue: str, job_ids: list[str],
                      timeout: float = 30) -> None:
    """Until an attempt of one of the jobs has failed: with the SMTP server down, the worker
    has met the outage (its breaker may then hold the other jobs back)."""

    async def runs() -> list[int]:
        return [(await mail.queues.get_job(queue, job_id))["attempts_made"]
                for job_id in job_ids]

    await eventually(runs, timeout, f"a failed attempt among jobs {job_ids}",
                     accept=lambda found: max(found) >= 1)


async def run_job(mail: MailManager, queue: str, name: str, data: dict[str, Any],
                  timeout: float = 30, **opts: Any) -> Any:
    """Add one job and return its info once it is completed or failed."""
    job = await mail.add_job(queue, name, data, **opts)
    [info] = await settled(mail, queue, [str(job.id)], timeout)
    return info
