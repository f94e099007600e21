"""Issue 11, point 10: one queue name the dashboard cannot handle must not take it down.

A producer (here bullmq's own Queue, as any producer could) writes a queue with a 10,000
character name and one with spaces around its name beside a normal queue. Every page, the
JSON twins and /health still answer; the normal queue is listed; the odd ones are named in
a notice (short and escaped), never used as a queue.
"""

from __future__ import annotations

import httpx
from bullmq import Queue

from mailqueue.manager import MailManager

ODD_NAMES = ["q" * 10_000, " padded <b>name</b> "]
PAGES = ["/", "/api/queues", "/health", "/metrics", "/workers", "/api/workers", "/events",
         "/api/events", "/schedules", "/api/schedules", "/queues/fine", "/api/queues/fine"]


async def test_an_odd_queue_name_is_a_notice_not_an_outage(mail: MailManager,
                                                           client: httpx.AsyncClient) -> None:
    await mail.add_job("fine", "send-welcome", {"to": "ada@example.com"})
    for name in ODD_NAMES:
        producer = Queue(name, {"connection": mail.settings.redis_url,
                                "prefix": mail.settings.queue_prefix})
        await producer.add("odd", {"n": 1})
        await producer.close()
    await mail.queues.list_queues(refresh=True)

    for path in PAGES:
        answer = await client.get(path, headers={"Accept": "text/html"})
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:500])
        if answer.headers["content-type"].startswith("text/html"):
            assert "<b>name</b>" not in answer.text, path  # escaped where it is shown

    listed = (await client.get("/api/queues")).json()
    assert [q["name"] for q in listed["queues"]] == ["fine"]
    assert sorted(u["length"] for u in listed["unusable_queues"]) == [20, 10_000]
    page = (await client.get("/")).text
    assert "2 queues in Redis" in page and "not shown" in page and "10,000 characters" in page
    assert "&lt;b&gt;name&lt;/b&gt;" in page
    assert "q" * 200 not in page  # a preview, not the whole name
    health = (await client.get("/health")).json()
    assert health["healthy"] is True, health
