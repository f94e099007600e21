"""Live updates keep the reader's place (issue 14, "wrong today"): when the job list is
swapped live, keyboard focus and the text selection stay where they were, the rows in view
do not move, and new rows that would appear above them are announced ("3 new — show")
instead of pushed in; at the top of the list new rows come in as before. On the job page an
opened stack trace and a folded JSON value stay so across the summary's swaps.
Real Redis, uvicorn, workers and Chromium (conftest)."""

from __future__ import annotations

from typing import Any

from bullmq import Job
from playwright.async_api import expect

from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog
from tests.browser.test_dashboard_browser import assert_not_reloaded, mark, wait_live
from tests.browser.test_failed_list import deliver_to_smtp
from tests.dashboard.test_job_page import job_url, wait_for_state

QUEUE = "mail.welcome"
ROWS = "#queue-rows tr[data-key]"
# Count the swaps of a region, to know one happened.
COUNT_SWAPS = """document.addEventListener('htmx:afterSwap', e => {
  window.__swaps = window.__swaps || {};
  window.__swaps[e.target.id] = (window.__swaps[e.target.id] || 0) + 1; });"""


def row(page: Any, job_id: str) -> Any:
    return page.locator(f'#queue-rows tr[data-key="{job_id}"]')


async def swaps(page: Any, region: str) -> int:
    return int(await page.evaluate(f"(window.__swaps || {{}})['{region}'] || 0"))


async def wait_swapped(page: Any, region: str, after: int) -> None:
    await page.wait_for_function(
        f"() => ((window.__swaps || {{}})['{region}'] || 0) > {after}")


async def test_focus_selection_and_place_survive_new_rows(
        mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog) -> None:
    jobs = [await mail.add_job(QUEUE, "send-welcome", {"n": n}) for n in range(60)]
    ids = [str(j.id) for j in jobs]  # newest last; the page lists newest first
    await page.add_init_script(COUNT_SWAPS)
    await page.goto(f"{live_server}/queues/{QUEUE}?state=waiting&per_page=100")
    await wait_live(page)
    await mark(page)
    await expect(page.locator(ROWS)).to_have_count(60)

    # Read down the list: job 40 (the 21st row) at the top of the screen.
    reading = row(page, ids[39])
    await reading.evaluate("el => window.scrollTo(0, el.getBoundingClientRect().top "
                           "+ window.scrollY - 120)")
    top_before = (await reading.bounding_box())["y"]
    # Keyboard focus on job 35's link, a selection in job 33's name.
    link = row(page, ids[34]).locator("td.jobid a")
    await link.focus()
    await row(page, ids[32]).locator("td.jobname").evaluate(
        "el => window.getSelection().selectAllChildren(el)")
    selected = await page.evaluate("window.getSelection().toString()")
    assert selected == "send-welcome"

    for n in range(3):
        await mail.add_job(QUEUE, "send-welcome", {"new": n})
    await expect(page.locator(ROWS)).to_have_count(63)  # swapped live
    new_rows = page.locator(f"{ROWS}[hidden]")
    await expect(new_rows).to_have_count(3)
    button = page.get_by_role("button", name="3 new — show")
    await expect(button).to_be_visible()
    top_after = (await reading.bounding_box())["y"]
    assert abs(top_after - top_before) <= 1, (top_before, top_after)
    await expect(link).to_be_focused()
    assert await page.evaluate("window.getSelection().toString()") == selected
    in_row = await page.evaluate(
        "() => window.getSelection().anchorNode.parentElement.closest('tr').dataset.key")
    assert in_row == ids[32]

    # More arrive: still held, counted together; the place still kept.
    for n in range(2):
        await mail.add_job(QUEUE, "send-welcome", {"new": 3 + n})
    await expect(page.get_by_role("button", name="5 new — show")).to_be_visible()
    await expect(new_rows).to_have_count(5)
    assert abs((await reading.bounding_box())["y"] - top_before) <= 1
    await expect(link).to_be_focused()

    # Show them: the list's top in view, the newest row first, focus on it.
    await page.get_by_role("button", name="5 new — show").click()
    await expect(new_rows).to_have_count(0)
    await expect(page.locator("#queue-rows-new")).to_be_hidden()
    first = page.locator(ROWS).first
    await expect(first).to_be_in_viewport()
    await expect(first.locator("td.jobid a")).to_be_focused()

    # At the top of the list, new rows come in at once, unannounced.
    await page.evaluate("window.scrollTo(0, 0)")
    before = await swaps(page, "queue-rows")
    await mail.add_job(QUEUE, "send-welcome", {"top": 1})
    await wait_swapped(page, "queue-rows", before)
    await expect(page.locator(ROWS)).to_have_count(66)
    await expect(new_rows).to_have_count(0)
    await expect(page.locator("#queue-rows-new")).to_be_hidden()
    await assert_not_reloaded(page)
    browser_log.assert_clean()


async def test_the_job_page_keeps_open_traces_and_folds_across_swaps(
        mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog) -> None:
    switch = {"fail": 2}

    async def send(data: Any, job: Job) -> dict[str, Any]:
        if switch["fail"]:
            switch["fail"] -= 1
            deliver_to_smtp(data)
        return {"sent": data["to"], "parts": {"html": 1, "text": 1}}

    job = await mail.add_job(QUEUE, "send-welcome", {"to": "ada@example.com"}, attempts=3,
                             backoff={"type": "fixed", "delay": 10})
    mail.start_worker(QUEUE, {"send-welcome": send})
    await wait_for_state(mail, QUEUE, str(job.id), "completed")
    await page.add_init_script(COUNT_SWAPS)
    await page.goto(live_server + job_url(QUEUE, str(job.id)))
    await wait_live(page)
    await mark(page)
    attempt1 = page.locator("details.stacktrace").first
    await expect(attempt1).not_to_have_attribute("open", "")
    await attempt1.locator("summary").click()
    await expect(attempt1).to_have_attribute("open", "")
    parts = page.locator("#job-return-json details", has=page.locator(
        ":scope > summary .j-k", has_text='"parts"'))
    await parts.locator(":scope > summary").click()
    assert not await parts.evaluate("el => el.open")
    # The summary is drawn again (its relative times tick, and another job's events come).
    before = await swaps(page, "job-summary")
    await mail.add_job(QUEUE, "send-welcome", {"to": "other@example.com"})
    await wait_swapped(page, "job-summary", before + 1)
    await expect(attempt1).to_have_attribute("open", "")
    assert not await parts.evaluate("el => el.open")
    await assert_not_reloaded(page)
    await mail.stop_worker(QUEUE)
    browser_log.assert_clean()


COUNT_MESSAGES = """document.addEventListener('htmx:sseBeforeMessage', e => {
  window.__messages = window.__messages || {};
  window.__messages[e.target.id] = (window.__messages[e.target.id] || 0) + 1; });"""


async def test_a_swap_waits_while_a_selection_is_being_drawn(
        mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog) -> None:
    for n in range(3):
        await mail.add_job(QUEUE, "send-welcome", {"n": n})
    await page.add_init_script(COUNT_MESSAGES)
    await page.goto(f"{live_server}/queues/{QUEUE}?state=waiting")
    await wait_live(page)
    await mark(page)
    await expect(page.locator(ROWS)).to_have_count(3)
    name = page.locator(f"{ROWS} td.jobname").first
    box = await name.bounding_box()
    await page.mouse.move(box["x"] + 2, box["y"] + box["height"] / 2)
    await page.mouse.down()  # drawing a selection over the names
    await page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2, steps=4)
    before = int(await page.evaluate("(window.__messages || {})['queue-rows'] || 0"))
    await mail.add_job(QUEUE, "send-welcome", {"n": 3})
    # The new rows came (the message is in) but are not swapped in under the mouse...
    await page.wait_for_function(
        f"() => ((window.__messages || {{}})['queue-rows'] || 0) > {before}")
    await expect(page.locator(ROWS)).to_have_count(3)
    # ...until the button comes up; the selection drawn is still there.
    await page.mouse.up()
    selected = await page.evaluate("window.getSelection().toString()")
    assert selected.strip() == "send-welcome", selected
    await expect(page.locator(ROWS)).to_have_count(4)
    assert (await page.evaluate("window.getSelection().toString()")) == selected
    await assert_not_reloaded(page)
    browser_log.assert_clean()


async def test_scrolled_boxes_stay_scrolled_across_swaps(
        mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog) -> None:
    """The job page's regions are drawn again every second while its relative times tick:
    the log lines (a box of their own) stay scrolled where the reader put them."""
    async def chatty(data: Any, job: Job) -> None:
        for n in range(80):
            await job.log(f"line {n}: connecting to smtp.example.com")

    job = await mail.add_job(QUEUE, "send-welcome", {"to": "ada@example.com"})
    mail.start_worker(QUEUE, {"send-welcome": chatty})
    await wait_for_state(mail, QUEUE, str(job.id), "completed")
    await mail.stop_worker(QUEUE)
    await page.add_init_script(COUNT_SWAPS)
    await page.goto(live_server + job_url(QUEUE, str(job.id)))
    await wait_live(page)
    logs = page.locator("#job-logs .log-lines")
    await expect(logs.locator("li")).to_have_count(80)
    await logs.evaluate("el => { el.scrollTop = 400; }")
    top = await logs.evaluate("el => el.scrollTop")
    assert top > 0
    before = await swaps(page, "job-logs")
    await wait_swapped(page, "job-logs", before + 1)  # two swaps: the ticking times
    assert await logs.evaluate("el => el.scrollTop") == top
    browser_log.assert_clean()
