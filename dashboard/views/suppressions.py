"""The suppression list on the dashboard: who must not get mail, and why.

/suppressions: the counts by reason, a search (any part of the address) and a reason filter,
page by page along the list's HSCAN cursor; an operator adds an address (reason manual or
complaint, a note) and removes one. The changes go through `MailDesk`, which writes the
audit entry with the operator as actor; the security middleware has refused them already
without write access or CSRF token. JSON twins: GET and POST /api/suppressions, DELETE
/api/suppressions/{address}.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailqueue.desk import InvalidSearchError
from mailqueue.desk_query import list_suppressions
from mailqueue.mail.suppressions import REASONS, Suppression, normalize_address
from mailqueue.manager import MailManager

from ..actions import ActionResult, form_data, operator_action, safe_redirect
from ..context import mail_of, page_context
from ..render import path_for, render
from ..security import identity_of

PAGE_SIZE = 50
# What an operator may give as the reason: bounces and unsubscribes are the system's to say.
OPERATOR_REASONS = ("manual", "complaint")
_NOTICES = ("added", "already", "removed")


def _filters(params: Any) -> tuple[str, str, int]:
    """The search text, the reason and the cursor, checked (InvalidSearchError)."""
    text = str(params.get("q") or "").strip()[:320]
    reason = str(params.get("reason") or "").strip()
    if reason and reason not in REASONS:
        raise InvalidSearchError(f"reason must be one of {', '.join(REASONS)}")
    cursor = str(params.get("cursor") or "0").strip()
    if not cursor.isdigit() or len(cursor) > 20:
        raise InvalidSearchError("cursor must be the number the previous page gave")
    return text, reason, int(cursor)


async def _listing(mail: MailManager, params: Any) -> dict[str, Any]:
    text, reason, cursor = _filters(params)
    entries, next_cursor = await list_suppressions(mail.desk.suppressions, text,
                                                   reason or None, cursor, PAGE_SIZE)
    return {"q": text, "reason": reason, "cursor": cursor, "entries": entries,
            "next_cursor": next_cursor or None,
            "counts": await mail.desk.suppressions.counts(),
            "total": await mail.desk.suppressions.count()}


def _notice(params: Any) -> str:
    for kind in _NOTICES:
        address = str(params.get(kind) or "")[:320]
        if address:
            return {"added": f"Added {address} to the suppression list.",
                    "already": f"{address} was on the suppression list already.",
                    "removed": f"Removed {address} from the suppression list: mail to it "
                               "goes out again."}[kind]
    return ""


async def suppressions_page(request: Request) -> Response:
    context = await page_context(request, "suppressions_page")
    mail = mail_of(request)
    context.update(reasons=REASONS, operator_reasons=OPERATOR_REASONS,
                   notice=_notice(request.query_params))
    try:
        context.update(await _listing(mail, request.query_params))
        status = 200
    except InvalidSearchError as exc:
        context.update(await _listing(mail, {}), error=str(exc),
                       q=str(request.query_params.get("q") or "")[:320])
        context["entries"], context["next_cursor"] = [], None
        status = 400
    filters = {k: v for k, v in (("q", context["q"]), ("reason", context["reason"])) if v}
    context.update(
        filter_query=urlencode(filters),
        more=f"?{urlencode({**filters, 'cursor': context['next_cursor']})}"
        if context["next_cursor"] else None)
    return render(request, "pages/suppressions.html", context, status_code=status)


async def api_suppressions(request: Request) -> Response:
    listing = await _listing(mail_of(request), request.query_params)
    listing["entries"] = [e.as_dict() for e in listing["entries"]]
    listing.pop("cursor")
    return JSONResponse(listing)


def _back(request: Request, notice: str, address: str) -> str:
    """The list page the form was on (its filters kept), saying what was done."""
    page = str(path_for(request, "suppressions_page"))
    back = urlsplit(safe_redirect(request, page))
    if back.path != page:
        back = urlsplit(page)
    kept = [(k, v) for k, v in parse_qsl(back.query)
            if k not in (*_NOTICES, "cursor")]
    return f"{page}?{urlencode([*kept, (notice, address)])}"


def _since(entry: Suppression) -> str:
    from ..formatting import timestamp

    return f"{entry.reason}, since {timestamp(entry.at)}, by {entry.by}"


@operator_action("suppress", audited=True)
async def suppression_add(request: Request, mail: MailManager) -> ActionResult:
    """Put an address on the suppression list (reason manual or complaint, a note)."""
    form = await form_data(request)
    reason = (form.get("reason") or "manual").strip()
    if reason not in OPERATOR_REASONS:  # a refused change, not a search: a 422
        raise ValueError(f"reason must be {' or '.join(OPERATOR_REASONS)}")
    address = normalize_address(form.get("address", ""))  # a bad one: one line, 422
    added = await mail.desk.suppress(address, actor=identity_of(request).user,
                                     reason=reason,  # type: ignore[arg-type]
                                     note=form.get("note") or "")
    entry = await mail.desk.suppressions.get(address)
    if added:
        message = f"Added {address} to the suppression list"
    else:
        message = f"{address} was on the suppression list already" + (
            f" ({_since(entry)})" if entry else "")
    return ActionResult(message, address, redirect=_back(
        request, "added" if added else "already", address),
        data={"added": added, "entry": entry.as_dict() if entry else None})


@operator_action("unsuppress", audited=True)
async def suppression_remove(request: Request, mail: MailManager) -> ActionResult:
    """Take an address off the list (the form's `address`, or the API path's)."""
    if "address" in request.path_params:
        given = str(request.path_params["address"])
    else:
        given = (await form_data(request)).get("address", "")
    address = normalize_address(given)
    removed = await mail.desk.remove_suppression(address, actor=identity_of(request).user)
    if removed is None:
        return ActionResult(f"{address} is not on the suppression list", address,
                            ok=False, status=404)
    return ActionResult(f"Removed {address} from the suppression list", address,
                        redirect=_back(request, "removed", address),
                        data={"removed": removed.as_dict()})
