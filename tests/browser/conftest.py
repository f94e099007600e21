"""Browser tests: real Chromium (Debian's /usr/bin/chromium) driven by Playwright.

One Chromium process serves the whole session (`chromium`); each test connects to it over
the DevTools protocol with Playwright's async API in the test's own event loop (`browser`),
and gets a fresh incognito context and page (`page`). Why not a session-wide Playwright
object: Playwright's async objects belong to the loop that made them, and every test here
runs in its own loop (uvicorn, the MailManager and workers live there too).

Without /usr/bin/chromium the tests skip, loudly; under CI (`CI` set) they fail instead.

Every page records what a browser would complain about (`browser_log`): console errors,
uncaught exceptions, Content-Security-Policy violations (both the console line and the
`securitypolicyviolation` DOM event) and the dialogs it accepted. A test that ends with a
CSP violation or an uncaught exception fails. At teardown a screenshot of the page is saved
as test-artifacts/screenshots/<test name>.png; `screenshot(page, name)` saves others there.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}  # the laptop screen
DEVTOOLS_LINE = re.compile(r"DevTools listening on (ws://\S+)")


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> None:
    message = f"BROWSER TESTS NOT RUN: {reason}"
    if _under_ci():
        pytest.fail(f"{message} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(f"{message}. Install Debian's Chromium (`apt-get install chromium`) to run "
                "them.")


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One headless Chromium for the session; yields its DevTools websocket URL."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright Python package is not installed")
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen(
        [str(CHROMIUM), *CHROMIUM_ARGS, "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    endpoint, seen, deadline = None, [], time.monotonic() + 30
    while endpoint is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        match = DEVTOOLS_LINE.search(line)
        if match:
            endpoint = match.group(1)
    if endpoint is None:
        proc.kill()
        proc.wait()
        proc.stderr.close()
        _unavailable(f"{CHROMIUM} did not start (exit {proc.poll()}):\n{''.join(seen)[-2000:]}")
    # Keep reading stderr, so a chatty Chromium never blocks on a full pipe.
    drain = subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)
    proc.stderr.close()  # the child holds it now
    try:
        yield str(endpoint)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        drain.wait(10)


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Any]:
    """Playwright, in this test's loop, connected to the session's Chromium."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        connected = await pw.chromium.connect_over_cdp(chromium)
        try:
            yield connected
        finally:
            # Closing a CDP connection leaves the shared Chromium running.
            await connected.close()


@dataclass
class BrowserLog:
    """What the browser complained about while the test ran."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)

    def csp_problems(self) -> list[str]:
        console = [m for m in self.console_errors
                   if "Content Security Policy" in m or "Content-Security-Policy" in m]
        return self.csp_violations + console

    def assert_clean(self, expected_statuses: tuple[int, ...] = ()) -> None:
        """No CSP violation, no uncaught exception, no console error on any page visited
        (but "Failed to load resource" for answers the test expects, e.g. a refused 422)."""
        assert not self.csp_problems(), f"CSP violations on {self.pages}: {self.csp_problems()}"
        assert not self.page_errors, f"uncaught exceptions: {self.page_errors}"
        expected = tuple(f"status of {status} " for status in expected_statuses)
        errors = [m for m in self.console_errors
                  if not (m.startswith("Failed to load resource")
                          and any(e in m for e in expected))]
        assert not errors, f"console errors: {errors}"


# Test-side instrumentation (Playwright injects it through DevTools, so the page's CSP does
# not apply to it; the app itself ships no inline script).
_CSP_LISTENER = """
document.addEventListener('securitypolicyviolation', (e) => {
  window.__reportCsp(`${e.violatedDirective} blocked ${e.blockedURI || '(inline)'}`
                     + ` at ${e.sourceFile}:${e.lineNumber}`);
});
"""


@pytest.fixture
def browser_log() -> BrowserLog:
    return BrowserLog()


@pytest.fixture
async def page(browser: Any, browser_log: BrowserLog, request: pytest.FixtureRequest
               ) -> AsyncIterator[Any]:
    """A fresh page (own cookies) at 1280x800 that accepts every confirmation dialog."""
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    await context.expose_binding("__reportCsp",
                                 lambda _source, text: browser_log.csp_violations.append(text))
    await context.add_init_script(_CSP_LISTENER)
    new_page = await context.new_page()

    def on_console(message: Any) -> None:
        if message.type == "error":
            browser_log.console_errors.append(f"{message.text} ({new_page.url})")

    async def on_dialog(dialog: Any) -> None:
        browser_log.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.accept()

    new_page.on("console", on_console)
    new_page.on("pageerror", lambda exc: browser_log.page_errors.append(str(exc)))
    new_page.on("dialog", on_dialog)
    new_page.on("framenavigated",
                lambda frame: browser_log.pages.append(frame.url)
                if frame == new_page.main_frame else None)
    try:
        yield new_page
        problems = browser_log.csp_problems() + browser_log.page_errors
        assert not problems, f"the browser complained: {problems}"
    finally:
        with contextlib.suppress(Exception):
            await screenshot(new_page, request.node.name)
        await context.close()


async def screenshot(page: Any, name: str) -> Path:
    """Save the whole page as test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


# --- the app under a real server ------------------------------------------------------------






__all__ = ["BrowserLog", "screenshot"]
