"""Bull Board's operator controls (issue 14): a queue's global concurrency and rate limit, a
delayed job's delay and a job's priority, a job scheduler edited with a preview of its next
runs, and the "latest" tab (the newest jobs whatever their state).

Every change goes through the manager layer (mailqueue/queues/limits.py, job_writes.py,
schedules.py), is audited by `operator_action`, and answers htmx, JSON (`/api/...`) or a
plain form. A job in the wrong state is a 409 with the reason, one line (dashboard/errors.py).
"""

from __future__ import annotations

import json
import time
from typing import Any, TypedDict
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailqueue.errors import (
    InvalidScheduleError,
)
from mailqueue.manager import MailManager
from mailqueue.queues.limits import QueueLimits
from mailqueue.queues.schedules import iso_utc, next_runs
from mailqueue.types import JOB_STATES

from ..actions import ActionResult, Endpoint, form_data, operator_action
from ..context import mail_of, page_context
from ..formatting import ago
from ..render import is_htmx, render, wants_json
from .jobs import job_ids

LATEST_ROWS = 50


def _name(request: Request) -> str:
    return str(request.path_params["name"])


def _duration(ms: int) -> str:
    if ms % 3_600_000 == 0:
        return f"{ms // 3_600_000} h"
    if ms % 60_000 == 0:
        return f"{ms // 60_000} min"
    if ms % 1000 == 0:
        return f"{ms // 1000} s"
    return f"{ms:,} ms"


def limits_words(limits: QueueLimits) -> dict[str, str]:
    """The limits as the page says them."""
    rate = limits["rate_limit"]
    return {
        "concurrency": (f"{limits['concurrency']:,} active at most"
                        if limits["concurrency"] is not None else "no limit"),
        "rate_limit": (f"{rate['max']:,} jobs per {_duration(rate['duration_ms'])}"
                       if rate is not None else "no limit"),
    }


class LimitsContext(TypedDict):
    limits: QueueLimits
    limits_words: dict[str, str]


async def queue_limits_context(mail: MailManager, name: str) -> LimitsContext:
    """What the queue page's Limits line shows (and its forms prefill)."""
    limits = await mail.queues.get_limits(name)
    return {"limits": limits, "limits_words": limits_words(limits)}


# --- global concurrency and rate limit -------------------------------------------------------

def limits_changed(endpoint: Endpoint) -> Endpoint:
    """After a change answered to htmx, `HX-Trigger: limits-changed`: the Limits line
    (which listens for it) loads itself again, and the answer stays shown under the forms."""

    async def wrapped(request: Request) -> Response:
        response = await endpoint(request)
        if response.status_code == 200 and is_htmx(request):
            response.headers["HX-Trigger"] = "limits-changed"
        return response

    wrapped.__name__ = endpoint.__name__
    return wrapped


async def queue_limits_line(request: Request) -> Response:
    """The Limits line alone (what htmx loads again after a change)."""
    name = _name(request)
    context = await queue_limits_context(mail_of(request), name)
    return render(request, "partials/_queue_limits_line.html", {"queue": name, **context})


@limits_changed
@operator_action("queue.set-concurrency")
async def queue_set_concurrency(request: Request, mail: MailManager) -> ActionResult:
    name = _name(request)
    form = await form_data(request)
    n = await mail.queues.set_global_concurrency(name, form.get("concurrency", ""))
    return ActionResult(f"{name}: at most {n:,} job(s) active at once, across all workers",
                        name, data={"concurrency": n})


def _released(name: str, limit: str, removed: bool) -> ActionResult:
    what = "released" if removed else "had none"
    return ActionResult(f"{name}: global {limit.replace('_', ' ')} {what}", name,
                        data={limit: None, "removed": removed})


@limits_changed
@operator_action("queue.release-concurrency")
async def queue_release_concurrency(request: Request, mail: MailManager) -> ActionResult:
    name = _name(request)
    return _released(name, "concurrency", await mail.queues.remove_global_concurrency(name))


@limits_changed
@operator_action("queue.set-rate-limit")
async def queue_set_rate_limit(request: Request, mail: MailManager) -> ActionResult:
    name = _name(request)
    form = await form_data(request)
    rate = await mail.queues.set_global_rate_limit(name, form.get("max", ""),
                                                   form.get("duration_ms", ""))
    return ActionResult(f"{name}: at most {rate['max']:,} job(s) per "
                        f"{_duration(rate['duration_ms'])}, across all workers", name,
                        data={"rate_limit": dict(rate)})


@limits_changed
@operator_action("queue.release-rate-limit")
async def queue_release_rate_limit(request: Request, mail: MailManager) -> ActionResult:
    name = _name(request)
    return _released(name, "rate_limit", await mail.queues.remove_global_rate_limit(name))


async def api_queue_limits(request: Request) -> Response:
    name = _name(request)
    limits = await mail_of(request).queues.get_limits(name)
    return JSONResponse({"queue": name, **limits})


# --- one job: delay and priority ---------------------------------------------------------

@operator_action("job.change-delay")
async def job_change_delay(request: Request, mail: MailManager) -> ActionResult:
    """Run a delayed job N seconds from now (not from when it was added)."""
    queue, job_id = job_ids(request)
    target = f"{queue}/{job_id}"
    form = await form_data(request)
    if form.get("delay_ms", "").strip():
        delay_ms: Any = form["delay_ms"]
    else:
        try:
            delay_ms = round(float(form.get("delay_s", "")) * 1000)
        except ValueError:
            raise ValueError("The delay is a number of seconds") from None
    ms = await mail.queues.change_delay(queue, job_id, delay_ms)  # JobStateError: a 409
    due = int(time.time() * 1000) + ms
    return ActionResult(f"Job {job_id} now runs in {ms / 1000:g} s ({iso_utc(due)})", target,
                        data={"delay_ms": ms, "due_ms": due})


@operator_action("job.change-priority")
async def job_change_priority(request: Request, mail: MailManager) -> ActionResult:
    """Another priority for a waiting or prioritized job (0: none; 1 runs first)."""
    queue, job_id = job_ids(request)
    target = f"{queue}/{job_id}"
    form = await form_data(request)
    lifo = form.get("lifo", "") in ("1", "on", "true", "yes")
    n = await mail.queues.change_priority(queue, job_id, form.get("priority", ""), lifo)
    return ActionResult(f"Job {job_id} now has priority {n}", target, data={"priority": n})


# --- job schedulers ----------------------------------------------------------------------

def _schedule_fields(form: dict[str, str]) -> tuple[str | None, int | None, str | None]:
    """cron or every (ms) and time zone of an edit form; ValueError, one line, if unusable."""
    cron = " ".join(form.get("cron", "").split()) or None
    every_text = form.get("every_ms", "").strip()
    every: int | None = None
    if every_text:
        try:
            every = int(every_text)
        except ValueError:
            raise InvalidScheduleError("every is a whole number of ms") from None
    if cron is not None and every is not None:
        raise InvalidScheduleError("Give a cron pattern or an interval, not both")
    if cron is None and every is None:
        raise InvalidScheduleError("Give a cron pattern or an interval (ms)")
    tz = form.get("tz", "").strip() or None
    return cron, every, tz


# One next run: when (ms, and in UTC words) and how long from now ("in": "in 5 min").
Run = TypedDict("Run", {"ms": int, "utc": str, "in": str})


class SchedulePreview(TypedDict):
    preview: list[Run]
    preview_error: str | None


def preview_rows(cron: str | None, every_ms: int | None, tz: str | None,
                 now_ms: float | None = None) -> SchedulePreview:
    """`preview`: the next runs ({ms, utc, in}), or `preview_error`: why there are none."""
    now = time.time() * 1000 if now_ms is None else now_ms
    try:
        runs = next_runs(cron, every_ms, tz, now_ms=int(now))
    except InvalidScheduleError as exc:
        return {"preview": [], "preview_error": str(exc)[:300]}
    return {"preview": [{"ms": ms, "utc": iso_utc(ms), "in": ago(ms, now)} for ms in runs],
            "preview_error": None}


async def schedule_preview(request: Request) -> Response:
    """The next runs of a pattern or interval as typed (GET: it changes nothing). An error
    is its one line, with status 200 for htmx (it is shown in place) and 422 for JSON."""
    form = {k: v for k, v in request.query_params.items()}
    error: str | None
    try:
        cron, every, tz = _schedule_fields(form)
    except InvalidScheduleError as exc:
        cron, every, tz, error = None, None, None, str(exc)[:300]
    else:
        rows = preview_rows(cron, every, tz)
        error = rows["preview_error"]
    if wants_json(request) and not is_htmx(request):
        if error:
            return JSONResponse({"error": error}, status_code=422)
        return JSONResponse({"runs": rows["preview"], "tz": tz or "UTC"})
    if error:
        return render(request, "partials/_schedule_preview.html", {"error": error})
    return render(request, "partials/_schedule_preview.html",
                  {"runs": rows["preview"], "tz": tz})


@operator_action("schedule.update")
async def schedule_update(request: Request, mail: MailManager) -> ActionResult:
    """Change a scheduler's pattern or interval, time zone and data; same id."""
    queue, scheduler_id = request.path_params["queue"], request.path_params["scheduler_id"]
    form = await form_data(request)
    cron, every, tz = _schedule_fields(form)
    data: Any = None
    if form.get("data", "").strip():
        try:
            data = json.loads(form["data"])
        except ValueError as exc:
            raise ValueError(f"Data is not valid JSON: {exc}") from None
    saved = await mail.queues.update_schedule(queue, scheduler_id, cron=cron, every_ms=every,
                                              tz=tz, data=data)
    when = saved["cron"] or f"every {saved['every_ms']} ms"
    nxt = f", next run {iso_utc(saved['next_run'])}" if saved["next_run"] else ""
    return ActionResult(f"Scheduler {scheduler_id} saved: {when}{nxt}",
                        f"{queue}/{scheduler_id}", data={"schedule": dict(saved)})


# --- the "latest" tab -------------------------------------------------------------------

async def _latest(request: Request, name: str) -> dict[str, Any]:
    mail = mail_of(request)
    jobs = await mail.queues.get_latest_jobs(name, LATEST_ROWS)
    counts = await mail.queues.get_job_counts(name)
    return {"queue": name, "jobs": jobs, "counts": counts}


async def queue_latest(request: Request) -> Response:
    name = _name(request)
    latest = await _latest(request, name)
    base = str(request.url_for("queue_page", name=name))
    context = await page_context(request, "overview", name)
    context.update(
        queue=name, jobs=latest["jobs"], states=JOB_STATES,
        listing={"counts": latest["counts"]}, params={"state": "latest"},
        links={"tabs": {s: f"{base}?{urlencode({'state': s})}" for s in JOB_STATES}},
        now_ms=time.time() * 1000,
    )
    return render(request, "pages/queue_latest.html", context)


async def api_queue_latest(request: Request) -> Response:
    return JSONResponse(await _latest(request, _name(request)))
