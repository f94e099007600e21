"""The queue page's header carries the actions of the tab on show (issue 14): Clean and Add
job beside Retry all, and nothing that does not apply to the tab (no "Retry all" on
waiting, no Clean where BullMQ cannot clean)."""

from __future__ import annotations

import re

import httpx

from mailqueue.dashboard.app import create_app
from mailqueue.manager import MailManager
from tests.dashboard.conftest import csrf_token
from tests.dashboard.test_queue_actions import _failed_jobs


def header(page: str) -> str:
    start = page.index('id="queue-header"')
    return page[start:page.index('id="queue-action-result"', start)]


def buttons(html: str) -> list[str]:
    """The text of every button and menu of the header, as an operator reads it."""
    return [" ".join(re.sub(r"<[^>]+>", "", b).split())
            for b in re.findall(r"<(?:button|summary)[^>]*>(.*?)</(?:button|summary)>", html,
                                re.S)]


async def test_each_tab_shows_the_actions_that_apply_to_it(mail: MailManager,
                                                          client: httpx.AsyncClient) -> None:
    await _failed_jobs(mail, "q", 3)
    await mail.add_job("q", "later", {}, delay=600_000)
    await mail.add_job("q", "now", {})
    expected = {
        "waiting": ["Pause", "Clean waiting…", "Clean", "Add job…", "Add job"],
        "active": ["Pause", "Clean active…", "Clean", "Add job…", "Add job"],
        "delayed": ["Pause", "Promote all 1 delayed", "Clean delayed…", "Clean", "Add job…",
                    "Add job"],
        "waiting-children": ["Pause", "Add job…", "Add job"],
        "completed": ["Pause", "Clean completed…", "Clean", "Add job…", "Add job"],
        "failed": ["Pause", "Retry all 3 failed", "Clean failed…", "Clean", "Add job…",
                   "Add job"],
    }
    for state, wanted in expected.items():
        page = (await client.get(f"/queues/q?state={state}")).text
        assert buttons(header(page)) == wanted, (state, buttons(header(page)))
        if "Clean" in wanted:  # the tab's Clean removes that state, nothing else
            assert f'<input type="hidden" name="state" value="{state}">' in header(page)
        # Retrying a selection is offered where BullMQ retries: failed and completed jobs.
        assert ("Retry selected" in page) == (state in ("failed", "completed")), state
        # Add job and Clean are no longer duplicated below; drain and obliterate are.
        below = page[page.index('aria-label="Queue actions"'):]
        assert "Add a job" not in below and "Clean a state" not in below
        assert "Drain" in below and "Obliterate" in below
    # No failed job, no "Retry all" even on the failed tab; paused: "Resume".
    await mail.queues.retry_failed("q")
    await mail.queues.pause("q")
    page = (await client.get("/queues/q?state=failed")).text
    assert buttons(header(page))[:2] == ["Resume", "Clean failed…"]


async def test_the_tab_clean_removes_only_that_state_and_is_audited(
        mail: MailManager, client: httpx.AsyncClient) -> None:
    await _failed_jobs(mail, "q", 2)
    await mail.add_job("q", "now", {})
    token = await csrf_token(client, "/queues/q?state=failed")
    form = header((await client.get("/queues/q?state=failed")).text)
    fields = dict(re.findall(r'name="(state|grace)" value="([^"]*)"', form))
    assert fields["state"] == "failed"
    answer = await client.post("/queues/q/clean", headers={"HX-Request": "true"},
                               data={"csrf_token": token, "state": "failed", "grace": "0"})
    assert answer.status_code == 200 and "Removed 2 failed job(s)" in answer.text
    counts = await mail.queues.get_job_counts("q")
    assert counts["failed"] == 0 and counts["waiting"] == 1
    entry = (await mail.get_audit_log(1))[0]
    assert entry["action"] == "queue.clean" and entry["result"] == "ok"


async def test_read_only_shows_no_tab_action(mail: MailManager) -> None:
    await _failed_jobs(mail, "q", 1)
    app = create_app(mail.settings.model_copy(update={"dashboard_read_only": True}), mail)
    app.state.mail = mail
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1:3000") as viewer:
        for state in ("failed", "waiting"):
            page = (await viewer.get(f"/queues/q?state={state}")).text
            assert buttons(header(page)) == [], state
        token = await csrf_token(viewer, "/queues/q")
        for action in ("clean", "add-job", "retry-failed"):
            refused = await viewer.post(f"/queues/q/{action}",
                                        data={"csrf_token": token, "name": "x"})
            assert refused.status_code == 403, action
    assert (await mail.queues.get_job_counts("q"))["failed"] == 1
