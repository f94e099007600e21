"""Queues filled by Node BullMQ (tests/node/harness.mjs) shown by the dashboard in Chromium:
completed, failed and delayed jobs, and a flow across two queues."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog, screenshot
from tests.browser.test_dashboard_browser import (
    flow_node,
    job_row,
    overview_count,
    tab_count,
    wait_live,
)
from tests.dashboard.test_job_page import job_url


async def test_node_filled_queues_show_in_the_pages(mail: MailManager, node: Any,
                                                    live_server: str, page: Any,
                                                    browser_log: BrowserLog) -> None:
    queue = "node.mail"
    added = await node.run("add", queue=queue, jobs=[
        {"name": "welcome", "data": {"to": "ada@example.com", "progress": [50, 100],
                                     "logs": ["rendered", "sent"]}},
        {"name": "welcome", "data": {"to": "bob@example.com", "fail": "mailbox full"},
         "opts": {"attempts": 1}},
    ])
    ok_id, bad_id = [e["id"] for e in added if e["event"] == "added"]
    await node.run("work", queue=queue, jobs=2, seconds=20)
    delayed = await node.run("add", queue=queue, jobs=[
        {"name": "digest", "data": {"to": "team@example.com"}, "opts": {"delay": 3_600_000}},
    ])
    delayed_id = next(e["id"] for e in delayed if e["event"] == "added")
    flow = await node.run("flow", flow={
        "name": "batch", "queueName": "node.parent", "data": {},
        "children": [{"name": "part", "queueName": "node.child", "data": {"n": 1}},
                     {"name": "part", "queueName": "node.child", "data": {"n": 2}}],
    })
    tree = next(e["tree"] for e in flow if e["event"] == "flow")

    await page.goto(live_server + "/")
    await wait_live(page)
    for state, n in [("completed", "1"), ("failed", "1"), ("delayed", "1"), ("waiting", "0")]:
        await expect(overview_count(page, queue, state)).to_have_text(n)
    await expect(overview_count(page, "node.parent", "waiting-children")).to_have_text("1")
    await expect(overview_count(page, "node.child", "waiting")).to_have_text("2")
    await screenshot(page, "node-overview")

    await page.goto(f"{live_server}/queues/{queue}?state=failed")
    await expect(tab_count(page, "completed")).to_have_text("1")
    await expect(tab_count(page, "delayed")).to_have_text("1")
    await expect(job_row(page, bad_id)).to_contain_text("mailbox full")
    await page.goto(f"{live_server}/queues/{queue}?state=delayed")
    await expect(job_row(page, delayed_id)).to_contain_text("digest")

    await page.goto(live_server + job_url(queue, ok_id))
    await expect(page.locator("#job-summary .job-state")).to_have_text("completed")
    await expect(page.locator("#job-summary")).to_contain_text('"by": "node"')
    await expect(page.locator("#job-summary")).to_contain_text("100%")
    await expect(page.locator("#job-logs")).to_contain_text("rendered")
    await expect(page.locator("#job-logs")).to_contain_text("sent")
    await page.goto(live_server + job_url(queue, bad_id))
    await expect(page.locator("#job-summary .job-state")).to_have_text("failed")
    await expect(page.locator("#job-summary")).to_contain_text("mailbox full")

    await page.goto(live_server + job_url("node.parent", tree["id"], "/flow"))
    await expect(flow_node(page, "batch").locator(":scope > span.badge")
                 ).to_have_text("waiting-children")
    await expect(page.locator("li.flow-node li.flow-node", has_text="node.child")
                 ).to_have_count(2)
    await screenshot(page, "node-flow")
    browser_log.assert_clean()
