"""The queue header's tab actions in Chromium (issue 14): Clean and Add job beside Retry all,
their menus staying open (with what was typed) while the header is swapped live, and only
the actions of the tab on show. Real Redis, uvicorn, workers and Chromium (conftest)."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog
from tests.browser.test_dashboard_browser import (
    assert_not_reloaded,
    fail_jobs,
    mark,
    tab_count,
    wait_live,
)
from tests.dashboard.test_job_page import wait_for_state

QUEUE = "mail.welcome"


async def test_clean_and_add_job_sit_beside_retry_all_and_survive_live_swaps(
        mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog) -> None:
    await fail_jobs(mail, QUEUE, 2)
    await page.goto(f"{live_server}/queues/{QUEUE}?state=failed")
    await wait_live(page)
    await mark(page)
    header = page.locator("#queue-header")
    await expect(header.get_by_role("button", name="Retry all 2 failed")).to_be_visible()

    # Open Add job and type; then the header is swapped live (a third failure).
    await header.locator("summary", has_text="Add job…").click()
    name = header.get_by_label("Name")
    await name.fill("send-welcome")
    await header.get_by_label("Data (JSON)").fill('{"to": "ada@example.com"}')
    extra = await mail.add_job(QUEUE, "send-welcome", {"to": "late@example.com"}, attempts=1)
    await wait_for_state(mail, QUEUE, str(extra.id), "failed")
    await expect(header.get_by_role("button", name="Retry all 3 failed")).to_be_visible()
    await expect(name).to_be_visible()
    await expect(name).to_have_value("send-welcome")
    await header.get_by_role("button", name="Add job", exact=True).click()
    await expect(page.locator("#add-job-result")).to_contain_text("Added job")
    await expect(tab_count(page, "failed")).to_have_text("4")  # the worker failed it too

    # Clean the failed tab, any age: the list empties live, Retry all goes away.
    await mail.stop_worker(QUEUE)
    await header.locator("summary", has_text="Clean failed…").click()
    await header.get_by_label("Remove the failed jobs older than").select_option("0")
    await header.get_by_role("button", name="Clean", exact=True).click()
    await expect(page.locator("#tab-clean-result")).to_contain_text("Removed 4 failed job(s)")
    assert any("Remove these failed jobs" in d for d in browser_log.dialogs), browser_log.dialogs
    await expect(tab_count(page, "failed")).to_have_text("0")
    await expect(header.get_by_role("button", name="Retry all", exact=False)).to_have_count(0)
    await assert_not_reloaded(page)
    assert (await mail.queues.get_job_counts(QUEUE))["failed"] == 0

    # The waiting tab has no Retry all, no Retry selected; it has its own Clean.
    await mail.add_job(QUEUE, "send-welcome", {"to": "w@example.com"})
    await page.goto(f"{live_server}/queues/{QUEUE}?state=waiting")
    await expect(header.locator("summary", has_text="Clean waiting…")).to_be_visible()
    await expect(page.get_by_role("button", name="Retry all", exact=False)).to_have_count(0)
    await expect(page.get_by_role("button", name="Retry selected")).to_have_count(0)
    await expect(page.get_by_role("button", name="Remove selected")).to_be_visible()
    browser_log.assert_clean()
