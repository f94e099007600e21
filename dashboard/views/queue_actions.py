"""The queue-wide operator actions (retry all failed, promote all delayed, clean, pause,
resume, drain, obliterate, add a job, retry or remove selected rows; pause or resume every
queue), each audited through `operator_action`. The queue page itself is views/queues.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request

from mailqueue.errors import MailQueueError
from mailqueue.manager import MailManager

from ..actions import ActionResult, Endpoint, form_data, is_json_body, json_object, operator_action
from ..params import bounded

CLEANABLE_STATES = ("completed", "failed", "delayed", "waiting", "active", "paused",
                    "prioritized")
MAX_SELECTED = 1000  # job ids in one multi-select action


def _name(request: Request) -> str:
    return str(request.path_params["name"])


def _count_action(action: str, verb: str, state: str, key: str,
                  call: Callable[[MailManager, str], Awaitable[int]]) -> Endpoint:
    """An action on every job of one state of the queue, answered with how many."""

    async def handler(request: Request, mail: MailManager) -> ActionResult:
        name = _name(request)
        count = await call(mail, name)
        return ActionResult(f"{verb} {count} {state} job(s) of {name}", name,
                            data={key: count})

    handler.__name__ = action.replace(".", "_").replace("-", "_")
    return operator_action(action)(handler)


queue_retry_failed = _count_action("queue.retry-failed", "Retried", "failed", "retried",
                                   lambda mail, name: mail.queues.retry_failed(name))
queue_promote_delayed = _count_action("queue.promote-delayed", "Promoted", "delayed",
                                      "promoted",
                                      lambda mail, name: mail.queues.promote_delayed(name))


@operator_action("queue.clean")
async def queue_clean(request: Request, mail: MailManager) -> ActionResult:
    name = _name(request)
    form = await form_data(request)
    state = form.get("state") or "completed"
    if state not in CLEANABLE_STATES:
        raise ValueError(f"Cannot clean {state!r}: one of {', '.join(CLEANABLE_STATES)}")
    grace_s = bounded(form.get("grace"), 0.0, float, 0.0, 1e9,
                      "The grace period is a number of seconds, 0 or more")
    removed = await mail.queues.clean(name, state, int(grace_s * 1000))
    return ActionResult(f"Removed {len(removed)} {state} job(s) older than {grace_s:g} s "
                        f"from {name}", name, data={"removed": len(removed)})


@operator_action("queue.pause")
async def queue_pause(request: Request, mail: MailManager) -> ActionResult:
    name = _name(request)
    await mail.queues.pause(name)
    return ActionResult(f"Paused {name}", name)


@operator_action("queue.resume")
async def queue_resume(request: Request, mail: MailManager) -> ActionResult:
    name = _name(request)
    await mail.queues.resume(name)
    return ActionResult(f"Resumed {name}", name)


@operator_action("queue.drain")
async def queue_drain(request: Request, mail: MailManager) -> ActionResult:
    name = _name(request)
    form = await form_data(request)
    delayed = form.get("delayed", "") in ("1", "on", "true", "yes")
    await mail.queues.drain(name, include_delayed=delayed)
    what = "waiting and delayed" if delayed else "waiting"
    return ActionResult(f"Drained the {what} jobs of {name}", name)


@operator_action("queue.obliterate")
async def queue_obliterate(request: Request, mail: MailManager) -> ActionResult:
    name = _name(request)
    form = await form_data(request)
    if form.get("confirm_name", "") != name:
        raise ValueError(f"Not obliterated: type the queue name {name!r} to confirm")
    await mail.queues.obliterate(name, force=form.get("force", "") in ("1", "on", "true"))
    return ActionResult(f"Obliterated {name}", name,
                        redirect=str(request.url_for("overview")))


def _json_field(text: str, what: str, default: Any) -> Any:
    if not text.strip():
        return default
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None


@operator_action("queue.add-job")
async def queue_add_job(request: Request, mail: MailManager) -> ActionResult:
    name = _name(request)
    await mail.queues.get_queue(name)  # adding must not create a queue by a typo in the URL
    form = await form_data(request)
    job_name = form.get("name", "").strip()
    if not job_name:
        raise ValueError("The job needs a name")
    data = _json_field(form.get("data", ""), "Data", {})
    opts = _json_field(form.get("opts", ""), "Options", {})
    if not isinstance(opts, dict):
        raise ValueError("Options must be a JSON object, like {\"attempts\": 3}")
    job = await mail.queues.add_job(name, job_name, data, opts)
    return ActionResult(f"Added job {job.id} ({job_name}) to {name}", name,
                        data={"job_id": str(job.id)})


async def _selected_ids(request: Request) -> list[str]:
    if is_json_body(request):
        raw = (await json_object(request)).get("job_ids")
        ids = [str(i) for i in raw] if isinstance(raw, list) else []
    else:
        form = await request.form()
        ids = [v for v in form.getlist("job_id") if isinstance(v, str)]
    ids = list(dict.fromkeys(i for i in ids if i))
    if not ids:
        raise ValueError("Select at least one job")
    if len(ids) > MAX_SELECTED:
        raise ValueError(f"At most {MAX_SELECTED} jobs at once")
    return ids


async def _each_job(request: Request, mail: MailManager, verb: str, remove: bool
                    ) -> ActionResult:
    name = _name(request)
    await mail.queues.get_queue(name)
    done, failures = [], []
    for job_id in await _selected_ids(request):
        try:
            if remove:
                await mail.queues.remove_job(name, job_id)
            else:
                await mail.queues.retry_job(name, job_id)
            done.append(job_id)
        except MailQueueError as exc:
            failures.append(f"{job_id}: {exc}")
    message = f"{verb} {len(done)} job(s) of {name}"
    if failures:
        message += f"; {len(failures)} not: " + "; ".join(failures[:5])
    return ActionResult(message, f"{name}/{','.join(done[:20]) or '-'}", ok=not failures,
                        data={"done": done, "failed": failures})


@operator_action("queue.retry-selected")
async def queue_retry_selected(request: Request, mail: MailManager) -> ActionResult:
    return await _each_job(request, mail, "Retried", remove=False)


@operator_action("queue.remove-selected")
async def queue_remove_selected(request: Request, mail: MailManager) -> ActionResult:
    return await _each_job(request, mail, "Removed", remove=True)


async def _every_queue(mail: MailManager, pause: bool) -> ActionResult:
    names = await mail.queues.list_queues(refresh=True)
    await asyncio.gather(*(mail.queues.pause(n) if pause else mail.queues.resume(n)
                           for n in names))
    verb = "Paused" if pause else "Resumed"
    return ActionResult(f"{verb} {len(names)} queue(s)", "*", data={"queues": names})


@operator_action("queues.pause-all")
async def queues_pause_all(request: Request, mail: MailManager) -> ActionResult:
    return await _every_queue(mail, pause=True)


@operator_action("queues.resume-all")
async def queues_resume_all(request: Request, mail: MailManager) -> ActionResult:
    return await _every_queue(mail, pause=False)
