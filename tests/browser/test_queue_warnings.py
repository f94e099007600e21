"""Warnings in Chromium (issue 14): a queue that loses its worker while jobs wait gets a
warning that stands out (amber, a bar, AA contrast in light and dark) on its page and on the
overview, live, without a reload. Real Redis, uvicorn, workers and Chromium (conftest)."""

from __future__ import annotations

from typing import Any

from bullmq import Job
from playwright.async_api import expect

from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog
from tests.browser.test_copy_and_json import CONTRAST
from tests.browser.test_dashboard_browser import assert_not_reloaded, mark, wait_live
from tests.dashboard.test_job_page import wait_for_state

QUEUE = "mail.welcome"
LOOK = """el => { const s = getComputedStyle(el);
  const p = getComputedStyle(document.querySelector('main'));
  return {bg: s.backgroundColor, page: p.backgroundColor, bar: parseFloat(s.borderLeftWidth)}; }"""


async def test_a_queue_without_worker_is_flagged_live(
        mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog) -> None:
    async def send(data: Any, job: Job) -> None:
        return None

    first = await mail.add_job(QUEUE, "send", {})
    mail.start_worker(QUEUE, {"send": send})
    await wait_for_state(mail, QUEUE, str(first.id), "completed")

    await page.goto(f"{live_server}/queues/{QUEUE}")
    await wait_live(page)
    await mark(page)
    warning = page.locator("#queue-header .warning.no-worker")
    await expect(warning).to_have_count(0)
    await mail.stop_worker(QUEUE)
    await mail.add_job(QUEUE, "send", {})  # an event: the header is rendered again
    await expect(warning).to_contain_text("No worker: 1 job waiting")
    await assert_not_reloaded(page)
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        look = await warning.evaluate(LOOK)
        assert look["bg"] not in (look["page"], "rgba(0, 0, 0, 0)"), (scheme, look)
        assert look["bar"] >= 4, (scheme, look)
        assert await warning.evaluate(CONTRAST) >= 4.5, scheme

    await page.goto(live_server + "/")
    await wait_live(page)
    badge = page.locator("#overview-table tr.warned .badge.warn")
    await expect(badge).to_have_text("no worker")
    await expect(page.locator("#overview-table .warning.summary")).to_contain_text(
        "1 queue will not move")
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        assert await badge.evaluate(CONTRAST) >= 4.5, scheme
    # Its jobs taken again: the warning goes, live.
    await mark(page)
    mail.start_worker(QUEUE, {"send": send})
    await mail.add_job(QUEUE, "send", {})
    await expect(badge).to_have_count(0)
    await assert_not_reloaded(page)
    await mail.stop_worker(QUEUE)
    browser_log.assert_clean()
