"""Scenario 7 of the fault suite (who may change what, and what can never run): every
mutating route, enumerated from the route table (any method but GET/HEAD), is refused
without credentials or with wrong ones (401, when DASHBOARD_AUTH is set), without the CSRF
token, with a wrong one or without its cookie (403), with the viewer's (read-only role)
credentials and in read-only mode (403) - and Redis is byte for byte the same afterwards.
The same requests with the operator's credentials and token are not refused (so the
refusals above were for the missing piece, not for a bad request).
"""

from __future__ import annotations

from starlette.applications import Starlette

from mailqueue.manager import MailManager
from tests.faults.asgi_raw import asgi_request
from tests.faults.security.security_support import (
    ADMIN,
    STATS,
    TOKEN,
    VIEWER,
    basic,
    form_body,
    mutating_routes,
    path_of,
    snapshot,
)


async def test_every_mutating_route_is_refused_without_rights(
    mail: MailManager, apps: dict[str, Starlette], seeded: dict[str, str]
) -> None:
    routes_ = mutating_routes()
    assert len(routes_) >= 30, [r.path for r in routes_]
    form = {"content-type": "application/x-www-form-urlencoded"}
    cookie = {"cookie": f"mq_csrf={TOKEN}"}
    admin, viewer = {"authorization": basic(*ADMIN)}, {"authorization": basic(*VIEWER)}
    cases: list[tuple[str, str, dict[str, str], bytes, int]] = [
        # (case, app, headers, body, expected status)
        ("no credentials", "auth", {**form, **cookie}, form_body(TOKEN), 401),
        ("wrong password", "auth", {**form, **cookie, "authorization": basic("admin", "x")},
         form_body(TOKEN), 401),
        ("viewer password for admin", "auth",
         {**form, **cookie, "authorization": basic("admin", VIEWER[1])}, form_body(TOKEN), 401),
        ("garbage authorization", "auth", {**form, **cookie, "authorization": "Basic !!!"},
         form_body(TOKEN), 401),
        ("bearer of a password", "auth",
         {**form, **cookie, "authorization": f"Bearer {ADMIN[1]}"}, form_body(TOKEN), 401),
        ("no CSRF token", "auth", {**form, **cookie, **admin}, form_body(None), 403),
        ("wrong CSRF token", "auth", {**form, **cookie, **admin}, form_body("j" * 43), 403),
        ("token without its cookie", "auth", {**form, **admin, "x-csrf-token": TOKEN},
         form_body(TOKEN), 403),
        ("empty token and cookie", "auth",
         {**form, **admin, "cookie": "mq_csrf=", "x-csrf-token": ""}, form_body(""), 403),
        ("JSON without token", "auth",
         {"content-type": "application/json", **cookie, **admin}, b'{"confirm_name": "sec"}',
         403),
        ("viewer", "auth", {**form, **cookie, **viewer, "x-csrf-token": TOKEN},
         form_body(TOKEN), 403),
        ("read-only mode", "read_only", {**form, **cookie, **admin, "x-csrf-token": TOKEN},
         form_body(TOKEN), 403),
    ]
    before = await snapshot(mail)
    assert any(k.endswith(":f1") for k in before)
    refused = 0
    for route in routes_:
        path = path_of(route, seeded)
        for method in [*sorted(set(route.methods or ()) - {"GET", "HEAD"}), "PUT", "DELETE",
                       "PATCH"]:
            for case, app_name, headers, body, expected in cases:
                if method != "POST" and case not in ("no credentials", "no CSRF token",
                                                     "viewer", "read-only mode"):
                    continue
                response = await asgi_request(apps[app_name], method, path, headers=headers,
                                              body=body)
                assert response.error is None, response.error
                assert response.status == expected, (case, method, path, response.status,
                                                     response.text)
                if expected == 401:
                    assert response.headers["www-authenticate"].startswith("Basic ")
                refused += 1
    after = await snapshot(mail)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"refused requests changed Redis: {changed}"

    # The control: the operator with the token is not refused, and things change.
    allowed = 0
    for route in sorted(routes_, key=lambda r: "obliterate" in r.path):
        path = path_of(route, seeded)
        response = await asgi_request(
            apps["auth"], "POST", path, body=form_body(TOKEN),
            headers={**form, **cookie, **admin, "accept": "application/json"})
        assert response.error is None, response.error
        assert response.status not in (401, 403), (path, response.status, response.text)
        allowed += 1
    assert await snapshot(mail) != after
    STATS.update(mutating_routes=len(routes_), refused_requests=refused,
                 keys_compared=len(before), allowed_controls=allowed)
