"""The operator actions on one job: retry, promote, remove, duplicate and edit its data,
each audited through `operator_action` (its delay and priority: views/queue_controls.py)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mailqueue.errors import MailQueueError
from mailqueue.manager import MailManager

from ..actions import ActionResult, form_data, operator_action
from ..context import mail_of, page_context
from ..render import is_htmx, render, wants_json
from ..security import identity_of
from .jobs import job_context, job_ids, job_path, queue_path


@operator_action("job.retry")
async def job_retry(request: Request, mail: MailManager) -> ActionResult:
    """Move a failed or completed job back to waiting."""
    queue, job_id = job_ids(request)
    await mail.queues.retry_job(queue, job_id)
    return ActionResult(f"Job {job_id} is waiting to run again", f"{queue}/{job_id}")


@operator_action("job.promote")
async def job_promote(request: Request, mail: MailManager) -> ActionResult:
    """Run a delayed job now."""
    queue, job_id = job_ids(request)
    await mail.queues.promote_job(queue, job_id)
    return ActionResult(f"Job {job_id} was promoted: it runs now", f"{queue}/{job_id}")


@operator_action("job.remove")
async def job_remove(request: Request, mail: MailManager) -> ActionResult:
    """Remove the job (and its logs); back to its queue."""
    queue, job_id = job_ids(request)
    await mail.queues.remove_job(queue, job_id)
    return ActionResult(f"Job {job_id} was removed", f"{queue}/{job_id}",
                        redirect=queue_path(request, queue))


@operator_action("job.duplicate")
async def job_duplicate(request: Request, mail: MailManager) -> ActionResult:
    """Add a new job with the same name, data and options (not the id)."""
    queue, job_id = job_ids(request)
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
    queue, job_id = job_ids(request)
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
    queue, job_id = job_ids(request)
    mail = mail_of(request)
    await mail.events.record_audit(identity_of(request).user, "job.update-data",
                                   f"{queue}/{job_id}", "error", error)
    context = await job_context(request, queue, job_id)
    context["view"]["edit_text"] = text
    context["edit_error"] = error
    context.update(await page_context(request, "overview", queue))
    return render(request, "pages/job.html", context, status_code=422)
