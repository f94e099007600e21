"""The overview: every queue with its counts, workers, throughput, filter and grouping."""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any

import httpx
from bullmq import Job

from mailqueue.dashboard.views.overview import group_rows, sparkline
from mailqueue.manager import MailManager
from mailqueue.queues.stats import NO_HISTORY, Series
from tests.dashboard.conftest import csrf_token

XSS = "<script>alert(1)</script>"


def _table(page: httpx.Response) -> str:
    """The overview table alone (the sidebar lists every queue too)."""
    return page.text[page.text.index('id="overview-table"'):]


async def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_overview_lists_queues_with_counts_workers_and_sparkline(
    mail: MailManager, client: httpx.AsyncClient,
) -> None:
    async def handler(data: Any, job: Job) -> str:
        if data.get("fail"):
            raise RuntimeError("boom")
        return "ok"

    await mail.add_jobs("mail.welcome", [{"name": "job", "data": {"fail": i == 0},
                                          "opts": {"attempts": 1}} for i in range(3)])
    await mail.add_job("mail.digest", "job", {}, delay=60_000)
    await mail.queues.pause("mail.digest")
    mail.start_worker("mail.welcome", {"job": handler})

    async def processed() -> bool:
        counts = await mail.queues.get_job_counts("mail.welcome")
        return counts["completed"] == 2 and counts["failed"] == 1

    await _wait_for(processed)
    page = await client.get("/")
    assert page.status_code == 200
    text = page.text
    assert '/queues/mail.welcome"' in text and '/queues/mail.digest"' in text
    # Workers write per-minute points when a minute ends: the line may still be flat here.
    assert '<svg class="sparkline"' in text
    assert "style=" not in text and "<script>" not in text.split("</head>")[1]
    assert 'sse-connect="/live?view=overview"' in text

    api = (await client.get("/api/queues")).json()["queues"]
    rows = {q["name"]: q for q in api}
    assert rows["mail.welcome"]["counts"]["completed"] == 2
    assert rows["mail.welcome"]["counts"]["failed"] == 1
    assert rows["mail.welcome"]["workers"] == 1 and rows["mail.digest"]["workers"] == 0
    assert rows["mail.digest"]["paused"] is True and rows["mail.digest"]["counts"]["delayed"] == 1
    assert isinstance(rows["mail.welcome"]["completed_per_minute"], list)


async def test_overview_filter_and_grouping(mail: MailManager, client: httpx.AsyncClient
                                            ) -> None:
    for name in ("mail.welcome", "mail.digest", "billing"):
        await mail.add_job(name, "job", {})
    filtered = _table(await client.get("/", params={"q": "DIGEST"}))
    assert "/queues/mail.digest" in filtered and "/queues/billing" not in filtered
    assert "No queue name contains" in _table(await client.get("/", params={"q": "zzz"}))
    assert [q["name"] for q in (await client.get("/api/queues?q=bill")).json()["queues"]] == [
        "billing"]

    grouped = _table(await client.get("/", params={"group": "."}))
    heads = re.findall(r'<th scope="rowgroup">([^<]+) <span', grouped)
    assert [h.strip() for h in heads] == ["billing", "mail"]
    # The mail group sums its two queues' waiting jobs.
    head = grouped[grouped.index('<th scope="rowgroup">mail'):]
    assert 'state-waiting">2<' in head.split("</tr>")[0]


async def test_overview_escapes_queue_names(mail: MailManager, client: httpx.AsyncClient
                                           ) -> None:
    await mail.add_job(XSS, XSS, {"x": XSS})
    text = (await client.get("/")).text
    assert XSS not in text
    assert html.escape(XSS, quote=False) in text


async def test_live_overview_renders_the_table(mail: MailManager, app: Any) -> None:
    from starlette.requests import Request

    from mailqueue.dashboard.views.overview import live_overview

    await mail.add_job("live-q", "job", {})
    request = Request({"type": "http", "app": app, "router": app.router, "headers": [],
                       "method": "GET", "path": "/", "query_string": b""})
    regions = await live_overview(request, {"q": "live"})
    assert set(regions) == {"overview-table"}
    assert 'id="overview-table"' in regions["overview-table"]
    assert "/queues/live-q" in regions["overview-table"]


async def test_pause_all_and_resume_all(mail: MailManager, client: httpx.AsyncClient) -> None:
    for name in ("a", "b"):
        await mail.add_job(name, "job", {})
    token = await csrf_token(client)
    answer = await client.post("/queues/pause-all", data={"csrf_token": token})
    assert answer.status_code == 303
    assert await mail.queues.is_paused("a") and await mail.queues.is_paused("b")
    answer = await client.post("/api/queues/resume-all", headers={"X-CSRF-Token": token})
    assert answer.json()["ok"] is True and set(answer.json()["queues"]) == {"a", "b"}
    assert not await mail.queues.is_paused("a")
    audit = await mail.get_audit_log(5)
    assert {entry["action"] for entry in audit} >= {"queues.pause-all", "queues.resume-all"}


def _series(completed: list[int | None], failed: list[int | None]) -> Series:
    kind = {"sources": ["set"], "known_from": None, "jobs_removed": False}
    return {"window": "hour", "start": 0, "bucket_ms": 60_000, "now": 0,
            "completed": {**kind, "values": completed},  # type: ignore[typeddict-item]
            "failed": {**kind, "values": failed},  # type: ignore[typeddict-item]
            "no_history": all(v is None for v in completed + failed)}


def test_sparkline_and_groups_are_plain_functions() -> None:
    spark = sparkline(_series([3, 0, 1], [0, 1, 0]))
    # Oldest first (left); the highest point touches the top (y 1), zero the bottom (y 21).
    assert spark["ok"] == "M0.0,1.0L60.0,21.0L120.0,14.3" and spark["gaps"] == ""
    assert "4 completed, 1 failed" in spark["label"] and "completed set" in spark["label"]
    # Unknown minutes lift the pen and are drawn as a dotted baseline, never as zeros.
    gappy = sparkline(_series([None, None, 2, 2], [None, None, 0, 0]))
    assert gappy["ok"].startswith("M80.0,") and gappy["gaps"].startswith("M0.0,21H")
    nothing = sparkline(_series([None] * 3, [None] * 3))
    assert nothing["no_history"] and nothing["message"] == NO_HISTORY
    rows = [{"name": "a.x", "counts": {"waiting": 1}, "workers": 1},
            {"name": "a.y", "counts": {"waiting": 2}, "workers": 0},
            {"name": "b", "counts": {}, "workers": 0}]
    groups = group_rows(rows, ".")
    assert [(g["name"], len(g["queues"]), g["counts"]["waiting"]) for g in groups] == [
        ("a", 2, 3), ("b", 1, 0)]


def _spark_of(table: str, queue: str) -> str:
    """The sparkline cell of `queue`'s row."""
    row = table[table.index(f'/queues/{queue}"'):]
    return row[row.index('class="spark-cell"'):row.index("</td>", row.index('class="spark-cell"'))]


async def test_node_worked_queue_sparkline_is_true(mail: MailManager, client: httpx.AsyncClient,
                                                   node: Any) -> None:
    # Node BullMQ without the metrics option: the sets alone give the line.
    await node.run("add", queue="node.ok", jobs=[{"name": "job", "data": {}} for _ in range(4)])
    await node.run("work", queue="node.ok", jobs=4, seconds=30)
    # removeOnComplete: true and no metrics: nothing can be known, and the cell says so.
    await node.run("add", queue="node.gone", jobs=[
        {"name": "job", "data": {}, "opts": {"removeOnComplete": True}} for _ in range(2)])
    await node.run("work", queue="node.gone", jobs=2, seconds=30)
    await mail.queues.list_queues(refresh=True)
    table = _table(await client.get("/"))
    ok = _spark_of(table, "node.ok")
    assert '<svg class="sparkline"' in ok and "last hour: 4 completed, 0 failed" in ok
    assert "the completed set" in ok
    # Not flat: the minute(s) of the work rise to the top of the line (y 1 of 22).
    path = re.search(r'class="ok" d="([^"]+)"', ok)
    assert path and ",1.0" in path.group(1) and ",21.0" in path.group(1), ok
    gone = _spark_of(table, "node.gone")
    assert "<svg" not in gone and NO_HISTORY in html.unescape(gone)
    api = {q["name"]: q for q in (await client.get("/api/queues")).json()["queues"]}
    assert sum(api["node.ok"]["completed_per_minute"]) == 4
    assert api["node.gone"]["completed_per_minute"] == []


async def test_counts_are_exact_below_100000(mail: MailManager,
                                            client: httpx.AsyncClient) -> None:
    """Issue 14: an operator counting failures wants 4,998, not "5k"."""
    from mailqueue.dashboard.formatting import compact

    assert [compact(n) for n in (0, 999, 4998, 99_999, 100_000, 123_456, 1_500_000)] == [
        "0", "999", "4,998", "99,999", "100k", "123.5k", "1.5M"]
    await mail.add_jobs("many", [{"name": "x", "data": {}} for _ in range(1234)])
    page = (await client.get("/")).text
    assert ">1,234</a>" in page and "1.2k" not in page
