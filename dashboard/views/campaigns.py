"""Campaigns on the dashboard (issue 13, point 4): the list, one campaign live, its pause,
resume and cancel, and their JSON twins.

Everything goes through the manager layer (`MailManager.campaigns`, `record_audit`). A
running campaign's page polls its progress fragment every 2 s (htmx); the fragment it gets
back stops the polling once the campaign has ended (no `hx-trigger` left), so a finished
campaign costs nothing. An action answers with its result and the fragment out of band, so
the buttons that apply to the new state show at once.

Campaign names, templates, pause reasons and the reasons recipients were skipped come from
whoever made the campaign or its recipient list: untrusted text, escaped like everything.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from mailqueue.campaigns import DEFAULT_ERROR_LIMIT, Campaign, CampaignError, recipient_rows

from ..actions import ActionResult, is_json_body, json_object, safe_redirect
from ..context import mail_of, page_context
from ..render import is_htmx, path_for, render, render_fragment, wants_json
from ..security import identity_of
from .templates_page import renderer_of

LIST_LIMIT = 100
MAX_PART_BYTES = 10 * 1024 * 1024  # a pasted list of recipients (the middleware caps ~11 MB)
POLL_STATES = frozenset({"enqueuing", "running", "paused"})  # what can still change by itself
ENDED_STATES = frozenset({"completed", "cancelled"})
# The actions that apply to a state (the page shows only those; the manager refuses others).
ACTIONS: dict[str, tuple[str, ...]] = {
    "enqueuing": ("pause", "cancel"), "running": ("pause", "cancel"),
    "paused": ("resume", "cancel"), "completed": (), "cancelled": (),
}
VERBS = ("pause", "resume", "cancel")


def valid_id(campaign_id: str) -> bool:
    """A campaign id as the manager makes them (hex); anything else is no campaign."""
    return 0 < len(campaign_id) <= 40 and campaign_id.isascii() and campaign_id.isalnum()


def campaign_view(c: Campaign) -> dict[str, Any]:
    """A campaign as the pages show it: its figures, a percentage, what may be done."""
    total = int(c.get("total") or 0)
    done = int(c.get("done") or 0)
    return {
        **c,
        "percent": round(100 * done / total, 1) if total else (100.0 if c["state"] in
                                                             ENDED_STATES else 0.0),
        "live": c["state"] in POLL_STATES,
        "actions": ACTIONS.get(c["state"], ()),
    }


async def _campaign_or_none(request: Request) -> Campaign | None:
    campaign_id = request.path_params["campaign_id"]
    if not valid_id(campaign_id):
        return None
    try:
        return await mail_of(request).campaigns.get(campaign_id)
    except CampaignError:
        return None


async def campaigns_page(request: Request) -> Response:
    mail = mail_of(request)
    campaigns = [campaign_view(c) for c in await mail.campaigns.list(LIST_LIMIT)]
    context = {"campaigns": campaigns, "polling": any(c["live"] for c in campaigns)}
    if is_htmx(request):  # the poll: the table alone, no sidebar to read
        return render(request, "partials/_campaigns_table.html", context)
    context.update(await page_context(request, "campaigns_page"))
    context.update(templates=renderer_of(mail)[0].list_templates(),
                   default_error_limit=DEFAULT_ERROR_LIMIT)
    return render(request, "pages/campaigns.html", context)


async def api_campaigns(request: Request) -> Response:
    return JSONResponse({"campaigns": await mail_of(request).campaigns.list(LIST_LIMIT)})


async def campaign_page(request: Request) -> Response:
    campaign = await _campaign_or_none(request)
    if campaign is None:
        context = await page_context(request, "campaigns_page")
        context["campaign_id"] = request.path_params["campaign_id"]
        return render(request, "pages/campaign.html", {**context, "campaign": None},
                      status_code=404)
    view = campaign_view(campaign)
    if is_htmx(request):  # the poll: the live fragment alone, no sidebar to read
        return render(request, "partials/_campaign_live.html", {"campaign": view})
    context = await page_context(request, "campaigns_page", current_queue=campaign["queue"])
    context.update(campaign=view, queue_exists=await mail_of(request).queues.queue_exists(
        campaign["queue"]))
    return render(request, "pages/campaign.html", context)


async def api_campaign(request: Request) -> Response:
    campaign = await _campaign_or_none(request)
    if campaign is None:
        return JSONResponse({"error": f"No campaign {request.path_params['campaign_id']!r}"},
                            status_code=404)
    return JSONResponse(campaign)


def _verb_endpoint(verb: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return await _campaign_action(request, verb)

    endpoint.__name__ = f"campaign_{verb}"
    endpoint.__doc__ = {"pause": "Pause sending (jobs in flight finish).",
                        "resume": "Resume a paused campaign.",
                        "cancel": "Remove what has not been sent; jobs in flight finish."}[verb]
    return endpoint


async def _campaign_action(request: Request, verb: str) -> Response:
    """Pause, resume or cancel through the manager; audited either way, as the CLI does.
    An unknown campaign is a 404, an action its state does not allow a 409 (its one line)."""
    mail = mail_of(request)
    campaign_id = request.path_params["campaign_id"]
    actor = identity_of(request).user
    status = 200
    campaign: Campaign | None = None
    if not valid_id(campaign_id):
        message, status = f"no campaign {campaign_id!r}", 404
    else:
        try:
            if verb == "pause":
                campaign = await mail.campaigns.pause(
                    campaign_id, f"paused by {actor} on the dashboard")
            else:
                campaign = await getattr(mail.campaigns, verb)(campaign_id)
            message = _done_message(verb, campaign)
        except CampaignError as exc:
            message = str(exc)
            status = 404 if message.startswith("no campaign") else 409
    await mail.record_audit(actor, f"campaign-{verb}", campaign_id,
                            "ok" if status == 200 else "refused",
                            message if status != 200 else "")
    result = ActionResult(message, campaign_id, ok=status == 200)
    if wants_json(request):
        body: dict[str, Any] = {"ok": result.ok, "message": message, "target": campaign_id}
        if campaign is not None:
            body["campaign"] = campaign
        return JSONResponse(body, status_code=status)
    if is_htmx(request):
        html = render_fragment(request, "partials/_action_result.html", {"result": result})
        if status != 404:  # the live part, out of band: the buttons of the new state
            if campaign is None:
                try:
                    campaign = await mail.campaigns.get(campaign_id)
                except CampaignError:
                    campaign = None
            if campaign is not None:
                html += render_fragment(request, "partials/_campaign_live.html",
                                        {"campaign": campaign_view(campaign), "oob": True})
        return HTMLResponse(html, status_code=status)
    if not result.ok:
        return render(request, "pages/error.html", {"result": result},
                      status_code=status)
    fallback = str(path_for(request, "campaign_page", campaign_id=campaign_id))
    return RedirectResponse(safe_redirect(request, fallback), status_code=303)


def _done_message(verb: str, c: Campaign) -> str:
    if verb == "pause":
        return f"Paused campaign {c['id']}: jobs in flight finish, nothing else is sent"
    if verb == "resume":
        return f"Resumed campaign {c['id']}: {c['remaining']:,} to send"
    return f"Cancelled campaign {c['id']}: {c['reason'] or 'nothing left to send'}"


campaign_pause = _verb_endpoint("pause")
campaign_resume = _verb_endpoint("resume")
campaign_cancel = _verb_endpoint("cancel")


async def _create_fields(request: Request) -> tuple[dict[str, Any], str]:
    """The new campaign's fields from a form (an uploaded file's text included) or JSON,
    and the recipients' text (or a JSON list, as `recipients`)."""
    if is_json_body(request):
        body = await json_object(request, CampaignError)
        recipients = body.get("recipients")
        text = "\n".join(recipients) if isinstance(recipients, list) and all(
            isinstance(r, str) for r in recipients) else None
        if text is None:
            raise CampaignError("recipients: a list of addresses")
        return body, text
    form = await request.form(max_part_size=MAX_PART_BYTES)
    try:
        fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
        text = fields.get("recipients", "")
        upload = form.get("recipients_file")
        if isinstance(upload, str) and upload:
            raise CampaignError("uploading a file needs JavaScript: paste the list instead")
        if upload is not None and not isinstance(upload, str) and upload.filename:
            try:
                text = (await upload.read()).decode("utf-8-sig") + "\n" + text
            except UnicodeDecodeError:
                raise CampaignError(f"{upload.filename}: not UTF-8 text (CSV or one "
                                    "address per line)") from None
    finally:
        await form.close()
    variables = fields.get("variables") or "{}"
    try:
        fields["variables"] = json.loads(variables)
    except ValueError as exc:
        raise CampaignError(f"variables: not JSON ({exc})") from None
    return fields, text


async def campaign_create(request: Request) -> Response:
    """A campaign from the form (a pasted list or an uploaded CSV) or JSON: audited as
    campaign-create; anything the manager refuses (CampaignError) is a 400 in one line."""
    mail = mail_of(request)
    actor = identity_of(request).user
    campaign: Campaign | None = None
    template = ""
    try:
        fields, text = await _create_fields(request)
        template = str(fields.get("template") or "").strip()
        variables = fields.get("variables") or {}
        if not isinstance(variables, dict):
            raise CampaignError("variables: a JSON object of name -> value")
        if not renderer_of(mail)[0].exists(template):
            raise CampaignError(f"no template {template!r}")
        try:
            error_limit = int(fields.get("error_limit") or DEFAULT_ERROR_LIMIT)
        except (TypeError, ValueError):
            raise CampaignError("error_limit must be a whole number") from None
        rows = recipient_rows(io.StringIO(text))
        first = next(rows, None)
        if first is None:
            raise CampaignError("no recipients: paste addresses or upload a CSV file")
        campaign = await mail.campaigns.create(
            template, _chain(first, rows), variables=variables, created_by=actor,
            name=str(fields.get("name") or ""), error_limit=error_limit)
        message = (f"Campaign {campaign['id']}: {campaign['total']:,} recipients queued"
                   + (f", {campaign['invalid']:,} invalid skipped" if campaign["invalid"]
                      else ""))
    except CampaignError as exc:
        message = str(exc)
    target = campaign["id"] if campaign else template or "*"
    await mail.record_audit(actor, "campaign-create", target,
                            "ok" if campaign else "refused", message)
    status = 200 if campaign else 400
    if wants_json(request):
        return JSONResponse({"ok": campaign is not None, "message": message,
                             **({"campaign": campaign} if campaign else {})},
                            status_code=status)
    result = ActionResult(message, target, ok=campaign is not None)
    link = str(path_for(request, "campaign_page", campaign_id=campaign["id"])) \
        if campaign else None
    if is_htmx(request):
        response = render(request, "partials/_action_result.html", {"result": result},
                          status_code=status)
        if link:
            response.headers["HX-Redirect"] = link  # a full page load, not a swap
        return response
    if link is None:
        return render(request, "pages/error.html", {"result": result},
                      status_code=status)
    return RedirectResponse(link, status_code=303)


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
