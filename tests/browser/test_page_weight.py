"""Page weight: the bytes a first visit transfers (issue 14's budget: under 60 KB per page;
Bull Board ~760 KB), counted by Chromium itself (DevTools `Network.loadingFinished`
encodedDataLength: headers and bodies as sent over the wire, gzip as served, every resource
of the page). The failed list is weighed with a full page of rows, each carrying its stack
trace."""

from __future__ import annotations

import asyncio
from typing import Any

from bullmq import Job

from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog
from tests.browser.test_campaign_and_templates_browser import fill_campaign
from tests.browser.test_mail_desk_pages import fill_desk
from tests.dashboard.test_job_page import job_url, wait_for_state

BUDGET = 60 * 1024


async def first_load_bytes(page: Any, url: str) -> tuple[int, dict[str, int]]:
    """Bytes transferred to load `url` with an empty cache: total, and per resource."""
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    await cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    urls: dict[str, str] = {}
    sizes: dict[str, int] = {}
    cdp.on("Network.requestWillBeSent",
           lambda e: urls.__setitem__(e["requestId"], e["request"]["url"]))
    cdp.on("Network.loadingFinished",
           lambda e: sizes.__setitem__(e["requestId"], int(e["encodedDataLength"])))
    await page.goto(url, wait_until="load")
    await asyncio.sleep(0.3)  # the favicon comes after `load`
    await cdp.detach()
    # The live (SSE) stream never finishes loading, so it is not in `sizes`: it is not part
    # of the page's weight but of its updates.
    per_resource = {urls.get(rid, rid).split("?")[0].replace(url.split("/queues")[0], ""): n
                    for rid, n in sizes.items()}
    return sum(sizes.values()), per_resource


def _deep(depth: int) -> None:
    if depth == 0:
        raise RuntimeError("SMTP 550 mailbox unavailable")
    _deep(depth - 1)


async def test_first_load_weighs_under_60_kb(mail: MailManager, live_server: str, page: Any,
                                              browser_log: BrowserLog) -> None:
    for n in range(30):
        await mail.add_job("mail.welcome", "send-welcome", {"to": f"user{n}@example.com"})

    async def boom(data: Any, job: Job) -> None:
        await job.log("connecting to smtp.example.com")
        raise RuntimeError("SMTP 550 mailbox unavailable")

    failed = await mail.add_job("mail.digest", "send-digest", {"to": "ada@example.com"},
                                attempts=1)
    mail.start_worker("mail.digest", {"send-digest": boom})
    await wait_for_state(mail, "mail.digest", str(failed.id), "failed")
    await mail.stop_worker("mail.digest")

    async def deep(data: Any, job: Job) -> None:
        _deep(30)  # a 30-frame stack trace per row

    batch = await mail.add_jobs("mail.bounces", [
        {"name": "send-bounce", "data": {"to": f"user{n}@example.com"}, "opts": {"attempts": 1}}
        for n in range(50)])
    mail.start_worker("mail.bounces", {"send-bounce": deep})
    for job in batch:
        await wait_for_state(mail, "mail.bounces", str(job.id), "failed")
    await mail.stop_worker("mail.bounces")

    entry = await fill_desk(mail, rows=60)  # full pages: 50 log entries, 50 addresses

    campaign = await fill_campaign(mail)

    weights = {}
    for label, path in [("overview", "/"), ("queue page", "/queues/mail.welcome"),
                        ("failed list", "/queues/mail.bounces?state=failed"),
                        ("latest tab", "/queues/mail.bounces/latest"),
                        ("job page", job_url("mail.digest", str(failed.id))),
                        ("campaigns", "/campaigns"), ("campaign", f"/campaigns/{campaign}"),
                        ("templates", "/templates"), ("template", "/templates/newsletter"),
                        ("messages", "/messages"), ("message", f"/messages/{entry}"),
                        ("suppressions", "/suppressions")]:
        total, per_resource = await first_load_bytes(page, live_server + path)
        weights[label] = total
        detail = ", ".join(f"{name} {n / 1024:.1f}" for name, n in sorted(per_resource.items()))
        print(f"\npage weight, {label} ({path}): {total / 1024:.1f} KB [{detail}]")
    over = {label: total for label, total in weights.items() if total >= BUDGET}
    assert not over, f"over the {BUDGET} B budget: {over}"
    browser_log.assert_clean()
