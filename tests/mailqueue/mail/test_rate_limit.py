"""MAIL_RATE_LIMIT: e-mails per second across all workers of the e-mail queue."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from mailqueue.cli.worker import worker_options as _worker_options
from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from mailqueue.settings import Settings

from .worker_process import WorkerProcess


def test_the_limit_applies_to_the_email_queue_only(settings: Settings) -> None:
    limited = settings.model_copy(update={"mail_rate_limit": 10})
    assert _worker_options(limited, "emails")["limiter"] == {"max": 10, "duration": 1000}
    assert "limiter" not in _worker_options(limited, "reports")
    assert "limiter" not in _worker_options(settings, "emails")  # 0: no limit


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
        deadline = time.monotonic() + 20
        while await sink.outbox.count() < n:
            assert time.monotonic() < deadline, "not every e-mail arrived"
            await asyncio.sleep(0.05)
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
