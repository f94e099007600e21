"""The outbox: what the development SMTP sink received, each message's parts and headers.

A message's HTML part is untrusted (any job may send any HTML). It is never put into a
dashboard page: the page frames it in `<iframe sandbox>` (no scripts, an opaque origin), and
the route that serves it adds its own CSP that blocks scripts, network and framing by others.
"""

from __future__ import annotations

import re
from typing import Any, TypedDict

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from mailqueue.mail.outbox import OutboxMessage
from mailqueue.manager import MailManager

from ..context import mail_of, page_context
from ..render import render

OUTBOX_PAGE_SIZE = 100
# Served with the mail's HTML part: nothing may load or run but inline styles and data images.
MAIL_HTML_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                 "frame-ancestors 'self'; sandbox")
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


class SinkStatus(TypedDict):
    active: bool
    url: str | None
    message: str


async def sink_status(mail: MailManager) -> SinkStatus:
    """Whether the development sink receives this prefix's mail, in words."""
    url = await mail.dev_sink_url()
    if mail.settings.smtp_url:
        return {"active": False, "url": None,
                "message": "SMTP_URL is set: mail goes to that server and the development "
                           "sink is not in use. Messages below (if any) are from earlier."}
    if url is None:
        return {"active": False, "url": None,
                "message": "The development sink is not running (no SMTP_URL and no "
                           "`mailqueue run` or worker with a sink). Messages below (if any) "
                           "are from earlier."}
    return {"active": True, "url": url,
            "message": f"The development sink receives this prefix's mail at {url}."}


def _summary_json(summary: Any) -> dict[str, Any]:
    data = dict(summary)
    data["from"] = data.pop("from_", "")
    return data


async def outbox_page(request: Request) -> Response:
    mail = mail_of(request)
    context = await page_context(request, "outbox_page")
    context.update(sink=await sink_status(mail),
                   messages=await mail.outbox.list_messages(OUTBOX_PAGE_SIZE),
                   total=await mail.outbox.count())
    return render(request, "pages/outbox.html", context, fragment="partials/_outbox_list.html")


async def api_outbox(request: Request) -> Response:
    mail = mail_of(request)
    messages = await mail.outbox.list_messages(OUTBOX_PAGE_SIZE)
    return JSONResponse({"sink": await sink_status(mail), "total": await mail.outbox.count(),
                         "messages": [_summary_json(m) for m in messages]})


async def _message(request: Request) -> OutboxMessage | None:
    message_id = request.path_params["message_id"]
    if not _STREAM_ID.match(message_id):
        return None
    return await mail_of(request).outbox.get_message(message_id)


async def outbox_message_page(request: Request) -> Response:
    message = await _message(request)
    context = await page_context(request, "outbox_page")
    if message is None:
        context["message_id"] = request.path_params["message_id"]
        return render(request, "pages/outbox_message.html", {**context, "message": None},
                      status_code=404)
    return render(request, "pages/outbox_message.html", {**context, "message": message})


async def api_outbox_message(request: Request) -> Response:
    message = await _message(request)
    if message is None:
        return JSONResponse({"error": "No such message in the outbox"}, status_code=404)
    return JSONResponse(_summary_json(message))


async def outbox_message_html(request: Request) -> Response:
    """The HTML part alone, for the sandboxed iframe, under a CSP that runs nothing."""
    message = await _message(request)
    if message is None or message["html"] is None:
        return HTMLResponse("", status_code=404,
                            headers={"content-security-policy": MAIL_HTML_CSP})
    return HTMLResponse(message["html"], headers={
        "content-security-policy": MAIL_HTML_CSP,
        "x-frame-options": "SAMEORIGIN",
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
    })
