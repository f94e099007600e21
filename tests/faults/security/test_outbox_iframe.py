"""Scenario 7 of the fault suite (who may change what, and what can never run): the
outbox iframe cannot run the mail's scripts (Chromium): `sandbox` without
allow-scripts, and the HTML route's own CSP.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from tests.faults.browser_support import load_browser_support
from tests.faults.security.security_support import ADMIN, STATS

_browser_support = load_browser_support()
chromium = _browser_support.chromium  # the session fixtures, collected from this module
browser = _browser_support.browser


async def test_outbox_iframe_runs_no_script(apps: dict[str, Starlette], server_port: int,
                                            seeded: dict[str, str], browser: Any) -> None:
    base = f"http://127.0.0.1:{server_port}"
    message_id = seeded["message_id"]
    context = await browser.new_context(http_credentials={"username": ADMIN[0],
                                                          "password": ADMIN[1]})
    context.set_default_timeout(15_000)
    dialogs: list[str] = []
    requests: list[str] = []
    try:
        page = await context.new_page()
        page.on("dialog", lambda d: dialogs.append(d.message))
        page.on("request", lambda r: requests.append(r.url))
        response = await page.goto(f"{base}/outbox/{message_id}", wait_until="load")
        assert response is not None and response.status == 200
        frame_element = await page.wait_for_selector("iframe.mail-html")
        assert frame_element is not None
        sandbox = await frame_element.get_attribute("sandbox")
        assert sandbox is not None and "allow-scripts" not in sandbox, sandbox
        assert "allow-same-origin" not in sandbox
        frame = await frame_element.content_frame()
        assert frame is not None
        await frame.wait_for_load_state("load")
        await page.wait_for_timeout(300)
        assert await frame.evaluate("() => document.querySelector('h1').textContent") == "Mail"
        assert await page.evaluate("() => typeof window.__xss") == "undefined"
        assert await frame.evaluate("() => typeof window.__xss") == "undefined"
        assert await frame.evaluate("() => document.title") == "mail"
        # The route's own CSP, whoever frames or opens it.
        html = await page.request.get(f"{base}/outbox/{message_id}/html")
        csp = html.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "sandbox" in csp and "script-src" not in csp
        top = await context.new_page()
        await top.goto(f"{base}/outbox/{message_id}/html", wait_until="load")
        await top.wait_for_timeout(300)
        assert await top.evaluate("() => typeof window.__xss") == "undefined"
        assert await top.evaluate("() => document.title") == "mail"
        assert not dialogs
        assert not any("pause-all" in url for url in requests), requests
    finally:
        await context.close()
    STATS["iframe_scripts_run"] = 0
