"""Rendering: one Jinja2 environment, one helper that adds the common context.

A route renders a page, or only its fragment when htmx asks for it (`HX-Request`), so the
same partial serves the page, the htmx swap and the SSE event data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from importlib.resources import files
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.datastructures import URL, URLPath
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, NoMatchFound
from starlette.templating import Jinja2Templates

from . import formatting
from .json_view import json_html
from .security import csrf_token_of, identity_of

# Pages and static files are data packages of the web layer (mailqueue.dashboard.templates,
# .static): inside the installed package in a wheel, the top-level folders in a checkout.
# Found through the import system, never through a path next to the code.
TEMPLATES_DIR = str(files("mailqueue.dashboard.templates"))
STATIC_DIR = str(files("mailqueue.dashboard.static"))
templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.autoescape = True  # every template, whatever its extension
formatting.install(templates.env)
templates.env.filters["json_html"] = json_html


# {route name: route}, kept on the router. Starlette's url_path_for tries every route in order, each
# miss raising NoMatchFound: with ~90 routes, the 50 rows of a queue page spent more time
# building their links than reading Redis. A name is looked up once, then its route alone
# builds the path (the same URLPath; any miss falls back to the router).
_ROUTES_ATTR = "_mailqueue_routes_by_name"


def path_for(request: Request, name: str, /, **params: Any) -> URLPath:
    """`request.app.url_path_for(name, **params)`, without walking the route table."""
    router = request.scope.get("router") or request.app.router
    table: dict[str, BaseRoute] | None = getattr(router, _ROUTES_ATTR, None)
    if table is None:
        table = {}
        for r in getattr(router, "routes", []):
            table.setdefault(getattr(r, "name", None) or "", r)
        setattr(router, _ROUTES_ATTR, table)
    route = table.get(name)
    if route is not None:
        with contextlib.suppress(NoMatchFound):
            return route.url_path_for(name, **params)
    return router.url_path_for(name, **params)


@jinja2.pass_context
def url_for(context: dict[str, Any], name: str, /, **params: Any) -> URL:
    """Starlette's `url_for` (an absolute URL), through `path_for`."""
    request: Request = context["request"]
    return path_for(request, name, **params).make_absolute_url(base_url=request.base_url)


@jinja2.pass_context
def job_url(context: dict[str, Any], queue: str, job_id: str, route: str = "job_page") -> str:
    """The path of a job's page (or another job route); ids may hold '/', '?' or '#'."""
    request: Request = context["request"]
    return str(path_for(request, route, name=queue, job_id=quote(str(job_id), safe="")))


templates.env.globals["job_url"] = job_url
templates.env.globals["url_for"] = url_for


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def wants_json(request: Request) -> bool:
    """An /api/ route, or a script that asks for JSON."""
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get(
        "accept", ""
    )


def common_context(request: Request) -> dict[str, Any]:
    identity = identity_of(request)
    return {
        "csrf_token": csrf_token_of(request),
        "user": identity.user,
        "can_write": identity.can_write,
    }


def render(
    request: Request, template: str, context: Mapping[str, Any], status_code: int = 200,
    fragment: str | None = None,
) -> HTMLResponse:
    """The page `template`, or `fragment` alone when htmx asks and a fragment is named."""
    name = fragment if fragment and is_htmx(request) else template
    response: HTMLResponse = templates.TemplateResponse(
        request, name, {**common_context(request), **context}, status_code=status_code
    )
    return response


def render_fragment(request: Request, template: str, context: Mapping[str, Any]) -> str:
    """A partial as a string: the data of an SSE event or of an htmx out-of-band swap."""
    return templates.get_template(template).render({**common_context(request), **context,
                                                    "request": request})
