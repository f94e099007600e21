"""The queue page's "latest" tab (issue 14): the newest jobs whatever their state, merged by
the time they were added; its JSON twin; hostile names escaped."""

from __future__ import annotations

import re

import httpx

from mailqueue.manager import MailManager
from tests.dashboard.test_queue_actions import _failed_jobs


async def _stamp(mail: MailManager, queue: str, ids: list[str]) -> None:
    """Timestamps one millisecond apart, in the order given (adds in one ms tie)."""
    for i, job_id in enumerate(ids):
        await mail.client.hset(mail.queues.keys(queue).job(job_id), "timestamp",
                               str(1_700_000_000_000 + i))


async def test_latest_tab_merges_states_newest_first(mail: MailManager,
                                                     client: httpx.AsyncClient) -> None:
    await _failed_jobs(mail, "q", 2)
    failed = [j["id"] for j in (await mail.queues.get_job_summaries("q", "failed"))["jobs"]]
    delayed = await mail.add_job("q", "later", {}, delay=600_000)
    waiting = await mail.add_job("q", "<img src=x onerror=alert(1)>", {})
    await _stamp(mail, "q", [*sorted(failed, key=int), str(delayed.id), str(waiting.id)])

    page = (await client.get("/queues/q")).text
    tabs = page[page.index('id="queue-tabs"'):page.index("</nav>", page.index('id="queue-tabs"'))]
    assert re.search(r'href="[^"]*/queues/q/latest"[^>]*>latest</a>', tabs)

    latest = (await client.get("/queues/q/latest")).text
    rows = latest[latest.index('id="latest-rows"'):latest.index("</tbody>")]
    ids = re.findall(r'<a href="/queues/q/jobs/([^"]+)"', rows)
    assert ids == [str(waiting.id), str(delayed.id), *sorted(failed, key=int, reverse=True)]
    states = re.findall(r'class="badge state-([a-z-]+)"', rows)
    assert states == ["waiting", "delayed", "failed", "failed"]
    assert "<img src=x" not in latest and "&lt;img src=x onerror=alert(1)&gt;" in latest
    assert 'aria-current="page">latest</a>' in latest
    # The tabs of the states lead back to the queue page.
    assert 'href="http://127.0.0.1:3000/queues/q?state=failed"' in latest

    api = (await client.get("/api/queues/q/latest")).json()
    assert [j["id"] for j in api["jobs"]] == ids and api["counts"]["failed"] == 2


async def test_latest_of_a_missing_queue_is_a_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/queues/nope/latest")).status_code == 404
    assert (await client.get("/api/queues/nope/latest")).status_code == 404
