"""Issue 13, point 5 on the dashboard: /templates (every template, built-in and
MAIL_TEMPLATE_DIR's, with its variables and where they come from), /templates/{name} (a
preview rendered by the worker's own code, errors shown with their line, never a 500; the
HTML in a sandboxed frame under a CSP that runs and loads nothing) and "send a test" (a
real job on the default queue that a worker sends to the SMTP sink; CSRF, read-only,
audit). Real Redis, real worker, real SMTP sink."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from mailqueue.dashboard.app import create_app
from mailqueue.mail.handlers import EmailHandlers, create_email_handlers
from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from mailqueue.settings import Settings
from tests.dashboard.conftest import csrf_token
from tests.waiting import eventually

HOSTILE = "<img src=x onerror=alert(1)>"
FRAME_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
             "frame-ancestors 'self'; sandbox")
TEMPLATES = {
    # A template of one's own, with a header comment like the built-ins'.
    "digest/subject.txt": "{{ count }} updates for {{ team }}",
    "digest/body.html": (
        "{#-\n  digest — the day's updates.\n  Required: team, count.\n"
        "  Optional: footer (default \"See you tomorrow\").\n-#}\n"
        "{% extends \"_layout.html\" %}\n{% block content %}\n<p>{{ count }} for {{ team }}</p>\n"
        "<p>{{ footer | default(\"See you tomorrow\") }}</p>\n{% endblock %}\n"),
    "digest/body.txt": "{{ count }} for {{ team }}\n",
    # A syntax error on line 3 of body.html.
    "broken/subject.txt": "Broken",
    "broken/body.html": "<p>one</p>\n<p>two</p>\n<p>{{ name }</p>\n",
    "broken/body.txt": "text",
    # No header comment; uses a variable it does not guard (a render error on line 2).
    "strict/subject.txt": "Strict",
    "strict/body.html": "<p>Hello</p>\n<p>{{ user.first_name }}</p>\n",
    "strict/body.txt": "Hello {{ user.first_name | default('you') }}",
}


@pytest.fixture
def template_dir(tmp_path: Path) -> Path:
    root = tmp_path / "mail-templates"
    for path, text in TEMPLATES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


@pytest.fixture
def settings(redis_url: str, prefix: str, tmp_path: Path, template_dir: Path) -> Settings:
    return Settings(_env_file=None,  # type: ignore[call-arg]
                    redis_url=redis_url, queue_prefix=prefix, data_dir=tmp_path / "data",
                    job_backoff_delay_ms=100, mail_template_dir=str(template_dir))


@pytest.fixture
async def handlers(mail: MailManager, sink: MailSink) -> AsyncIterator[EmailHandlers]:
    made = create_email_handlers(mail.settings.model_copy(update={"smtp_url": sink.url}))
    yield made
    await mail.workers.close()
    await made.close()


async def preview(client: httpx.AsyncClient, name: str, variables: str) -> httpx.Response:
    return await client.get(f"/templates/{name}/preview", params={"variables": variables},
                            headers={"HX-Request": "true"})


async def test_the_list_shows_every_template_with_its_variables_and_their_origin(
        client: httpx.AsyncClient) -> None:
    page = await client.get("/templates")
    assert page.status_code == 200
    text = page.text
    for name in ("welcome", "newsletter", "reset-password", "notification", "digest",
                 "broken", "strict"):
        assert f'href="http://127.0.0.1:3000/templates/{name}"' in text, name

    def card(name: str) -> str:
        start = text.index(f'/templates/{name}">{name}</a>')
        return text[start:text.index("</section>", start)]

    notification = card("notification")
    assert "built-in" in notification
    for var in ("title", "message"):
        row = notification[notification.index(f"<code>{var}</code>"):]
        row = row[:row.index("</tr>")]
        assert "required" in row and "REQUIRED_VARIABLES" in row and "header comment" in row
    label = notification[notification.index("<code>action_label</code>"):]
    assert "optional" in label[:400] and "<code>Open</code>" in label[:400]
    reset = card("reset-password")
    assert "<code>60</code>" in reset  # expires_in_minutes (default 60)
    digest = card("digest")
    assert "MAIL_TEMPLATE_DIR" in digest and ">The day&#39;s updates.<" in digest
    assert "<code>See you tomorrow</code>" in digest
    strict = card("strict")
    assert "<code>user</code>" in strict and "used in the template&#39;s source" in strict

    api = (await client.get("/api/templates")).json()
    by_name = {t["name"]: t for t in api["templates"]}
    required = {v["name"] for v in by_name["reset-password"]["variables"] if v["required"]}
    assert required == {"reset_url"}
    assert by_name["digest"]["origin"] == "MAIL_TEMPLATE_DIR"
    assert by_name["welcome"]["origin"] == "built-in"
    assert by_name["notification"]["sample"]["title"]  # samples for the required ones


async def test_a_preview_renders_subject_html_frame_and_text_from_sample_data(
        client: httpx.AsyncClient) -> None:
    page = await client.get("/templates/notification")
    assert page.status_code == 200
    text = page.text
    # Prefilled with samples for its variables; the preview of those is in the page.
    area = re.search(r'<textarea id="sample-variables"[^>]*>(.*?)</textarea>', text, re.S)
    assert area is not None
    sample = json.loads(html.unescape(area.group(1)))
    assert sample["title"] and sample["message"]
    assert f'class="preview-subject">{html.escape(sample["title"], quote=True)}<' in text
    frame = re.search(r"<iframe[^>]*>", text)
    assert frame is not None
    assert re.search(r"\bsandbox\b(?!=)", frame.group(0)) and "allow-" not in frame.group(0)
    src = html.unescape(re.search(r'src="([^"]+)"', frame.group(0)).group(1))  # type: ignore[union-attr]
    assert src.startswith("/templates/notification/preview.html?variables=")
    served = await client.get(src)
    assert served.status_code == 200
    assert served.headers["content-security-policy"] == FRAME_CSP
    assert served.headers["x-frame-options"] == "SAMEORIGIN"
    assert html.escape(sample["title"], quote=False) in served.text
    assert 'class="mail-text preview-text"' in text and "It stays available" in text

    # htmx: the fragment alone, re-rendered from the edited data.
    answer = await preview(client, "notification",
                           json.dumps({"title": "Edited title", "message": "Edited body"}))
    assert answer.status_code == 200 and "<html" not in answer.text
    assert 'class="preview-subject">Edited title<' in answer.text
    assert "Edited body" in answer.text and "preview.html?variables=" in answer.text
    # Its JSON twin.
    api = (await client.get("/api/templates/welcome",
                            params={"variables": '{"name": "Grace"}'})).json()
    assert api["preview"]["subject"] == "Welcome to mailqueue, Grace!"
    assert api["preview"]["error"] is None and "Grace" in api["preview"]["text"]


async def test_hostile_variables_are_escaped_in_every_part(client: httpx.AsyncClient) -> None:
    variables = json.dumps({"title": HOSTILE, "message": HOSTILE, "name": HOSTILE})
    answer = await preview(client, "notification", variables)
    assert answer.status_code == 200
    assert HOSTILE not in answer.text and "&lt;img src=x onerror=alert(1)&gt;" in answer.text
    page = await client.get("/templates/notification", params={"variables": variables})
    assert HOSTILE not in page.text
    frame = await client.get("/templates/notification/preview.html",
                             params={"variables": variables})
    assert HOSTILE not in frame.text  # the mail's own autoescape, and the CSP besides
    assert frame.headers["content-security-policy"] == FRAME_CSP


async def test_errors_are_shown_with_their_line_never_a_500(client: httpx.AsyncClient) -> None:
    # Bad JSON in the sample data: its line.
    bad = '{\n  "title": "x",\n  "message": oops\n}'
    answer = await preview(client, "notification", bad)
    assert answer.status_code == 200
    assert "The sample data is not JSON" in answer.text and "line 3" in answer.text
    assert "&#34;message&#34;: oops" in answer.text or "&quot;message&quot;: oops" in answer.text \
        or '"message": oops' in answer.text
    # Not an object.
    assert "must be a JSON object" in (await preview(client, "notification", "[1]")).text
    # A missing required variable: named, and where the template uses it.
    answer = await preview(client, "notification", '{"message": "m"}')
    assert "needs &#39;title&#39;" in answer.text
    assert "notification/subject.txt</code>, line 1" in answer.text
    # A syntax error in a template of one's own: file and line, and the line itself.
    for path in ("/templates/broken", "/templates/broken/preview?variables=%7B%7D"):
        answer = await client.get(path, headers={"HX-Request": "true"} if "?" in path else {})
        assert answer.status_code == 200, path
        assert "unexpected &#39;}&#39;" in answer.text
        assert "broken/body.html</code>, line 3" in answer.text
        assert "&lt;p&gt;{{ name }&lt;/p&gt;" in answer.text
    # A render error (an undefined variable) in one: its line, found in the traceback.
    answer = await preview(client, "strict", "{}")
    assert "&#39;user&#39; is undefined" in answer.text
    assert "strict/body.html</code>, line 2" in answer.text
    # The frame of a preview that does not render is empty, not an error page.
    frame = await client.get("/templates/broken/preview.html", params={"variables": "{}"})
    assert frame.status_code == 422 and frame.text == ""
    api = (await client.get("/api/templates/strict", params={"variables": "{}"})).json()
    assert api["preview"]["error"]["line"] == 2
    assert api["preview"]["error"]["file"] == "strict/body.html"


@pytest.mark.parametrize("path", [
    "/templates/...", "/templates/..%2F..%2Fetc%2Fpasswd", "/templates/_layout.html",
    "/templates/%2e%2e", "/templates/welcome%2Fbody.html", "/templates/WELCOME",
    "/api/templates/..", "/templates/../etc/passwd", "/templates/nope/preview.html",
    "/templates/_layout.html/preview.html?variables=%7B%7D",
    "/templates/..%2Fmail-templates%2Fdigest/preview?variables=%7B%7D",
])
async def test_only_known_templates_are_looked_at(client: httpx.AsyncClient, path: str) -> None:
    answer = await client.get(path)
    assert answer.status_code == 404, path
    assert "<p>{{ count }}" not in answer.text and "root:" not in answer.text


async def test_send_a_test_enqueues_a_real_job_that_the_sink_receives(
        mail: MailManager, client: httpx.AsyncClient, sink: MailSink,
        handlers: EmailHandlers) -> None:
    token = await csrf_token(client, "/templates/notification")
    variables = json.dumps({"title": "Test of the week", "message": "Hello", "to": "x@example.com",
                            "cc": "y@example.com"})
    answer = await client.post("/templates/notification/send-test",
                               data={"address": "ada@example.com", "variables": variables},
                               headers={"HX-Request": "true", "X-CSRF-Token": token})
    assert answer.status_code == 200, answer.text
    found = re.search(r"job (\S+) on ([^\s<]+)", answer.text)
    assert found is not None and "Queued a test of notification to ada@example.com" in answer.text
    job_id, queue = found.group(1).rstrip(":"), found.group(2)
    assert queue == mail.settings.default_queue
    assert f'href="/queues/{queue}/jobs/{quote(job_id, safe="")}"' in answer.text
    job = await mail.queues.get_job_view(queue, job_id)
    assert job["name"] == "send-notification"
    assert job["data"]["to"] == "ada@example.com" and "cc" not in job["data"]
    entry = (await mail.get_audit_log(1))[0]
    assert (entry["action"], entry["target"], entry["result"]) == (
        "template-send-test", "notification", "ok")

    # A template of one's own goes as send-email with its name; the JSON twin.
    answer = await client.post("/api/templates/digest/send-test", headers={"X-CSRF-Token": token},
                               json={"address": "grace@example.com",
                                     "variables": {"team": "Ops", "count": 3}})
    assert answer.status_code == 200, answer.text
    digest_job = await mail.queues.get_job_view(queue, answer.json()["job_id"])
    assert digest_job["name"] == "send-email" and digest_job["data"]["template"] == "digest"

    mail.start_worker(queue, handlers)
    messages = await eventually(lambda: _received(sink, 2))
    by_to = {m["envelope_to"][0]: m for m in messages}
    assert set(by_to) == {"ada@example.com", "grace@example.com"}  # never x@ nor y@
    assert by_to["ada@example.com"]["subject"] == "Test of the week"
    assert by_to["grace@example.com"]["subject"] == "3 updates for Ops"


async def _received(sink: MailSink, n: int) -> list[dict[str, object]] | None:
    messages = await sink.outbox.list_messages(10)
    return list(messages) if len(messages) >= n else None


async def test_send_a_test_refuses_bad_input_in_one_line_and_audits_it(
        mail: MailManager, client: httpx.AsyncClient) -> None:
    token = await csrf_token(client, "/templates/notification")
    headers = {"HX-Request": "true", "X-CSRF-Token": token}
    cases = [
        ({"address": "", "variables": "{}"}, "Give the address"),
        ({"address": "ada@example.com", "variables": "{oops"}, "not JSON"),
        ({"address": "not an address", "variables": '{"title": "t", "message": "m"}'},
         "not an address"),
        ({"address": "ada@example.com", "variables": '{"message": "m"}'}, "needs"),
    ]
    for form, said in cases:
        answer = await client.post("/templates/notification/send-test", data=form,
                                   headers=headers)
        assert answer.status_code == 400, (form, answer.text)
        assert said in html.unescape(answer.text), (form, answer.text)
        entry = (await mail.get_audit_log(1))[0]
        assert (entry["action"], entry["result"]) == ("template-send-test", "refused")
    assert not await mail.queues.queue_exists(mail.settings.default_queue)  # nothing queued
    # Without the token, or to a template that is not one: refused.
    assert (await client.post("/templates/notification/send-test",
                              data={"address": "a@example.com"})).status_code == 403
    unknown = await client.post("/templates/..%2Fx/send-test", headers=headers,
                                data={"address": "a@example.com"})
    assert unknown.status_code == 404


async def test_read_only_previews_but_cannot_send(mail: MailManager) -> None:
    app = create_app(mail.settings.model_copy(update={"dashboard_read_only": True}), mail)
    app.state.mail = mail
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1:3000") as viewer:
        page = await viewer.get("/templates/welcome")
        assert page.status_code == 200 and "Send a test" not in page.text
        assert "preview-subject" in page.text
        token = await csrf_token(viewer, "/templates/welcome")
        refused = await viewer.post("/templates/welcome/send-test",
                                    data={"csrf_token": token, "address": "a@example.com"})
        assert refused.status_code == 403
        refused = await viewer.post("/api/templates/welcome/send-test",
                                    headers={"X-CSRF-Token": token},
                                    json={"address": "a@example.com"})
        assert refused.status_code == 403
    assert not await mail.queues.queue_exists(mail.settings.default_queue)  # nothing queued
