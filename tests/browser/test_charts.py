"""The queue page's charts and the overview's sparklines in Chromium, against known data.

Known data: a day of finished jobs written into Redis the way BullMQ lays them out (job
hashes, and the completed and failed sets scored by finishedOn), so every bucket's count and
every duration is known; then a real worker finishes one more while the page is open.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from bullmq import Job
from playwright.async_api import expect

from mailqueue.manager import MailManager
from mailqueue.queues.stats import DAY, HOUR
from tests.browser.conftest import BrowserLog, screenshot
from tests.browser.test_dashboard_browser import wait_live
from tests.dashboard.test_job_page import wait_for_state

QUEUE = "charts.demo"
MIN = 60_000


async def seed(mail: MailManager, now: int) -> tuple[int, int]:
    """Jobs finished over the last day: in each of the last 60 minutes `(m % 7) + 1`
    completed (run 100 ms, waited 20 ms) and one failure every 10th minute, plus one job
    an hour for the 23 hours before. Returns (completed, failed) in the last hour."""
    prefix, client = mail.settings.queue_prefix, mail.client
    pipe = client.pipeline(transaction=False)
    n = completed_hour = failed_hour = 0
    hour_start = HOUR.start(now)

    def job(state: str, done: int) -> None:
        nonlocal n
        n += 1
        pipe.hset(f"{prefix}:{QUEUE}:{n}", mapping={
            "name": "send", "data": "{}", "opts": "{}", "timestamp": done - 120,
            "processedOn": done - 100, "finishedOn": done, "delay": 0})
        pipe.zadd(f"{prefix}:{QUEUE}:{state}", {str(n): done})

    for m in range(60):
        minute = hour_start + m * MIN
        for k in range((m % 7) + 1):
            job("completed", minute + 1000 + k)
            completed_hour += 1
        if m % 10 == 3:
            job("failed", minute + 2000)
            failed_hour += 1
    for h in range(1, 24):
        job("completed", hour_start - h * 60 * MIN + 5000)
    pipe.set(f"{prefix}:{QUEUE}:id", n)
    await pipe.execute()
    await mail.queues.list_queues(refresh=True)
    return completed_hour, failed_hour


async def test_charts_render_light_and_dark_with_text_and_hover_values(
        mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog) -> None:
    now = int(time.time() * 1000)
    completed, failed = await seed(mail, now)
    # The minute may turn between seeding and loading: the oldest seeded minute then leaves
    # the hour window. Read what the page should say from the same source.
    await page.goto(f"{live_server}/queues/{QUEUE}")
    charts = page.locator("#queue-charts")
    await expect(charts.locator("svg.bars")).to_have_count(2)
    hour = charts.locator('figure[data-window="hour"]')
    label = await hour.locator("svg.bars").get_attribute("aria-label")
    assert label is not None
    got = re.match(r"Last hour, per minute: (\d+) completed and (\d+) failed", label)
    assert got, label
    assert int(got.group(1)) in range(completed - 7, completed + 1)
    assert int(got.group(2)) == failed
    # Hover values: a <title> per bucket, in the order of time, newest last.
    titles = await hour.locator("svg.bars .hits rect title").all_text_contents()
    assert len(titles) == 60
    assert all(re.match(r"\d\d:\d\d UTC: \d+ completed, \d+ failed$", t) for t in titles)
    assert len(await charts.locator('figure[data-window="day"] .hits rect').all()) == DAY.buckets
    # The text equivalent: visually hidden, but in the accessibility tree.
    hidden = hour.locator(".visually-hidden")
    assert await hidden.locator("table tbody tr").count() >= 59
    box = await hidden.bounding_box()
    assert box and box["width"] <= 1 and box["height"] <= 1, box
    snapshot = await hour.locator("svg.bars").aria_snapshot()
    assert "img" in snapshot and "Last hour, per minute" in snapshot, snapshot
    # Wait and run time from the known durations (20 ms wait, 100 ms run for every job).
    timings = charts.locator("figure.timings")
    await expect(timings.locator("table.timing-table")).to_contain_text("wait")
    await expect(timings.locator("table.timing-table tbody tr").first).to_contain_text("20 ms")
    await expect(timings.locator("table.timing-table tbody tr").nth(1)).to_contain_text(
        "100 ms")

    fills = {}
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        fills[scheme] = await page.evaluate(
            "() => [getComputedStyle(document.querySelector('svg.bars .c')).fill,"
            " getComputedStyle(document.querySelector('.chart')).backgroundColor]")
        await screenshot(page, f"charts_queue_page_{scheme}")
    assert fills["light"] != fills["dark"], fills
    assert fills["dark"][1] == "rgb(22, 26, 32)", fills  # the dark panel
    await page.emulate_media(color_scheme="light")

    # Live: a worker finishes one more job; the chart's numbers follow without a reload.
    # The page's stream must be open first, or the change could land before it connects.
    await wait_live(page)
    await page.evaluate("window.__marker = 'still here'")
    before = await hour.locator("svg.bars").get_attribute("aria-label")

    async def ok(data: Any, job: Job) -> str:
        return "ok"

    added = await mail.add_job(QUEUE, "send", {})
    mail.start_worker(QUEUE, {"send": ok})
    await wait_for_state(mail, QUEUE, str(added.id), "completed")
    # The queue was seeded without an events stream: the hub's reader follows it from its
    # next discovery scan (every 2 s or more on a busy Redis), hence the longer wait.
    await expect(page.locator('#queue-charts figure[data-window="hour"] svg.bars')
                 ).not_to_have_attribute("aria-label", before or "", timeout=30_000)
    assert await page.evaluate("window.__marker") == "still here"
    browser_log.assert_clean()


async def test_overview_sparklines_and_no_history(mail: MailManager, live_server: str,
                                                  page: Any, browser_log: BrowserLog) -> None:
    now = int(time.time() * 1000)
    await seed(mail, now)
    prefix = mail.settings.queue_prefix
    # removeOnComplete: true and no metrics: the id counter ran ahead of empty sets.
    await mail.client.set(f"{prefix}:trimmed:id", 12)
    await mail.client.hset(f"{prefix}:trimmed:meta", "opts.maxLenEvents", 10000)
    await mail.queues.list_queues(refresh=True)
    await asyncio.sleep(0)
    await page.goto(live_server + "/")
    demo = page.locator("#overview-table tr", has=page.locator(f'a[href$="/queues/{QUEUE}"]'))
    spark = demo.locator("svg.sparkline")
    await expect(spark).to_have_count(1)
    assert "completed" in (await spark.locator("title").text_content() or "")
    path = await spark.locator("path.ok").get_attribute("d") or ""
    assert len(set(re.findall(r",([\d.]+)", path))) > 3, path  # not a flat line
    trimmed = page.locator("#overview-table tr", has=page.locator('a[href$="/queues/trimmed"]'))
    await expect(trimmed.locator(".spark-none")).to_have_text(
        "no history kept (removeOnComplete) — enable metrics")
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        await screenshot(page, f"charts_overview_{scheme}")
    await page.emulate_media(color_scheme="light")
    browser_log.assert_clean()


async def test_partly_known_history_is_shaded_not_zero(mail: MailManager, live_server: str,
                                                       page: Any, browser_log: BrowserLog
                                                       ) -> None:
    # removeOnComplete: {count: 20}: 100 jobs made, the newest 20 kept (one a minute over
    # the last 20 minutes): the 40 minutes before are unknown, and drawn so.
    prefix, now = mail.settings.queue_prefix, int(time.time() * 1000)
    pipe = mail.client.pipeline(transaction=False)
    for i in range(20):
        done = now - i * MIN
        pipe.hset(f"{prefix}:kept20:{100 - i}", mapping={
            "name": "send", "data": "{}", "opts": "{}", "timestamp": done - 50,
            "processedOn": done - 40, "finishedOn": done})
        pipe.zadd(f"{prefix}:kept20:completed", {str(100 - i): done})
    pipe.set(f"{prefix}:kept20:id", 100)
    await pipe.execute()
    await page.goto(f"{live_server}/queues/kept20")
    hour = page.locator('#queue-charts figure[data-window="hour"]')
    await expect(hour.locator("svg.bars path.u")).to_have_count(1)
    titles = await hour.locator(".hits rect title").all_text_contents()
    assert sum(1 for t in titles if "completed unknown" in t) in (39, 40, 41), titles
    assert any("at least 1 completed" in t for t in titles), titles
    await expect(hour.locator(".chart-note")).to_contain_text("completed known since")
    await expect(hour.locator(".chart-note")).to_contain_text(
        "failed: no history kept (removeOnFail) — enable metrics")
    await expect(hour.locator("figcaption")).to_contain_text("unknown failure rate")
    await screenshot(page, "charts_partly_known")
    browser_log.assert_clean()
