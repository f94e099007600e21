"""The schedules page: schedulers in words, run now, remove, audit, CSRF and read-only."""

from __future__ import annotations

import html

import httpx
import pytest

from mailqueue.dashboard.app import create_app
from mailqueue.dashboard.cron_words import cron_to_words, every_to_words
from mailqueue.manager import MailManager
from tests.dashboard.conftest import csrf_token


@pytest.mark.parametrize(("pattern", "words"), [
    ("0 9 * * *", "At 09:00"),
    ("*/5 * * * *", "Every 5 minutes"),
    ("30 8 * * 1-5", "At 08:30, Monday through Friday"),
    ("30 8 * * MON-FRI", "At 08:30, Monday through Friday"),
    ("* * * * *", "Every minute"),
    ("0 */2 * * *", "Every 2 hours"),
    ("0 9 * * 1,3,5", "At 09:00, only on Monday, Wednesday, and Friday"),
    ("0 9,17 * * *", "At 09:00 and 17:00"),
    ("0 0 1 1 *", "At 00:00, on day 1 of the month, only in January"),
    ("0 0 9 * * *", "At 09:00"),
    ("*/10 * * * * *", "Every 10 seconds"),
    # Forms the hand-written text gave up on, cron-descriptor reads.
    ("5/15 * * * *", "Every 15 minutes, starting at 5 minutes past the hour"),
    ("0 9 L * *", "At 09:00, on the last day of the month"),
])
def test_cron_to_words(pattern: str, words: str) -> None:
    assert cron_to_words(pattern) == words


@pytest.mark.parametrize("pattern", ["bad", "1 2 3", ""])
def test_a_pattern_that_cannot_be_read_comes_back_as_it_is(pattern: str) -> None:
    assert cron_to_words(pattern) == pattern


def test_every_to_words() -> None:
    assert every_to_words(300_000) == "Every 5 minutes"
    assert every_to_words(1000) == "Every second"
    assert every_to_words(7_200_000) == "Every 2 hours"
    assert every_to_words(1500) == "Every 1500 ms"


async def test_page_lists_schedulers_in_words(client: httpx.AsyncClient, mail: MailManager
                                              ) -> None:
    await mail.schedule_job("emails", "send-digest", {"list": "weekly"}, cron="30 8 * * 1-5",
                            tz="Europe/Paris")
    await mail.schedule_job("reports", "tick", {"n": 1}, every=300_000)
    page = await client.get("/schedules")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "At 08:30, Monday through Friday" in text
    assert "Europe/Paris" in text
    assert "Every 5 minutes" in text
    assert "send-digest" in text and '"list": "weekly"' in text
    assert "in " in text  # next run, relative
    assert 'aria-current="page"' in page.text and "Run now" in page.text
    assert 'hx-confirm="Remove the scheduler' in page.text
    # Each row's result has its own target.
    assert 'hx-target="#schedule-result-1"' in page.text
    assert 'hx-target="#schedule-result-2"' in page.text

    api = (await client.get("/api/schedules")).json()
    by_id = {s["id"]: s for s in api["schedules"]}
    assert by_id["send-digest"]["words"] == "At 08:30, Monday through Friday"
    assert by_id["send-digest"]["tz"] == "Europe/Paris"
    assert by_id["tick"]["every_ms"] == 300_000
    assert by_id["tick"]["next_run"] and by_id["tick"]["data"] == {"n": 1}


async def test_schedule_names_are_escaped(client: httpx.AsyncClient, mail: MailManager) -> None:
    evil = '<script>alert("x")</script>'
    await mail.schedule_job("emails", evil, {"html": "<img src=x onerror=alert(1)>"},
                            cron="0 9 * * *")
    page = await client.get("/schedules")
    assert evil not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;" in page.text


async def test_run_now_adds_a_job_and_is_audited(client: httpx.AsyncClient, mail: MailManager
                                                 ) -> None:
    await mail.schedule_job("emails", "send-digest", {"list": "weekly"}, cron="0 9 * * *",
                            scheduler_id="digest")
    before = await mail.queues.get_job_counts("emails")
    token = await csrf_token(client, "/schedules")
    response = await client.post("/schedules/emails/digest/run", data={"csrf_token": token},
                                 headers={"HX-Request": "true"})
    assert response.status_code == 200, response.text
    assert "Added job" in response.text
    after = await mail.queues.get_job_counts("emails")
    assert after["waiting"] == before["waiting"] + 1
    jobs = (await mail.queues.get_jobs("emails", "waiting"))["jobs"]
    assert any(j["name"] == "send-digest" and j["data"] == {"list": "weekly"} for j in jobs)
    assert len(await mail.list_schedules("emails")) == 1  # the schedule stays
    audit = await mail.get_audit_log(5)
    assert audit[0]["action"] == "schedule.run-now"
    assert audit[0]["target"] == "emails/digest" and audit[0]["result"] == "ok"


async def test_remove_without_js_redirects_and_is_audited(
    client: httpx.AsyncClient, mail: MailManager
) -> None:
    await mail.schedule_job("emails", "tick", {}, every=60_000, scheduler_id="a/b c")
    token = await csrf_token(client, "/schedules")
    assert "/schedules/emails/a/b%20c/remove" in (await client.get("/schedules")).text
    response = await client.post("/schedules/emails/a/b%20c/remove",
                                 data={"csrf_token": token},
                                 headers={"referer": "http://127.0.0.1:3000/schedules"})
    assert response.status_code == 303 and response.headers["location"] == "/schedules"
    assert await mail.list_schedules("emails") == []
    audit = await mail.get_audit_log(1)
    assert audit[0]["action"] == "schedule.remove" and audit[0]["target"] == "emails/a/b c"

    again = await client.post("/schedules/emails/a/b%20c/remove", data={"csrf_token": token},
                              headers={"accept": "application/json"})
    assert again.status_code == 404 and again.json()["ok"] is False


async def test_actions_need_the_csrf_token(client: httpx.AsyncClient, mail: MailManager) -> None:
    await mail.schedule_job("emails", "tick", {}, every=60_000)
    await client.get("/schedules")  # the cookie, but no token sent
    response = await client.post("/schedules/emails/tick/run")
    assert response.status_code == 403
    assert len(await mail.list_schedules("emails")) == 1
    assert (await mail.queues.get_job_counts("emails"))["waiting"] == 1  # the first run only


async def test_read_only_hides_actions_and_refuses_them(mail: MailManager) -> None:
    await mail.schedule_job("emails", "tick", {}, every=60_000)
    app = create_app(mail.settings.model_copy(update={"dashboard_read_only": True}), mail)
    app.state.mail = mail
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3000") as c:
        page = await c.get("/schedules")
        assert "tick" in page.text and "Run now" not in page.text and "Remove" not in page.text
        token = await csrf_token(c, "/schedules")
        response = await c.post("/schedules/emails/tick/remove", data={"csrf_token": token})
        assert response.status_code == 403
    assert len(await mail.list_schedules("emails")) == 1
