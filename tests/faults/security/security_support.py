"""What the security scenario's tests share: the two users, the CSRF token, the seeded
queue, the routes enumerated from the route table, a Redis snapshot, a form, and the run's
figures (STATS, written by test_write_figures.py).
"""

from __future__ import annotations

import base64
import collections
from typing import Any
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.routing import Mount, Route

from mailqueue.dashboard.app import create_app, routes
from mailqueue.manager import MailManager

ADMIN, VIEWER = ("admin", "admin-secret"), ("viewer", "viewer-secret")
TOKEN = "k" * 43
QUEUE = "sec"
STATS: collections.Counter[str] = collections.Counter()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def mutating_routes() -> list[Route]:
    return [r for r in routes() if isinstance(r, Route)
            and set(r.methods or ()) - {"GET", "HEAD"}]


def reading_routes() -> list[Route | Mount]:
    return [r for r in routes() if isinstance(r, Mount) or not set(r.methods or ()) - {
        "GET", "HEAD"}]


def make_app(mail: MailManager, **changes: Any) -> Starlette:
    settings = mail.settings.model_copy(update={
        "dashboard_auth": ":".join(ADMIN), "dashboard_viewer_auth": ":".join(VIEWER),
        **changes})
    application = create_app(settings, mail)
    application.state.mail = mail
    application.state.live_hub = None
    return application


async def snapshot(mail: MailManager) -> dict[str, bytes]:
    """Every key of the test's prefix, dumped (value and type, byte for byte)."""
    client = mail.client
    keys = [k async for k in client.scan_iter(match=f"{mail.settings.queue_prefix}*",
                                              count=1000)]
    dumps: dict[str, bytes] = {}
    for key in sorted(keys):
        dumped = await client.execute_command("DUMP", key, NEVER_DECODE=True)
        if dumped is not None:
            dumps[key] = dumped
    return dumps


def path_of(route: Route | Mount, values: dict[str, str]) -> str:
    if isinstance(route, Mount):
        return f"{route.path}/{values['path']}"
    params = {}
    for name in route.param_convertors:
        value = values[name]
        if name == "job_id" and "promote" in route.path:
            value = "d1"
        if name == "name" and "/templates" in route.path:
            value = "welcome"  # a template's name, not a queue's
        params[name] = quote(value, safe="") if name in ("job_id", "scheduler_id") else value
    return str(route.url_path_for(route.name, **params))


FORM = {"confirm_name": QUEUE, "name": "added", "data": "{}", "job_id": "w1",
        "state": "waiting", "grace": "0", "delayed": "1", "force": "1"}


def form_body(token: str | None) -> bytes:
    fields = dict(FORM)
    if token is not None:
        fields["csrf_token"] = token
    return urlencode(fields).encode()
