"""/suppressions (issue 13, point 2): counts by reason, search, reason filter, HSCAN pages;
add and remove through the page (no script and htmx) and the JSON API, audited with the
operator as actor; CSRF and read-only refusals; one-line errors; untrusted text escaped."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from mailqueue.dashboard.app import create_app
from mailqueue.manager import MailManager
from tests.dashboard.conftest import csrf_token

EVIL = "<img src=x onerror=alert(1)>"
OPS = {"authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}


@pytest.fixture
async def ops(mail: MailManager) -> AsyncIterator[httpx.AsyncClient]:
    """The dashboard behind DASHBOARD_AUTH, signed in as `ops` (the audit's actor)."""
    app = create_app(mail.settings.model_copy(update={"dashboard_auth": "ops:s3cret"}), mail)
    app.state.mail = mail
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3000",
                                 headers=OPS) as c:
        yield c


async def audit(mail: MailManager, n: int = 10) -> list[tuple[str, str, str, str]]:
    return [(e["actor"], e["action"], e["target"], e["result"])
            for e in await mail.get_audit_log(n)]


def addresses(page: httpx.Response) -> list[str]:
    return re.findall(r'<td class="cell-wrap address">([^<]*)</td>', page.text)


async def test_counts_by_reason_and_the_list(client: httpx.AsyncClient, mail: MailManager
                                             ) -> None:
    sl = mail.desk.suppressions
    await sl.add("gone@example.com", "bounce", by="smtp", reply="550 5.1.1 No such user",
                 code=550)
    await sl.add("bye@example.com", "unsubscribe", by="unsubscribe")
    await mail.desk.suppress("ops@example.com", actor="ops", note="asked by phone")
    page = await client.get("/suppressions")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "<strong>3</strong> in all" in page.text
    for reason, n in (("bounce", 1), ("unsubscribe", 1), ("manual", 1), ("complaint", 0)):
        assert re.search(rf'<strong( class="zero")?>{n}</strong> <span class="badge reason-'
                         rf'{reason}">{reason}</span>', page.text), reason
    assert sorted(addresses(page)) == ["bye@example.com", "gone@example.com", "ops@example.com"]
    assert "550 5.1.1 No such user" in text and "asked by phone" in text
    assert 'aria-current="page"' in page.text and "Add an address" in page.text

    api = (await client.get("/api/suppressions")).json()
    assert api["total"] == 3 and api["counts"] == {"bounce": 1, "unsubscribe": 1, "manual": 1,
                                                   "complaint": 0}
    [gone] = [e for e in api["entries"] if e["reason"] == "bounce"]
    assert gone == {"address": "gone@example.com", "reason": "bounce", "at": gone["at"],
                    "by": "smtp", "note": "", "reply": "550 5.1.1 No such user", "code": 550}
    assert api["next_cursor"] is None
    only = (await client.get("/api/suppressions", params={"reason": "bounce"})).json()
    assert [e["address"] for e in only["entries"]] == ["gone@example.com"]
    found = await client.get("/suppressions", params={"q": "BYE@"})
    assert addresses(found) == ["bye@example.com"]


async def test_search_pages_through_the_list(client: httpx.AsyncClient, mail: MailManager
                                             ) -> None:
    for n in range(130):
        await mail.desk.suppressions.add(f"user{n:03d}@example.net", "manual", by="import")
    await mail.desk.suppressions.add("other@example.org", "complaint", by="import")
    seen: list[str] = []
    path = "/suppressions?q=example.net"
    pages = 0
    while path:
        page = await client.get(path)
        assert page.status_code == 200
        seen += addresses(page)
        more = re.search(r'<a href="([^"]+)" rel="next">More', page.text)
        # HSCAN hands out whole buckets: a page but the last holds 50 or a few more.
        assert not more or 50 <= len(addresses(page)) < 130
        path = "/suppressions" + html.unescape(more.group(1)) if more else ""
        pages += 1
        if path:
            assert "q=example.net" in path and "cursor=" in path
    assert pages >= 2
    assert sorted(set(seen)) == [f"user{n:03d}@example.net" for n in range(130)]
    api = (await client.get("/api/suppressions", params={"reason": "complaint"})).json()
    assert [e["address"] for e in api["entries"]] == ["other@example.org"]


async def test_add_and_remove_without_script_are_audited_with_the_operator(
    ops: httpx.AsyncClient, mail: MailManager
) -> None:
    token = await csrf_token(ops, "/suppressions?q=ada")
    headers = {"referer": "http://127.0.0.1:3000/suppressions?q=ada"}
    added = await ops.post("/suppressions", headers=headers, data={
        "csrf_token": token, "address": " Ada@Example.com ", "reason": "complaint",
        "note": "reported as spam"})
    assert added.status_code == 303
    assert added.headers["location"] == "/suppressions?q=ada&added=ada%40example.com"
    page = await ops.get(added.headers["location"])
    assert "Added ada@example.com to the suppression list." in page.text
    assert addresses(page) == ["ada@example.com"]
    entry = await mail.desk.suppressions.get("ada@example.com")
    assert entry is not None and entry.reason == "complaint" and entry.by == "ops"
    assert entry.note == "reported as spam"
    again = await ops.post("/suppressions", data={"csrf_token": token,
                                                  "address": "ada@example.com"})
    assert again.status_code == 303 and "already=ada%40example.com" in again.headers["location"]

    removed = await ops.post("/suppressions/remove", headers=headers,
                             data={"csrf_token": token, "address": "ada@example.com"})
    assert removed.status_code == 303
    assert removed.headers["location"] == "/suppressions?q=ada&removed=ada%40example.com"
    assert await mail.desk.suppressions.get("ada@example.com") is None
    assert await audit(mail, 3) == [("ops", "unsuppress", "ada@example.com", "ok"),
                                    ("ops", "suppress", "ada@example.com", "already"),
                                    ("ops", "suppress", "ada@example.com", "ok")]
    # Not on the list: a one-line refusal.
    absent = await ops.post("/suppressions/remove",
                            data={"csrf_token": token, "address": "ada@example.com"})
    assert absent.status_code == 404
    assert "ada@example.com is not on the suppression list" in absent.text
    assert (await audit(mail, 1))[0] == ("ops", "unsuppress", "ada@example.com", "absent")


async def test_htmx_answers_in_place_and_reloads_the_list(client: httpx.AsyncClient,
                                                          mail: MailManager) -> None:
    token = await csrf_token(client, "/suppressions")
    hx = {"HX-Request": "true", "referer": "http://127.0.0.1:3000/suppressions?reason=manual"}
    added = await client.post("/suppressions", headers=hx,
                              data={"csrf_token": token, "address": "bob@example.com"})
    assert added.status_code == 200
    assert "Added bob@example.com to the suppression list" in added.text
    assert added.headers["hx-location"] == "/suppressions?reason=manual&added=bob%40example.com"
    bad = await client.post("/suppressions", headers=hx,
                            data={"csrf_token": token, "address": "bob@"})
    assert bad.status_code == 422 and "hx-location" not in bad.headers
    assert bad.text.startswith('<span class="result error"') and "\n" not in bad.text.strip()


async def test_the_json_api_adds_and_deletes(ops: httpx.AsyncClient, mail: MailManager) -> None:
    token = await csrf_token(ops, "/suppressions")
    headers = {"x-csrf-token": token}
    added = await ops.post("/api/suppressions", headers=headers,
                           json={"address": "eve@example.com", "note": "test"})
    assert added.status_code == 200
    body = added.json()
    assert body["ok"] and body["added"] is True and body["target"] == "eve@example.com"
    assert body["entry"]["reason"] == "manual" and body["entry"]["by"] == "ops"
    again = (await ops.post("/api/suppressions", headers=headers,
                            json={"address": "EVE@example.com"})).json()
    assert again["ok"] and again["added"] is False
    deleted = await ops.delete("/api/suppressions/Eve@Example.com", headers=headers)
    assert deleted.status_code == 200
    assert deleted.json()["removed"]["note"] == "test"
    gone = await ops.delete("/api/suppressions/eve@example.com", headers=headers)
    assert gone.status_code == 404 and gone.json()["ok"] is False
    assert [a[1:] for a in await audit(mail, 4)] == [
        ("unsuppress", "eve@example.com", "absent"), ("unsuppress", "eve@example.com", "ok"),
        ("suppress", "eve@example.com", "already"), ("suppress", "eve@example.com", "ok")]


@pytest.mark.parametrize(("body", "reason"), [
    ({"address": "not an address"}, "address"),
    ({"address": ""}, "an e-mail address is required"),
    ({"address": "x@example.com", "reason": "bounce"}, "reason must be manual or complaint"),
])
async def test_bad_input_is_one_line_and_audited_as_refused(
    client: httpx.AsyncClient, mail: MailManager, body: dict[str, str], reason: str
) -> None:
    token = await csrf_token(client, "/suppressions")
    response = await client.post("/api/suppressions", headers={"x-csrf-token": token},
                                 json=body)
    assert response.status_code == 422
    message = response.json()["message"]
    assert reason in message and "\n" not in message
    assert await mail.desk.suppressions.count() == 0
    assert (await audit(mail, 1))[0][1:] == ("suppress", "*", "error")
    page = await client.post("/suppressions", data={"csrf_token": token, **body})
    assert page.status_code == 422 and reason in html.unescape(page.text)


async def test_changes_need_the_csrf_token(client: httpx.AsyncClient, mail: MailManager) -> None:
    await mail.desk.suppressions.add("kept@example.com", "manual", by="ops")
    await client.get("/suppressions")  # the cookie, no token sent
    refused = [
        await client.post("/suppressions", data={"address": "new@example.com"}),
        await client.post("/api/suppressions", json={"address": "new@example.com"}),
        await client.post("/suppressions/remove", data={"address": "kept@example.com"}),
        await client.delete("/api/suppressions/kept@example.com"),
        await client.delete("/api/suppressions/kept@example.com",
                            headers={"x-csrf-token": "x" * 43}),
    ]
    assert [r.status_code for r in refused] == [403] * 5
    assert "CSRF" in refused[0].text
    assert await mail.desk.suppressions.count() == 1
    assert await mail.get_audit_log(5) == []


async def test_read_only_hides_the_forms_and_refuses_changes(mail: MailManager) -> None:
    await mail.desk.suppressions.add("kept@example.com", "manual", by="ops")
    app = create_app(mail.settings.model_copy(update={"dashboard_read_only": True}), mail)
    app.state.mail = mail
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3000") as c:
        page = await c.get("/suppressions")
        assert page.status_code == 200 and "kept@example.com" in page.text
        assert "Add an address" not in page.text and ">Remove<" not in page.text
        token = await csrf_token(c, "/suppressions")
        refused = [
            await c.post("/suppressions", data={"csrf_token": token, "address": "n@example.com"}),
            await c.post("/suppressions/remove",
                         data={"csrf_token": token, "address": "kept@example.com"}),
            await c.delete("/api/suppressions/kept@example.com", headers={"x-csrf-token": token}),
        ]
        assert [r.status_code for r in refused] == [403] * 3
        assert "Read-only" in refused[0].text
    assert await mail.desk.suppressions.count() == 1


@pytest.mark.parametrize(("params", "reason"), [
    ({"reason": "nope"}, "reason must be one of bounce, unsubscribe, manual, complaint"),
    ({"cursor": "abc"}, "cursor must be the number the previous page gave"),
])
async def test_a_bad_filter_is_a_400(client: httpx.AsyncClient, params: dict[str, str],
                                     reason: str) -> None:
    api = await client.get("/api/suppressions", params=params)
    assert api.status_code == 400 and api.json() == {"error": reason}
    page = await client.get("/suppressions", params=params)
    assert page.status_code == 400 and reason in page.text


async def test_untrusted_text_is_escaped(client: httpx.AsyncClient, mail: MailManager) -> None:
    await mail.desk.suppressions.add("evil@example.com", "bounce", by=f"smtp{EVIL}",
                                     reply=f"550 {EVIL}", code=550)
    await mail.desk.suppress("note@example.com", actor="ops", note=EVIL)
    page = await client.get("/suppressions", params={"q": f"{EVIL}"})
    assert page.status_code == 200 and EVIL not in page.text
    page = await client.get("/suppressions")
    assert EVIL not in page.text and page.text.count("&lt;img src=x onerror=alert(1)&gt;") >= 3
    done = await client.get("/suppressions", params={"added": EVIL})
    assert EVIL not in done.text and "Added &lt;img" in done.text
