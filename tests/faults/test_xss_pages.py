"""Scenario 6 of the fault suite (part 2): XSS payloads everywhere, no page renders one.

A corpus of payloads (script tags, event-handler attributes, attribute break-outs,
`javascript:` URLs, `</textarea>`, htmx attributes, template injection) is put in every
place a producer or an operator controls: queue names, job ids and names, job data, failure
reasons (a handler raising with the payload), job logs, progress, return values, schedule
names, flows, the audit log (an action named after a payload) and e-mail subject, sender and
HTML (through the development sink) - see xss_planting.py. Then every page of the
dashboard, its htmx fragments and live regions are parsed with html.parser: no element or
attribute came from a payload (no inline script, no `on*` attribute, no `javascript:` URL,
no probe element, no `hx-on`), and `{{7*7}}` never renders 49; the JSON twins are JSON.
test_xss_chromium.py loads the pages in a browser.

Figures are printed (`pytest -s`) and written to test-artifacts/reliability/xss.json.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import httpx
from starlette.applications import Starlette

from mailqueue.manager import MailManager
from tests.faults.figures import report
from tests.faults.xss_corpus import CORPUS, html_problems
from tests.faults.xss_planting import MAIN, page_paths, plant_payloads


async def test_no_page_renders_a_payload(mail: MailManager, client: httpx.AsyncClient,
                                         app: Starlette) -> None:
    started = time.monotonic()
    planted = await plant_payloads(mail, client)
    paths = page_paths(planted)
    checked, fragments, statuses = 0, 0, {}
    for path, status in paths:
        for htmx in (False, True):
            headers = {"HX-Request": "true"} if htmx else {}
            response = await client.get(path, headers=headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code == status, (path, response.status_code)
            content_type = response.headers["content-type"]
            if content_type.startswith(("application/json", "text/plain")):
                # Not rendered by a browser (nosniff): the logs' JSON, the router's 404.
                assert response.headers["x-content-type-options"] == "nosniff", path
                continue
            assert content_type.startswith("text/html"), path
            problems = html_problems(response.text)
            assert not problems, (path, htmx, problems)
            checked += 1
            fragments += htmx
    # The live regions (SSE event data) of the pages with payloads: the same partials.
    from starlette.requests import Request

    from mailqueue.dashboard.context import live_sidebar
    from mailqueue.dashboard.views.jobs import live_job
    from mailqueue.dashboard.views.overview import live_overview
    from mailqueue.dashboard.views.queues import live_queue

    request = Request({"type": "http", "app": app, "method": "GET", "path": "/live",
                       "headers": [], "query_string": b"", "mailqueue.csrf": "t" * 40})
    live_checked = 0
    regions: list[dict[str, str]] = [
        await live_overview(request, {}),
        await live_sidebar(request, {"queue": MAIN}),
    ]
    for name in planted["queues"][:4]:
        regions.append(await live_queue(request, {"queue": name, "state": "failed"}))
        regions.append(await live_queue(request, {"queue": name, "state": "waiting"}))
    for job_id in planted["job_ids"][MAIN][:10]:
        regions.append(await live_job(request, {"queue": MAIN, "job_id": job_id}))
    for fragments_by_region in regions:
        for region, html in fragments_by_region.items():
            assert not html_problems(html), (region, html_problems(html))
            live_checked += 1
    # JSON twins are JSON (a browser never renders them as HTML).
    for path in ("/api/queues", f"/api/queues/{quote(MAIN)}", "/api/schedules",
                 "/api/workers", "/api/events", "/api/outbox",
                 f"/api/queues/{quote(MAIN)}/jobs?state=failed"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == "application/json", path
    report("xss", {"payloads": len(CORPUS), "queues": len(planted["queues"]),
                   "pages_checked": checked, "htmx_fragments": fragments,
                   "live_regions": live_checked, "statuses": statuses,
                   "seconds": round(time.monotonic() - started, 1)})


def test_the_check_finds_every_payload_when_unescaped() -> None:
    """The parser check itself: each payload, pasted unescaped where it is dangerous, is
    found (so a page that passes it really shows every payload as text)."""
    contexts = ["<p>{}</p>", '<a title="{}">t</a>', "<a title='{}'>t</a>", '<a href="{}">t</a>',
                "<textarea>{}</textarea>", "<title>{}</title><pre>{}</pre>"]
    for payload in CORPUS:
        if "{{7*7}}" in payload:
            assert html_problems(f"<p>{payload.replace('{{7*7}}', '49')}</p>")
            continue
        found = [c for c in contexts if html_problems(c.replace("{}", payload))]
        assert found, f"the check misses {payload!r} in every context"
    from markupsafe import escape

    for payload in CORPUS:
        for context in contexts[:3]:
            assert not html_problems(context.replace("{}", str(escape(payload)))), payload
