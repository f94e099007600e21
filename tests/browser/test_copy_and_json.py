"""Copy buttons and the JSON view in Chromium (issue 14): the job id, data, stack trace and
return value copy exactly (the clipboard is read back); job data and return values are
coloured and fold, readable in light and dark; hostile keys and values stay text.
Real Redis, uvicorn, workers and Chromium (conftest)."""

from __future__ import annotations

import json
from typing import Any

from bullmq import Job
from playwright.async_api import expect

from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog
from tests.browser.test_dashboard_browser import wait_live
from tests.browser.test_failed_list import deliver_to_smtp, stack_row
from tests.dashboard.test_job_page import job_url, wait_for_state

QUEUE = "mail.welcome"
HOSTILE = '<img src=x onerror="window.__xss=1">'
DATA = {
    "to": "ada@example.com",
    "vars": {"name": "Ada Lovelace", "plan": "pro", "seats": 12, "trial": False,
             "coupon": None, "tags": ["beta", "vip"], "empty": {}, "none": []},
    HOSTILE: HOSTILE + "  two  spaces",
    "unicode": "Grüße — 你好",
}
RESULT = {"sent": "ada@example.com", "message_id": "<abc@example.com>", "parts": [1, 2.5]}

CONTRAST = """(el) => {
  const rgb = c => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = ([r, g, b]) => { const f = v => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  let bg = null;
  for (let a = el; a && !bg; a = a.parentElement) {
    const c = getComputedStyle(a).backgroundColor;
    if (c && !c.startsWith('rgba(0, 0, 0, 0)')) bg = rgb(c);
  }
  const [l1, l2] = [lum(rgb(getComputedStyle(el).color)), lum(bg)].sort((x, y) => y - x);
  return (l1 + 0.05) / (l2 + 0.05);
}"""


async def clipboard(page: Any) -> str:
    return str(await page.evaluate("navigator.clipboard.readText()"))


async def test_copy_buttons_copy_exactly_and_json_is_coloured_and_folds(
        mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog) -> None:
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                         origin=live_server)

    async def send(data: Any, job: Job) -> dict[str, Any]:
        if data.get("fail"):
            deliver_to_smtp(data)
        return RESULT

    done = await mail.add_job(QUEUE, "send-welcome", DATA, jobId="order/42 ✓")
    failed = await mail.add_job(QUEUE, "send-welcome", {"to": "x@example.com", "fail": 1},
                                attempts=1)
    mail.start_worker(QUEUE, {"send-welcome": send})
    await wait_for_state(mail, QUEUE, str(done.id), "completed")
    await wait_for_state(mail, QUEUE, str(failed.id), "failed")
    await mail.stop_worker(QUEUE)

    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        await page.goto(live_server + job_url(QUEUE, str(done.id)))
        await wait_live(page)
        data_view = page.locator("#job-data-json")
        # Its text is the pretty JSON itself, hostile strings as text.
        text = await data_view.evaluate("el => el.textContent")
        assert text == json.dumps(DATA, indent=2, ensure_ascii=False)
        await expect(data_view.locator(".j-k", has_text="seats")).to_have_count(1)
        for css in (".j-k", ".j-s", ".j-n", ".j-l", ".j-p"):
            token = data_view.locator(css).first
            ratio = await token.evaluate(CONTRAST)
            assert ratio >= 4.5, (scheme, css, ratio)
        colours = await data_view.evaluate("""el => ['.j-k', '.j-s', '.j-n', '.j-l'].map(
            c => getComputedStyle(el.querySelector(c)).color)""")
        assert len(set(colours)) == 4, colours  # four token kinds, four colours

    # Copy the data, the job id, the return value: exactly.
    await page.get_by_role("button", name="Copy the data").click()
    await expect(page.get_by_role("button", name="Copy the data")).to_have_text("Copied")
    assert await clipboard(page) == json.dumps(DATA, indent=2, ensure_ascii=False)
    await expect(page.locator("#copy-status")).to_have_text("Copied the data")
    await page.get_by_role("button", name="Copy the job id").click()
    assert await clipboard(page) == "order/42 ✓"
    await page.get_by_role("button", name="Copy the return value").click()
    assert await clipboard(page) == json.dumps(RESULT, indent=2, ensure_ascii=False)

    # Fold an object: its lines hide, its summary says what is folded.
    vars_fold = page.locator("#job-data-json details", has=page.locator(
        ":scope > summary .j-k", has_text='"vars"'))
    seats = page.locator("#job-data-json .j-k", has_text="seats")
    await expect(seats).to_be_visible()
    await vars_fold.locator(":scope > summary").click()
    await expect(seats).to_be_hidden()
    folded = await vars_fold.locator(":scope > summary").evaluate(
        "el => getComputedStyle(el, '::after').content")
    assert "8 keys" in folded and "}," in folded, folded
    # Folded or not, a copy is the whole JSON.
    await page.get_by_role("button", name="Copy the data").click()
    assert json.loads(await clipboard(page)) == DATA

    # A stack trace, on the job page and in the failed list.
    await page.goto(live_server + job_url(QUEUE, str(failed.id)))
    trace = page.locator("details.stacktrace").last
    await expect(trace).to_have_attribute("open", "")
    stack_text = await trace.locator("pre").evaluate("el => el.textContent")
    assert "in deliver_to_smtp" in stack_text
    await trace.get_by_role("button", name="Copy the stack trace of attempt 1").click()
    assert await clipboard(page) == stack_text
    await page.goto(f"{live_server}/queues/{QUEUE}?state=failed")
    row = stack_row(page, str(failed.id))
    await row.locator("summary").click()
    await row.get_by_role("button", name=f"Copy the stack trace of job {failed.id}").click()
    assert await clipboard(page) == stack_text
    assert await page.evaluate("window.__xss") is None
    browser_log.assert_clean()
