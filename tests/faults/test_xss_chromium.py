"""Scenario 6 of the fault suite (part 2), in Chromium: with every payload planted
(xss_planting.py), the dashboard's pages are loaded and `window.__xss` (which every payload
tries to set) stays undefined, no dialog opens, and no Content-Security-Policy violation
happens in a dashboard document.

Figures are printed (`pytest -s`) and written to
test-artifacts/reliability/xss-chromium.json.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import httpx

from mailqueue.manager import MailManager
from tests.faults.browser_support import load_browser_support
from tests.faults.figures import report
from tests.faults.xss_planting import page_paths, plant_payloads

_browser_support = load_browser_support()
chromium = _browser_support.chromium  # the session fixtures, collected from this module
browser = _browser_support.browser


async def test_no_payload_runs_in_chromium(mail: MailManager, client: httpx.AsyncClient,
                                           live_server: str, browser: Any) -> None:
    started = time.monotonic()
    planted = await plant_payloads(mail, client)
    paths = page_paths(planted, browser=True)
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    violations: list[str] = []
    dialogs: list[str] = []
    errors: list[str] = []
    await context.expose_binding(
        "__reportCsp", lambda _source, text: violations.append(text))
    await context.add_init_script("""
document.addEventListener('securitypolicyviolation', (e) => {
  window.__reportCsp(`${e.documentURI} ${e.violatedDirective} ${e.blockedURI}`);
});
""")
    page = await context.new_page()

    async def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    ran: list[str] = []
    try:
        for path, _status in paths:
            await page.goto(live_server + path, wait_until="load")
            await page.wait_for_timeout(150)  # htmx `load` triggers, SSE swaps
            for frame in page.frames:
                with contextlib.suppress(Exception):
                    value = await frame.evaluate(
                        "() => [typeof window.__xss, typeof parent.__xss]")
                    if value != ["undefined", "undefined"]:
                        ran.append(f"{path} frame {frame.url}: {value}")
        # The mail's own HTML, opened as a top-level page: its CSP sandboxes it.
        await page.goto(f"{live_server}/outbox/{planted['outbox'][0]}/html")
        await page.wait_for_timeout(200)
        value = await page.evaluate("() => typeof window.__xss")
        if value != "undefined":
            ran.append(f"outbox html top-level: {value}")
    finally:
        await context.close()
    # The mail HTML route's CSP refuses its scripts (that is the point); a violation in any
    # dashboard document would mean a payload became markup.
    dashboard_violations = [v for v in violations if "/html " not in v]
    assert not ran, ran
    assert not dialogs, dialogs
    assert not dashboard_violations, dashboard_violations
    assert not errors, errors
    report("xss-chromium", {"pages_visited": len(paths) + 1, "scripts_run": len(ran),
                            "dialogs": len(dialogs),
                            "csp_violations_in_mail_html": len(violations)
                            - len(dashboard_violations),
                            "seconds": round(time.monotonic() - started, 1)})
