"""Issue 14, "wrong today": state pills that were grey, paused jobs that vanished.
Real Redis, real uvicorn, real Chromium (see conftest.py)."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog, screenshot
from tests.browser.test_dashboard_browser import fail_jobs
from tests.dashboard.test_job_page import job_url


async def css_var(page: Any, name: str) -> str:
    """A colour variable of the page's stylesheet, as the browser computes a colour."""
    return str(await page.evaluate(
        """name => { const probe = document.createElement('span');
                     probe.style.color = `var(${name})`; document.body.append(probe);
                     const c = getComputedStyle(probe).color; probe.remove(); return c; }""",
        name))


async def test_state_pills_wear_their_state_colour(mail: MailManager, live_server: str,
                                                   page: Any, browser_log: BrowserLog) -> None:
    """The flow tree and the job family show each job's state as a pill: a failed one is
    red and a completed one green, in light and dark (`.badge` once made them all grey)."""
    ids, _ = await fail_jobs(mail, "mail.welcome", 1)
    await mail.stop_worker("mail.welcome")
    flow = await mail.add_flow({"name": "parent", "queueName": "pills", "children": [
        {"name": "child", "queueName": "pills", "data": {}}]})
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        await page.goto(live_server + job_url("pills", flow["job_id"]) + "/flow")
        pill = page.locator(".flow-tree .badge.state-waiting-children").first
        await expect(pill).to_be_visible()
        colour = await pill.evaluate("el => getComputedStyle(el).color")
        assert colour == await css_var(page, "--waiting-children"), (scheme, colour)
        assert colour != await css_var(page, "--fg-soft"), (scheme, colour)
        await screenshot(page, f"state-pills-{scheme}")
    await page.emulate_media(color_scheme="light")
    await page.goto(live_server + job_url("mail.welcome", ids[0]))
    browser_log.assert_clean()


async def test_a_paused_queues_jobs_are_still_counted(mail: MailManager, live_server: str,
                                                      page: Any,
                                                      browser_log: BrowserLog) -> None:
    for n in range(3):
        await mail.add_job("held", "send-welcome", {"to": f"h{n}@example.com"})
    await mail.queues.pause("held")
    await mail.add_job("held", "send-welcome", {"to": "late@example.com"})
    await page.goto(live_server + "/")
    row = page.locator("table.queues tr", has=page.locator('a[href$="/queues/held"]'))
    await expect(row.locator("td.num").first).to_have_text("4")
    await expect(row.locator(".badge.paused")).to_have_text("paused")
    sidebar = page.locator('#sidebar a[href$="/queues/held"]')
    await expect(sidebar).to_contain_text("4")
    browser_log.assert_clean()
