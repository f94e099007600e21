"""The overview: every queue under the prefix (Node-made ones too), a page at a time.

A Redis may hold thousands of queues (one per tenant, say): the page shows `PER_PAGE` of them
(grouped ones by whole groups), reading counts and metrics for those alone, filtered by name
first; the JSON twin `/api/queues` lists them all, for scripts. Names no queue can have are a
notice, never a row (see `QueueManager.unusable_queue_names`).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailqueue.manager import MailManager

from ..charts import sparkline
from ..context import live_url, mail_of, page_context
from ..queue_warnings import as_json, queue_warnings
from ..render import render, render_fragment

# Every state column of the overview, in reading order.
OVERVIEW_STATES = ("waiting", "active", "delayed", "prioritized", "waiting-children",
                   "completed", "failed")
PER_PAGE = 50  # queues on one page of the overview


async def overview_rows(mail: MailManager, names: list[str]) -> list[dict[str, Any]]:
    """These queues with counts, paused flag, workers and throughput."""
    # Two round trips in all, side by side: one pipeline for the queues' counts, paused
    # flags and last hour's throughput (queue_stats), and one CLIENT LIST for the workers.
    # A third pipeline, beside them, reads what holds a queue back (rate limit, overdue
    # schedulers): the row's warnings.
    data, workers, alerts = await asyncio.gather(mail.queues.get_overview(names),
                                                 mail.workers.list_workers(),
                                                 mail.queues.get_queue_alerts(names))
    per_queue = Counter(w["queue"] for w in workers)
    return [
        {
            "name": name, "counts": data[name]["counts"], "paused": data[name]["paused"],
            "workers": per_queue.get(name, 0),
            "completed_per_minute": data[name]["completed_per_minute"],
            "failed_per_minute": data[name]["failed_per_minute"],
            "series": data[name]["series"],
            "warnings": queue_warnings(data[name]["counts"], per_queue.get(name, 0),
                                       data[name]["paused"], alerts[name]),
        }
        for name in names
    ]


async def queue_names(mail: MailManager, name_filter: str = "") -> list[str]:
    names = await mail.queues.list_queues()
    if name_filter:
        names = [n for n in names if name_filter.casefold() in n.casefold()]
    return names


def page_of_names(names: list[str], page: int, delimiter: str = "") -> tuple[list[str], int]:
    """The names on page `page` (from 1) and the number of pages. Grouped, a page holds
    whole groups where they fit, so a group's sums are the group's; a group bigger than a
    page gets pages of its own."""
    if not delimiter:
        pages = max(math.ceil(len(names) / PER_PAGE), 1)
        page = min(page, pages)
        return names[(page - 1) * PER_PAGE: page * PER_PAGE], pages
    chunks: list[list[str]] = [[]]
    for _key, members in _by_group(names, delimiter):
        if chunks[-1] and len(chunks[-1]) + len(members) > PER_PAGE:
            chunks.append([])
        for start in range(0, len(members), PER_PAGE):
            if start:
                chunks.append([])
            chunks[-1].extend(members[start:start + PER_PAGE])
    page = min(page, len(chunks))
    return chunks[page - 1], len(chunks)


def _by_group(names: list[str], delimiter: str) -> list[tuple[str, list[str]]]:
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.split(delimiter, 1)[0], []).append(name)
    return list(groups.items())


def unusable_queues(mail: MailManager) -> list[dict[str, Any]]:
    """Names in Redis that no queue can have (a producer's 10,000-character name): a notice
    with a short, escaped preview instead of a page that fails for every queue."""
    return [{"preview": name[:60] + ("…" if len(name) > 60 else ""), "length": len(name)}
            for name in mail.queues.unusable_queue_names()]


def group_rows(rows: list[dict[str, Any]], delimiter: str) -> list[dict[str, Any]]:
    """Queues grouped by the part of their name before `delimiter`, with summed counts."""
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = row["name"].split(delimiter, 1)[0] if delimiter else ""
        group = groups.setdefault(key, {"name": key, "queues": [], "counts": Counter(),
                                        "workers": 0})
        group["queues"].append(row)
        group["counts"].update(row["counts"])
        group["workers"] += row["workers"]
    return list(groups.values())


def _overview_params(params: Mapping[str, str]) -> dict[str, str]:
    page = params.get("page", "1")
    return {"q": params.get("q", "").strip()[:200], "group": params.get("group", "")[:5],
            "page": page if page.isdigit() and 0 < int(page) < 1_000_000 else "1"}


async def _overview_context(request: Request, params: Mapping[str, str]) -> dict[str, Any]:
    p = _overview_params(params)
    mail = mail_of(request)
    names = await queue_names(mail, p["q"])
    shown, pages = page_of_names(names, int(p["page"]), p["group"])
    page = min(int(p["page"]), pages)
    rows = await overview_rows(mail, shown)
    for row in rows:
        row["spark"] = sparkline(row.pop("series"))
    kept = {k: v for k, v in p.items() if v and k != "page"}
    return {"queues": rows, "groups": group_rows(rows, p["group"]) if p["group"] else None,
            "warned": [row for row in rows if row["warnings"]],
            "unusable": unusable_queues(mail),
            "states": OVERVIEW_STATES, "filter": p["q"], "group": p["group"],
            "pager": {"page": page, "pages": pages, "total": len(names),
                      "first": (page - 1) * PER_PAGE + 1 if not p["group"] else None,
                      "prev": urlencode({**kept, "page": page - 1}) if page > 1 else None,
                      "next": urlencode({**kept, "page": page + 1}) if page < pages else None},
            "live_url": live_url(request, {"view": "overview", **kept,
                                           **({"page": page} if page > 1 else {})})}


async def overview(request: Request) -> Response:
    # The sidebar's counts and the overview's are read side by side, not one after the other.
    context, overview_context = await asyncio.gather(
        page_context(request, "overview"), _overview_context(request, request.query_params))
    context.update(overview_context)
    return render(request, "pages/overview.html", context,
                  fragment="partials/_overview_table.html")


async def api_queues(request: Request) -> Response:
    p = _overview_params(request.query_params)
    mail = mail_of(request)
    rows = await overview_rows(mail, await queue_names(mail, p["q"]))
    for row in rows:  # the per-minute lists stay; the full series would bloat a long list
        row.pop("series")
        row["warnings"] = as_json(row["warnings"])
    return JSONResponse({"queues": rows, "unusable_queues": unusable_queues(mail)})


async def live_overview(request: Request, params: Mapping[str, str]) -> dict[str, str]:
    """The overview's live region: the table of queues and their counts."""
    context = await _overview_context(request, params)
    return {"overview-table": render_fragment(request, "partials/_overview_table.html",
                                              context)}


