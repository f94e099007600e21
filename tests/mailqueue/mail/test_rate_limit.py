"""MAIL_RATE_LIMIT: e-mails per second across all workers of the e-mail queue, whether the
workers are `mailqueue worker` processes or started from Python."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bullmq import Job

from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from mailqueue.settings import Settings
from mailqueue.workers import worker_options_from_settings
from tests.waiting import eventually

from .worker_process import WorkerProcess


def test_the_limit_applies_to_the_email_queue_only(settings: Settings) -> None:
    limited = settings.model_copy(update={"mail_rate_limit": 10})
    assert worker_options_from_settings(limited, "emails")["limiter"] == \
        {"max": 10, "duration": 1000}
    assert "limiter" not in worker_options_from_settings(limited, "reports")
    assert "limiter" not in worker_options_from_settings(settings, "emails")  # 0: no limit


async def _run_jobs(mail: MailManager, n: int, **worker_options: Any) -> list[float]:
    """Add n jobs to the e-mail queue, process them with a Python-API worker, and return
    when each one ran (time.monotonic), in order."""
    ran: list[float] = []

    async def notify(data: Any, job: Job) -> None:
        ran.append(time.monotonic())

    await mail.create_queue("emails")
    await mail.add_jobs("emails", [{"name": "notify", "data": {"i": i}} for i in range(n)])
    mail.start_worker("emails", {"notify": notify}, concurrency=10, **worker_options)
    await eventually(lambda: len(ran) >= n, 20, f"{n} jobs run", interval=0.02)
    return sorted(ran)


async def test_a_python_api_worker_on_the_email_queue_is_rate_limited(
    settings: Settings
) -> None:
    n, rate = 30, 10
    async with MailManager(settings, mail_rate_limit=rate) as mail:
        # No limiter passed: the setting alone must hold the worker to 10 jobs a second.
        ran = await _run_jobs(mail, n)
    elapsed = ran[-1] - ran[0]
    measured = (n - rate) / elapsed  # the first window's jobs run at once, at elapsed 0
    print(f"\n{n} jobs at MAIL_RATE_LIMIT={rate} through mail.start_worker: "
          f"{elapsed:.2f} s first to last, {measured:.1f} jobs/s")
    # Windows of one second: 10 at once, 10 a second later, the last 10 two seconds later.
    assert n / rate - 1 - 0.2 <= elapsed <= n / rate + 1.5
    assert 0.7 * rate <= measured <= 1.15 * rate
    for index, at in enumerate(ran):
        assert at - ran[0] >= (index // rate) - 0.2, f"job {index} ran too early"


async def test_an_explicit_limiter_wins_and_none_lifts_the_limit(settings: Settings) -> None:
    async with MailManager(settings, mail_rate_limit=1) as mail:
        # At 1 a second, 20 jobs would take 19 s: they run at once, unlimited.
        ran = await _run_jobs(mail, 20, limiter=None)
    assert ran[-1] - ran[0] < 3


async def test_n_emails_at_10_per_second_across_two_workers_take_n_over_10_seconds(
    mail: MailManager, sink: MailSink, tmp_path: Path, redis_url: str, prefix: str
) -> None:
    n, rate = 30, 10
    await mail.create_queue("emails")
    workers = [WorkerProcess(tmp_path, redis_url, prefix, sink.url, 10,
                             MAIL_RATE_LIMIT=str(rate)) for _ in range(2)]
    try:
        for worker in workers:
            await worker.wait_ready(mail)
        started = time.time()
        await mail.add_jobs("emails", [
            {"name": "send-notification",
             "data": {"to": f"u{i}@example.com", "title": "t", "message": "m"}}
            for i in range(n)
        ])
        await eventually(sink.outbox.count, 20, f"{n} e-mails in the outbox",
                         accept=lambda count: count >= n)
    finally:
        for worker in workers:
            worker.stop()
    received = sorted(m["received_at"] for m in await sink.outbox.list_messages(n))
    elapsed = received[-1] / 1000 - started
    print(f"\n{n} e-mails at {rate}/s with 2 workers: {elapsed:.2f} s")
    # Windows of one second: 10 at once, then 10 a second later... the last batch starts
    # (n/rate - 1) s after the first.
    assert n / rate - 1 - 0.2 <= elapsed <= n / rate + 1.5
    first = received[0]
    for index, at in enumerate(received):
        assert at - first >= (index // rate) * 1000 - 200, f"message {index} came too early"
