"""The job page: one job's data, options, progress, result, failures, logs, timeline and
family, its JSON twin, its live regions and the data download (how a job is shown:
views/job_view.py; the actions on it: views/job_actions.py).

A job's payload may be 10 MB: the page reads it through `get_job_view`, which hands back at
most DATA_PREVIEW_BYTES of it, so the page stays small and fast whatever the job carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import NoMatchFound

from mailqueue.errors import JobNotFoundError, MailQueueError, UnknownQueueError
from mailqueue.flows import split_job_key
from mailqueue.job_options import validate_queue_name
from mailqueue.manager import MailManager
from mailqueue.types import JobView

from ..context import mail_of, page_context
from ..render import is_htmx, render, render_fragment, wants_json
from .job_messages import job_messages_context
from .job_view import cut, present_job

LOG_TAIL = 100  # log lines on the page (the newest); the rest on demand
LOG_PAGE = 1000  # log lines per request for more
LOG_LINE_CHARS = 4000
CHILDREN_SHOWN = 100

LIVE_REGIONS = {
    "job-summary": "partials/_job_summary.html",
    "job-family": "partials/_job_family.html",
    "job-logs": "partials/_job_logs.html",
}


# --- urls ---------------------------------------------------------------------------------

def route_path(request: Request, route: str, **params: str) -> str:
    """A route's path with the job id percent-encoded (ids may hold '/', '?', '#').

    The queue name needs nothing here: its `{name:queue}` convertor encodes it.
    """
    if "job_id" in params:
        params["job_id"] = quote(params["job_id"], safe="")
    return str(request.app.url_path_for(route, **params))


def job_path(request: Request, route: str, queue: str, job_id: str) -> str:
    return route_path(request, route, name=queue, job_id=job_id)


def queue_path(request: Request, queue: str) -> str:
    try:
        return route_path(request, "queue_page", name=queue)
    except NoMatchFound:  # the queue page is not mounted (yet): the overview lists it
        return str(request.app.url_path_for("overview"))


def _urls(request: Request, queue: str, job_id: str, logs_from: int | None) -> dict[str, str]:
    urls = {
        route: job_path(request, route, queue, job_id)
        for route in ("job_page", "api_job", "job_data", "job_logs", "api_job_logs",
                      "flow_page", "job_retry", "job_promote", "job_remove", "job_duplicate",
                      "job_update_data")
    }
    live: dict[str, str | int] = {"view": "job", "queue": queue, "job_id": job_id}
    if logs_from is not None:
        live["logs_from"] = logs_from
    urls["live"] = f"/live?{urlencode(live)}"
    urls["queue_page"] = queue_path(request, queue)
    urls["all_logs"] = f"{urls['job_page']}?logs_from=0#job-logs"
    return urls


# --- reading one job ------------------------------------------------------------------

class LogLine(TypedDict):
    n: int  # from 1
    text: str


class LogLines(TypedDict):
    """A run of a job's log lines, and whether there are lines before and after it."""

    lines: list[LogLine]
    count: int
    first: int
    earlier: bool
    later: bool


class Relative(TypedDict):
    """A job's parent or child, with its state and the link to its page."""

    queue: str
    id: str
    name: str | None
    state: str
    url: str


class Child(Relative):
    removed: bool


class ChildCounts(TypedDict):
    pending: int
    processed: int
    failed: int


class JobFamily(TypedDict):
    parent: Relative | None
    children: list[Child]
    counts: ChildCounts
    truncated: bool
    in_flow: bool


class JobBody(TypedDict):
    """A job as its JSON twin (/api/.../jobs/<id>) answers it."""

    job: dict[str, Any]
    data_url: str
    logs: dict[str, Any]
    parent: Relative | None
    children: list[Child]
    children_counts: ChildCounts
    flow_url: str


async def read_logs(mail: MailManager, queue: str, job_id: str, logs_from: int | None
                    ) -> LogLines:
    """The newest LOG_TAIL lines, or LOG_PAGE lines from `logs_from`; numbered from 1."""
    if logs_from is None:
        page = await mail.queues.get_job_log_page(queue, job_id, -LOG_TAIL, -1)
        first = max(page["count"] - len(page["logs"]), 0)
    else:
        first = max(logs_from, 0)
        page = await mail.queues.get_job_log_page(queue, job_id, first, first + LOG_PAGE - 1)
    lines: list[LogLine] = [{"n": first + i + 1, "text": cut(str(line), LOG_LINE_CHARS)[0]}
             for i, line in enumerate(page["logs"])]
    return {"lines": lines, "count": page["count"], "first": first,
            "earlier": first > 0, "later": first + len(lines) < page["count"]}


async def read_family(request: Request, mail: MailManager, job: JobView) -> JobFamily:
    """The job's parent and children, each with its state and a link."""
    parent: Relative | None = None
    if job["parent_key"]:
        try:
            _, parent_queue, parent_id = split_job_key(job["parent_key"])
        except MailQueueError:
            parent_queue, parent_id = "", ""
        if parent_queue:
            try:
                node = await mail.flows.get_flow(parent_queue, parent_id, max_depth=0)
                state, name = node["state"], node["name"]
            except MailQueueError:
                state, name = "removed", None
            parent = {"queue": parent_queue, "id": parent_id, "state": state, "name": name,
                      "url": job_path(request, "job_page", parent_queue, parent_id)}
    children: list[Child] = []
    counts: ChildCounts = {"pending": 0, "processed": 0, "failed": 0}
    truncated = False
    try:
        tree = await mail.flows.get_flow(job["queue"], job["id"], max_depth=1,
                                         max_children=CHILDREN_SHOWN)
    except MailQueueError:  # an id BullMQ's flow keys cannot hold: no children
        tree = None
    if tree is not None:
        counts = {"pending": tree["pending"], "processed": tree["processed"],
                  "failed": tree["failed"]}
        truncated = bool(tree["truncated"])
        for child in tree["children"]:
            children.append({
                "queue": child["queue"], "id": child["id"], "name": child["name"],
                "state": child["state"], "removed": child["removed"],
                "url": job_path(request, "job_page", child["queue"], child["id"]),
            })
    return {"parent": parent, "children": children, "counts": counts,
            "truncated": truncated, "in_flow": parent is not None or bool(children)}


def _logs_from(value: str | None) -> int | None:
    try:
        return max(int(value), 0) if value not in (None, "") else None
    except ValueError:
        return None


async def job_context(request: Request, queue: str, job_id: str,
                      logs_from: int | None = None) -> dict[str, Any]:
    """Everything the job page and its live regions show."""
    mail = mail_of(request)
    job = await mail.queues.get_job_view(known_queue_name(queue), job_id)
    urls = _urls(request, queue, job_id, logs_from)
    return {
        "queue": queue, "job_id": job_id, "job": job, "view": present_job(job),
        "logs": await read_logs(mail, queue, job_id, logs_from),
        "family": await read_family(request, mail, job),
        "urls": urls, "live_url": urls["live"],
    }


def known_queue_name(queue: str) -> str:
    """UnknownQueueError for a name no queue can have (':' in it, surrounding spaces, over
    200 characters): such a URL is a missing page (404), not a server error."""
    try:
        return validate_queue_name(queue)
    except MailQueueError as exc:
        raise UnknownQueueError(str(exc)) from None


def job_ids(request: Request) -> tuple[str, str]:
    """The queue and job id a job route names."""
    return str(request.path_params["name"]), str(request.path_params["job_id"])


def suffix_is_literal(request: Request, suffix: str) -> bool:
    """Whether the URL's `suffix` (`/flow`, `/data.json`...) was typed as such.

    The pages encode a '/' inside a job id as %2F, so `/jobs/a%2Fflow` is the page of job
    `a/flow`, while `/jobs/a/flow` is the flow of job `a`; the decoded paths are the same.
    """
    raw = request.scope.get("raw_path")
    if not raw:
        return True
    path = bytes(raw).split(b"?", 1)[0]
    return path.endswith(suffix.encode())


async def as_job_page(request: Request, suffix: str, api: bool = False) -> Response:
    """The page of the job whose id ends in `suffix` (reached through a suffix route)."""
    request.path_params["job_id"] = str(request.path_params["job_id"]) + suffix
    return await (api_job(request) if api else job_page(request))


# --- pages -------------------------------------------------------------------------------

async def job_page(request: Request) -> Response:
    queue, job_id = job_ids(request)
    context = await job_context(request, queue, job_id,
                                _logs_from(request.query_params.get("logs_from")))
    context.update(await page_context(request, "overview", queue))
    context["job_messages"] = await job_messages_context(mail_of(request), queue, job_id)
    return render(request, "pages/job.html", context)


def api_job_body(context: Mapping[str, Any]) -> JobBody:
    job = dict(context["job"])
    urls = context["urls"]
    return {
        "job": job,
        "data_url": urls["job_data"],
        "logs": {"count": context["logs"]["count"], "first": context["logs"]["first"],
                 "lines": [line["text"] for line in context["logs"]["lines"]]},
        "parent": context["family"]["parent"],
        "children": context["family"]["children"],
        "children_counts": context["family"]["counts"],
        "flow_url": urls["flow_page"],
    }


async def api_job(request: Request) -> Response:
    queue, job_id = job_ids(request)
    context = await job_context(request, queue, job_id,
                                _logs_from(request.query_params.get("logs_from")))
    return JSONResponse(api_job_body(context))


async def job_data(request: Request) -> Response:
    """The whole payload, as stored, as a JSON download."""
    if not suffix_is_literal(request, "/data.json"):
        return await as_job_page(request, "/data.json")
    queue, job_id = job_ids(request)
    text = await mail_of(request).queues.get_job_data_text(known_queue_name(queue), job_id)
    filename = f"{queue}-{job_id}.json".replace("/", "_")
    disposition = f"attachment; filename=\"job-data.json\"; filename*=UTF-8''{quote(filename)}"
    return Response(text, media_type="application/json",
                    headers={"content-disposition": disposition})


async def job_logs(request: Request) -> Response:
    """More log lines: the logs fragment from `?start=` (htmx), or JSON."""
    if not suffix_is_literal(request, "/logs"):
        return await as_job_page(request, "/logs", api=wants_json(request))
    queue, job_id = job_ids(request)
    start = _logs_from(request.query_params.get("start")) or 0
    mail = mail_of(request)
    await mail.queues.get_queue(known_queue_name(queue))
    logs = await read_logs(mail, queue, job_id, start)
    if wants_json(request) or not is_htmx(request):
        return JSONResponse({"queue": queue, "job_id": job_id, "count": logs["count"],
                             "start": logs["first"],
                             "logs": [line["text"] for line in logs["lines"]]})
    urls = _urls(request, queue, job_id, start)
    return render(request, "partials/_job_logs.html", {"logs": logs, "urls": urls})


# --- live --------------------------------------------------------------------------------

async def live_job(request: Request, params: Mapping[str, str]) -> dict[str, str]:
    """The job page's live regions: summary (state, progress, result), family, logs."""
    queue, job_id = params.get("queue", ""), params.get("job_id", "")
    try:
        context = await job_context(request, queue, job_id, _logs_from(params.get("logs_from")))
    except (JobNotFoundError, UnknownQueueError) as exc:
        context = {"queue": queue, "job_id": job_id, "gone": str(exc)}
        return {"job-summary": render_fragment(request, "partials/_job_summary.html", context)}
    return {event: render_fragment(request, template, context)
            for event, template in LIVE_REGIONS.items()}
