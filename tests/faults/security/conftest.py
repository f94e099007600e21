"""The security scenario's apps (with an admin and a viewer; one read-only), the data they
could change, and a real uvicorn serving the app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from bullmq import Job
from starlette.applications import Starlette

from mailqueue.manager import MailManager
from tests.app_support import uvicorn_serving
from tests.faults.desk_seed import seed_desk
from tests.faults.security.security_support import QUEUE, make_app
from tests.waiting import eventually


@pytest.fixture
async def apps(mail: MailManager) -> AsyncIterator[dict[str, Starlette]]:
    made = {"auth": make_app(mail), "read_only": make_app(mail, dashboard_read_only=True)}
    yield made
    for application in made.values():
        if application.state.live_hub is not None:
            await application.state.live_hub.close()


@pytest.fixture
async def seeded(mail: MailManager) -> dict[str, str]:
    """A failed, a delayed and a waiting job, a scheduler and a mail: something to change."""

    async def boom(data: Any, job: Job) -> None:
        raise RuntimeError("boom")

    await mail.add_job(QUEUE, "boom", {}, jobId="f1", attempts=1)
    mail.start_worker(QUEUE, {"boom": boom})
    await eventually(lambda: mail.queues.get_job_counts(QUEUE), 20, "the job failed",
                     accept=lambda counts: counts.get("failed", 0) >= 1)
    await mail.stop_worker(QUEUE)
    await mail.add_job(QUEUE, "later", {}, jobId="d1", delay=3_600_000)
    await mail.add_job(QUEUE, "waits", {}, jobId="w1")
    await mail.schedule_job(QUEUE, "tick", {}, every=3_600_000, scheduler_id="s1")
    sink = await mail.start_dev_sink()
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "x"
    message.set_content("text")
    message.add_alternative(
        "<html><head><title>mail</title></head><body><h1>Mail</h1>"
        "<script>parent.__xss = 'parent'; window.__xss = 'self'; document.title = 'ran';"
        "</script><img src=x onerror=\"parent.__xss = 'img'; window.__xss = 'img'\">"
        "<form action=\"/queues/pause-all\" method=post><button id=b>go</button></form>"
        "</body></html>", subtype="html")
    await aiosmtplib.send(message, hostname=sink.host, port=sink.port, start_tls=False)
    message_id = (await mail.outbox.list_messages(1))[0]["id"]
    return {"name": QUEUE, "queue": QUEUE, "job_id": "f1", "scheduler_id": "s1",
            "message_id": message_id, "path": "app.css",
            **await seed_desk(mail, QUEUE, "f1")}


@pytest.fixture
async def server_port(apps: dict[str, Starlette]) -> AsyncIterator[int]:
    async with uvicorn_serving(apps["auth"]) as port:
        yield port
