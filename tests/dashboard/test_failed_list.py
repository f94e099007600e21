"""The failed list (issue 14, "one click to what operators do daily"): under each reason the
stack line that says where it failed, the whole trace per row in a <details>, and a Retry
button per row that goes through the audited, CSRF-checked job retry (refused read-only)."""

from __future__ import annotations

import asyncio
import html
import json
import re
from typing import Any

import httpx
from bullmq import Job
from markupsafe import escape

from mailqueue.dashboard.app import create_app
from mailqueue.dashboard.views.failed_rows import STACK_CHARS, first_stack_line
from mailqueue.manager import MailManager
from tests.dashboard.conftest import csrf_token

V8_STACK = """Error: SMTP 550 mailbox unavailable
    at SMTPConnection._formatError (/app/node_modules/nodemailer/lib/smtp/index.js:798:19)
    at SMTPConnection._actionRCPT (/app/node_modules/nodemailer/lib/smtp/index.js:1680:28)
    at processTicksAndRejections (node:internal/process/task_queues:95:5)"""

PY_STACK = """Traceback (most recent call last):
  File "/app/mailqueue/runtime/loop.py", line 240, in run
    result = await handler(job.data, job)
  File "/app/handlers.py", line 12, in deliver_to_smtp
    raise RuntimeError("SMTP 550 mailbox unavailable")
RuntimeError: SMTP 550 mailbox unavailable
"""

HOSTILE = '<img src=x onerror="window.__xss=1">'


def test_the_first_stack_line_is_the_frame_that_raised() -> None:
    assert first_stack_line(V8_STACK).startswith("at SMTPConnection._formatError (")
    assert first_stack_line(PY_STACK) == 'File "/app/handlers.py", line 12, in deliver_to_smtp'
    # Neither format: the first line that is not the reason again.
    other = "SMTP 550 mailbox unavailable\nsmtp.example.com said: no such user\n"
    assert first_stack_line(other, "SMTP 550 mailbox unavailable") == \
        "smtp.example.com said: no such user"
    assert first_stack_line("RuntimeError: boom\nwhile sending", "boom") == "while sending"
    assert first_stack_line("", "boom") == ""
    assert len(first_stack_line("at " + "x" * 1000)) <= 301


def deliver_to_smtp(data: Any) -> None:
    raise RuntimeError(f"SMTP 550 mailbox unavailable for {data['to']}")


async def failed_jobs(mail: MailManager, queue: str, n: int) -> list[str]:
    async def handler(data: Any, job: Job) -> None:
        deliver_to_smtp(data)

    jobs = [await mail.add_job(queue, "send-welcome", {"to": f"user{i}@example.com"},
                               attempts=1) for i in range(n)]
    mail.start_worker(queue, {"send-welcome": handler})
    for _ in range(400):
        if (await mail.queues.get_job_counts(queue))["failed"] == n:
            break
        await asyncio.sleep(0.025)
    await mail.stop_worker(queue)
    return [str(job.id) for job in jobs]


def row_of(page: str, job_id: str) -> str:
    """A job's row and, on the failed list, its stack row below it."""
    match = re.search(rf'<tr data-key="{job_id}"[ >](.*?)(?=<tr data-key=|</tbody>)', page, re.S)
    assert match, f"no row for job {job_id}"
    return match.group(1)


async def test_each_failed_row_shows_where_it_failed_its_stack_and_a_retry_button(
        mail: MailManager, client: httpx.AsyncClient) -> None:
    ids = await failed_jobs(mail, "q", 3)
    # A job a Node worker failed: V8's stack, with a hostile line in it.
    await mail.client.hset(f"{mail.settings.queue_prefix}:q:{ids[2]}", "stacktrace",
                           json.dumps(["an older attempt", V8_STACK + "\n    at " + HOSTILE]))
    page = (await client.get("/queues/q?state=failed")).text
    for job_id in ids[:2]:
        row = row_of(page, job_id)
        line = re.search(r'<summary class="stack-line"[^>]*>(.*?)</summary>', row, re.S)
        assert line, row
        assert re.fullmatch(r'File &#34;.*test_failed_list\.py&#34;, line \d+, in '
                            r'deliver_to_smtp', line.group(1)), line.group(1)
        stack = re.search(r'<pre class="stack"[^>]*>(.*?)</pre>', row, re.S)
        assert stack and stack.group(1).startswith("Traceback (most recent call last):")
        assert f"SMTP 550 mailbox unavailable for user{ids.index(job_id)}@example.com" in row
        # The Retry button posts the selection form (and its CSRF token) to the job's retry.
        assert f'formaction="/queues/q/jobs/{job_id}/retry"' in row
        assert f'hx-post="/queues/q/jobs/{job_id}/retry"' in row
        assert f'id="stack-{job_id}" hx-preserve' in row
    node_row = row_of(page, ids[2])
    assert "at SMTPConnection._formatError (/app/node_modules/" in node_row
    assert "an older attempt" not in node_row  # the newest attempt's trace only
    assert HOSTILE not in page and str(escape(HOSTILE)) in node_row
    # Other tabs carry no stacks and no per-row retry.
    waiting = (await client.get("/queues/q?state=waiting")).text
    assert "row-stack" not in waiting and "/retry\"" not in waiting.split("</tbody>")[0]


async def test_a_long_stack_is_cut_with_a_link_to_the_job_page(
        mail: MailManager, client: httpx.AsyncClient) -> None:
    [job_id] = await failed_jobs(mail, "q", 1)
    long_stack = "Error: deep\n" + "\n".join(f"    at f{n} (/app/x.js:{n}:1)" for n in range(800))
    await mail.client.hset(f"{mail.settings.queue_prefix}:q:{job_id}", "stacktrace",
                           json.dumps([long_stack]))
    row = row_of((await client.get("/queues/q?state=failed")).text, job_id)
    stack = re.search(r'<pre class="stack"[^>]*>(.*?)</pre>', row, re.S)
    assert stack and len(html.unescape(stack.group(1))) == STACK_CHARS
    assert f'href="/queues/q/jobs/{job_id}">The rest on the job page' in row
    api = (await client.get("/api/queues/q/jobs?state=failed")).json()
    assert api["jobs"][0]["stack_line"] == "at f0 (/app/x.js:0:1)"


async def test_the_row_retry_is_audited_and_needs_csrf(mail: MailManager,
                                                       client: httpx.AsyncClient) -> None:
    ids = await failed_jobs(mail, "q", 2)
    token = await csrf_token(client, "/queues/q?state=failed")
    # No token: refused, nothing retried.
    refused = await client.post(f"/queues/q/jobs/{ids[0]}/retry", data={"job_id": ids[1]})
    assert refused.status_code == 403
    assert (await mail.queues.get_job_counts("q"))["failed"] == 2
    # As the button sends it: the whole selection form (token, ticked boxes) to that job's
    # retry; only that job is retried, and the browser comes back to the list.
    answer = await client.post(f"/queues/q/jobs/{ids[0]}/retry",
                               data={"csrf_token": token, "job_id": ids[1]},
                               headers={"referer": "http://127.0.0.1:3000/queues/q?state=failed"})
    assert answer.status_code == 303 and answer.headers["location"] == "/queues/q?state=failed"
    assert (await mail.queues.get_job("q", ids[0]))["state"] == "waiting"
    assert (await mail.queues.get_job("q", ids[1]))["state"] == "failed"
    entry = (await mail.get_audit_log(1))[0]
    assert entry["action"] == "job.retry" and entry["target"] == f"q/{ids[0]}"


async def test_read_only_shows_stacks_but_no_retry_and_refuses_it(mail: MailManager) -> None:
    ids = await failed_jobs(mail, "q", 1)
    app = create_app(mail.settings.model_copy(update={"dashboard_read_only": True}), mail)
    app.state.mail = mail
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1:3000") as viewer:
        page = (await viewer.get("/queues/q?state=failed")).text
        row = row_of(page, ids[0])
        assert "deliver_to_smtp" in row and "/retry" not in row
        token = await csrf_token(viewer, "/queues/q?state=failed")
        refused = await viewer.post(f"/queues/q/jobs/{ids[0]}/retry",
                                    data={"csrf_token": token})
        assert refused.status_code == 403
    assert (await mail.queues.get_job("q", ids[0]))["state"] == "failed"
