"""The "go to job id" box in Chromium (issue 14): from any page, Enter goes to the job in
whatever queue holds it; an unknown id is one line; the top bar still fits a 360 px phone.
Real Redis, uvicorn and Chromium (conftest)."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog
from tests.browser.test_phone_layout import new_page


async def test_go_to_a_job_from_any_page(mail: MailManager, live_server: str, page: Any,
                                         browser: Any, browser_log: BrowserLog) -> None:
    await mail.add_job("mail.welcome", "send-welcome", {}, jobId="welcome-ada")
    await mail.add_job("mail.digest", "send-digest", {}, jobId="digest-7")

    await page.goto(live_server + "/events")
    box = page.get_by_role("searchbox", name="Go to job id")
    await box.fill("digest-7")
    await box.press("Enter")
    await expect(page).to_have_url(f"{live_server}/queues/mail.digest/jobs/digest-7")
    await expect(page.locator("h1.job-title")).to_contain_text("send-digest")

    await box.fill("no-such-job")
    await page.get_by_role("button", name="Go", exact=True).click()
    await expect(page.locator("main p.result.error")).to_have_text(
        "No job “no-such-job” in any of the 2 queues.")
    await expect(box).to_have_value("no-such-job")
    browser_log.assert_clean(expected_statuses=(404,))

    for scheme in ("light", "dark"):
        phone = await new_page(browser, browser_log, 360, 740, scheme)
        try:
            await phone.goto(live_server + "/queues/mail.welcome")
            small = phone.get_by_role("searchbox", name="Go to job id")
            await expect(small).to_be_visible()
            width = await phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, f"the top bar widens the page to {width} px ({scheme})"
            box_right = await small.evaluate("el => el.getBoundingClientRect().right")
            assert box_right <= 360
            await small.fill("welcome-ada")
            await small.press("Enter")
            await expect(phone).to_have_url(
                f"{live_server}/queues/mail.welcome/jobs/welcome-ada")
        finally:
            await phone.context.close()
    assert not browser_log.csp_problems() and not browser_log.page_errors
