"""The schedules page: every BullMQ job scheduler, in words, with run-now and remove."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailqueue.errors import JobNotFoundError
from mailqueue.manager import MailManager
from mailqueue.types import ScheduleInfo

from ..actions import ActionResult, operator_action
from ..context import mail_of, page_context
from ..cron_words import cron_to_words, every_to_words
from ..formatting import ago
from ..render import render
from .queue_controls import preview_rows


def schedule_row(schedule: ScheduleInfo, now_ms: float) -> dict[str, Any]:
    """A scheduler as the page and the JSON twin show it."""
    template = schedule.get("template") or {}
    if schedule["cron"]:
        words = cron_to_words(schedule["cron"])
    else:
        words = every_to_words(schedule["every_ms"])
    return {
        **schedule,
        "words": words,
        "data": template.get("data"),
        "opts": template.get("opts") or {},
        "next_run_in": ago(schedule["next_run"], now_ms) if schedule["next_run"] else None,
        **preview_rows(schedule["cron"], schedule["every_ms"], schedule["tz"], now_ms),
    }


async def _rows(mail: MailManager) -> list[dict[str, Any]]:
    now_ms = time.time() * 1000
    schedules = await mail.list_schedules()
    schedules.sort(key=lambda s: (s["queue"], s["id"]))
    # A row number gives each row's result an element id (scheduler ids may be any text).
    return [{**schedule_row(s, now_ms), "row": i} for i, s in enumerate(schedules, 1)]


async def schedules_page(request: Request) -> Response:
    context = await page_context(request, "schedules_page")
    context["schedules"] = await _rows(mail_of(request))
    return render(request, "pages/schedules.html", context,
                  fragment="partials/_schedule_table.html")


async def api_schedules(request: Request) -> Response:
    return JSONResponse({"schedules": await _rows(mail_of(request))})


@operator_action("schedule.run-now")
async def schedule_run_now(request: Request, mail: MailManager) -> ActionResult:
    """Add a job from the scheduler's template at once."""
    queue, scheduler_id = request.path_params["queue"], request.path_params["scheduler_id"]
    job = await mail.run_schedule_now(queue, scheduler_id)
    return ActionResult(f"Added job {job.id} to {queue}", f"{queue}/{scheduler_id}",
                        data={"job_id": str(job.id)})


@operator_action("schedule.remove")
async def schedule_remove(request: Request, mail: MailManager) -> ActionResult:
    """Remove the job scheduler (jobs already added stay)."""
    queue, scheduler_id = request.path_params["queue"], request.path_params["scheduler_id"]
    target = f"{queue}/{scheduler_id}"
    if not await mail.remove_schedule(queue, scheduler_id):
        raise JobNotFoundError(f"No job scheduler {scheduler_id!r} in queue {queue!r}")
    return ActionResult(f"Removed scheduler {scheduler_id}", target)
