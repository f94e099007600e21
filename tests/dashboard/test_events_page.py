"""The events page: recent events from real processing, filters, audit log, live partials."""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request

from mailqueue.dashboard.views.events import live_events
from mailqueue.manager import MailManager
from tests.dashboard.conftest import csrf_token


async def _ok(data: Any, job: Any) -> str:
    return "sent"


async def _boom(data: Any, job: Any) -> None:
    raise RuntimeError('<script>alert("reason")</script>')


async def _process(mail: MailManager) -> None:
    mail.start_worker("emails", {"ok": _ok, "boom": _boom}, concurrency=2)
    await mail.add_job("emails", "ok", {"n": 1})
    await mail.add_job("emails", "boom", {"n": 2}, attempts=1)
    await mail.add_job("digest", "ok", {"n": 3})
    for _ in range(200):
        counts = await mail.queues.get_job_counts("emails")
        if counts["completed"] == 1 and counts["failed"] == 1:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"jobs were not processed: {counts}")


async def test_page_shows_recent_events_filtered(client: httpx.AsyncClient, mail: MailManager
                                                 ) -> None:
    await _process(mail)
    page = await client.get("/events")
    assert page.status_code == 200
    assert 'hx-ext="sse"' in page.text and 'sse-connect="/live?view=events' in page.text
    assert 'sse-swap="events"' in page.text
    text = page.text
    assert "completed" in text and "failed" in text and "digest" in text
    assert '<script>alert("reason")' not in text
    assert "&lt;script&gt;alert" in text

    only_failed = await client.get("/events", params={"queue": "emails", "type": "failed"})
    rows = only_failed.text.split('id="events-stream"')[1].split("</table>")[0]
    assert "failed" in rows and ">completed<" not in rows and "digest" not in rows
    # Each event's job id opens the job (issue 14).
    failed_id = next(e["jobId"] for e in (await client.get(
        "/api/events", params={"queue": "emails", "type": "failed"})).json()["events"])
    assert f'<a href="/queues/emails/jobs/{failed_id}"><code>{failed_id}</code></a>' in rows
    assert 'value="failed" selected' in only_failed.text

    api = (await client.get("/api/events", params={"queue": "emails"})).json()
    kinds = {e["event"] for e in api["events"]}
    assert {"added", "completed", "failed"} <= kinds
    assert all(e["queue"] == "emails" for e in api["events"])
    ids = [e["id"] for e in api["events"]]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)
    typed = (await client.get("/api/events", params={"type": "completed"})).json()
    assert {e["queue"] for e in typed["events"]} == {"emails"}  # digest has no worker
    assert {e["event"] for e in typed["events"]} == {"completed"}


async def test_audit_log_shows_operator_actions(client: httpx.AsyncClient, mail: MailManager
                                                ) -> None:
    await mail.schedule_job("emails", "tick", {}, every=60_000)
    token = await csrf_token(client, "/schedules")
    await client.post("/schedules/emails/tick/run", data={"csrf_token": token})
    await mail.events.record_audit("alice", "queue.pause", "<b>q</b>", "error", "nope")
    page = await client.get("/events")
    audit = html.unescape(page.text.split('id="events-audit"')[1])
    assert "schedule.run-now" in audit and "emails/tick" in audit and "anonymous" in audit
    assert "alice" in audit and "queue.pause" in audit
    assert "<b>q</b>" not in page.text
    api = (await client.get("/api/events")).json()
    assert api["audit"][0]["actor"] == "alice" and api["audit"][1]["action"] == "schedule.run-now"
    assert api["alerts"] == []


async def test_live_events_renders_the_page_partials(app: Starlette, mail: MailManager) -> None:
    await _process(mail)
    scope = {"type": "http", "method": "GET", "path": "/events", "headers": [],
             "query_string": b"", "app": app, "router": app.router,
             "mailqueue.csrf": "x" * 40}
    regions = await live_events(Request(scope), {"queue": "emails", "type": "completed"})
    assert set(regions) == {"events", "audit", "alerts"}
    assert regions["events"].startswith('<div id="events-stream">')
    assert "completed" in regions["events"] and "digest" not in regions["events"]
    assert "failed" not in regions["events"].split("<tbody>")[1]


async def test_a_delayed_event_says_when_the_job_runs(client: httpx.AsyncClient,
                                                      mail: MailManager) -> None:
    """BullMQ's `delayed` event carries `delay` = the time the job will run (epoch ms)."""
    from mailqueue.dashboard.formatting import timestamp

    job = await mail.add_job("emails", "later", {}, delay=5 * 60_000)
    runs_at = int(job.timestamp) + 5 * 60_000
    page = await client.get("/events", params={"queue": "emails", "type": "delayed"})
    row = html.unescape(page.text.split('id="events-stream"')[1].split("</tbody>")[0])
    assert f"delay: {runs_at}" not in row
    assert re.search(rf"runs at {timestamp(runs_at)} \(in (5 min 0|4 min 5\d) s\)", row), row
    api = (await client.get("/api/events", params={"type": "delayed"})).json()
    assert api["events"][0]["summary"].startswith("runs at ")
