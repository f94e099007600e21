"""Issue 13, point 4 on the dashboard: /campaigns and /campaigns/{id}, their JSON twins, and
pause / resume / cancel (CSRF, read-only refused on the server, audited, refusals in one
line). Real Redis, real campaigns sent by a worker with the built-in handlers to the SMTP
sink."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from mailqueue.dashboard.app import create_app
from mailqueue.mail.handlers import EmailHandlers, create_email_handlers
from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from tests.dashboard.conftest import csrf_token
from tests.waiting import eventually

HOSTILE = "<img src=x onerror=alert(1)>"
NEWS = {"campaign": "Spring news", "intro": "Hello"}


@pytest.fixture
async def handlers(mail: MailManager, sink: MailSink) -> AsyncIterator[EmailHandlers]:
    made = create_email_handlers(mail.settings.model_copy(update={"smtp_url": sink.url}))
    yield made
    await mail.stop_serving_campaigns()
    await mail.workers.close()
    await made.close()


async def paused(mail: MailManager, campaign_id: str) -> dict[str, Any] | None:
    campaign = await mail.campaigns.get(campaign_id)
    return campaign if campaign["state"] == "paused" else None


async def ended(mail: MailManager, campaign_id: str) -> dict[str, Any] | None:
    campaign = await mail.campaigns.get(campaign_id)
    return campaign if campaign["state"] in ("completed", "cancelled") else None


def stat(page: str, name: str) -> str:
    found = re.search(rf'data-stat="{name}"[^>]*>([^<]*)<', page)
    assert found, f"no {name} on the page"
    return found.group(1).strip()


async def test_a_sent_campaign_shows_its_figures_in_the_list_and_on_its_page(
        mail: MailManager, client: httpx.AsyncClient, sink: MailSink,
        handlers: EmailHandlers) -> None:
    await mail.desk.suppress("opted-out@example.com", actor="test")
    recipients: list[Any] = [f"u{i}@example.com" for i in range(12)]
    recipients += ["opted-out@example.com", "not an address", f"{HOSTILE}@example.com"]
    older = await mail.campaigns.create("welcome", ["a@example.com"], name="older one")
    await mail.campaigns.cancel(older["id"])
    campaign = await mail.campaigns.create("newsletter", recipients, variables=NEWS,
                                           name=f"Spring {HOSTILE}", created_by="ada")
    mail.serve_campaigns(handlers)
    done = await eventually(lambda: ended(mail, campaign["id"]))
    assert (done["sent"], done["suppressed"], done["failed"], done["total"]) == (12, 1, 0, 13)

    listing = await client.get("/campaigns")
    assert listing.status_code == 200
    text = listing.text
    assert HOSTILE not in text and html.escape(f"Spring {HOSTILE}", quote=False) in text
    assert text.index("Spring &lt;img") < text.index("older one")  # newest first
    row = text[text.index("Spring &lt;img"):]
    row = row[:row.index("</tr>")]
    assert "newsletter" in row and "completed" in row and 'value="13"' in row
    assert "13 / 13" in row and "100.0%" in row and "e-mails/s" in row and " UTC" in row
    assert "by ada" in row
    assert 'hx-trigger="every 2s"' not in text  # nothing can move: no polling

    page = await client.get(f"/campaigns/{campaign['id']}")
    assert page.status_code == 200
    body = page.text
    assert HOSTILE not in body
    figures = {k: stat(body, k) for k in ("total", "sent", "failed", "suppressed", "remaining")}
    assert figures == {"total": "13", "sent": "12", "failed": "0", "suppressed": "1",
                       "remaining": "0"}
    assert re.fullmatch(r"[\d,]+\.\d", stat(body, "rate"))
    assert "finished 20" in body
    assert '<progress max="13" value="13"' in body
    assert f'href="http://127.0.0.1:3000/queues/campaign-{campaign["id"]}"' in body
    # The invalid recipients skipped, with their reasons (escaped).
    assert "Invalid recipients skipped" in body and "not an address" in body
    assert html.escape(HOSTILE, quote=False) in body.split("Invalid recipients")[1]
    assert 'hx-trigger="every 2s"' not in body  # completed: no polling
    assert 'id="campaign-pause"' not in body and 'id="campaign-cancel"' not in body

    api = (await client.get(f"/api/campaigns/{campaign['id']}")).json()
    assert (api["sent"], api["suppressed"], api["state"]) == (12, 1, "completed")
    listed = (await client.get("/api/campaigns")).json()["campaigns"]
    assert [c["id"] for c in listed] == [campaign["id"], older["id"]]
    assert (await client.get("/campaigns/0000000000")).status_code == 404
    assert (await client.get("/api/campaigns/nope")).status_code == 404
    assert (await client.get("/campaigns/..%2F..%2Fetc")).status_code == 404


async def test_a_running_campaign_polls_and_offers_pause_and_cancel(
        mail: MailManager, client: httpx.AsyncClient) -> None:
    campaign = await mail.campaigns.create("newsletter", [f"r{i}@example.com" for i in range(5)],
                                           variables=NEWS)  # no worker: it stays running
    page = (await client.get(f"/campaigns/{campaign['id']}")).text
    assert re.search(r'id="campaign-live"[^>]*hx-trigger="every 2s"', page)
    assert 'id="campaign-pause"' in page and 'id="campaign-cancel"' in page
    assert 'id="campaign-resume"' not in page
    assert stat(page, "remaining") == "5" and stat(page, "sent") == "0"
    # The poll gets the live fragment alone, without the page around it.
    poll = await client.get(f"/campaigns/{campaign['id']}", headers={"HX-Request": "true"})
    assert poll.text.lstrip().startswith('<div id="campaign-live"')
    assert "<html" not in poll.text and "hx-swap-oob" not in poll.text
    listing = (await client.get("/campaigns")).text
    assert re.search(r'id="campaigns-table"[^>]*hx-trigger="every 2s"', listing)


async def test_pause_resume_cancel_with_csrf_audited_and_refused_in_one_line(
        mail: MailManager, client: httpx.AsyncClient) -> None:
    campaign = await mail.campaigns.create("newsletter", [f"c{i}@example.com" for i in range(4)],
                                           variables=NEWS)
    cid = campaign["id"]
    token = await csrf_token(client, f"/campaigns/{cid}")
    assert (await client.post(f"/campaigns/{cid}/pause", data={})).status_code == 403  # no token
    assert (await mail.campaigns.get(cid))["state"] == "running"

    # A plain form: done, back to the page.
    answer = await client.post(f"/campaigns/{cid}/pause", data={"csrf_token": token})
    assert answer.status_code == 303
    paused = await mail.campaigns.get(cid)
    assert paused["state"] == "paused"
    assert paused["reason"] == "paused by anonymous on the dashboard"
    entry = (await mail.get_audit_log(1))[0]
    assert (entry["actor"], entry["action"], entry["target"], entry["result"]) == (
        "anonymous", "campaign-pause", cid, "ok")
    page = (await client.get(f"/campaigns/{cid}")).text
    assert "paused by anonymous on the dashboard" in page
    assert 'id="campaign-resume"' in page and 'id="campaign-pause"' not in page

    # htmx: the result, and the live part out of band with the new state's buttons.
    htmx = {"HX-Request": "true", "X-CSRF-Token": token}
    answer = await client.post(f"/campaigns/{cid}/resume", headers=htmx)
    assert answer.status_code == 200 and "Resumed campaign" in answer.text
    assert 'hx-swap-oob="true"' in answer.text and 'id="campaign-pause"' in answer.text
    assert (await mail.campaigns.get(cid))["state"] == "running"

    # Resuming a running campaign: 409, the manager's one line, audited as refused.
    answer = await client.post(f"/campaigns/{cid}/resume", headers=htmx)
    assert answer.status_code == 409
    assert f"campaign {cid} is running, not paused" in answer.text
    entry = (await mail.get_audit_log(1))[0]
    assert (entry["action"], entry["result"]) == ("campaign-resume", "refused")
    assert "not paused" in entry["detail"]

    # The JSON twin.
    answer = await client.post(f"/api/campaigns/{cid}/cancel", headers={"X-CSRF-Token": token})
    assert answer.status_code == 200
    body = answer.json()
    assert body["ok"] and body["campaign"]["state"] == "cancelled"
    assert "cancelled with 4 not sent" in body["message"]
    again = await client.post(f"/api/campaigns/{cid}/cancel", headers={"X-CSRF-Token": token})
    assert again.status_code == 409
    assert again.json() == {"ok": False, "message": f"campaign {cid} is cancelled",
                            "target": cid}
    plain = await client.post(f"/campaigns/{cid}/pause", data={"csrf_token": token})
    assert plain.status_code == 409 and f"campaign {cid} is cancelled" in plain.text
    unknown = await client.post("/api/campaigns/0123456789/pause",
                                headers={"X-CSRF-Token": token})
    assert unknown.status_code == 404 and "no campaign" in unknown.json()["message"]
    actions = [(e["action"], e["result"]) for e in await mail.get_audit_log(4)]
    assert actions == [("campaign-pause", "refused"), ("campaign-pause", "refused"),
                       ("campaign-cancel", "refused"), ("campaign-cancel", "ok")]
    page = (await client.get(f"/campaigns/{cid}")).text
    assert "cancelled with 4 not sent" in page and 'hx-trigger="every 2s"' not in page
    assert not re.search(r'id="campaign-(pause|resume|cancel)"', page)


async def test_read_only_sees_campaigns_but_cannot_change_them(mail: MailManager) -> None:
    campaign = await mail.campaigns.create("newsletter", ["a@example.com"], variables=NEWS)
    app = create_app(mail.settings.model_copy(update={"dashboard_read_only": True}), mail)
    app.state.mail = mail
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1:3000") as viewer:
        page = await viewer.get(f"/campaigns/{campaign['id']}")
        assert page.status_code == 200 and 'id="campaign-pause"' not in page.text
        listing = await viewer.get("/campaigns")
        assert listing.status_code == 200 and 'id="new-campaign"' not in listing.text
        token = await csrf_token(viewer, f"/campaigns/{campaign['id']}")
        for verb in ("pause", "cancel"):
            for path in (f"/campaigns/{campaign['id']}/{verb}",
                         f"/api/campaigns/{campaign['id']}/{verb}"):
                refused = await viewer.post(path, data={"csrf_token": token},
                                            headers={"X-CSRF-Token": token})
                assert refused.status_code == 403, path
        refused = await viewer.post("/campaigns", data={
            "csrf_token": token, "template": "welcome", "recipients": "a@example.com"})
        assert refused.status_code == 403
    assert (await mail.campaigns.get(campaign["id"]))["state"] == "running"
    assert len(await mail.campaigns.list()) == 1


async def test_a_campaign_that_paused_itself_says_why_and_offers_resume(
        mail: MailManager, client: httpx.AsyncClient, sink: MailSink,
        handlers: EmailHandlers) -> None:
    addresses = [f"e{i}@example.com" for i in range(30)]
    for address in addresses:
        sink.fail_recipient(address, 554, "Relay access denied")
    campaign = await mail.campaigns.create("newsletter", addresses, variables=NEWS,
                                           error_limit=3, name="Broken relay")
    mail.serve_campaigns(handlers, concurrency=1)
    await eventually(lambda: paused(mail, campaign["id"]))
    page = (await client.get(f"/campaigns/{campaign['id']}")).text
    assert re.search(r"paused after \d+ send errors in a row; check the SMTP relay, then "
                     r"resume", page)
    assert 'id="campaign-resume"' in page and 'id="campaign-cancel"' in page
    assert int(stat(page, "failed")) >= 3


async def test_a_new_campaign_from_a_pasted_list_an_uploaded_csv_or_json(
        mail: MailManager, client: httpx.AsyncClient) -> None:
    token = await csrf_token(client, "/campaigns")
    page = (await client.get("/campaigns")).text
    assert 'id="new-campaign"' in page and '<option value="newsletter" selected>' in page

    # Without script: a urlencoded form, a pasted list; back to the new campaign's page.
    answer = await client.post("/campaigns", data={
        "csrf_token": token, "name": f"Pasted {HOSTILE}", "template": "newsletter",
        "recipients": "ada@example.com\n# a comment\n\nGrace <grace@example.com>\nnope\n",
        "variables": json.dumps(NEWS), "error_limit": "7"})
    assert answer.status_code == 303
    cid = answer.headers["location"].rsplit("/", 1)[1]
    made = await mail.campaigns.get(cid)
    assert (made["total"], made["invalid"], made["error_limit"]) == (2, 1, 7)
    assert made["created_by"] == "anonymous" and made["variables"] == NEWS
    assert made["name"] == f"Pasted {HOSTILE}"
    entry = (await mail.get_audit_log(1))[0]
    assert (entry["action"], entry["target"], entry["result"]) == ("campaign-create", cid, "ok")

    # htmx: an uploaded CSV (multipart, the token in the header); the columns are variables.
    csv_text = "email,name,city\nada@example.com,Ada,London\nbob@example.com,Bob,Paris\n"
    answer = await client.post(
        "/campaigns", headers={"HX-Request": "true", "X-CSRF-Token": token},
        data={"template": "welcome", "name": "From a file", "variables": ""},
        files={"recipients_file": ("list.csv", csv_text.encode(), "text/csv")})
    assert answer.status_code == 200, answer.text
    assert "2 recipients queued" in answer.text
    cid2 = answer.headers["hx-redirect"].rsplit("/", 1)[1]
    assert (await mail.campaigns.get(cid2))["total"] == 2
    jobs = (await mail.queues.get_jobs(f"campaign-{cid2}", "waiting"))["jobs"]
    assert {(j["data"]["to"], j["data"]["city"]) for j in jobs} == {
        ("ada@example.com", "London"), ("bob@example.com", "Paris")}

    # The JSON twin.
    answer = await client.post("/api/campaigns", headers={"X-CSRF-Token": token}, json={
        "template": "notification", "recipients": ["c@example.com"],
        "variables": {"title": "t", "message": "m"}})
    assert answer.status_code == 200 and answer.json()["campaign"]["total"] == 1

    # Refusals: 400 with one line, audited; the manager's CampaignError included.
    cases = [
        ({"template": "nope", "recipients": "a@example.com"}, "no template 'nope'"),
        ({"template": "welcome", "recipients": " \n# only a comment\n"}, "no recipients"),
        ({"template": "welcome", "recipients": "a@example.com", "variables": "{x"},
         "variables: not JSON"),
        ({"template": "welcome", "recipients": "a@example.com", "variables": "[1]"},
         "variables: a JSON object"),
        ({"template": "welcome", "recipients": "a@example.com", "error_limit": "0"},
         "error_limit and batch must be at least 1"),
        ({"template": "welcome", "recipients_file": "list.csv"}, "needs JavaScript"),
    ]
    before = len(await mail.campaigns.list())
    for form, said in cases:
        answer = await client.post("/campaigns", data={"csrf_token": token, **form})
        assert answer.status_code == 400, (form, answer.text)
        assert said in html.unescape(answer.text), (form, answer.text)
        entry = (await mail.get_audit_log(1))[0]
        assert (entry["action"], entry["result"]) == ("campaign-create", "refused")
    assert len(await mail.campaigns.list()) == before
    api = await client.post("/api/campaigns", headers={"X-CSRF-Token": token},
                            json={"template": "welcome", "recipients": "a@example.com"})
    assert api.status_code == 400 and api.json()["message"] == "recipients: a list of addresses"
    assert (await client.post("/campaigns", data={"template": "welcome",
                                                  "recipients": "a@example.com"})
            ).status_code == 403  # no CSRF token
