"""Polish found in real Chromium: what stays live, what keeps the operator's work, what looks
right. Real Redis, real uvicorn, real workers in the test's loop (see conftest.py)."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog
from tests.browser.test_dashboard_browser import (
    assert_not_reloaded,
    fail_jobs,
    mark,
    wait_live,
)
from tests.dashboard.test_job_page import job_url, wait_for_state


def sidebar_link(page: Any, queue: str) -> Any:
    return page.locator(f'#sidebar a[href$="/queues/{queue}"]')


# --- the sidebar is live on every page ----------------------------------------------------


async def test_sidebar_counts_follow_a_retry_live(mail: MailManager, live_server: str,
                                                  page: Any, browser_log: BrowserLog) -> None:
    """Two failed jobs; on the job page of one, retry it: the sidebar's failed count drops
    without a reload. Then, on the workers page (no live region of its own), another
    queue's failure shows up in the sidebar."""
    ids, switch = await fail_jobs(mail, "mail.welcome", 2)
    await page.goto(live_server + job_url("mail.welcome", ids[0]))
    await wait_live(page)
    await mark(page)
    await expect(sidebar_link(page, "mail.welcome").locator(".state-failed")).to_have_text("2")

    switch["fail"] = False
    await page.get_by_role("button", name="Retry").click()
    await wait_for_state(mail, "mail.welcome", ids[0], "completed")
    await expect(sidebar_link(page, "mail.welcome").locator(".state-failed")).to_have_text("1")
    # The page's queue is still the highlighted one after the live swap.
    await expect(sidebar_link(page, "mail.welcome")).to_have_attribute("aria-current", "page")
    await assert_not_reloaded(page)

    await page.goto(live_server + "/workers")
    await wait_live(page)
    await mark(page)
    await expect(sidebar_link(page, "mail.digest")).to_have_count(0)
    await fail_jobs(mail, "mail.digest", 1)
    await expect(sidebar_link(page, "mail.digest").locator(".state-failed")).to_have_text("1")
    await assert_not_reloaded(page)
    await mail.stop_worker("mail.welcome")
    await mail.stop_worker("mail.digest")
    browser_log.assert_clean()
