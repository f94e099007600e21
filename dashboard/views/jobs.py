"""The job page: one job's data, options, progress, result, failures, logs, timeline and
family, its JSON twin, the data download, and the per-job operator actions.

A job's payload may be 10 MB: the page reads it through `get_job_view`, which hands back at
most DATA_PREVIEW_BYTES of it, so the page stays small and fast whatever the job carries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import NoMatchFound

from mailqueue.errors import JobNotFoundError, MailQueueError, UnknownQueueError
from mailqueue.flows import split_job_key
from mailqueue.job_options import validate_queue_name
from mailqueue.manager import MailManager
from mailqueue.types import JobView

from ..actions import (
    ActionResult,
    form_data,
    mail_of,
    operator_action,
    wants_json,
)
from ..context import page_context
from ..formatting import progress_percent
from ..render import is_htmx, render, render_fragment
from ..security import identity_of
from .job_messages import job_messages_context

LOG_TAIL = 100  # log lines on the page (the newest); the rest on demand
LOG_PAGE = 1000  # log lines per request for more
LOG_LINE_CHARS = 4000
TEXT_CHARS = 16_000  # failure reason, each stack trace, the return value
PRETTY_CHARS = 64 * 1024  # the data as shown
STACKTRACES_SHOWN = 20
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


# --- reading and presenting one job ---------------------------------------------------------

def _cut(text: str, limit: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= limit else (text[:limit], True)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def present_job(job: JobView) -> dict[str, Any]:
    """What the templates show of a job: bounded texts, numbered stack traces, a timeline."""
    if job["data_preview"] is not None:
        data_text, data_cut = job["data_preview"], job["data_truncated"]
        edit_text: str | None = None if job["data_truncated"] else job["data_preview"]
    else:
        pretty = _pretty(job["data"])
        data_text, data_cut = _cut(pretty, PRETTY_CHARS)
        compact = json.dumps(job["data"], ensure_ascii=False, default=str)
        edit_text = pretty if not data_cut else (compact if len(compact) <= PRETTY_CHARS
                                                 else None)
    traces = job["stacktrace"][-STACKTRACES_SHOWN:]
    # The newest trace is of the newest failed attempt: the last one made, unless the job
    # then completed (its last attempt succeeded). bullmq keeps the traces of a job retried
    # by hand, so a completed job may carry some.
    last_failed = job["attempts_made"] - (1 if job["state"] == "completed" else 0)
    first_attempt = max(last_failed, len(job["stacktrace"])) - len(traces) + 1
    progress = job["progress"]
    numeric = isinstance(progress, int | float) and not isinstance(progress, bool)
    return_text, return_cut = _cut(_pretty(job["return_value"]), TEXT_CHARS)
    reason, _ = _cut(job["failed_reason"] or "", TEXT_CHARS)
    return {
        "data_text": data_text,
        "data_cut": data_cut,
        # A small payload comes back as a preview only when it is not JSON (another
        # producer wrote the hash): shown as it is, and said so.
        "data_not_json": job["data_preview"] is not None and not job["data_truncated"],
        "edit_text": edit_text,
        "opts_text": _pretty(job["opts"]),
        "progress_percent": progress_percent(job),
        "progress_text": None if numeric or progress is None
        else _cut(_pretty(progress), TEXT_CHARS)[0],
        "return_text": return_text if job["return_value"] is not None else None,
        "return_cut": return_cut,
        "failed_reason": reason,
        # Red and open only while the job is failed; otherwise it is history.
        "failure_current": job["state"] == "failed",
        "attempts_text": attempts_text(job),
        "stacktraces": [
            {"attempt": first_attempt + i, "text": _cut(t, TEXT_CHARS)[0]}
            for i, t in enumerate(traces)
        ],
        "stacktraces_hidden": len(job["stacktrace"]) - len(traces),
        "timeline": timeline(job),
    }


def attempts_text(job: JobView) -> str:
    """Attempts made, against the `attempts` option when set.

    bullmq counts attempts for the job's whole life: a retry by hand keeps attemptsMade
    (unless told to reset it), so a job with attempts 1 retried once has made 2; and that
    retry runs once, whatever `attempts` says, since attemptsMade already reached it.
    """
    made = int(job["attempts_made"] or 0)
    allowed = (job["opts"] or {}).get("attempts")
    if not isinstance(allowed, int) or isinstance(allowed, bool) or allowed < 1:
        return str(made)
    if made <= allowed:
        return f"{made} of {allowed}"
    extra = made - allowed
    after = "after a manual retry" if extra == 1 else "after manual retries"
    return f"{made} made: {allowed} allowed by its options, {extra} more {after}"


def timeline(job: JobView) -> list[dict[str, Any]]:
    """Added, delayed until, started, finished, each with the time since the previous step."""
    added = job["timestamp"] or None
    due = added + job["delay"] if added and job["delay"] else None
    started, finished = job["processed_on"], job["finished_on"]
    rows: list[dict[str, Any]] = [{"label": "Added", "at": added, "span": None, "note": ""}]
    if due:
        rows.append({"label": "Delayed until", "at": due, "span": job["delay"],
                     "note": "delay"})
    if started:
        rows.append({"label": "Started", "at": started,
                     "span": started - (due or added) if added else None,
                     "note": "waited"})
    if finished:
        rows.append({"label": "Finished", "at": finished,
                     "span": finished - started if started else None, "note": "ran"})
        if added:
            rows.append({"label": "Total", "at": None, "span": finished - added,
                         "note": "from added to finished"})
    return rows


async def read_logs(mail: MailManager, queue: str, job_id: str, logs_from: int | None
                    ) -> dict[str, Any]:
    """The newest LOG_TAIL lines, or LOG_PAGE lines from `logs_from`; numbered from 1."""
    if logs_from is None:
        page = await mail.queues.get_job_log_page(queue, job_id, -LOG_TAIL, -1)
        first = max(page["count"] - len(page["logs"]), 0)
    else:
        first = max(logs_from, 0)
        page = await mail.queues.get_job_log_page(queue, job_id, first, first + LOG_PAGE - 1)
    lines = [{"n": first + i + 1, "text": _cut(str(line), LOG_LINE_CHARS)[0]}
             for i, line in enumerate(page["logs"])]
    return {"lines": lines, "count": page["count"], "first": first,
            "earlier": first > 0, "later": first + len(lines) < page["count"]}


async def read_family(request: Request, mail: MailManager, job: JobView) -> dict[str, Any]:
    """The job's parent and children, each with its state and a link."""
    parent: dict[str, Any] | None = None
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
    children: list[dict[str, Any]] = []
    counts = {"pending": 0, "processed": 0, "failed": 0}
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


def _ids(request: Request) -> tuple[str, str]:
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


async def _missing_page(request: Request, queue: str, job_id: str, exc: Exception
                        ) -> Response:
    context = await page_context(request, "overview", queue)
    context.update(queue=queue, job_id=job_id, missing=True, message=str(exc),
                   urls={"queue_page": queue_path(request, queue)})
    return render(request, "pages/job.html", context, status_code=404)


# --- pages -------------------------------------------------------------------------------

async def job_page(request: Request) -> Response:
    queue, job_id = _ids(request)
    logs_from = _logs_from(request.query_params.get("logs_from"))
    try:
        context = await job_context(request, queue, job_id, logs_from)
    except (JobNotFoundError, UnknownQueueError) as exc:
        return await _missing_page(request, queue, job_id, exc)
    context.update(await page_context(request, "overview", queue))
    context["job_messages"] = await job_messages_context(mail_of(request), queue, job_id)
    return render(request, "pages/job.html", context)


def api_job_body(context: Mapping[str, Any]) -> dict[str, Any]:
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
    queue, job_id = _ids(request)
    try:
        context = await job_context(request, queue, job_id,
                                    _logs_from(request.query_params.get("logs_from")))
    except (JobNotFoundError, UnknownQueueError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    return JSONResponse(api_job_body(context))


async def job_data(request: Request) -> Response:
    """The whole payload, as stored, as a JSON download."""
    if not suffix_is_literal(request, "/data.json"):
        return await as_job_page(request, "/data.json")
    queue, job_id = _ids(request)
    try:
        text = await mail_of(request).queues.get_job_data_text(known_queue_name(queue),
                                                               job_id)
    except (JobNotFoundError, UnknownQueueError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    filename = f"{queue}-{job_id}.json".replace("/", "_")
    disposition = f"attachment; filename=\"job-data.json\"; filename*=UTF-8''{quote(filename)}"
    return Response(text, media_type="application/json",
                    headers={"content-disposition": disposition})


async def job_logs(request: Request) -> Response:
    """More log lines: the logs fragment from `?start=` (htmx), or JSON."""
    if not suffix_is_literal(request, "/logs"):
        return await as_job_page(request, "/logs", api=wants_json(request))
    queue, job_id = _ids(request)
    start = _logs_from(request.query_params.get("start")) or 0
    mail = mail_of(request)
    try:
        await mail.queues.get_queue(known_queue_name(queue))
        logs = await read_logs(mail, queue, job_id, start)
    except UnknownQueueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
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


# --- actions -------------------------------------------------------------------------------

@operator_action("job.retry")
async def job_retry(request: Request, mail: MailManager) -> ActionResult:
    """Move a failed or completed job back to waiting."""
    queue, job_id = _ids(request)
    await mail.queues.retry_job(queue, job_id)
    return ActionResult(f"Job {job_id} is waiting to run again", f"{queue}/{job_id}")


@operator_action("job.promote")
async def job_promote(request: Request, mail: MailManager) -> ActionResult:
    """Run a delayed job now."""
    queue, job_id = _ids(request)
    await mail.queues.promote_job(queue, job_id)
    return ActionResult(f"Job {job_id} was promoted: it runs now", f"{queue}/{job_id}")


@operator_action("job.remove")
async def job_remove(request: Request, mail: MailManager) -> ActionResult:
    """Remove the job (and its logs); back to its queue."""
    queue, job_id = _ids(request)
    await mail.queues.remove_job(queue, job_id)
    return ActionResult(f"Job {job_id} was removed", f"{queue}/{job_id}",
                        redirect=queue_path(request, queue))


@operator_action("job.duplicate")
async def job_duplicate(request: Request, mail: MailManager) -> ActionResult:
    """Add a new job with the same name, data and options (not the id)."""
    queue, job_id = _ids(request)
    copy = await mail.queues.duplicate_job(queue, job_id)
    new_id = str(copy.id)
    return ActionResult(f"Added job {new_id}, a copy of {job_id}", f"{queue}/{job_id}",
                        redirect=job_path(request, "job_page", queue, new_id),
                        data={"job_id": new_id})


def parse_job_data(text: str) -> tuple[Any, str | None]:
    """The operator's JSON, or the reason it is not JSON (with line and column)."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"Invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"


async def _update_job_data(request: Request, mail: MailManager) -> ActionResult:
    """Replace the job's data with the operator's JSON."""
    queue, job_id = _ids(request)
    target = f"{queue}/{job_id}"
    text = (await form_data(request)).get("data", "")
    data, error = parse_job_data(text)
    if error is not None:
        if is_htmx(request) and not wants_json(request):
            # A 200 so that htmx shows the error in place; the textarea is not touched.
            return ActionResult(error, target, ok=False)
        raise ValueError(error)
    await mail.queues.update_job_data(queue, job_id, data)
    return ActionResult(f"Saved the data of job {job_id}", target,
                        redirect=job_path(request, "job_page", queue, job_id))


_update_job_data_action = operator_action("job.update-data")(_update_job_data)


async def job_update_data(request: Request) -> Response:
    """Edit data. Without JavaScript, invalid JSON shows the page again with the text kept."""
    if is_htmx(request) or wants_json(request):
        return await _update_job_data_action(request)
    try:
        text = (await form_data(request)).get("data", "")
    except MailQueueError:  # a JSON body that is not an object: the action answers 422
        return await _update_job_data_action(request)
    _, error = parse_job_data(text)
    if error is None:
        return await _update_job_data_action(request)
    queue, job_id = _ids(request)
    mail = mail_of(request)
    await mail.events.record_audit(identity_of(request).user, "job.update-data",
                                   f"{queue}/{job_id}", "error", error)
    try:
        context = await job_context(request, queue, job_id)
    except (JobNotFoundError, UnknownQueueError) as exc:
        return await _missing_page(request, queue, job_id, exc)
    context["view"]["edit_text"] = text
    context["edit_error"] = error
    context.update(await page_context(request, "overview", queue))
    return render(request, "pages/job.html", context, status_code=422)
