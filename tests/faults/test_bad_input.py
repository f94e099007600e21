"""Scenario 6 of the fault suite (part 1): bad input, property-based, and odd jobs.

- Every route of the route table (`dashboard.app.routes()`, the static Mount included) gets
  random path parameters (slashes, unicode, `..`, NUL, very long text, XSS payloads), random
  query strings, form bodies and JSON, with valid credentials and CSRF token: never a 500,
  never an exception, never a payload unescaped in an HTML answer (xss_corpus.html_problems).
  Requests are made at the ASGI level (asgi_raw.asgi_request), so paths reach the app
  exactly as a server would pass them (no client-side normalisation of `..`).
- Jobs no page may choke on: data that is not JSON (a hash written by a buggy producer),
  10 MB of data, ids with slashes and unicode, and Node-made jobs next to Python-made ones.

Figures are printed (`pytest -s`) and written to test-artifacts/reliability/bad-input.json.
"""

from __future__ import annotations

import base64
import collections
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from mailqueue.dashboard.app import create_app, routes
from mailqueue.manager import MailManager
from tests.faults.asgi_raw import asgi_request
from tests.faults.desk_seed import seed_desk
from tests.faults.figures import report
from tests.faults.xss_corpus import CORPUS, html_problems

USER, PASSWORD = "admin", "fuzz-secret"
TOKEN = "t" * 43  # a CSRF token of the right shape, sent as cookie and header/field
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
EXAMPLES_PER_ROUTE = 25
PARAM = re.compile(r"{([a-z_]+)(?::[a-z]+)?}")

ROUTE_TABLE: list[Route | Mount] = routes()
ROUTE_IDS = [r.name or r.path for r in ROUTE_TABLE]
STATS: collections.Counter[str] = collections.Counter()


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
async def app(mail: MailManager) -> AsyncIterator[Starlette]:
    settings_ = mail.settings.model_copy(update={"dashboard_auth": f"{USER}:{PASSWORD}"})
    application = create_app(settings_, mail)
    application.state.mail = mail
    application.state.live_hub = None
    yield application
    if application.state.live_hub is not None:
        await application.state.live_hub.close()


@pytest.fixture
async def seeded(mail: MailManager) -> dict[str, str]:
    """Real names for the path parameters, so random queries also reach real data."""
    await mail.add_job("fuzz", "send", {"to": "ada@example.com"}, jobId="j1")
    await mail.add_job("fuzz", "send", {"to": "bob@example.com"}, jobId="a/b ü")
    await mail.add_job("fuzz", "later", {}, delay=3_600_000)
    await mail.schedule_job("fuzz", "tick", {}, every=3_600_000, scheduler_id="s1")
    from email.message import EmailMessage

    import aiosmtplib

    sink = await mail.start_dev_sink()
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "hi"
    message.set_content("hello")
    message.add_alternative("<p>hello</p>", subtype="html")
    await aiosmtplib.send(message, hostname=sink.host, port=sink.port, start_tls=False)
    message_id = (await mail.outbox.list_messages(1))[0]["id"]
    return {"name": "fuzz", "queue": "fuzz", "job_id": "j1", "scheduler_id": "s1",
            "message_id": message_id, "path": "app.css",
            **await seed_desk(mail, "fuzz", "j1")}


# --- strategies -----------------------------------------------------------------------------

ODD = ["..", "../..", "../../mailqueue/settings.py", "/", "//", "a/b", ".", "~2F", "~7E",
       "%2F", "%2e%2e%2f", "%252e%252e%252f", "%00", "\x00", "ü😀", "名前", " ", ":", "a:b",
       "\\..\\", "\ufeff", "\u202e", "\r\n", "?", "#", "&", "1-0", "99999999999999999999-0",
       "-1", "0", "NaN", "[]", "{}", "null"]


@st.composite
def long_text(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(["x", "ü", "/", "😀", ".", "%"])) * draw(
        st.integers(300, 20_000))


def param_text(real: str) -> st.SearchStrategy[str]:
    piece = st.one_of(
        st.just(real), st.sampled_from(ODD), st.sampled_from(CORPUS),
        st.text(min_size=1, max_size=30), long_text(),
    )
    return st.one_of(piece, st.lists(piece, min_size=2, max_size=3).map("/".join))


QUERY_KEYS = ["state", "page", "per_page", "sort", "by", "q", "logs_from", "start", "view",
              "queue", "job_id", "queues", "last_id", "group", "flow_queue", "name", "limit"]
QUERY_VALUES = st.one_of(
    st.sampled_from(["waiting", "failed", "completed", "delayed", "asc", "desc", "id",
                     "data", "name", "queue", "job", "overview", "flow", "events", "sidebar",
                     "0", "-1", "1e9", "99999999999999999999", "fuzz", "1", "fuzz,nope"]),
    st.sampled_from(ODD), st.sampled_from(CORPUS), st.text(max_size=40),
    st.integers().map(str), long_text(),
)
QUERY = st.one_of(
    st.lists(st.tuples(st.one_of(st.sampled_from(QUERY_KEYS), st.text(max_size=10)),
                       QUERY_VALUES), max_size=6).map(lambda pairs: urlencode(pairs).encode()),
    st.binary(max_size=60).map(lambda b: b.replace(b" ", b"+")),
)
FORM_KEYS = ["name", "data", "opts", "state", "grace", "delayed", "confirm_name", "force",
             "job_id", "attempts", "delay"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=30) | st.sampled_from(CORPUS),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    """(headers, body) of a POST: a form, JSON, or garbage claiming to be one of them."""
    kind = draw(st.sampled_from(["form", "json", "json-object", "garbage", "empty"]))
    if kind == "form":
        pairs = draw(st.lists(st.tuples(st.sampled_from(FORM_KEYS) | st.text(max_size=8),
                                        QUERY_VALUES), max_size=6))
        pairs.append(("csrf_token", TOKEN))
        return ({"content-type": "application/x-www-form-urlencoded"},
                urlencode(pairs).encode())
    if kind == "json-object":
        value = draw(st.dictionaries(st.sampled_from(FORM_KEYS), JSON_VALUES, max_size=6))
        return {"content-type": "application/json", "x-csrf-token": TOKEN}, json.dumps(
            value).encode()
    if kind == "json":
        return ({"content-type": "application/json", "x-csrf-token": TOKEN},
                json.dumps(draw(JSON_VALUES)).encode())
    if kind == "garbage":
        content_type = draw(st.sampled_from(["application/json",
                                             "application/x-www-form-urlencoded",
                                             "multipart/form-data; boundary=x", "text/plain"]))
        return ({"content-type": content_type, "x-csrf-token": TOKEN},
                draw(st.binary(max_size=200)))
    return {"x-csrf-token": TOKEN}, b""


def fill(template: str, values: dict[str, str]) -> str:
    return PARAM.sub(lambda m: values[m.group(1)], template)


# --- the property ---------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTE_TABLE, ids=ROUTE_IDS)
@settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
async def test_no_route_answers_500_or_reflects_a_payload(
    route: Route | Mount, data: st.DataObject, app: Starlette, seeded: dict[str, str]
) -> None:
    if isinstance(route, Mount):
        template, names = route.path + "/{path}", ["path"]
        methods = ["GET", "HEAD"]
    else:
        template, names = route.path, PARAM.findall(route.path)
        methods = sorted(route.methods or ["GET"])
    values = {n: data.draw(param_text(seeded[n]), label=n) for n in names}
    path = fill(template, values)
    method = data.draw(st.sampled_from([*methods, "PUT", "DELETE"]) if data.draw(
        st.integers(0, 9)) == 0 else st.sampled_from(methods), label="method")
    raw_path = quote(path, safe=data.draw(st.sampled_from(["/", "/~:@", ""]), label="safe"))
    if raw_path and not raw_path.startswith("/"):
        raw_path = "/" + raw_path
    headers = {"authorization": AUTH, "cookie": f"mq_csrf={TOKEN}"}
    if data.draw(st.booleans(), label="htmx"):
        headers["hx-request"] = "true"
    if data.draw(st.booleans(), label="accept json"):
        headers["accept"] = "application/json"
    body = b""
    if method not in ("GET", "HEAD"):
        extra, body = data.draw(bodies(), label="body")
        headers.update(extra)
    query = data.draw(QUERY, label="query")
    response = await asgi_request(app, method, path, raw_path=raw_path.encode(), query=query,
                                  headers=headers, body=body)
    STATS[f"{response.status // 100}xx"] += 1
    STATS["requests"] += 1
    assert response.error is None, f"{method} {path!r}?{query!r}\n{response.error}"
    allowed_5xx = route.name == "health" and response.status == 503
    assert response.status < 500 or allowed_5xx, (method, path, query, response.status,
                                                  response.text[:500])
    if response.is_html:
        problems = html_problems(response.text)
        assert not problems, (method, path, query, problems)
        STATS["html_checked"] += 1


def test_every_route_is_fuzzed() -> None:
    """The parametrisation above is the route table: a new route is fuzzed by itself."""
    assert len(ROUTE_TABLE) == len(routes()) > 50
    assert any(isinstance(r, Mount) for r in ROUTE_TABLE)
    assert {"live", "api_event_stream", "static"} <= set(ROUTE_IDS)


# --- odd jobs -------------------------------------------------------------------------------


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3000",
                                 auth=(USER, PASSWORD)) as c:
        yield c


def qpath(name: str) -> str:
    return quote(name.replace("~", "~7E").replace("/", "~2F"), safe="")


def jpath(queue: str, job_id: str, suffix: str = "", api: bool = False) -> str:
    return f"{'/api' if api else ''}/queues/{qpath(queue)}/jobs/{quote(job_id, safe='')}{suffix}"


async def test_non_json_data_from_another_producer(mail: MailManager, client: httpx.AsyncClient,
                                                   redis_client: Any) -> None:
    """A job hash written by hand (a buggy Node app): data `not json{`. Every page renders
    and says the data is not JSON."""
    queue = "mixed"
    await mail.add_job(queue, "good", {"to": "ada@example.com"}, jobId="good")
    key = f"{mail.settings.queue_prefix}:{queue}"
    now = int(time.time() * 1000)
    await redis_client.hset(f"{key}:bad", mapping={
        "name": "broken", "data": "not json{", "opts": "{}", "timestamp": now, "delay": 0,
        "priority": 0, "attemptsMade": 0, "atm": 0})
    await redis_client.lpush(f"{key}:wait", "bad")
    pages = ["/", f"/queues/{queue}", f"/queues/{queue}?q=json&by=data",
             f"/queues/{queue}?q=bad&by=id", jpath(queue, "bad"), jpath(queue, "bad", "/logs"),
             jpath(queue, "bad", "/flow")]
    for path in pages:
        page = await client.get(path)
        assert page.status_code == 200, (path, page.status_code, page.text[-2000:])
        assert not html_problems(page.text), path
    job_page = (await client.get(jpath(queue, "bad"))).text
    assert "not json{" in job_page
    assert "not JSON" in job_page, "the job page does not say the data is not JSON"
    api = await client.get(jpath(queue, "bad", api=True))
    assert api.status_code == 200, api.text
    assert "not json{" in json.dumps(api.json())
    listing = await client.get(f"/api/queues/{queue}/jobs")
    assert listing.status_code == 200, listing.text
    assert {j["id"] for j in listing.json()["jobs"]} == {"good", "bad"}
    download = await client.get(jpath(queue, "bad", "/data.json"))
    assert download.status_code == 200 and download.text == "not json{"


async def test_ten_megabytes_of_data_keep_pages_small(mail: MailManager,
                                                      client: httpx.AsyncClient) -> None:
    blob = "x" * (10 * 1024 * 1024)
    await mail.add_job("big", "huge", {"blob": blob, "to": "ada@example.com"}, jobId="huge")
    sizes = {}
    for path in ("/", "/queues/big", "/queues/big?q=xxxx&by=data", jpath("big", "huge"),
                 jpath("big", "huge", api=True), "/api/queues/big/jobs"):
        started = time.monotonic()
        response = await client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        sizes[path] = (len(response.content), round(time.monotonic() - started, 2))
        assert len(response.content) < 400_000, (path, len(response.content))
    download = await client.get(jpath("big", "huge", "/data.json"))
    assert len(download.content) > 10 * 1024 * 1024
    STATS["ten_mb_job_page_bytes"] = sizes[jpath("big", "huge")][0]
    STATS["ten_mb_job_page_seconds_x100"] = int(sizes[jpath("big", "huge")][1] * 100)


ODD_IDS = ["a/b", "a/b/c/flow", "x/../y", "ü😀 名前", "?q=1#frag", "%2F%00", "~2F~7E",
           "dot.", "ends/", "/starts", "sp ace", "a\\b", "data.json", "logs"]


async def test_job_ids_with_slashes_and_unicode(mail: MailManager,
                                                client: httpx.AsyncClient) -> None:
    queue = "ids/ü"  # a queue name with a slash too
    for job_id in ODD_IDS:
        await mail.add_job(queue, "odd", {"id": job_id}, jobId=job_id)
    listing = await client.get(f"/queues/{qpath(queue)}")
    assert listing.status_code == 200, listing.text[-2000:]
    assert not html_problems(listing.text)
    links = re.findall(r'<a href="([^"]*/jobs/[^"]+)"[^>]*>', listing.text)
    assert len(links) == len(ODD_IDS), links
    for link in links:
        path = link.replace("http://127.0.0.1:3000", "")
        page = await client.get(path)
        assert page.status_code == 200, (path, page.status_code)
    for job_id in ODD_IDS:
        page = await client.get(jpath(queue, job_id))
        assert page.status_code == 200, (job_id, page.status_code)
        assert not html_problems(page.text), job_id
        api = (await client.get(jpath(queue, job_id, api=True))).json()
        assert api["job"]["id"] == job_id and api["job"]["data"] == {"id": job_id}
        for suffix in ("/logs", "/flow", "/data.json"):
            response = await client.get(jpath(queue, job_id, suffix))
            assert response.status_code == 200, (job_id, suffix, response.status_code)
    STATS["odd_ids"] = len(ODD_IDS)


# --- Node-made and Python-made jobs side by side --------------------------------------------





async def test_node_and_python_jobs_side_by_side(mail: MailManager, client: httpx.AsyncClient,
                                                 node: Any) -> None:
    queue = "both"
    await node.run("add", queue=queue, jobs=[
        {"name": f"node {p}", "data": {"from": "node", "p": p}, "opts": {"jobId": f"n{i}"}}
        for i, p in enumerate(CORPUS[:5])])
    for i, p in enumerate(CORPUS[:5]):
        await mail.add_job(queue, f"python {p}", {"from": "python", "p": p}, jobId=f"p{i}")
    listing = await client.get(f"/api/queues/{queue}/jobs")
    assert listing.status_code == 200
    assert {j["id"] for j in listing.json()["jobs"]} == {f"{s}{i}" for s in "np"
                                                        for i in range(5)}
    page = await client.get(f"/queues/{queue}")
    assert page.status_code == 200 and not html_problems(page.text)
    for job_id in [f"{s}{i}" for s in "np" for i in range(5)]:
        response = await client.get(jpath(queue, job_id))
        assert response.status_code == 200, job_id
        assert not html_problems(response.text), job_id
        made_by = (await client.get(jpath(queue, job_id, api=True))).json()["job"]["data"]
        assert made_by["from"] == ("node" if job_id[0] == "n" else "python")
    STATS["node_and_python_jobs"] = 10


def test_write_figures() -> None:
    """Last in the file: the figures of the run (requests, answers by class, pages checked)."""
    report("bad-input", {"routes": len(ROUTE_TABLE), "examples_per_route": EXAMPLES_PER_ROUTE,
                         **dict(sorted(STATS.items()))})
