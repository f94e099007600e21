"""The seed's scheduler example in Python: recurring jobs with BullMQ job schedulers.

A report every 2 seconds (limited to 3 runs) and a digest on a cron pattern with a time zone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bullmq import Job

from mailqueue.manager import MailManager

QUEUE = "reports"


async def main() -> None:
    async with MailManager() as mail:
        runs: list[str] = []
        three_runs = asyncio.Event()

        async def report(data: dict[str, Any], job: Job) -> str:
            runs.append(job.id)
            print(f"Report run {len(runs)} (job {job.id}) for {data['team']}")
            if len(runs) >= 3:
                three_runs.set()
            return "ok"

        await mail.create_queue(QUEUE)
        mail.start_worker(QUEUE, {"hourly-report": report, "daily-digest": report})

        await mail.schedule_job(QUEUE, "hourly-report", {"team": "ops"}, every=2000, limit=3,
                                scheduler_id="report-every-2s")
        await mail.schedule_job(QUEUE, "daily-digest", {"team": "sales"},
                                cron="30 8 * * 1-5", tz="Europe/Paris",
                                scheduler_id="weekday-digest")
        for schedule in await mail.list_schedules(QUEUE):
            when = schedule["cron"] or f"every {schedule['every_ms']} ms"
            print(f"Schedule {schedule['id']}: {when} (tz {schedule['tz']}), "
                  f"next {schedule['next_run']}")

        await asyncio.wait_for(three_runs.wait(), timeout=30)
        for scheduler_id in ("report-every-2s", "weekday-digest"):
            await mail.remove_schedule(QUEUE, scheduler_id)
        print(f"Done: {len(runs)} runs; schedules left: {len(await mail.list_schedules(QUEUE))}")


if __name__ == "__main__":
    asyncio.run(main())
