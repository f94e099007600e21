"""The dashboard in real Chromium: real Redis, real uvicorn, real workers in the test's loop.

What only a browser can show: htmx swaps an action's answer in place, the SSE extension swaps
live regions without a navigation (a `window.__marker` set before survives), confirmation
dialogs, the CSP holding with no violation on any page, untrusted values never executing.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiosmtplib
from bullmq import Job
from playwright.async_api import expect

from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog, screenshot
from tests.dashboard.test_job_page import job_url, wait_for_state

XSS_IMG = '<img src=x onerror="window.__xss=1">'
XSS_SCRIPT = "<script>window.__xss=1</script>"


# --- helpers ---------------------------------------------------------------------------------


def exactly(page: Any, selector: str, text: str) -> Any:
    """Elements matching `selector` whose whole text is `text` (any characters in it)."""
    return page.locator(selector).filter(has_text=re.compile(f"^{re.escape(text)}$"))


def overview_row(page: Any, queue: str) -> Any:
    return page.locator("#overview-table tr",
                        has=exactly(page, "td.qname a", queue))


def overview_count(page: Any, queue: str, state: str) -> Any:
    """The count link of one state in a queue's overview row (its title is "N state")."""
    return overview_row(page, queue).locator(f'td.num a[title$=" {state}"]')


def tab_count(page: Any, state: str) -> Any:
    return page.locator(f'#queue-tabs a[href$="state={state}"] .count')


def job_row(page: Any, job_id: str) -> Any:
    return page.locator("#queue-rows tr", has=exactly(page, "a", job_id))


async def mark(page: Any) -> None:
    """Set a marker that a navigation (a full reload) would wipe."""
    await page.evaluate("window.__marker = 'still here'")


async def assert_not_reloaded(page: Any) -> None:
    assert await page.evaluate("window.__marker") == "still here", "the page was reloaded"


async def wait_live(page: Any) -> None:
    """Wait until the page's SSE connection is open, so no live update can be missed."""
    await page.wait_for_function(
        "() => [...document.querySelectorAll('[sse-connect]')].every("
        "el => el['htmx-internal-data'] && el['htmx-internal-data'].sseEventSource"
        " && el['htmx-internal-data'].sseEventSource.readyState === 1)"
    )


async def fail_jobs(mail: MailManager, queue: str, count: int) -> tuple[list[str], dict[str, bool]]:
    """`count` jobs failed by a handler that raises; the worker keeps running, and succeeds
    once the returned switch's "fail" is set to False."""
    switch = {"fail": True}

    async def send(data: Any, job: Job) -> dict[str, Any]:
        if switch["fail"]:
            raise RuntimeError(f"SMTP 550 mailbox unavailable for {data['to']}")
        return {"sent": data["to"]}

    jobs = [await mail.add_job(queue, "send-welcome", {"to": f"user{n}@example.com"},
                               attempts=1) for n in range(count)]
    mail.start_worker(queue, {"send-welcome": send})
    for job in jobs:
        await wait_for_state(mail, queue, str(job.id), "failed")
    return [str(job.id) for job in jobs], switch


# --- 1. overview -----------------------------------------------------------------------------


async def test_overview_lists_queues_with_counts(mail: MailManager, live_server: str, page: Any,
                                                 browser_log: BrowserLog) -> None:
    for n in range(3):
        await mail.add_job("mail.welcome", "send-welcome", {"to": f"w{n}@example.com"})
    await mail.add_job("mail.digest", "send-digest", {"to": "d@example.com"}, delay=60_000)
    await mail.add_job("mail.digest", "send-digest", {"to": "p@example.com"}, priority=5)

    response = await page.goto(live_server + "/")
    assert response is not None and response.status == 200
    await expect(page).to_have_title("Queues · mailqueue")
    await expect(overview_row(page, "mail.welcome")).to_have_count(1)
    await expect(overview_row(page, "mail.digest")).to_have_count(1)
    await expect(overview_count(page, "mail.welcome", "waiting")).to_have_text("3")
    await expect(overview_count(page, "mail.welcome", "completed")).to_have_text("0")
    await expect(overview_count(page, "mail.digest", "delayed")).to_have_text("1")
    await expect(overview_count(page, "mail.digest", "prioritized")).to_have_text("1")
    await expect(overview_count(page, "mail.digest", "waiting")).to_have_text("0")
    # The sidebar lists them too, and a row leads to its queue page.
    await expect(page.locator("#sidebar a", has_text="mail.welcome")).to_have_count(1)
    await overview_row(page, "mail.welcome").locator("td.qname a").click()
    await expect(page.locator("#queue-header h1")).to_have_text("mail.welcome")
    await expect(tab_count(page, "waiting")).to_have_text("3")

    await page.goto(live_server + "/?group=.")
    await expect(page.locator("#overview-table tr.group-head th")).to_contain_text("mail")
    await page.goto(live_server + "/")
    await screenshot(page, "overview")
    browser_log.assert_clean()


# --- 2. retry from the failed tab ------------------------------------------------------------


async def test_retry_a_failed_job_from_the_failed_tab(mail: MailManager, live_server: str,
                                                      page: Any, browser_log: BrowserLog) -> None:
    ids, switch = await fail_jobs(mail, "mail.welcome", 3)
    await page.goto(f"{live_server}/queues/mail.welcome?state=failed")
    await wait_live(page)
    await expect(tab_count(page, "failed")).to_have_text("3")
    for job_id in ids:
        await expect(job_row(page, job_id)).to_contain_text("SMTP 550 mailbox unavailable")
    await screenshot(page, "queue-failed-tab")
    switch["fail"] = False  # the next attempt succeeds
    await mark(page)

    target = ids[0]
    await job_row(page, target).locator('input[name="job_id"]').check()
    await page.get_by_role("button", name="Retry selected").click()
    await expect(page.locator("#selection-result")).to_contain_text("1")
    assert any("Retry the selected jobs?" in d for d in browser_log.dialogs), browser_log.dialogs

    # The row leaves the failed tab by a live swap; the others stay.
    await expect(job_row(page, target)).to_have_count(0)
    await expect(tab_count(page, "failed")).to_have_text("2")
    await expect(job_row(page, ids[1])).to_have_count(1)
    await expect(tab_count(page, "completed")).to_have_text("1")
    await assert_not_reloaded(page)
    job = await mail.queues.get_job("mail.welcome", target)
    assert job["state"] == "completed" and job["return_value"] == {"sent": "user0@example.com"}

    # The job page's own Retry button: the answer in place, the state badge updated live.
    other = ids[1]
    await page.goto(live_server + job_url("mail.welcome", other))
    await wait_live(page)
    await expect(page.locator("#job-summary .job-state")).to_have_text("failed")
    await screenshot(page, "job-page-failed")
    await mark(page)
    await page.locator("#job-actions").get_by_role("button", name="Retry").click()
    await expect(page.locator("#job-action-result")).not_to_be_empty()
    await expect(page.locator("#job-summary .job-state")).to_have_text("completed")
    await assert_not_reloaded(page)
    await screenshot(page, "job-page")
    await mail.stop_worker("mail.welcome")
    browser_log.assert_clean()


# --- 3. live counts while a worker runs ------------------------------------------------------


async def test_counts_change_live_while_a_worker_runs(mail: MailManager, live_server: str,
                                                      page: Any, browser_log: BrowserLog) -> None:
    queue = "live-counts"
    for n in range(5):
        await mail.add_job(queue, "send", {"n": n})
    await page.goto(live_server + "/")
    await wait_live(page)
    await expect(overview_count(page, queue, "waiting")).to_have_text("5")
    await expect(overview_count(page, queue, "completed")).to_have_text("0")
    await mark(page)

    async def send(data: Any, job: Job) -> None:
        await asyncio.sleep(0.05)

    mail.start_worker(queue, {"send": send}, concurrency=1)
    await expect(overview_count(page, queue, "completed")).to_have_text("5")
    await expect(overview_count(page, queue, "waiting")).to_have_text("0")
    await assert_not_reloaded(page)

    # The queue page: new jobs appear and complete without a reload.
    await page.goto(f"{live_server}/queues/{queue}?state=completed")
    await wait_live(page)
    await expect(tab_count(page, "completed")).to_have_text("5")
    await mark(page)
    added = [await mail.add_job(queue, "send", {"n": n}) for n in range(5, 8)]
    await expect(tab_count(page, "completed")).to_have_text("8")
    for job in added:
        await expect(job_row(page, str(job.id))).to_have_count(1)
    await assert_not_reloaded(page)
    await mail.stop_worker(queue)
    browser_log.assert_clean()


# --- 4. a flow ---------------------------------------------------------------------------------


def flow_node(page: Any, name: str) -> Any:
    return page.locator("li.flow-node", has=exactly(page, ":scope > a", name))


async def test_flow_page_shows_the_tree_with_states(mail: MailManager, live_server: str,
                                                    page: Any, browser_log: BrowserLog) -> None:
    added = await mail.add_flow({
        "name": "digest-batch", "queueName": "flow-parent", "data": {},
        "children": [
            {"name": "render-digest", "queueName": "flow-child", "data": {"n": 1}},
            {"name": "render-summary", "queueName": "flow-child", "data": {"n": 2}},
        ],
    })
    root = added["tree"]
    await page.goto(live_server + job_url("flow-parent", root["id"], "/flow"))
    await wait_live(page)
    badge = ":scope > span.badge"
    await expect(flow_node(page, "digest-batch").locator(badge)).to_have_text("waiting-children")
    await expect(flow_node(page, "render-digest").locator(badge)).to_have_text("waiting")
    await expect(flow_node(page, "render-summary").locator(badge)).to_have_text("waiting")
    await expect(flow_node(page, "digest-batch")).to_contain_text("2 pending")
    await expect(flow_node(page, "render-digest")).to_contain_text("flow-child")
    await mark(page)

    async def render(data: Any, job: Job) -> dict[str, int]:
        return {"rendered": data["n"]}

    mail.start_worker("flow-child", {"render-digest": render, "render-summary": render})
    # The states change live: children done, the parent now waits for a worker.
    await expect(flow_node(page, "render-digest").locator(badge)).to_have_text("completed")
    await expect(flow_node(page, "render-summary").locator(badge)).to_have_text("completed")
    await expect(flow_node(page, "digest-batch").locator(badge)).to_have_text("waiting")
    await assert_not_reloaded(page)
    await screenshot(page, "flow-page")

    # A node links to its job page.
    await flow_node(page, "render-digest").locator(":scope > a").click()
    await expect(page.locator("h1.job-title")).to_contain_text("render-digest")
    await mail.stop_worker("flow-child")
    browser_log.assert_clean()


# --- 5. obliterate ---------------------------------------------------------------------------


async def test_obliterate_after_typing_the_queue_name(mail: MailManager, live_server: str,
                                                      page: Any, browser_log: BrowserLog) -> None:
    for n in range(3):
        await mail.add_job("doomed", "send", {"n": n})
    await mail.add_job("kept", "send", {})
    await page.goto(f"{live_server}/queues/doomed")
    await page.locator("summary", has_text="Obliterate").click()
    form = page.locator("form", has=page.locator('input[name="confirm_name"]'))

    # A wrong name is refused in place.
    await form.locator('input[name="confirm_name"]').fill("kept")
    await form.get_by_role("button", name="Obliterate").click()
    await expect(page.locator("#obliterate-result")).to_contain_text("Not obliterated")
    assert "doomed" in await mail.queues.list_queues(refresh=True)

    await form.locator('input[name="confirm_name"]').fill("doomed")
    await form.get_by_role("button", name="Obliterate").click()
    assert any("Obliterate doomed" in d for d in browser_log.dialogs), browser_log.dialogs
    # htmx follows HX-Location to the overview, where the queue is gone.
    await expect(page).to_have_url(f"{live_server}/")
    await expect(overview_row(page, "kept")).to_have_count(1)
    await expect(overview_row(page, "doomed")).to_have_count(0)
    await expect(page.locator("#sidebar a", has_text="doomed")).to_have_count(0)
    assert "doomed" not in await mail.queues.list_queues(refresh=True)
    browser_log.assert_clean(expected_statuses=(422,))  # the wrong name, refused


# --- 6. CSP and untrusted values -------------------------------------------------------------


async def test_untrusted_values_never_execute(mail: MailManager, live_server: str, page: Any,
                                              browser_log: BrowserLog) -> None:
    # A worker cannot serve a queue whose name has spaces (BullMQ's Redis client name), so the
    # evil queue name holds waiting jobs and a flow; the failed job is in a plain queue.
    queue = f"evil{XSS_IMG}"
    payload = {"to": "ada@example.com", "html": XSS_SCRIPT, "img": XSS_IMG}

    async def boom(data: Any, job: Job) -> None:
        await job.log(XSS_IMG + XSS_SCRIPT)
        await job.updateProgress({"note": XSS_IMG})
        raise RuntimeError(XSS_SCRIPT + XSS_IMG)

    job = await mail.add_job("plain", XSS_IMG, payload, attempts=1)
    mail.start_worker("plain", {XSS_IMG: boom})
    await wait_for_state(mail, "plain", str(job.id), "failed")
    await mail.stop_worker("plain")
    await mail.add_job(queue, XSS_SCRIPT, payload)
    flow = await mail.add_flow({"name": XSS_SCRIPT, "queueName": queue, "data": payload,
                                "children": [{"name": XSS_IMG, "queueName": queue,
                                              "data": payload}]})

    await page.goto(live_server + "/")
    await wait_live(page)
    await expect(overview_row(page, queue)).to_have_count(1)
    await overview_row(page, queue).locator("td.qname a").click()
    await expect(page.locator("#queue-header h1")).to_have_text(queue)
    await expect(page.locator("#queue-rows")).to_contain_text(XSS_SCRIPT)
    await page.goto(f"{live_server}/queues/plain?state=failed")
    await expect(job_row(page, str(job.id))).to_contain_text(XSS_IMG)
    await job_row(page, str(job.id)).locator("a").first.click()
    await expect(page.locator("h1.job-title")).to_contain_text(XSS_IMG)
    await expect(page.locator("#job-summary")).to_contain_text(XSS_SCRIPT)
    await expect(page.locator("#job-logs")).to_contain_text(XSS_IMG)
    await page.goto(live_server + job_url(queue, flow["tree"]["id"], "/flow"))
    await expect(flow_node(page, XSS_SCRIPT)).to_have_count(1)
    await page.goto(f"{live_server}/queues/{queue}?state=waiting&by=data&q=window.__xss")
    await expect(page.locator("#search-summary")).to_contain_text("window.__xss")
    await page.goto(live_server + "/events")
    await asyncio.sleep(0.5)  # give a live swap the chance to bring any payload in

    assert await page.evaluate("typeof window.__xss") == "undefined"
    assert await page.locator("img[src='x']").count() == 0
    assert len(browser_log.pages) >= 6
    browser_log.assert_clean()


async def test_every_page_is_csp_clean(mail: MailManager, live_server: str, page: Any,
                                       browser_log: BrowserLog) -> None:
    """Each section of the top navigation, with something in it; a screenshot of each."""
    sink = await mail.start_dev_sink()
    await mail.schedule_job("mail.digest", "send-digest", {"to": "team@example.com"},
                            cron="0 9 * * *", scheduler_id="daily-digest")

    async def send(data: Any, job: Job) -> None:
        await job.log(f"sent to {data['to']}")

    mail.start_worker("mail.digest", {"send-digest": send})
    done = await mail.add_job("mail.digest", "send-digest", {"to": "ada@example.com"})
    await wait_for_state(mail, "mail.digest", str(done.id), "completed")
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"], message["To"] = "app@example.com", "ada@example.com"
    message["Subject"] = "Your weekly digest"
    message.set_content("Hello Ada, here is your digest.")
    message.add_alternative("<h1>Weekly digest</h1><p>Hello <b>Ada</b>.</p>", subtype="html")
    await aiosmtplib.send(message, hostname=sink.host, port=sink.port, start_tls=False)

    await page.goto(live_server + "/")
    for label, shot, expected in [("Schedules", "schedules", "daily-digest"),
                                  ("Workers & Redis", "workers", "mail.digest"),
                                  ("Events", "events", "completed"),
                                  ("Outbox", "outbox", "Your weekly digest")]:
        await page.locator(".topnav").get_by_role("link", name=label).click()
        await expect(page.locator(".topnav a[aria-current='page']")).to_have_text(label)
        await expect(page.locator("main")).to_contain_text(expected)
        await screenshot(page, shot)
    await page.get_by_role("link", name="Your weekly digest").first.click()
    await expect(page.locator("iframe")).to_have_count(1)
    frame = page.frame_locator("iframe")
    await expect(frame.locator("h1")).to_have_text("Weekly digest")
    await screenshot(page, "outbox-message")
    await mail.stop_worker("mail.digest")
    browser_log.assert_clean()


async def test_many_navigations_in_a_row_all_load(mail: MailManager, live_server: str,
                                                  page: Any, browser_log: BrowserLog) -> None:
    """Regression: pages kept in the back/forward cache held their SSE connection open, and
    after six of them (the browser's connections per host) the next page never loaded."""
    await mail.add_job("nav", "send", {})
    for n in range(10):
        response = await page.goto(f"{live_server}/queues/nav" if n % 2 else live_server + "/",
                                   timeout=5_000)
        assert response is not None and response.status == 200
        assert response.headers.get("cache-control") == "no-store"
        await wait_live(page)
    browser_log.assert_clean()
