"""Polish found in real Chromium: what stays live, what keeps the operator's work, what looks
right. Real Redis, real uvicorn, real workers in the test's loop (see conftest.py)."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog, screenshot
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


# --- looks ---------------------------------------------------------------------------------


TRANSPARENT = "rgba(0, 0, 0, 0)"


async def test_timeline_labels_sit_on_the_page_and_no_empty_progress_bar(
    mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog
) -> None:
    """The timeline's label cells take no white background of their own (light and dark),
    and a failed job that never reported progress shows no empty bar (job page, queue table);
    a job that did report progress keeps its bar."""
    ids, _ = await fail_jobs(mail, "mail.welcome", 1)
    await mail.stop_worker("mail.welcome")
    moving = await mail.add_job("mail.welcome", "send-welcome", {"to": "p@example.com"})
    await moving.updateProgress(40)

    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        await page.goto(live_server + job_url("mail.welcome", ids[0]))
        labels = page.locator("#job-summary table.timeline th")
        await expect(labels.first).to_have_text("Added")
        backgrounds = await labels.evaluate_all(
            "cells => cells.map(c => getComputedStyle(c).backgroundColor)")
        assert set(backgrounds) == {TRANSPARENT}, (scheme, backgrounds)
        await expect(page.locator("#job-summary progress")).to_have_count(0)
        await screenshot(page, f"job-failed-{scheme}")

    await page.emulate_media(color_scheme="light")
    await page.goto(f"{live_server}/queues/mail.welcome?state=failed")
    await expect(page.locator("#queue-rows tr[data-key]")).to_have_count(1)  # + its stack row
    await expect(page.locator("#queue-rows progress")).to_have_count(0)
    await page.goto(f"{live_server}/queues/mail.welcome?state=waiting")
    await expect(page.locator("#queue-rows progress")).to_have_count(1)
    await page.goto(live_server + job_url("mail.welcome", str(moving.id)))
    await expect(page.locator("#job-summary progress")).to_have_attribute("value", "40")
    browser_log.assert_clean()


# --- the queue table keeps the operator's selection ----------------------------------------


async def test_ticked_rows_stay_ticked_across_live_row_updates(
    mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog
) -> None:
    """Tick two rows; new jobs arrive and the rows region is swapped live: the ticks stay
    (on the same jobs), new rows come unticked, and "Remove selected" removes those two."""
    jobs = [await mail.add_job("mail.welcome", "send-welcome", {"n": n}) for n in range(3)]
    await page.goto(f"{live_server}/queues/mail.welcome?state=waiting")
    await wait_live(page)
    await mark(page)
    rows = page.locator("#queue-rows tr")
    await expect(rows).to_have_count(3)
    ticked = [str(jobs[0].id), str(jobs[2].id)]
    for job_id in ticked:
        await page.get_by_label(f"Select job {job_id}", exact=True).check()

    for n in range(3, 5):
        await mail.add_job("mail.welcome", "send-welcome", {"n": n})
    await expect(rows).to_have_count(5)  # swapped live
    await assert_not_reloaded(page)
    checked = await page.locator("#queue-rows input[name=job_id]:checked").evaluate_all(
        "boxes => boxes.map(b => b.value)")
    assert sorted(checked) == sorted(ticked)
    assert await page.locator("#--htmx-preserve-pantry--").count() == 0

    await page.get_by_role("button", name="Remove selected").click()
    await expect(page.locator("#selection-result")).to_contain_text("2")
    await expect(rows).to_have_count(3)
    left = {str(j["id"]) for j in (await mail.queues.get_job_summaries(
        "mail.welcome", "waiting", 1, 25, "desc"))["jobs"]}
    assert not left & set(ticked) and len(left) == 3
    browser_log.assert_clean()
