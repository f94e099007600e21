"""The failed list in Chromium (issue 14): the frame that raised under each reason, the whole
stack one click away and still open after a live update, a Retry button per row that works
in place. Real Redis, uvicorn, workers and Chromium (conftest)."""

from __future__ import annotations

import json
from typing import Any

from bullmq import Job
from playwright.async_api import expect

from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog
from tests.browser.test_dashboard_browser import assert_not_reloaded, job_row, mark, wait_live
from tests.dashboard.test_job_page import wait_for_state

QUEUE = "mail.welcome"
HOSTILE = '<img src=x onerror="window.__xss=1">'


def stack_row(page: Any, job_id: str) -> Any:
    """The row under a failed job's row: where it failed, and its whole stack trace."""
    return page.locator(f'#queue-rows tr.stack-row[data-of="{job_id}"]')


def deliver_to_smtp(data: Any) -> None:
    raise RuntimeError(f"SMTP 550 mailbox unavailable for {data['to']}")


async def test_failed_rows_show_their_stack_and_retry_in_place(
        mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog) -> None:
    switch = {"fail": True}

    async def send(data: Any, job: Job) -> dict[str, Any]:
        if switch["fail"]:
            deliver_to_smtp(data)
        return {"sent": data["to"]}

    jobs = [await mail.add_job(QUEUE, "send-welcome", {"to": f"user{n}@example.com"},
                               attempts=1) for n in range(3)]
    mail.start_worker(QUEUE, {"send-welcome": send})
    for job in jobs:
        await wait_for_state(mail, QUEUE, str(job.id), "failed")
    ids = [str(job.id) for job in jobs]
    # A Node worker's trace with a hostile frame in it: shown as text.
    await mail.client.hset(f"{mail.settings.queue_prefix}:{QUEUE}:{ids[2]}", "stacktrace",
                           json.dumps([f"Error: boom\n    at {HOSTILE} (/app/x.js:1:1)"]))

    await page.goto(f"{live_server}/queues/{QUEUE}?state=failed")
    await wait_live(page)
    await mark(page)
    first = job_row(page, ids[0])
    line = stack_row(page, ids[0]).locator(".stack-line")
    await expect(line).to_be_visible()
    await expect(line).to_contain_text("in deliver_to_smtp")
    await expect(first.locator("td.reason")).to_contain_text(
        "SMTP 550 mailbox unavailable for user0@example.com")
    stack = stack_row(page, ids[0]).locator("pre.stack")
    await expect(stack).to_be_hidden()
    await line.click()
    await expect(stack).to_be_visible()
    await expect(stack).to_contain_text("Traceback (most recent call last):")
    await expect(stack_row(page, ids[2]).locator(".stack-line")).to_have_text(
        f"at {HOSTILE} (/app/x.js:1:1)")

    # A new failure arrives: the rows are swapped live; the open trace stays open.
    extra = await mail.add_job(QUEUE, "send-welcome", {"to": "late@example.com"}, attempts=1)
    await wait_for_state(mail, QUEUE, str(extra.id), "failed")
    await expect(page.locator("#queue-rows tr[data-key]")).to_have_count(4)
    await expect(stack).to_be_visible()

    # Retry one row in place: the job runs again (and now succeeds); its row leaves the list. (The
    # button sits in the rows, whose hx-swap="outerHTML" it would inherit: it swaps inner.)
    switch["fail"] = False
    await first.get_by_role("button", name=f"Retry job {ids[0]}").click()
    await expect(page.locator("#selection-result")).to_contain_text(
        f"Job {ids[0]} is waiting to run again")
    await wait_for_state(mail, QUEUE, ids[0], "completed")
    await expect(job_row(page, ids[0])).to_have_count(0)
    await expect(stack_row(page, ids[0])).to_have_count(0)
    await expect(page.locator("#queue-rows tr[data-key]")).to_have_count(3)
    # And again on another row: the result's place is still there.
    await job_row(page, ids[1]).get_by_role("button", name=f"Retry job {ids[1]}").click()
    await expect(page.locator("#selection-result")).to_contain_text(
        f"Job {ids[1]} is waiting to run again")
    await wait_for_state(mail, QUEUE, ids[1], "completed")
    await expect(page.locator("#queue-rows tr[data-key]")).to_have_count(2)
    await assert_not_reloaded(page)
    assert await page.evaluate("window.__xss") is None
    entry = (await mail.get_audit_log(1))[0]
    assert entry["action"] == "job.retry" and entry["target"] == f"{QUEUE}/{ids[1]}"
    await mail.stop_worker(QUEUE)
    browser_log.assert_clean()
