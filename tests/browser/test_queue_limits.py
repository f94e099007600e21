"""A queue's global concurrency and rate limit set and released from its page in Chromium
(issue 14): the Limits line says them, the forms change them (htmx, CSRF), the page shows
the new values after each change, and Redis holds what BullMQ's workers read."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog

QUEUE = "mail.limits"


async def test_set_and_release_the_queue_limits(mail: MailManager, live_server: str,
                                                page: Any, browser_log: BrowserLog) -> None:
    await mail.add_job(QUEUE, "send-welcome", {"to": "ada@example.com"})
    q = await mail.queues.get_queue(QUEUE)
    await page.goto(f"{live_server}/queues/{QUEUE}?state=waiting")
    concurrency, rate = page.locator("#limit-concurrency"), page.locator("#limit-rate")
    await expect(concurrency).to_have_text("no limit")
    await expect(rate).to_have_text("no limit")

    await page.locator("#limits-concurrency summary").click()
    await page.get_by_label("Jobs active at once, across all workers").fill("1")
    await page.locator("#limits-concurrency").get_by_role("button", name="Set").click()
    await expect(concurrency).to_have_text("1 active at most")
    assert await q.getGlobalConcurrency() == 1
    await expect(page.locator("#limits-result")).to_contain_text(
        "at most 1 job(s) active at once")
    assert page.url.endswith(f"/queues/{QUEUE}?state=waiting")  # no reload, no new page

    await page.locator("#limits-rate summary").click()
    await page.get_by_label("At most this many jobs").fill("30")
    await page.get_by_label("per this many ms").fill("60000")
    await page.locator("#limits-rate").get_by_role("button", name="Set").click()
    await expect(rate).to_have_text("30 jobs per 1 min")
    assert await q.getGlobalRateLimit() == {"max": 30, "duration": 60000}

    # A refused value: one line in place, nothing changed (the menus stayed open).
    field = page.get_by_label("Jobs active at once, across all workers")
    await expect(field).to_have_value("1")
    await field.fill("0")
    await field.evaluate("el => el.removeAttribute('min')")  # past the browser's own check
    await page.locator("#limits-concurrency").get_by_role("button", name="Set").click()
    await expect(page.locator("#limits-result")).to_contain_text(
        "The global concurrency must be within 1..1,000,000")
    assert await q.getGlobalConcurrency() == 1

    await page.locator("#limits-concurrency").get_by_role("button", name="Release").click()
    await expect(concurrency).to_have_text("no limit")
    await page.locator("#limits-rate").get_by_role("button", name="Release").click()
    await expect(rate).to_have_text("no limit")
    assert await q.getGlobalConcurrency() is None and await q.getGlobalRateLimit() is None
    actions = [e["action"] for e in await mail.get_audit_log(5)]
    assert actions[:2] == ["queue.release-rate-limit", "queue.release-concurrency"]
    browser_log.assert_clean(expected_statuses=(422,))  # the refused 0
