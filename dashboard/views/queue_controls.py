"""Bull Board's operator controls (issue 14): a queue's global concurrency and rate limit, a
delayed job's delay and a job's priority, a job scheduler edited with a preview of its next
runs, and the "latest" tab (the newest jobs whatever their state).

Every change goes through the manager layer (mailqueue/queue_controls.py), is audited by
`operator_action`, and answers htmx, JSON (`/api/...`) or a plain form. A job in the wrong
state is a 409 with the reason, one line.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailqueue.errors import (
    JobStateError,
    MailQueueError,
)
from mailqueue.manager import MailManager
from mailqueue.queue_controls import (
    QueueLimits,
    iso_utc,
)

from ..actions import (
    ActionResult,
    Endpoint,
    form_data,
    mail_of,
    operator_action,
)
from ..render import is_htmx, render


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


async def queue_limits_context(mail: MailManager, name: str) -> dict[str, Any]:
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
    try:
        context = await queue_limits_context(mail_of(request), name)
    except MailQueueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    return render(request, "partials/_queue_limits_line.html", {"queue": name, **context})


@operator_action("queue.set-concurrency")
async def _queue_set_concurrency(request: Request, mail: MailManager) -> ActionResult:
    name = _name(request)
    form = await form_data(request)
    n = await mail.queues.set_global_concurrency(name, form.get("concurrency", ""))
    return ActionResult(f"{name}: at most {n:,} job(s) active at once, across all workers",
                        name, data={"concurrency": n})


@operator_action("queue.release-concurrency")
async def _queue_release_concurrency(request: Request, mail: MailManager) -> ActionResult:
    name = _name(request)
    removed = await mail.queues.remove_global_concurrency(name)
    what = "released" if removed else "had none"
    return ActionResult(f"{name}: global concurrency {what}", name,
                        data={"concurrency": None, "removed": removed})


@operator_action("queue.set-rate-limit")
async def _queue_set_rate_limit(request: Request, mail: MailManager) -> ActionResult:
    name = _name(request)
    form = await form_data(request)
    rate = await mail.queues.set_global_rate_limit(name, form.get("max", ""),
                                                   form.get("duration_ms", ""))
    return ActionResult(f"{name}: at most {rate['max']:,} job(s) per "
                        f"{_duration(rate['duration_ms'])}, across all workers", name,
                        data={"rate_limit": dict(rate)})


@operator_action("queue.release-rate-limit")
async def _queue_release_rate_limit(request: Request, mail: MailManager) -> ActionResult:
    name = _name(request)
    removed = await mail.queues.remove_global_rate_limit(name)
    what = "released" if removed else "had none"
    return ActionResult(f"{name}: global rate limit {what}", name,
                        data={"rate_limit": None, "removed": removed})


queue_set_concurrency = limits_changed(_queue_set_concurrency)
queue_release_concurrency = limits_changed(_queue_release_concurrency)
queue_set_rate_limit = limits_changed(_queue_set_rate_limit)
queue_release_rate_limit = limits_changed(_queue_release_rate_limit)


async def api_queue_limits(request: Request) -> Response:
    name = _name(request)
    try:
        limits = await mail_of(request).queues.get_limits(name)
    except MailQueueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    return JSONResponse({"queue": name, **limits})


# --- one job: delay and priority ---------------------------------------------------------

def _job_ids(request: Request) -> tuple[str, str]:
    return str(request.path_params["name"]), str(request.path_params["job_id"])


def _wrong_state(exc: JobStateError, target: str) -> ActionResult:
    return ActionResult(str(exc), target, ok=False, status=409)


@operator_action("job.change-delay")
async def job_change_delay(request: Request, mail: MailManager) -> ActionResult:
    """Run a delayed job N seconds from now (not from when it was added)."""
    queue, job_id = _job_ids(request)
    target = f"{queue}/{job_id}"
    form = await form_data(request)
    if form.get("delay_ms", "").strip():
        delay_ms: Any = form["delay_ms"]
    else:
        try:
            delay_ms = round(float(form.get("delay_s", "")) * 1000)
        except ValueError:
            raise ValueError("The delay is a number of seconds") from None
    try:
        ms = await mail.queues.change_delay(queue, job_id, delay_ms)
    except JobStateError as exc:
        return _wrong_state(exc, target)
    due = int(time.time() * 1000) + ms
    return ActionResult(f"Job {job_id} now runs in {ms / 1000:g} s ({iso_utc(due)})", target,
                        data={"delay_ms": ms, "due_ms": due})


@operator_action("job.change-priority")
async def job_change_priority(request: Request, mail: MailManager) -> ActionResult:
    """Another priority for a waiting or prioritized job (0: none; 1 runs first)."""
    queue, job_id = _job_ids(request)
    target = f"{queue}/{job_id}"
    form = await form_data(request)
    lifo = form.get("lifo", "") in ("1", "on", "true", "yes")
    try:
        n = await mail.queues.change_priority(queue, job_id, form.get("priority", ""), lifo)
    except JobStateError as exc:
        return _wrong_state(exc, target)
    return ActionResult(f"Job {job_id} now has priority {n}", target, data={"priority": n})
