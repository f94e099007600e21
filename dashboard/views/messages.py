"""The delivery log on the dashboard: /messages (search, filters, pages), one entry's page,
a job's messages on its page, and their JSON twins.

"Did Ada get her reset e-mail?" The search box takes an address, an @domain or a
Message-ID (mailqueue.desk_query decides which by its shape). Recipients, subjects and
replies come from jobs and from SMTP servers: untrusted text, escaped like everything else.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from mailqueue.desk import InvalidSearchError
from mailqueue.desk_query import SINCE_CHOICES, MessageQuery, MessageSearch, search_messages
from mailqueue.mail.message_log import OUTCOMES
from mailqueue.mail.templates import BUILTIN_TEMPLATES

from ..context import mail_of, page_context
from ..render import is_htmx, path_for, render
from .job_messages import JOB_MESSAGES_SHOWN, job_message_id, job_messages_context
from .jobs import as_job_page, job_ids, suffix_is_literal

PAGE_SIZE = 50
ATTEMPTS_SHOWN = 50


def _search_params(search: MessageSearch | None, query: MessageQuery) -> dict[str, str]:
    """The next page's filters: what was searched as it was resolved (an ambiguous text
    searched as a Message-ID stays one), then the other filters."""
    params = {k: v for k, v in query.params().items() if k not in ("q", "to", "message_id")}
    if search is not None and search.kind:
        key = "message_id" if search.kind == "message_id" else "to"
        return {key: search.value, **params}
    return {**{k: v for k, v in query.params().items() if k in ("q", "to", "message_id")},
            **params}


def _search_text(query: MessageQuery) -> str:
    return query.text or query.to or query.message_id


async def _search(request: Request) -> tuple[MessageQuery, MessageSearch]:
    query = MessageQuery.from_params(request.query_params, limit=PAGE_SIZE)
    return query, await search_messages(mail_of(request).desk, query)


async def messages_page(request: Request) -> Response:
    context = await page_context(request, "messages_page")
    context.update(outcomes=OUTCOMES, templates=BUILTIN_TEMPLATES, since_choices=SINCE_CHOICES,
                   api_url=str(path_for(request, "api_messages")))
    status = 200
    try:
        query, search = await _search(request)
    except InvalidSearchError as exc:
        query = MessageQuery.as_typed(request.query_params)
        context.update(error=str(exc), entries=[], search=None)
        status = 400
    else:
        context.update(entries=search.entries, search=search)
    params = _search_params(context["search"], query)
    context.update(
        query=query, box=_search_text(query), filtered=bool(query.params() or query.before),
        query_string=urlencode(params),
        older=(f"?{urlencode({**params, 'before': search.next_before})}"
               if status == 200 and search.next_before else None))
    return render(request, "pages/messages.html", context, status_code=status)


async def api_messages(request: Request) -> Response:
    _query, search = await _search(request)
    return JSONResponse({
        "searched": {"kind": search.kind or None, "value": search.value or None},
        "filters": search.filters, "entries": search.entries,
        "next_before": search.next_before,
    })


# --- one entry ------------------------------------------------------------------------------

async def _entry_context(request: Request) -> dict[str, Any] | None:
    mail = mail_of(request)
    entry = await mail.desk.message(str(request.path_params["entry_id"]))
    if entry is None:
        return None
    (attempts, _), outbox_id = await asyncio.gather(
        mail.desk.search_messages(message_id=entry["message_id"], limit=ATTEMPTS_SHOWN)
        if entry["message_id"] else _nothing(),
        mail.desk.outbox_copy(entry["message_id"], entry["at"]) if entry["outcome"] == "sent"
        else _none())
    return {"entry": entry, "outbox_id": outbox_id,
            "attempts": [a for a in attempts if a["id"] != entry["id"]]}


async def _nothing() -> tuple[list[dict[str, Any]], None]:
    return [], None


async def _none() -> None:
    return None


async def message_entry_page(request: Request) -> Response:
    context = await page_context(request, "messages_page")
    found = await _entry_context(request)
    if found is None:
        context["entry_id"] = request.path_params["entry_id"]
        return render(request, "pages/message.html", {**context, "entry": None},
                      status_code=404)
    return render(request, "pages/message.html", {**context, **found})


async def api_message_entry(request: Request) -> Response:
    found = await _entry_context(request)
    if found is None:
        return JSONResponse({"error": "No such entry in the delivery log (it may have "
                                      "been trimmed)"}, status_code=404)
    outbox_id = found["outbox_id"]
    return JSONResponse({
        **found["entry"], "outbox_id": outbox_id,
        "outbox_url": str(path_for(request, "outbox_message_page", message_id=outbox_id))
        if outbox_id else None,
        "other_attempts": found["attempts"],
    })


# --- a job's messages -------------------------------------------------------------------------

async def job_messages(request: Request) -> Response:
    """The job page's Messages section (htmx), or the job's messages on /messages."""
    if not suffix_is_literal(request, "/messages"):  # the page of a job id ending so
        return await as_job_page(request, "/messages")
    mail = mail_of(request)
    queue, job_id = job_ids(request)
    if not is_htmx(request):
        query = urlencode({"message_id": job_message_id(mail, queue, job_id)})
        return RedirectResponse(f"{path_for(request, 'messages_page')}?{query}",
                                status_code=303)
    return render(request, "partials/_job_messages_list.html",
                  await job_messages_context(mail, queue, job_id))


async def api_job_messages(request: Request) -> Response:
    if not suffix_is_literal(request, "/messages"):
        return await as_job_page(request, "/messages", api=True)
    mail = mail_of(request)
    queue, job_id = job_ids(request)
    entries = await mail.desk.job_messages(queue, job_id, JOB_MESSAGES_SHOWN)
    return JSONResponse({"message_id": job_message_id(mail, queue, job_id),
                         "entries": entries})
