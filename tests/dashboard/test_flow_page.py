"""The flow page: a whole tree across queues, each node with its state, counts and link."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import httpx
from bullmq import Job
from starlette.applications import Starlette
from starlette.requests import Request

from mailqueue.dashboard.views.flows import live_flow
from mailqueue.manager import MailManager
from tests.dashboard.test_job_page import XSS, job_url, wait_for_state


async def three_level_flow(mail: MailManager) -> dict[str, str]:
    """root (flow-a) <- child (flow-b) <- grandchild (flow-a); and a child (flow-b) that
    fails, its failure ignored by the root. Returns the job ids."""
    added = await mail.add_flow({
        "name": "root", "queueName": "flow-a", "data": {},
        "children": [
            {"name": "child", "queueName": "flow-b", "data": {},
             "children": [{"name": "grandchild", "queueName": "flow-a", "data": {}}]},
            {"name": "doomed", "queueName": "flow-b", "data": {},
             "opts": {"ignoreDependencyOnFailure": True, "attempts": 1}},
        ],
    })
    tree = added["tree"]
    child = next(c for c in tree["children"] if c["name"] == "child")
    doomed = next(c for c in tree["children"] if c["name"] == "doomed")
    ids = {"root": tree["id"], "child": child["id"], "grandchild": child["children"][0]["id"],
           "doomed": doomed["id"]}

    async def fail(data: Any, job: Job) -> None:
        raise RuntimeError(f"no {XSS}")

    mail.start_worker("flow-b", {"doomed": fail})
    await wait_for_state(mail, "flow-b", ids["doomed"], "failed")
    await mail.stop_worker("flow-b")
    return ids


def node_html(html: str, name: str) -> str:
    """The <li> of the node called `name`, children included (nested lists)."""
    start = html.index(f">{name}</a>")
    li = html.rindex("<li", 0, start)
    depth, pos = 0, li
    for match in re.finditer(r"<li\b|</li>", html[li:]):
        depth += 1 if match.group(0) != "</li>" else -1
        if depth == 0:
            pos = li + match.end()
            break
    return html[li:pos]


async def test_flow_page_shows_the_whole_tree(mail: MailManager,
                                              client: httpx.AsyncClient) -> None:
    ids = await three_level_flow(mail)
    # Opened from the grandchild: the page climbs to the root.
    page = await client.get(job_url("flow-a", ids["grandchild"], "/flow"))
    assert page.status_code == 200
    html = page.text
    root, child = node_html(html, "root"), node_html(html, "child")
    assert "grandchild" in child and "child" in root and "doomed" in root
    assert "doomed" not in child
    assert 'class="badge state-waiting-children">waiting-children' in root.split("<ul>")[0]
    assert "state-waiting-children" in child.split("<ul>")[0]
    assert 'state-waiting">waiting' in node_html(html, "grandchild")
    assert 'state-failed">failed' in node_html(html, "doomed")
    assert "1 pending" in root.split("<ul>")[0] and "1 failed" in root.split("<ul>")[0]
    assert "flow-a" in root and "flow-b" in child  # across queues
    assert 'class="flow-node current"' in node_html(html, "grandchild")
    assert XSS not in html and "&lt;script&gt;" in html
    for name in ("root", "child", "grandchild", "doomed"):
        queue = "flow-b" if name in ("child", "doomed") else "flow-a"
        assert f'href="{job_url(queue, ids[name])}"' in html
    assert 'sse-swap="flow-tree"' in html and "hx-ext=\"sse\"" in html

    # Every link leads to a job page that links back to the flow.
    job_page = await client.get(job_url("flow-b", ids["child"]))
    assert job_page.status_code == 200
    assert f'href="{job_url("flow-b", ids["child"], "/flow")}"' in job_page.text
    assert "grandchild" in job_page.text and ">root" not in job_page.text.split("Parent:")[0]

    api = (await client.get(job_url("flow-a", ids["grandchild"], "/flow", api=True))).json()
    assert api["root"] == {"queue": "flow-a", "id": ids["root"]}
    assert api["tree"]["state"] == "waiting-children"
    assert {c["name"] for c in api["tree"]["children"]} == {"child", "doomed"}
    assert api["totals"] == {"failed": 1, "waiting": 1, "waiting-children": 2}


async def test_flow_page_updates_and_missing(mail: MailManager, client: httpx.AsyncClient,
                                             app: Starlette) -> None:
    ids = await three_level_flow(mail)
    request = Request({"type": "http", "app": app, "headers": [], "method": "GET",
                       "path": "/live", "query_string": b"", "router": app.router})
    params = {"flow_queue": "flow-a", "job_id": ids["root"]}
    before = await live_flow(request, params)
    assert set(before) == {"flow-tree"}
    assert 'id="flow-tree"' in before["flow-tree"]

    mail.start_worker("flow-a", {"grandchild": lambda data, job: "ok"})
    await wait_for_state(mail, "flow-a", ids["grandchild"], "completed")
    await mail.stop_worker("flow-a")
    after = await live_flow(request, params)
    assert 'state-completed">completed' in node_html(after["flow-tree"], "grandchild")

    missing = await client.get(job_url("flow-a", "nope", "/flow"))
    assert missing.status_code == 404 and "Flow not found" in missing.text
    assert (await client.get(job_url("flow-a", "nope", "/flow", api=True))).status_code == 404
    gone = await live_flow(request, {"flow_queue": "flow-a", "job_id": "nope"})
    assert "No job" in unescape(gone["flow-tree"])
