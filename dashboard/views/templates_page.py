"""E-mail templates on the dashboard (issue 13, point 5): every template with its variables,
a live preview with sample data one can edit, and "send a test".

The preview renders exactly as a worker would (`MailService.render`: the job data's
normalisation, the required variables, the template), so what the page accepts a worker
sends. An error (bad JSON in the sample data, a missing variable, a template syntax error)
is shown with its file and line, never a 500. The HTML part is never put into a dashboard
page: an `<iframe sandbox>` (no scripts, an opaque origin) loads it from a route that serves
it under a CSP that runs and loads nothing (views/outbox.py's MAIL_HTML_CSP).

Template names come from the URL: only a name the renderer lists is looked at, so a path
(`../`) is a 404 before anything is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from mailqueue.errors import MailQueueError
from mailqueue.mail.handlers import MailService
from mailqueue.mail.templates import BUILTIN_TEMPLATES, TemplateRenderer
from mailqueue.manager import MailManager
from mailqueue.settings import Settings

from .. import template_info as info
from ..context import mail_of, page_context
from ..render import is_htmx, path_for, render, render_fragment, wants_json
from ..security import identity_of
from .outbox import MAIL_HTML_CSP

MAX_SAMPLE_CHARS = 8_000  # the sample data travels in the preview frame's URL
TEST_IGNORED = ("to", "cc", "bcc")  # a test goes to the address given, and only there


@dataclass
class Preview:
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    error: info.ErrorAt | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "html": self.html, "text": self.text,
                "error": self.error.as_dict() if self.error else None}


def _unsigned(settings: Settings) -> Settings:
    """Signing is the worker's business: the dashboard needs no DKIM key to render."""
    return settings.model_copy(update=dict.fromkeys(
        ("mail_dkim_domain", "mail_dkim_selector", "mail_dkim_key_file")))


def service_of(mail: MailManager) -> MailService:
    """The worker's own rendering code, over MAIL_TEMPLATE_DIR and the built-ins."""
    return MailService(_unsigned(mail.settings))


def renderer_of(mail: MailManager) -> tuple[TemplateRenderer, str | None]:
    """The renderer, and why MAIL_TEMPLATE_DIR's templates are missing (if they are)."""
    try:
        return TemplateRenderer(mail.settings.mail_template_dir), None
    except MailQueueError as exc:
        return TemplateRenderer(None), str(exc)


def known_template(renderer: TemplateRenderer, name: str) -> bool:
    return name in renderer.list_templates()


def parse_sample(text: str) -> tuple[dict[str, Any] | None, info.ErrorAt | None]:
    if len(text) > MAX_SAMPLE_CHARS:
        return None, info.ErrorAt(f"The sample data is too long for a preview "
                                  f"({len(text):,} characters; at most {MAX_SAMPLE_CHARS:,})")
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        return None, info.json_error(exc, text)
    if not isinstance(value, dict):
        return None, info.ErrorAt("The sample data must be a JSON object of variables "
                                  "({\"name\": ...})", "sample data", 1)
    return value, None


def preview(mail: MailManager, renderer: TemplateRenderer, name: str, text: str) -> Preview:
    """Render `name` with the sample data in `text`, as a worker would; any error is shown."""
    data, error = parse_sample(text)
    if data is None:
        return Preview(error=error)
    try:
        _, rendered = service_of(mail).render(data, name)
    except Exception as exc:  # shown with its line, never a 500: the page is for finding it
        return Preview(error=info.locate(exc, renderer, name))
    return Preview(rendered.subject, rendered.html, rendered.text)


def _template_row(renderer: TemplateRenderer, name: str) -> dict[str, Any]:
    description, variables = info.variables_of(renderer, name)
    return {"name": name, "origin": info.origin(renderer, name), "description": description,
            "variables": [v.as_dict() for v in variables],
            "sample": info.sample_data(variables)}


async def templates_page(request: Request) -> Response:
    mail = mail_of(request)
    renderer, problem = renderer_of(mail)
    context = await page_context(request, "templates_page")
    context.update(templates=[_template_row(renderer, n) for n in renderer.list_templates()],
                   template_dir=mail.settings.mail_template_dir, problem=problem)
    return render(request, "pages/templates.html", context)


async def api_templates(request: Request) -> Response:
    mail = mail_of(request)
    renderer, problem = renderer_of(mail)
    return JSONResponse({"template_dir": _text_or_none(mail.settings.mail_template_dir),
                         "problem": problem,
                         "templates": [_template_row(renderer, n)
                                       for n in renderer.list_templates()]})


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _sample_text(request: Request, row: dict[str, Any]) -> str:
    given = request.query_params.get("variables")
    return given if given is not None else info.sample_text(row["sample"])


def _frame_url(request: Request, name: str, text: str) -> str:
    base = str(path_for(request, "template_preview_html", name=name))
    return f"{base}?{urlencode({'variables': text})}"


def _not_found(request: Request, name: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": f"No template {name!r}"}, status_code=404)
    return HTMLResponse("No such template", status_code=404)


async def template_page(request: Request) -> Response:
    mail = mail_of(request)
    renderer, problem = renderer_of(mail)
    name = request.path_params["name"]
    if not known_template(renderer, name):
        context = await page_context(request, "templates_page")
        return render(request, "pages/template.html",
                      {**context, "template": None, "name": name}, status_code=404)
    row = _template_row(renderer, name)
    text = _sample_text(request, row)
    context = await page_context(request, "templates_page")
    context.update(template=row, variables_text=text, problem=problem,
                   preview=preview(mail, renderer, name, text),
                   frame_url=_frame_url(request, name, text),
                   default_queue=mail.settings.default_queue,
                   settings=_template_settings(renderer, name))
    return render(request, "pages/template.html", context)


def _template_settings(renderer: TemplateRenderer, name: str) -> dict[str, Any] | str:
    try:
        return renderer.settings(name)
    except MailQueueError as exc:
        return str(exc)


async def template_preview(request: Request) -> Response:
    """The preview fragment (subject, error, frame, text) for the page's sample data."""
    mail = mail_of(request)
    renderer, _ = renderer_of(mail)
    name = request.path_params["name"]
    if not known_template(renderer, name):
        return _not_found(request, name)
    text = request.query_params.get("variables", "")
    result = preview(mail, renderer, name, text)
    if not is_htmx(request):  # a bookmarkable URL: the page with this data
        query = urlencode({"variables": text})
        return RedirectResponse(f"{path_for(request, 'template_page', name=name)}?{query}",
                                status_code=303)
    return render(request, "partials/_template_preview.html",
                  {"preview": result, "frame_url": _frame_url(request, name, text)})


async def api_template(request: Request) -> Response:
    """The template, its variables and sample data, and a render of `?variables=` (or of
    the sample data): what the preview shows, as JSON."""
    mail = mail_of(request)
    renderer, problem = renderer_of(mail)
    name = request.path_params["name"]
    if not known_template(renderer, name):
        return _not_found(request, name)
    row = _template_row(renderer, name)
    result = preview(mail, renderer, name, _sample_text(request, row))
    return JSONResponse({**row, "problem": problem, "preview": result.as_dict()},
                        status_code=200)


async def template_preview_html(request: Request) -> Response:
    """The HTML part alone, for the sandboxed frame, under a CSP that runs nothing."""
    mail = mail_of(request)
    renderer, _ = renderer_of(mail)
    name = request.path_params["name"]
    headers = {"content-security-policy": MAIL_HTML_CSP, "x-frame-options": "SAMEORIGIN",
               "referrer-policy": "no-referrer", "cache-control": "no-store"}
    if not known_template(renderer, name):
        return HTMLResponse("", status_code=404, headers=headers)
    result = preview(mail, renderer, name, request.query_params.get("variables", ""))
    if result.html is None:  # the page says what is wrong; the frame stays blank
        return HTMLResponse("", status_code=422, headers=headers)
    return HTMLResponse(result.html, headers=headers)


async def template_send_test(request: Request) -> Response:
    """Enqueue one real job of this template to one address on the default queue, after
    every check a worker makes (MailService.prepare), as `mailqueue send` does. Audited."""
    mail = mail_of(request)
    renderer, _ = renderer_of(mail)
    name = request.path_params["name"]
    if not known_template(renderer, name):
        return _not_found(request, name)
    form = await _fields(request)
    address = (form.get("address") or "").strip()
    # `variables`: the page's editor (htmx includes it); `sample`: the form's own copy of
    # what the page was rendered with (without script).
    text = form.get("variables", form.get("sample", ""))
    actor = identity_of(request).user
    queue = mail.settings.default_queue
    job = None
    status, message = 200, ""
    data, error = parse_sample(text)
    if not address:
        status, message = 400, "Give the address to send the test to"
    elif data is None:
        status, message = 400, error.message if error else "Bad sample data"
    else:
        payload = {k: v for k, v in data.items() if k not in TEST_IGNORED} | {"to": address}
        if name in BUILTIN_TEMPLATES:
            job_name = f"send-{name}"
        else:
            job_name, payload["template"] = "send-email", name
        try:
            service_of(mail).prepare(payload, name, _CheckedJob(queue))
        except Exception as exc:  # what a worker would refuse: said in one line, not sent
            status, message = 400, info.locate(exc, renderer, name).message
        else:
            job = await mail.add_job(queue, job_name, payload)
            message = f"Queued a test of {name} to {address}: job {job.id} on {queue}"
    await mail.record_audit(actor, "template-send-test", name,
                            "ok" if job is not None else "refused",
                            message if job is None else f"to {address}: job {job.id} on {queue}")
    link = str(path_for(request, "job_page", name=queue, job_id=quote(str(job.id), safe=""))
               ) if job is not None else None
    if wants_json(request):
        body: dict[str, Any] = {"ok": job is not None, "message": message, "target": name}
        if job is not None:
            body.update(job_id=str(job.id), queue=queue, job_url=link)
        return JSONResponse(body, status_code=status)
    context = {"ok": job is not None, "message": message, "job_link": link}
    if is_htmx(request):
        return HTMLResponse(render_fragment(request, "partials/_template_send_result.html",
                                            context), status_code=status)
    if job is None:
        return render(request, "pages/error.html",
                      {"result": {"ok": False, "message": message}}, status_code=status)
    return RedirectResponse(link or "/", status_code=303)


async def _fields(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            return {}
        if not isinstance(body, dict):
            return {}
        variables = body.get("variables", {})
        return {"address": str(body.get("address") or ""),
                "variables": variables if isinstance(variables, str) else json.dumps(variables)}
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


class _CheckedJob:
    """What building a message needs of a job: a queue name and an id (its Message-ID)."""

    id = "check"

    def __init__(self, queue: str) -> None:
        self.queue = type("Queue", (), {"name": queue})()
