"""Scenario 6 of the fault suite (part 2): XSS payloads everywhere, no page runs one.

A corpus of payloads (script tags, event-handler attributes, attribute break-outs,
`javascript:` URLs, `</textarea>`, htmx attributes, template injection) is put in every
place a producer or an operator controls: queue names, job ids and names, job data, failure
reasons (a handler raising with the payload), job logs, progress, return values, schedule
names, flows, the audit log (an action named after a payload) and e-mail subject, sender and
HTML (through the development sink). Then every page of the dashboard is

- parsed with html.parser: no element or attribute came from a payload (no inline script,
  no `on*` attribute, no `javascript:` URL, no probe element, no `hx-on`), and `{{7*7}}`
  never renders 49;
- loaded in Chromium: `window.__xss` (which every payload tries to set) stays undefined, no
  dialog opens, and no Content-Security-Policy violation happens in a dashboard document.

The helpers here (`CORPUS`, `html_problems`, `asgi_request`) are shared with
test_bad_input.py and test_security.py.

Figures are printed (`pytest -s`) and written to test-artifacts/reliability/xss.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import re
import sys
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiosmtplib
import httpx
from bullmq import Job
from starlette.applications import Starlette

from mailqueue.manager import MailManager
from tests.waiting import eventually

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"

# Every payload tries to set window.__xss (or parent.__xss); each carries a marker the
# parser check recognises if it ever becomes markup.
CORPUS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=2">',
    '"><svg onload="window.__xss=3">',
    "'><svg/onload=window.__xss=4>",
    "javascript:window.__xss=5",
    "</textarea><script>window.__xss=6</script>",
    "</title></pre><script>window.__xss=7</script>",
    '<x-xss-probe hx-on:click="window.__xss=8">probe</x-xss-probe>',
    "tmpl{{7*7}}x ${7*7} #{7*7} {% raw %}",
    '<a href="javascript:window.__xss=9">link</a>',
    "<iframe srcdoc=\"<script>parent.__xss=10</script>\"></iframe>",
    '" onmouseover="window.__xss=11" x="',
    "' onfocus='window.__xss=12' autofocus x='",
    '<div class="xss-probe" hx-get="/queues/pause-all" hx-trigger="load">hx</div>',
    "<!-- --><style>body{display:none}</style>]]>",
    '<body onload="window.__xss=13">',
    "<math><mi xlink:href=\"javascript:window.__xss=14\">m</mi></math>",
]
# The raw text of a page must never hold these (the cores of the payloads, unescaped).
RAW_MARKERS = ["<script>window.__xss", "<img src=x onerror", "<svg onload", "<svg/onload",
               "<x-xss-probe", "<iframe srcdoc", '<div class="xss-probe"', "<body onload",
               "<style>body{display:none}", "<math><mi", '<a href="javascript:']
TEMPLATE_MARKER = "tmpl49x"  # what {{7*7}} would render to, in CORPUS[8]
SELF_HOST = "127.0.0.1:3000"
CSS_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
URL_ATTRS = {"href", "src", "action", "formaction", "xlink:href", "data", "poster",
             "background", "hx-get", "hx-post", "hx-put", "hx-delete", "hx-patch",
             "sse-connect"}


def queue_safe(payload: str) -> bool:
    """Queue names: 1-200 characters, no ':' and no surrounding spaces."""
    return ":" not in payload and payload == payload.strip() and 0 < len(payload) <= 200


def id_safe(payload: str) -> str:
    """A payload usable as a custom job id (BullMQ refuses ':' in one)."""
    return payload.replace(":", ";")


# --- the HTML check ------------------------------------------------------------------------


def _local_path(url: str) -> str:
    """The path of a URL of this dashboard (relative, or absolute on 127.0.0.1); else ''."""
    parts = urlsplit(url)
    if parts.scheme not in ("", "http", "https") or parts.netloc not in ("", SELF_HOST):
        return ""
    return parts.path


class _Scanner(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._script_depth = 0

    def _check(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        values = {name: (value or "") for name, value in attrs}
        where = f"<{tag} {' '.join(sorted(names))}>"
        if "xss" in tag or "xss-probe" in values.get("class", ""):
            self.problems.append(f"probe element {where}")
        if tag == "script" and not _local_path(values.get("src", "")).startswith("/static/"):
            self.problems.append(f"script not from /static/: {where} {values.get('src')!r}")
        if tag in ("iframe", "frame", "object", "embed", "base", "applet"):
            src = values.get("src", "")
            if not (tag == "iframe" and _local_path(src).startswith("/outbox/")
                    and "sandbox" in names
                    and "allow-scripts" not in values.get("sandbox", "")):
                self.problems.append(f"unexpected {where} src={src!r}")
        if tag == "meta" and values.get("http-equiv", "").lower() == "refresh":
            self.problems.append(f"meta refresh {values}")
        for name, value in values.items():
            if name.startswith("on") or name.startswith("hx-on") or name == "srcdoc":
                self.problems.append(f"event/srcdoc attribute {name}={value!r} on {where}")
            if name in URL_ATTRS:
                squeezed = "".join(value.split()).lower()
                if squeezed.startswith(("javascript:", "vbscript:", "data:text/html")):
                    self.problems.append(f"script URL {name}={value!r} on {where}")
            if name in ("hx-vals", "hx-vars", "hx-headers") and value.strip().startswith(
                    ("js:", "javascript:")):
                self.problems.append(f"htmx evaluated {name}={value!r} on {where}")
            if name in ("hx-trigger",) and "load" in value and "xss" in str(values):
                self.problems.append(f"htmx load trigger from a payload on {where}")
        if "hx-preserve" in names and not CSS_ID.match(values.get("id", "")):
            # htmx looks the element up by `#id`: a bad selector throws during live swaps.
            self.problems.append(f"hx-preserve id is not a CSS identifier: {values.get('id')!r}")
        if tag == "script":
            self._script_depth += 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._check(tag, attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._check(tag, attrs)
        if tag == "script":
            self._script_depth -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script_depth:
            self._script_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._script_depth and data.strip():
            self.problems.append(f"inline script: {data[:80]!r}")


def html_problems(html: str) -> list[str]:
    """What in `html` came from a payload: injected elements or attributes, rendered templates.

    Empty for a page that shows every payload as text.
    """
    scanner = _Scanner()
    scanner.feed(html)
    scanner.close()
    problems = list(scanner.problems)
    problems += [f"raw payload {m!r} in the page" for m in RAW_MARKERS if m in html]
    if TEMPLATE_MARKER in html:
        problems.append("{{7*7}} rendered as 49")
    return problems


# --- a raw ASGI request (no URL normalisation, exceptions caught) ---------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    error: str | None = None  # an exception the app raised (a 500)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def is_html(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/html")


async def asgi_request(
    app: Starlette, method: str, path: str, *, raw_path: bytes | None = None,
    query: bytes = b"", headers: dict[str, str] | None = None, body: bytes = b"",
    stream_wait: float = 1.0,
) -> RawResponse:
    """Call the app with exactly this path (decoded) and raw path, like a server would.

    A streaming answer (SSE) is read until its first body chunk (or `stream_wait` s), then
    the client disconnects. An exception escaping the app is a 500 with the traceback.
    """
    header_list = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                   for k, v in (headers or {}).items()]
    header_list.append((b"host", b"127.0.0.1:3000"))
    if body:
        header_list.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path,
        "raw_path": raw_path if raw_path is not None else quote(path).encode(),
        "query_string": query, "root_path": "", "headers": header_list,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 3000),
        "state": {},
    }
    sent_body = False
    disconnect = asyncio.Event()
    start: dict[str, Any] = {}
    chunks: list[bytes] = []
    got_body = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            if message.get("body"):
                chunks.append(message["body"])
            if message.get("body") or not message.get("more_body", False):
                got_body.set()

    task = asyncio.create_task(app(scope, receive, send))
    error: str | None = None
    try:
        # Until the app is done, or has begun to answer (a stream never ends by itself).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        stream_started: float | None = None
        while not task.done() and loop.time() < deadline:
            streaming = "text/event-stream" in dict(start.get("headers", [])).get(
                b"content-type", b"").decode("latin-1")
            if streaming:
                stream_started = stream_started or loop.time()
                # Its first event (a page's live regions come at once), or give up on it.
                if got_body.is_set() or loop.time() - stream_started > stream_wait:
                    break
            await asyncio.wait({task}, timeout=0.02)
        if not task.done():
            disconnect.set()  # the client goes away, as a browser leaving the page
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 5)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if not start:
                error = f"no answer within 30 s to {method} {path}"
        elif task.exception() is not None:
            import traceback

            exc = task.exception()
            assert exc is not None
            error = "".join(traceback.format_exception(exc))
    finally:
        if not task.done():
            task.cancel()
    headers_out = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in start.get("headers", [])}
    status = int(start.get("status", 500))
    if error is not None:
        status = 500
    return RawResponse(status, headers_out, b"".join(chunks), error)


def load_browser_support() -> Any:
    """tests/browser/conftest.py by path (its Chromium fixtures), once."""
    name = "_mailqueue_tests_browser_support"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "browser" / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def report(scenario: str, figures: dict[str, Any]) -> None:
    """One line of figures in test-artifacts/reliability/<scenario>.json, and printed."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{scenario}.json").write_text(json.dumps(figures) + "\n")
    print(f"\n[{scenario}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


_browser_support = load_browser_support()
chromium = _browser_support.chromium  # the session fixtures, collected from this module
browser = _browser_support.browser


# --- fixtures -------------------------------------------------------------------------------








# --- the data -------------------------------------------------------------------------------


MAIN = "xss-main"


async def plant_payloads(mail: MailManager, client: httpx.AsyncClient) -> dict[str, Any]:
    """Put every payload everywhere; returns the queues, job ids and outbox ids made."""
    queues = [MAIN] + [f"q{i}-{p}" for i, p in enumerate(CORPUS) if queue_safe(f"q-{p}")]
    job_ids: dict[str, list[str]] = {q: [] for q in queues}

    async def handler(data: Any, job: Job) -> Any:
        payload = data["payload"]
        await job.log(f"log line {payload}")
        await job.updateProgress({"step": payload})
        if data.get("fail"):
            raise RuntimeError(f"failed because {payload}")
        return {"result": payload}

    # The main queue: one failing and one completing job per payload, ids are payloads.
    jobs = []
    for i, payload in enumerate(CORPUS):
        for fail in (True, False):
            job_id = f"{'f' if fail else 'c'}{i}-{id_safe(payload)}"
            jobs.append({"name": payload, "data": {"payload": payload, "fail": fail,
                                                   "html": payload, payload: [payload]},
                         "opts": {"jobId": job_id, "attempts": 1}})
            job_ids[MAIN].append(job_id)
    await mail.add_jobs(MAIN, jobs)
    # A delayed and a waiting one (never processed: other queues have no worker).
    for q in queues[1:]:
        for i, payload in enumerate(CORPUS):
            job = await mail.add_job(q, payload, {"payload": payload}, jobId=f"w{i}")
            job_ids[q].append(str(job.id))
        delayed = await mail.add_job(q, CORPUS[0], {"payload": CORPUS[1]}, delay=3_600_000)
        job_ids[q].append(str(delayed.id))

    worker_name = "<svg/onload=window.__xss=15>"
    mail.start_worker(MAIN, {p: handler for p in CORPUS}, concurrency=4, name=worker_name)

    async def all_finished() -> bool:
        counts = await mail.queues.get_job_counts(MAIN)
        return counts.get("completed", 0) + counts.get("failed", 0) >= len(jobs)

    await eventually(all_finished, 30, f"the {len(jobs)} jobs of {MAIN} finished")

    # Schedules named after payloads.
    for i, payload in enumerate(CORPUS[:8]):
        await mail.schedule_job(queues[1], payload, {"payload": payload}, every=3_600_000,
                                scheduler_id=f"s{i}-{id_safe(payload)}")
    # A flow whose every name is a payload.
    flow = await mail.add_flow({
        "name": CORPUS[0], "queueName": queues[1], "data": {"p": CORPUS[2]},
        "opts": {"jobId": "flow-parent"},
        "children": [{"name": p, "queueName": queues[2], "data": {"p": p}}
                     for p in CORPUS[:4]],
    })
    # The audit log: an operator adds a job named after a payload (and fails another).
    page = await client.get("/")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text) or re.search(
        r'"X-CSRF-Token": "([^"]+)"', page.text)
    assert match, "no CSRF token on the overview"
    for payload in CORPUS[:6]:
        added = await client.post(
            f"/queues/{quote(MAIN, safe='')}/add-job",
            data={"name": payload, "data": json.dumps({"p": payload}),
                  "csrf_token": match.group(1)},
            headers={"HX-Request": "true"})
        assert added.status_code == 200, added.text
        assert not html_problems(added.text), html_problems(added.text)
    refused = await client.post(
        f"/queues/{quote(MAIN, safe='')}/add-job",
        data={"name": CORPUS[0], "data": CORPUS[1], "csrf_token": match.group(1)})
    assert refused.status_code == 422
    assert not html_problems(refused.text), html_problems(refused.text)

    # E-mail through the development sink: subject, sender name, text and HTML.
    sink = await mail.start_dev_sink()
    for payload in CORPUS:
        message = EmailMessage()
        message["From"] = f'"{payload.replace(chr(34), "")}" <app@example.com>'
        message["To"] = "ada@example.com"
        message["Subject"] = payload
        message.set_content(f"text part {payload}")
        message.add_alternative(f"<html><body>{''.join(CORPUS)}</body></html>",
                                subtype="html")
        await aiosmtplib.send(message, hostname=sink.host, port=sink.port, start_tls=False)
    outbox = [m["id"] for m in await mail.outbox.list_messages(100)]
    assert len(outbox) == len(CORPUS)
    return {"queues": queues, "job_ids": job_ids, "outbox": outbox, "flow": flow}


def page_paths(planted: dict[str, Any], browser: bool = False) -> list[tuple[str, int]]:
    """Every HTML page that shows a planted payload (paths with query strings), each with
    the status it answers; for the browser, fewer of each kind (one job page per payload,
    the states that hold jobs)."""
    q = lambda name: quote(name.replace("~", "~7E").replace("/", "~2F"), safe="")  # noqa: E731
    j = lambda job_id: quote(job_id, safe="")  # noqa: E731
    paths = ["/", "/?group=-", f"/?q={quote(CORPUS[0])}", "/schedules", "/workers",
             "/events", "/outbox"]
    for name in planted["queues"]:
        states = ("waiting", "delayed", "completed", "failed", "prioritized")
        if browser:
            states = ("completed", "failed") if name == MAIN else ("waiting",)
        for state in states:
            paths.append(f"/queues/{q(name)}?state={state}")
        for by in ("name", "data", "id")[: 1 if browser else 3]:
            paths.append(f"/queues/{q(name)}?" + urlencode({"q": CORPUS[0][:30], "by": by}))
        ids = planted["job_ids"][name]
        for job_id in (ids[::2] if name == MAIN else ids[:1]) if browser else ids[:40]:
            paths.append(f"/queues/{q(name)}/jobs/{j(job_id)}")
    for job_id in planted["job_ids"][MAIN][: 1 if browser else 6]:
        paths.append(f"/queues/{q(MAIN)}/jobs/{j(job_id)}/logs")
        paths.append(f"/queues/{q(MAIN)}/jobs/{j(job_id)}?logs_from=0")
    paths.append(f"/queues/{q(planted['queues'][1])}/jobs/flow-parent/flow")
    paths.append(f"/queues/{q(planted['queues'][1])}/jobs/flow-parent")
    for message_id in planted["outbox"][: 2 if browser else None]:
        paths.append(f"/outbox/{message_id}")
    shown = [(path, 200) for path in paths]
    # Error pages with a payload in the URL: unknown queue, job and message; a bad state.
    for payload in CORPUS[:4]:
        shown += [(f"/queues/{q('nope' + payload)}", 404),
                  (f"/queues/{q(MAIN)}/jobs/{j(payload)}", 404),
                  (f"/queues/{q(MAIN)}?state={quote(payload)}", 422),
                  (f"/outbox/{quote(payload, safe='')}", 404)]
    return shown


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


async def test_no_payload_runs_in_chromium(mail: MailManager, client: httpx.AsyncClient,
                                           live_server: str, browser: Any) -> None:
    started = time.monotonic()
    planted = await plant_payloads(mail, client)
    paths = page_paths(planted, browser=True)
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    violations: list[str] = []
    dialogs: list[str] = []
    errors: list[str] = []
    await context.expose_binding(
        "__reportCsp", lambda _source, text: violations.append(text))
    await context.add_init_script("""
document.addEventListener('securitypolicyviolation', (e) => {
  window.__reportCsp(`${e.documentURI} ${e.violatedDirective} ${e.blockedURI}`);
});
""")
    page = await context.new_page()

    async def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    ran: list[str] = []
    try:
        for path, _status in paths:
            await page.goto(live_server + path, wait_until="load")
            await page.wait_for_timeout(150)  # htmx `load` triggers, SSE swaps
            for frame in page.frames:
                with contextlib.suppress(Exception):
                    value = await frame.evaluate(
                        "() => [typeof window.__xss, typeof parent.__xss]")
                    if value != ["undefined", "undefined"]:
                        ran.append(f"{path} frame {frame.url}: {value}")
        # The mail's own HTML, opened as a top-level page: its CSP sandboxes it.
        await page.goto(f"{live_server}/outbox/{planted['outbox'][0]}/html")
        await page.wait_for_timeout(200)
        value = await page.evaluate("() => typeof window.__xss")
        if value != "undefined":
            ran.append(f"outbox html top-level: {value}")
    finally:
        await context.close()
    # The mail HTML route's CSP refuses its scripts (that is the point); a violation in any
    # dashboard document would mean a payload became markup.
    dashboard_violations = [v for v in violations if "/html " not in v]
    assert not ran, ran
    assert not dialogs, dialogs
    assert not dashboard_violations, dashboard_violations
    assert not errors, errors
    report("xss-chromium", {"pages_visited": len(paths) + 1, "scripts_run": len(ran),
                            "dialogs": len(dialogs),
                            "csp_violations_in_mail_html": len(violations)
                            - len(dashboard_violations),
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
