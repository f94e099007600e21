"""The queue page: tabs with counts, the dense job table, pagination, search, 404/422."""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any

import httpx
from bullmq import Job

from mailqueue.manager import MailManager

XSS = "<script>alert(1)</script>"


def _rows(page: httpx.Response) -> list[str]:
    body = page.text[page.text.index('id="queue-rows"'):]
    body = body[:body.index("</tbody>")]
    return re.findall(r'name="job_id" value="([^"]+)"', body)


async def test_tabs_counts_and_rows_after_a_worker_ran(mail: MailManager,
                                                       client: httpx.AsyncClient) -> None:
    async def handler(data: Any, job: Job) -> str:
        await job.updateProgress(50)
        if data["n"] % 2:
            raise RuntimeError("odd numbers fail " + "x" * 200)
        return "ok"

    await mail.add_jobs("q", [{"name": "job", "data": {"n": n}, "opts": {"attempts": 1}}
                              for n in range(6)])
    mail.start_worker("q", {"job": handler})
    for _ in range(200):
        if (await mail.queues.get_job_counts("q"))["failed"] == 3:
            break
        await asyncio.sleep(0.05)
    await mail.add_job("q", "later", {}, delay=60_000)

    page = await client.get("/queues/q", params={"state": "failed"})
    assert page.status_code == 200
    start = page.text.index('id="queue-tabs"')
    tabs = page.text[start:page.text.index("</nav>", start)]
    assert re.search(r'failed<span class="count state-failed">3<', tabs)
    assert re.search(r'completed<span class="count state-completed">3<', tabs)
    assert re.search(r'delayed<span class="count state-delayed">1<', tabs)
    assert len(_rows(page)) == 3
    assert "odd numbers fail" in page.text and '<progress max="100" value="50"' in page.text
    assert "/queues/q/jobs/" in page.text  # each id links to its job page
    assert "style=" not in page.text and 'sse-connect="/live?view=queue&amp;queue=q' in page.text

    api = (await client.get("/api/queues/q")).json()
    assert api["counts"]["completed"] == 3 and api["workers"] == 1
    jobs = (await client.get("/api/queues/q/jobs", params={"state": "completed"})).json()
    assert jobs["total"] == 3 and {j["state"] for j in jobs["jobs"]} == {"completed"}


async def test_pagination_reads_only_the_page(mail: MailManager, client: httpx.AsyncClient
                                              ) -> None:
    await mail.add_jobs("big", [{"name": f"n{i}", "data": {}} for i in range(120)])
    first = await client.get("/queues/big", params={"per_page": 25})
    assert len(_rows(first)) == 25 and "page 1 of 5" in first.text
    last = await client.get("/queues/big", params={"per_page": 25, "page": 5})
    assert len(_rows(last)) == 20
    oldest = await client.get("/queues/big", params={"per_page": 25, "page": 5, "sort": "asc"})
    assert _rows(oldest)[0] == "101"
    far = await client.get("/queues/big", params={"per_page": 25, "page": 10_000})
    assert far.status_code == 200 and _rows(far) == [] and "No waiting jobs on page" in far.text
    api = (await client.get("/api/queues/big/jobs", params={"page": 2, "per_page": 50})).json()
    assert api["page"] == 2 and len(api["jobs"]) == 50 and api["pages"] == 3


async def test_search_by_id_name_and_data(mail: MailManager, client: httpx.AsyncClient
                                          ) -> None:
    await mail.add_jobs("s", [{"name": "welcome" if i % 3 else "digest",
                               "data": {"to": f"user{i}@example.com"}} for i in range(1200)])
    by_id = await client.get("/queues/s", params={"by": "id", "q": "7"})
    assert _rows(by_id) == ["7"] and "Found" in by_id.text
    missing = await client.get("/queues/s", params={"by": "id", "q": "99999"})
    assert _rows(missing) == [] and "No job with id" in missing.text

    by_data = await client.get("/queues/s", params={"by": "data", "q": "user1150@"})
    assert len(_rows(by_data)) == 1
    assert "searched 1,000 of 1,200 waiting jobs" in by_data.text
    by_name = await client.get("/queues/s", params={"by": "name", "q": "digest",
                                                    "per_page": 25})
    assert len(_rows(by_name)) == 25 and "333 matches" in by_name.text
    api = (await client.get("/api/queues/s/jobs", params={"by": "data", "q": "user3@"})).json()
    assert api["search"]["scanned"] == 1000 and api["search"]["total"] == 1200


async def test_a_search_that_stops_at_its_scan_limit_offers_the_next_jobs(
    mail: MailManager, client: httpx.AsyncClient
) -> None:
    await mail.add_jobs("deep", [{"name": "welcome", "data": {"to": f"user{i}@example.com"}}
                                 for i in range(1200)])
    # user5 is among the oldest 200: newest first, the first 1,000 searched miss it.
    first = await client.get("/queues/deep", params={"by": "data", "q": "user5@"})
    assert _rows(first) == [] and "searched 1,000 of 1,200 waiting jobs" in first.text
    link = re.search(r'class="search-next" href="([^"]+)">Search the next 200<', first.text)
    assert link is not None
    following = await client.get(html.unescape(link.group(1)))
    assert _rows(following) == ["6"]
    assert "searched jobs 1,001–1,200 of 1,200 waiting jobs" in following.text
    assert "search-next" not in following.text  # nothing left to search
    assert (await client.get("/queues/deep", params={"q": "x", "from": "-1"})).status_code == 422


async def test_unknown_queue_is_404_and_bad_parameters_422(mail: MailManager,
                                                         client: httpx.AsyncClient) -> None:
    missing = await client.get("/queues/nope")
    assert missing.status_code == 404 and "does not exist" in missing.text
    assert (await client.get("/api/queues/nope")).status_code == 404
    await mail.add_job("q", "x", {})
    bad_state = await client.get("/queues/q", params={"state": "sleeping"})
    assert bad_state.status_code == 422 and "Unknown state" in bad_state.text
    assert (await client.get("/queues/q", params={"page": "abc"})).status_code == 422
    assert (await client.get("/queues/q", params={"page": "0"})).status_code == 422
    assert (await client.get("/api/queues/q/jobs", params={"per_page": "9999"})).status_code == 422


async def test_names_and_data_are_escaped(mail: MailManager, client: httpx.AsyncClient) -> None:
    job = await mail.add_job(XSS, XSS, {"x": XSS})
    page = await client.get("/queues/<script>alert(1)<~2Fscript>")  # `/` is written ~2F
    assert page.status_code == 200, page.text[:300]
    assert XSS not in page.text and html.escape(XSS, quote=False) in page.text
    searched = await client.get(page.url, params={"by": "data", "q": "alert"})
    assert _rows(searched) == [str(job.id)] and XSS not in searched.text


async def test_live_queue_regions(mail: MailManager, app: Any) -> None:
    from starlette.requests import Request

    from mailqueue.dashboard.views.queues import live_queue

    await mail.add_job("lq", "job", {})
    request = Request({"type": "http", "app": app, "router": app.router, "headers": [],
                       "method": "GET", "path": "/", "query_string": b""})
    regions = await live_queue(request, {"queue": "lq", "state": "waiting"})
    assert set(regions) == {"queue-tabs", "queue-header", "queue-charts", "queue-rows"}
    assert 'id="queue-charts"' in regions["queue-charts"]
    assert 'id="queue-rows"' in regions["queue-rows"] and "job" in regions["queue-rows"]
    assert await live_queue(request, {"queue": "lq", "state": "bogus"}) == {}


async def test_charts_show_throughput_timings_and_their_sources(
        mail: MailManager, client: httpx.AsyncClient) -> None:
    async def handler(data: Any, job: Job) -> str:
        if data["n"] == 0:
            raise RuntimeError("first one fails")
        return "ok"

    await mail.add_jobs("charted", [{"name": "job", "data": {"n": n}, "opts": {"attempts": 1}}
                                    for n in range(5)])
    mail.start_worker("charted", {"job": handler})
    for _ in range(200):
        counts = await mail.queues.get_job_counts("charted")
        if counts["completed"] == 4 and counts["failed"] == 1:
            break
        await asyncio.sleep(0.05)

    page = await client.get("/queues/charted")
    text = page.text
    charts = text[text.index('id="queue-charts"'):text.index("</section>")]
    assert 'sse-swap="queue-charts"' in charts
    assert charts.count('<svg class="bars"') == 2  # the last hour and the last day
    # The text equivalent: a summary as the image's name, and a table of busy buckets.
    assert re.search(r'aria-label="Last hour, per minute: 4 completed and 1 failed '
                     r'\(20.0 % failed\)', charts)
    assert "<caption>Last hour, per minute: the buckets that had jobs</caption>" in charts
    # Hover values: one <title> per bucket (60 minutes + 96 quarter hours).
    assert len(re.findall(r"<rect x=\"\d+\" width=\"10\" height=\"100\"><title>", charts)) == 156
    assert re.search(r"<title>\d\d:\d\d UTC: \d+ completed, \d+ failed</title>", charts)
    assert "completed: BullMQ metrics and the completed set" in charts
    assert "p50 / p95 of the newest 4 completed jobs" in charts
    assert "style=" not in text

    # An htmx swap of the rows reads no charts.
    rows = await client.get("/queues/charted", headers={"HX-Request": "true"})
    assert 'id="queue-charts"' not in rows.text


async def test_charts_say_when_no_history_is_kept(mail: MailManager,
                                                  client: httpx.AsyncClient) -> None:
    prefix = mail.settings.queue_prefix
    # As a Node worker with removeOnComplete: true and no metrics leaves a queue: the id
    # counter ahead of its jobs, both sets empty.
    await mail.client.set(f"{prefix}:trimmed:id", 40)
    await mail.client.hset(f"{prefix}:trimmed:meta", "opts.maxLenEvents", 10000)
    text = html.unescape((await client.get("/queues/trimmed")).text)
    charts = text[text.index('id="queue-charts"'):text.index("</section>")]
    assert charts.count("no history kept (removeOnComplete) — enable metrics") >= 2
    assert '<svg class="bars"' not in charts
    assert "No completed job kept to time." in charts


def test_a_live_chart_asks_to_be_redrawn_when_its_newest_bucket_ends() -> None:
    from mailqueue.dashboard.charts import throughput_chart
    from mailqueue.dashboard.formatting import relative_times
    from mailqueue.queues.stats import HOUR

    now = 1_800_000_030_000
    kind = {"values": [0] * 60, "sources": ["set"], "known_from": None, "jobs_removed": False}
    series = {"window": "hour", "start": HOUR.start(now), "bucket_ms": 60_000, "now": now,
              "completed": kind, "failed": kind, "no_history": False}
    with relative_times() as changes_at:
        chart = throughput_chart(series)
    # A quiet queue's bars still move left each minute: the live hub renders again then.
    assert changes_at[0] == (now - now % 60_000 + 60_000) / 1000
    assert chart["summary"].startswith("Last hour, per minute: 0 completed and 0 failed")
