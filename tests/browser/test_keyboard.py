"""The keyboard (issue 14): a skip link first on every page, a visible focus ring, `/` or
Ctrl-K to the queue filter (the overview's own, else the sidebar's, which filters as one
types and stays filtered across a live swap of the list). Real Redis, uvicorn, Chromium."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog
from tests.browser.test_dashboard_browser import wait_live
from tests.browser.test_phone_layout import new_page

RING = """() => { const s = getComputedStyle(document.activeElement);
  return {tag: document.activeElement.tagName, id: document.activeElement.id,
          text: (document.activeElement.textContent || '').trim().slice(0, 40),
          style: s.outlineStyle, width: parseFloat(s.outlineWidth),
          inMain: !!document.activeElement.closest('main')}; }"""


def sidebar_link(page: Any, queue: str) -> Any:
    return page.locator(f'#sidebar a[href$="/queues/{queue}"]')


async def test_skip_link_focus_ring_and_the_queue_filter_shortcut(
        mail: MailManager, live_server: str, page: Any, browser: Any,
        browser_log: BrowserLog) -> None:
    for queue in ("mail.welcome", "mail.digest", "billing.invoices"):
        await mail.add_job(queue, "send", {})
    await page.goto(f"{live_server}/queues/mail.welcome")
    await wait_live(page)

    # The first Tab reaches the skip link, shown on screen with a ring.
    await page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    await expect(skip).to_be_focused()
    box = await skip.bounding_box()
    assert box and box["y"] >= 0 and box["x"] >= 0, box
    ring = await page.evaluate(RING)
    assert ring["style"] != "none" and ring["width"] >= 2, ring
    # Enter goes to the content; the next Tab stops inside it, not in the top bar.
    await page.keyboard.press("Enter")
    await expect(page.locator("main")).to_be_focused()
    await page.keyboard.press("Tab")
    ring = await page.evaluate(RING)
    assert ring["inMain"], ring
    assert ring["style"] != "none" and ring["width"] >= 2, ring  # the ring on what has focus

    # `/` goes to the sidebar's filter (this page has none of its own); typing filters.
    await page.locator("main h1").click()  # focus off any field
    await page.keyboard.press("/")
    flt = page.get_by_role("searchbox", name="Filter queues", exact=True)
    await expect(flt).to_be_focused()
    await page.keyboard.type("mail.")
    await expect(sidebar_link(page, "billing.invoices")).to_be_hidden()
    await expect(sidebar_link(page, "mail.digest")).to_be_visible()
    # A live swap of the list (a new queue): still filtered, the new one judged too.
    await mail.add_job("billing.refunds", "send", {})
    await mail.add_job("mail.receipts", "send", {})
    await expect(sidebar_link(page, "mail.receipts")).to_be_visible()
    await expect(sidebar_link(page, "billing.refunds")).to_have_count(1)
    await expect(sidebar_link(page, "billing.refunds")).to_be_hidden()
    await expect(sidebar_link(page, "billing.invoices")).to_be_hidden()
    await expect(flt).to_have_value("mail.")
    # Escape clears it.
    await page.keyboard.press("Escape")
    await expect(sidebar_link(page, "billing.invoices")).to_be_visible()

    # The overview: Ctrl-K goes to its own filter; `/` typed in a field stays a slash.
    await page.goto(live_server + "/")
    await wait_live(page)
    await page.keyboard.press("Control+k")
    main_filter = page.get_by_role("searchbox", name="Filter queues by name")
    await expect(main_filter).to_be_focused()
    await page.keyboard.type("a/b")
    await expect(main_filter).to_have_value("a/b")
    browser_log.assert_clean()

    # A phone: the sidebar is a closed menu; `/` opens it at the filter.
    phone = await new_page(browser, browser_log, 390, 844, "dark")
    try:
        await phone.goto(f"{live_server}/queues/mail.welcome")
        menu = phone.locator("details.sidebar-menu")
        assert not await menu.evaluate("el => el.open")
        await phone.keyboard.press("/")
        assert await menu.evaluate("el => el.open")
        await expect(phone.get_by_role("searchbox", name="Filter queues", exact=True)
                     ).to_be_focused()
    finally:
        await phone.context.close()
    assert not browser_log.csp_problems() and not browser_log.page_errors
