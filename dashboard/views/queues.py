"""Queues: one queue's page of jobs (its actions are views/queue_actions.py; the overview is
views/overview.py).

Each page has a JSON twin under /api/ and a `live_<page>` function that renders the page's
live regions (the same partials the page includes) for the SSE hub.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping
from typing import Any, Required, TypedDict
from urllib.parse import quote, urlencode

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailqueue.errors import JobNotFoundError, MailQueueError
from mailqueue.manager import MailManager
from mailqueue.queues.job_reads import MAX_PER_PAGE
from mailqueue.types import JOB_STATES

from ..charts import queue_charts
from ..context import live_url, mail_of, page_context
from ..errors import BadParameterError
from ..params import bounded
from ..queue_warnings import as_json, queue_warnings
from ..render import is_htmx, render, render_fragment
from .failed_rows import add_failure_stacks
from .queue_actions import CLEANABLE_STATES
from .queue_controls import queue_limits_context

PER_PAGE_CHOICES = (25, 50, 100, 200)
DEFAULT_PER_PAGE = 50
SEARCH_FIELDS = ("id", "name", "data")


class QueueNameConvertor(Convertor[str]):
    """`{name:queue}` in a route: any queue name, `/` included, as one path segment.

    A server decodes %2F before routing, so `/` is written `~2F` (and `~` itself `~7E`); the
    rest is percent-quoted, so `?` or `#` in a Node-made queue's name cannot break a link.
    """

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return re.sub("~(2F|7E)", lambda m: "/" if m.group(1) == "2F" else "~", value)

    def to_string(self, value: str) -> str:
        return quote(value.replace("~", "~7E").replace("/", "~2F"), safe="~@!$&'()*+,;=:")


register_url_convertor("queue", QueueNameConvertor())


# --- one queue --------------------------------------------------------------------------

# What a queue page lists: `from` is where a search by name or data goes on.
ListingParams = TypedDict("ListingParams", {
    "state": str, "page": int, "per_page": int, "sort": str, "by": str, "q": str, "from": int,
})


class ListingSearch(TypedDict, total=False):
    """A search's figures: how many jobs matched, were read of how many, where next."""

    by: Required[str]
    text: Required[str]
    matched: Required[int]
    scanned: int | None  # None for a search by id: one read
    total: int | None
    start: int
    next_start: int | None


class JobListing(TypedDict):
    """The rows a queue page shows: one page of a state, or a search's matches."""

    queue: str
    state: str
    counts: dict[str, int]
    jobs: list[Any]  # job summaries (a search by id: the job's view without its data)
    total: int
    page: int
    pages: int
    per_page: int
    sort: str
    search: ListingSearch | None


def listing_params(params: Mapping[str, str]) -> ListingParams:
    """state, page, per_page, sort and search of a queue page; BadParameterError if wrong."""
    state = params.get("state") or "waiting"
    if state not in JOB_STATES:
        raise BadParameterError(f"Unknown state {state!r}: one of {', '.join(JOB_STATES)}")
    page = bounded(params.get("page"), 1, int, 1, 10_000_000,
                   "page must be a whole number, 1 or more", BadParameterError)
    per_page = bounded(params.get("per_page"), DEFAULT_PER_PAGE, int, 1, MAX_PER_PAGE,
                       f"per_page must be a whole number within 1..{MAX_PER_PAGE}",
                       BadParameterError)
    sort = params.get("sort") or "desc"
    if sort not in ("asc", "desc"):
        raise BadParameterError("sort must be asc or desc")
    by = params.get("by") or "name"
    if by not in SEARCH_FIELDS:
        raise BadParameterError(f"search by one of {', '.join(SEARCH_FIELDS)}")
    start = bounded(params.get("from"), 0, int, 0, 2 ** 53,
                    "from must be a whole number, 0 or more", BadParameterError)
    return {"state": state, "page": page, "per_page": per_page, "sort": sort, "by": by,
            "q": (params.get("q") or "").strip()[:500], "from": start}


async def job_listing(mail: MailManager, name: str, p: ListingParams) -> JobListing:
    """The rows to show: one page of a state, or a search (by id, name or data); on the
    failed list, each row with its newest stack trace."""
    listing = await _read_listing(mail, name, p)
    if p["state"] == "failed":
        await add_failure_stacks(mail, name, listing["jobs"])
    return listing


async def _read_listing(mail: MailManager, name: str, p: ListingParams) -> JobListing:
    if not p["q"]:
        page = await mail.queues.get_job_summaries(name, p["state"], p["page"],
                                                   p["per_page"], p["sort"])
        return {**page, "search": None,
                "pages": max(1, math.ceil(page["total"] / p["per_page"]))}
    if p["by"] == "id":
        counts = await mail.queues.get_job_counts(name)
        try:
            # The job view reads the hash without parsing the data: a job whose data is not
            # JSON (written by another producer) is found too.
            job = await mail.queues.get_job_view(name, p["q"], data_limit=0)
        except JobNotFoundError:
            jobs: list[dict[str, Any]] = []
        else:
            jobs = [{**job, "attempts": (job["opts"] or {}).get("attempts", 1)}]
            for key in ("data", "data_preview", "data_size", "data_truncated"):
                jobs[0].pop(key, None)
            jobs[0].pop("return_value", None)
        search: ListingSearch = {"by": "id", "text": p["q"], "matched": len(jobs),
                                 "scanned": None, "total": None}
        return {"queue": name, "state": p["state"], "counts": counts, "jobs": jobs,
                "total": len(jobs), "page": 1, "pages": 1, "per_page": p["per_page"],
                "sort": p["sort"], "search": search}
    found = await mail.queues.search_jobs(name, p["state"], p["q"], field=p["by"],
                                          max_results=p["per_page"], sort=p["sort"],
                                          start=p["from"])
    search = {"by": p["by"], "text": p["q"], "matched": found["matched"],
              "scanned": found["scanned"], "total": found["total"], "start": found["start"],
              "next_start": found["next_start"]}
    return {"queue": name, "state": p["state"], "counts": found["counts"],
            "jobs": found["jobs"], "total": found["matched"], "page": 1, "pages": 1,
            "per_page": p["per_page"], "sort": p["sort"], "search": search}


def _page_links(p: ListingParams, pages: int) -> dict[str, Any]:
    """Query strings of the pager (first, previous, next, last) and of each state tab."""
    base = {"per_page": p["per_page"], "sort": p["sort"]}

    def query(**changes: Any) -> str:
        return "?" + urlencode({**base, "state": p["state"], **changes})

    page = p["page"]
    return {
        "first": query(page=1) if page > 1 else None,
        "prev": query(page=page - 1) if page > 1 else None,
        "next": query(page=page + 1) if page < pages else None,
        "last": query(page=pages) if page < pages else None,
        "tabs": {state: "?" + urlencode({**base, "state": state}) for state in JOB_STATES},
        "sort_toggle": query(page=1, sort="asc" if p["sort"] == "desc" else "desc"),
    }


async def _queue_context(request: Request, name: str, p: ListingParams
                         ) -> dict[str, Any]:
    mail = mail_of(request)
    listing, paused, workers, alerts = await asyncio.gather(
        job_listing(mail, name, p), mail.queues.is_paused(name),
        mail.workers.list_workers(name), mail.queues.get_queue_alerts([name]),
    )
    live = {"view": "queue", "queue": name, "state": p["state"], "page": p["page"],
            "per_page": p["per_page"], "sort": p["sort"]}
    if p["q"]:
        live.update(q=p["q"], by=p["by"])
    warnings = queue_warnings(listing["counts"], len(workers), paused, alerts[name])
    return {"queue": name, "listing": listing, "params": p, "paused": paused,
            "workers": workers, "warnings": warnings,
            "states": JOB_STATES, "cleanable_states": CLEANABLE_STATES,
            "per_page_choices": PER_PAGE_CHOICES,
            "links": _page_links(p, listing["pages"]), "live_url": live_url(request, live)}


async def queue_page(request: Request) -> Response:
    name = request.path_params["name"]
    p = listing_params(request.query_params)
    mail = mail_of(request)
    await mail.queues.get_queue(name)
    if is_htmx(request):  # only the job rows are swapped: no charts to read
        context = await _queue_context(request, name, p)
    else:
        context, charts, limits = await asyncio.gather(
            _queue_context(request, name, p), queue_charts(mail, name),
            queue_limits_context(mail, name))
        context.update(limits, charts=charts)
    context.update(await page_context(request, "overview", name))
    return render(request, "pages/queue.html", context, fragment="partials/_queue_jobs.html")


async def api_queue(request: Request) -> Response:
    name = request.path_params["name"]
    mail = mail_of(request)
    stats = await mail.get_queue_stats(name)
    workers, alerts = await asyncio.gather(mail.workers.list_workers(name),
                                           mail.queues.get_queue_alerts([name]))
    warnings = queue_warnings(stats.get("counts", {}), len(workers),
                              bool(stats.get("paused")), alerts[name])
    return JSONResponse({**stats, "name": name, "workers": len(workers),
                         "worker_list": workers, "warnings": as_json(warnings)})


async def api_queue_jobs(request: Request) -> Response:
    name = request.path_params["name"]
    p = listing_params(request.query_params)
    await mail_of(request).queues.get_queue(name)
    return JSONResponse(await job_listing(mail_of(request), name, p))


async def live_queue(request: Request, params: Mapping[str, str]) -> dict[str, str]:
    """The queue page's live regions: the state tabs with counts, the header, the charts
    (which also ask to be drawn again when their newest bucket ends) and the job rows."""
    name = params.get("queue", "")
    try:
        p = listing_params(params)
        hub = getattr(request.app.state, "live_hub", None)
        context, charts = await asyncio.gather(
            _queue_context(request, name, p),
            queue_charts(mail_of(request), name, hub.version(name) if hub else None))
    except (BadParameterError, MailQueueError):
        return {}
    context.update(current_queue=name, charts=charts)
    regions = {"queue-tabs": render_fragment(request, "partials/_queue_tabs.html", context),
               "queue-header": render_fragment(request, "partials/_queue_header.html",
                                               context),
               "queue-charts": render_fragment(request, "partials/_queue_charts.html",
                                               context)}
    if not p["q"]:  # a search result stays as it was found; it is re-run on demand
        regions["queue-rows"] = render_fragment(request, "partials/_queue_rows.html", context)
    return regions
