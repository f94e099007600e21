"""The seed's basic example in Python: a queue, a worker, a job, a schedule, monitoring.

Run it as is: `.venv/bin/python examples/basic_usage.py`. It uses REDIS_URL when set, else
Redis on localhost:6379, else an embedded Redis; and SMTP_URL when set, else a local SMTP
sink whose outbox the dashboard shows.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mailqueue.manager import MailManager
from mailqueue.workers import WorkerManager


async def main() -> None:
    async with MailManager(job_attempts=3, job_backoff_type="exponential",
                           job_backoff_delay_ms=2000) as mail:
        if not mail.settings.smtp_url:
            await mail.start_dev_sink()

        # 1. A queue (idempotent; no scheduler needed in modern BullMQ).
        await mail.create_queue("emails")

        # 2. A worker with the ready-made e-mail handlers.
        mail.start_worker("emails", WorkerManager.create_email_handlers(mail.settings),
                          concurrency=5)

        # 5. Monitoring (registered before the job so no event is missed).
        done = asyncio.Event()

        def on_completed(event: dict[str, Any]) -> None:
            print(f"E-mail sent: job {event['jobId']} -> {event.get('returnvalue')}")
            done.set()

        mail.on_event("emails", "completed", on_completed)
        mail.on_event("emails", "failed",
                      lambda event: print(f"Failed: job {event['jobId']}: "
                                          f"{event.get('failedReason')}"))
        await asyncio.sleep(0.2)  # let the event reader attach before the first job

        # 3. A job.
        job = await mail.add_job("emails", "send-welcome",
                                 {"to": "user@example.com", "name": "Ada"})
        print(f"Queued job {job.id}")

        # 4. A recurring newsletter, every day at 09:00.
        schedule = await mail.schedule_job(
            "emails", "send-newsletter",
            {"to": "subscribers@example.com", "campaign": "Our daily news",
             "articles": [{"title": "Hello", "summary": "What happened today."}]},
            cron="0 9 * * *", scheduler_id="daily-newsletter",
        )
        print(f"Scheduled {schedule['id']}: {schedule['cron']}, next run {schedule['next_run']}")

        await asyncio.wait_for(done.wait(), timeout=30)
        print("Stats:", await mail.get_queue_stats("emails"))
        print("Healthy:", (await mail.health_check())["healthy"])

        # Leave no daily job behind in the user's Redis.
        await mail.remove_schedule("emails", "daily-newsletter")


if __name__ == "__main__":
    asyncio.run(main())
