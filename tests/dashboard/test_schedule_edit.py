"""Editing a job scheduler on /schedules (issue 14): pattern or interval, data and time zone,
a server-side preview of the next runs as one types (an invalid pattern: its one line, never
a 500), saved under the same id, audited, refused without write access."""

from __future__ import annotations

import html
import itertools
import re
from datetime import UTC, datetime

import httpx

from mailqueue.dashboard.app import create_app
from mailqueue.manager import MailManager
from tests.dashboard.conftest import csrf_token

HX = {"HX-Request": "true"}


def _runs(fragment: str) -> list[str]:
    return re.findall(r"<li>(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC) ", fragment)


async def test_each_scheduler_has_an_edit_form_with_its_next_runs(
        client: httpx.AsyncClient, mail: MailManager) -> None:
    await mail.schedule_job("emails", "send-digest", {"list": "weekly"}, cron="30 8 * * 1-5",
                            tz="Europe/Paris", scheduler_id="digest")
    page = (await client.get("/schedules")).text
    form = page[page.index('id="schedule-edit-1"'):]
    form = form[:form.index("</details>")]
    assert 'name="cron" value="30 8 * * 1-5"' in form
    assert 'name="tz" value="Europe/Paris"' in form
    assert "&#34;list&#34;: &#34;weekly&#34;" in form or "&quot;list&quot;" in form
    runs = _runs(form)
    assert len(runs) == 5
    for run in runs:  # 8:30 in Paris: 6:30 or 7:30 UTC, on weekdays
        when = datetime.strptime(run, "%Y-%m-%d %H:%M:%S UTC")
        assert when.minute == 30 and when.hour in (6, 7) and when.weekday() < 5, run
    # The preview only reads the timing fields (never the CSRF token into a URL).
    assert 'hx-params="cron,every_ms,tz"' in form


async def test_preview_as_one_types(client: httpx.AsyncClient) -> None:
    answer = await client.get("/schedules/preview", headers=HX,
                              params={"cron": "0 9 * * *", "every_ms": "", "tz": ""})
    assert answer.status_code == 200
    runs = _runs(answer.text)
    assert len(runs) == 5 and all(r.endswith("09:00:00 UTC") for r in runs)
    days = [datetime.strptime(r, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC) for r in runs]
    assert all((b - a).days == 1 for a, b in itertools.pairwise(days))
    every = await client.get("/api/schedules/preview", params={"every_ms": "90000"})
    ms = [r["ms"] for r in every.json()["runs"]]
    assert len(ms) == 5 and {b - a for a, b in itertools.pairwise(ms)} == {90_000}


async def test_an_invalid_pattern_is_one_line_never_a_500(client: httpx.AsyncClient) -> None:
    for params, reason in [
        ({"cron": "61 * * * *"}, "Bad cron pattern &#39;61 * * * *&#39;"),
        ({"cron": "* * *"}, "expected 5 fields"),
        ({"cron": "0 9 * * *", "tz": "Mars/Olympus"}, "Unknown time zone"),
        ({"cron": "0 9 * * *", "every_ms": "1000"}, "not both"),
        ({}, "Give a cron pattern or an interval"),
        ({"every_ms": "soon"}, "every is a whole number of ms"),
        ({"cron": "<script>alert(1)</script> * * * *"}, "&lt;script&gt;"),
    ]:
        answer = await client.get("/schedules/preview", headers=HX, params=params)
        assert answer.status_code == 200, params
        assert reason in answer.text, (params, answer.text)
        assert "<script>" not in answer.text and "<li>" not in answer.text
        assert answer.text.strip().count("\n") == 0, answer.text
        api = await client.get("/api/schedules/preview", params=params)
        assert api.status_code == 422 and "error" in api.json()


async def test_saving_upserts_the_same_scheduler(client: httpx.AsyncClient,
                                                 mail: MailManager) -> None:
    await mail.schedule_job("emails", "send-digest", {"list": "weekly"}, cron="0 9 * * *",
                            scheduler_id="digest", attempts=4)
    token = await csrf_token(client, "/schedules")
    answer = await client.post("/schedules/emails/digest/update", headers=HX, data={
        "csrf_token": token, "cron": "15 7 * * 1", "every_ms": "", "tz": "America/New_York",
        "data": '{"list": "monday"}'})
    assert answer.status_code == 200, answer.text
    assert "Scheduler digest saved: 15 7 * * 1, next run" in html.unescape(answer.text)
    (saved,) = await mail.list_schedules("emails")
    assert saved["id"] == "digest" and saved["name"] == "send-digest"
    assert saved["cron"] == "15 7 * * 1" and saved["tz"] == "America/New_York"
    assert saved["template"]["data"] == {"list": "monday"}
    assert saved["template"]["opts"]["attempts"] == 4  # the job options are kept
    nxt = datetime.fromtimestamp(saved["next_run"] / 1000, UTC)
    assert nxt.weekday() == 0 and nxt.minute == 15 and nxt.hour in (11, 12)
    entry = (await mail.get_audit_log(1))[0]
    assert entry["action"] == "schedule.update" and entry["target"] == "emails/digest"
    # To an interval, data left as it was (the field empty); the JSON twin.
    answer = await client.post("/api/schedules/emails/digest/update",
                               headers={"X-CSRF-Token": token},
                               json={"every_ms": "60000", "cron": "", "tz": ""})
    assert answer.status_code == 200 and answer.json()["schedule"]["every_ms"] == 60_000
    (saved,) = await mail.list_schedules("emails")
    assert saved["cron"] is None and saved["every_ms"] == 60_000
    assert saved["template"]["data"] == {"list": "monday"}


async def test_a_bad_edit_changes_nothing(client: httpx.AsyncClient, mail: MailManager) -> None:
    await mail.schedule_job("emails", "tick", {"n": 1}, cron="0 9 * * *", scheduler_id="t")
    token = await csrf_token(client, "/schedules")
    for form in [{"cron": "61 * * * *"}, {"cron": "0 9 * * *", "tz": "Nowhere/Else"},
                 {"cron": "0 9 * * *", "data": "{not json"}, {"cron": "", "every_ms": ""}]:
        answer = await client.post("/schedules/emails/t/update", headers=HX,
                                   data={"csrf_token": token, **form})
        assert answer.status_code == 422, (form, answer.text)
    (saved,) = await mail.list_schedules("emails")
    assert saved["cron"] == "0 9 * * *" and saved["template"]["data"] == {"n": 1}
    missing = await client.post("/schedules/emails/nope/update", headers=HX,
                                data={"csrf_token": token, "cron": "0 9 * * *"})
    assert missing.status_code == 404
    assert [s["id"] for s in await mail.list_schedules("emails")] == ["t"]  # none added
    no_token = await client.post("/schedules/emails/t/update", data={"cron": "0 1 * * *"})
    assert no_token.status_code == 403


async def test_read_only_cannot_edit(mail: MailManager) -> None:
    await mail.schedule_job("emails", "tick", {}, cron="0 9 * * *", scheduler_id="t")
    app = create_app(mail.settings.model_copy(update={"dashboard_read_only": True}), mail)
    app.state.mail = mail
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1:3000") as viewer:
        page = (await viewer.get("/schedules")).text
        assert "Edit…" not in page
        token = await csrf_token(viewer, "/schedules")
        refused = await viewer.post("/schedules/emails/t/update",
                                    data={"csrf_token": token, "cron": "0 1 * * *"})
        assert refused.status_code == 403
    (saved,) = await mail.list_schedules("emails")
    assert saved["cron"] == "0 9 * * *"
