"""Issue 14, "stale live state", in real Chromium: live pages never show an older picture.

The live layer kept a region's render until the next queue event and replayed it to every
page opened meanwhile: on a quiet queue a new page was overwritten by a render from before
it was opened, and relative times ("1 min 23 s ago") froze until something happened.

- A page opened later never receives a region rendered before it was opened: every
  relative time it is sent is at least as old as the one its own load showed.
- On a quiet queue (no event at all), relative times advance and stay true: "29 s ago"
  moves on by itself, and "1 min 58 s ago" becomes "2 min 0 s ago" when the second minute is up.

The jobs' creation times are set in Redis to a known past, so no test waits minutes.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
from playwright.async_api import expect

from mailqueue.dashboard.formatting import timestamp
from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog
from tests.browser.test_dashboard_browser import assert_not_reloaded, mark, wait_live

QUEUE = "quiet"
UNITS = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}
# Test-side instrumentation (through DevTools, not the page's CSP): the HTML of every live
# message for the rows, as it is about to be swapped in. (Before, not after: the swap
# replaces the element the after-event fires on, so that one never reaches the document.)
RECORD_SWAPS = """
window.__rowsSeen = [];
document.addEventListener('htmx:sseBeforeMessage', (e) => {
  if (e.detail && e.detail.type === 'queue-rows') window.__rowsSeen.push(e.detail.data);
});
"""


def age_of(text: str) -> float:
    """`12 s ago`, `12.3 s ago`, `1 min 23 s ago`, `2 h 5 min ago` as seconds."""
    assert text.endswith(" ago"), text
    return sum(float(n) * UNITS[unit]
               for n, unit in re.findall(r"([\d.]+) (ms|s|min|h|d)\b", text))


async def job_created_ago(mail: MailManager, seconds: float) -> tuple[str, int]:
    """A waiting job whose creation time is `seconds` ago; its id and that time (ms).

    The time is set in Redis after the add: that write is no queue event, as nothing happens
    on a quiet queue."""
    job = await mail.add_job(QUEUE, "send", {"to": "quiet@example.com"})
    created_ms = int((time.time() - seconds) * 1000)
    await mail.client.hset(mail.queues.keys(QUEUE).job(str(job.id)), "timestamp", created_ms)
    return str(job.id), created_ms


def created_cell(created_ms: int) -> str:
    """The "Created" cell of the job created at `created_ms` (its title is that time)."""
    return f'#queue-rows td[title="{timestamp(created_ms)}"]'


def created_label(html: str, created_ms: int) -> str:
    """The text of that cell in a page or a rows fragment."""
    return html.split(f'title="{timestamp(created_ms)}">', 1)[1].split("<", 1)[0].strip()


async def test_a_new_page_never_receives_a_render_older_than_itself(
        mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog) -> None:
    _, created_ms = await job_created_ago(mail, 20)
    url = f"{live_server}/queues/{QUEUE}?state=waiting"
    cell = created_cell(created_ms)

    # The first page: its stream renders the rows (the render the hub keeps).
    await page.goto(url)
    await wait_live(page)
    first_age = age_of(await page.locator(cell).inner_text())

    # Until a fresh load of the page says the job is 3 s older than the first page showed
    # (a condition on what the server renders, not a fixed pause).
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            if age_of(created_label((await client.get(url)).text, created_ms)) \
                    >= first_age + 3:
                break

    second = await page.context.new_page()
    await second.add_init_script(RECORD_SWAPS)
    # What the page itself was rendered with (from its HTML: the live swap may already have
    # replaced the cell by the time the test could read it).
    response = await second.goto(url)
    assert response is not None
    loaded = age_of(created_label(await response.text(), created_ms))
    await wait_live(second)
    # Its stream's first render of the rows has arrived and been swapped in.
    await second.wait_for_function("() => window.__rowsSeen.length > 0")
    seen = await second.evaluate("window.__rowsSeen")
    labels = [created_label(html, created_ms) for html in seen]
    assert min(age_of(label) for label in labels) >= loaded, (
        f"the page loaded showing {loaded:g} s, then its live stream sent {labels}: a render "
        f"from before the page was opened (the first page saw {first_age:g} s)")
    await second.close()
    browser_log.assert_clean()


async def test_relative_times_advance_and_stay_true_on_a_quiet_page(
        mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog) -> None:
    _, recent_ms = await job_created_ago(mail, 30)
    # Two seconds short of two minutes: "1 min 58 s ago" must become "2 min ... ago" by itself.
    _, older_ms = await job_created_ago(mail, 118)
    await page.goto(f"{live_server}/queues/{QUEUE}?state=waiting")
    await wait_live(page)
    await mark(page)
    recent, older = page.locator(created_cell(recent_ms)), page.locator(created_cell(older_ms))
    shown = await recent.inner_text()

    # No event happens: the seconds still move on, within a few seconds...
    await expect(recent).not_to_have_text(shown, timeout=5000)
    # ...and say the truth (to the second the text is in, give or take one).
    for _ in range(2):
        shown = await recent.inner_text()
        true_age = time.time() - recent_ms / 1000
        assert abs(age_of(shown) - true_age) <= 2, (shown, round(true_age, 1))
        await expect(recent).not_to_have_text(shown, timeout=5000)
    # The minute rolls over too.
    await expect(older).to_have_text(re.compile(r"^2 min \d+ s ago$"), timeout=8000)
    await assert_not_reloaded(page)
    browser_log.assert_clean()
