"""The flow page: the whole tree a job belongs to, across queues, each node with its state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailqueue.errors import MailQueueError
from mailqueue.manager import MailManager

from ..context import mail_of, page_context
from ..render import render, render_fragment
from .jobs import as_job_page, job_ids, job_path, queue_path, suffix_is_literal

MAX_ANCESTORS = 32  # BullMQ flows nest far less; a hand-made cycle must not loop forever


async def find_root(mail: MailManager, queue: str, job_id: str) -> tuple[str, str]:
    """The top of the tree `queue`/`job_id` is in (the job itself when it has no parent).

    A parent that was removed ends the climb: the tree starts at the highest job still there.
    """
    current = (queue, job_id)
    seen = {current}
    node = await mail.flows.get_flow(queue, job_id, max_depth=0)
    for _ in range(MAX_ANCESTORS):
        parent = node.get("parent")
        if not parent:
            break
        candidate = (str(parent["queue"]), str(parent["id"]))
        if candidate in seen:
            break
        try:
            node = await mail.flows.get_flow(*candidate, max_depth=0)
        except MailQueueError:
            break
        seen.add(candidate)
        current = candidate
    return current


def decorate(request: Request, node: dict[str, Any], current: tuple[str, str],
             totals: Counter[str]) -> None:
    """Add each node's link and whether it is the job the page was opened for; count states."""
    node["url"] = job_path(request, "job_page", node["queue"], node["id"])
    node["is_current"] = (node["queue"], node["id"]) == current
    totals[node["state"]] += 1
    for child in node["children"]:
        decorate(request, child, current, totals)


async def flow_context(request: Request, queue: str, job_id: str) -> dict[str, Any]:
    mail = mail_of(request)
    root_queue, root_id = await find_root(mail, queue, job_id)
    # A copy the page can decorate with its links (a FlowNode has no key for them).
    tree: dict[str, Any] = dict(await mail.flows.get_flow(root_queue, root_id))
    totals: Counter[str] = Counter()
    decorate(request, tree, (queue, job_id), totals)
    live = urlencode({"view": "flow", "flow_queue": queue, "job_id": job_id})
    return {
        "queue": queue, "job_id": job_id, "tree": tree,
        "root": {"queue": root_queue, "id": root_id},
        "totals": dict(sorted(totals.items())), "nodes": sum(totals.values()),
        "live_url": f"/live?{live}",
        "urls": {
            "job_page": job_path(request, "job_page", queue, job_id),
            "api_flow": job_path(request, "api_flow", queue, job_id),
            "queue_page": queue_path(request, queue),
            # The hub follows every queue when no `queue` is named: a flow spans queues.
            "live": f"/live?{live}",
        },
    }


async def flow_page(request: Request) -> Response:
    if not suffix_is_literal(request, "/flow"):
        return await as_job_page(request, "/flow")
    queue, job_id = job_ids(request)
    context = await flow_context(request, queue, job_id)
    context.update(await page_context(request, "overview", queue))
    return render(request, "pages/flow.html", context, fragment="partials/_flow_tree.html")


async def api_flow(request: Request) -> Response:
    if not suffix_is_literal(request, "/flow"):
        return await as_job_page(request, "/flow", api=True)
    context = await flow_context(request, *job_ids(request))
    return JSONResponse({key: context[key] for key in ("queue", "job_id", "root", "totals",
                                                       "nodes", "tree")})


async def live_flow(request: Request, params: Mapping[str, str]) -> dict[str, str]:
    """The flow page's live region: the tree, read again from its root."""
    queue = params.get("flow_queue") or params.get("queue", "")
    job_id = params.get("job_id", "")
    try:
        context = await flow_context(request, queue, job_id)
    except MailQueueError as exc:
        context = {"gone": str(exc)}
    return {"flow-tree": render_fragment(request, "partials/_flow_tree.html", context)}
