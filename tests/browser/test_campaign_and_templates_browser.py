"""/campaigns/{id} and /templates/{name} in Chromium (issue 13, points 4 and 5): a campaign's
figures move on the page while a worker sends it (no reload), its buttons pause and resume
it; a template's preview re-renders after the sample data is edited, shows an error with
its line, its HTML sits in a sandboxed frame the page cannot reach into, and "send a test"
sends what was typed. Real Redis, workers sending over SMTP to the development sink,
uvicorn and Chromium. Every wait is for a condition, never a fixed sleep."""

from __future__ import annotations

import json
import re
from typing import Any

from playwright.async_api import expect

from mailqueue.mail.handlers import create_email_handlers
from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog
from tests.waiting import eventually

LONG_NAME = ("Spring newsletter for the enterprise customers of Acme Corporation in Europe, "
             "Middle East and Africa")
NEWS = {"campaign": "Spring news", "intro": "Hello"}


async def _sent_at_least(mail: MailManager, campaign_id: str, n: int) -> bool:
    return (await mail.campaigns.get(campaign_id))["sent"] >= n


async def fill_campaign(mail: MailManager, recipients: int = 40, sent: int = 15) -> str:
    """A campaign paused part-way (by an operator), with invalid recipients skipped: what
    the layout tests and the screenshots show. Returns its id."""
    sink = await mail.start_dev_sink()
    handlers = create_email_handlers(mail.settings.model_copy(update={"smtp_url": sink.url}))
    addresses: list[Any] = [f"reader-{n}@enterprise-customer.example.com"
                            for n in range(recipients)]
    addresses += ["not an address", "also@not@an.address"]
    campaign = await mail.campaigns.create("newsletter", addresses, variables=NEWS,
                                           name=LONG_NAME, created_by="ada")
    sink.reply_delay_s, sink.reply_delay_commands = 0.02, ("DATA",)
    mail.serve_campaigns(handlers, concurrency=1)
    try:
        await eventually(lambda: _sent_at_least(mail, campaign["id"], sent))
        await mail.campaigns.pause(campaign["id"], "paused by ada to check the open rate")
    finally:
        await mail.stop_serving_campaigns()
        await handlers.close()
        sink.reply_delay_s = 0.0
    return str(campaign["id"])


async def _stat(page: Any, name: str) -> int:
    text = await page.locator(f'#campaign-live [data-stat="{name}"]').inner_text()
    return int(text.replace(",", ""))


async def test_a_campaign_page_moves_while_a_worker_sends_and_its_buttons_work(
        mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog) -> None:
    sink = await mail.start_dev_sink()
    handlers = create_email_handlers(mail.settings.model_copy(update={"smtp_url": sink.url}))
    total = 30
    campaign = await mail.campaigns.create(
        "newsletter", [f"u{n}@example.com" for n in range(total)], variables=NEWS,
        name="Spring <b>news</b>")
    cid = campaign["id"]
    sink.reply_delay_s, sink.reply_delay_commands = 0.15, ("DATA",)  # ~5 s for the lot

    await page.goto(f"{live_server}/campaigns")
    await page.get_by_role("link", name="Spring <b>news</b>").click()
    await expect(page).to_have_url(f"{live_server}/campaigns/{cid}")
    await expect(page.locator("#campaign-live .campaign-state")).to_have_text("running")
    assert await _stat(page, "sent") == 0 and await _stat(page, "remaining") == total
    await page.evaluate("window.__notReloaded = true")

    mail.serve_campaigns(handlers, concurrency=1)
    try:
        # The figures move on the page as the worker sends: sent goes up, remaining down.
        await page.wait_for_function(
            "() => { const n = +document.querySelector('#campaign-live [data-stat=sent]')"
            ".textContent; return n > 0; }", timeout=15_000)
        first = await _stat(page, "sent")
        await page.wait_for_function(
            f"() => +document.querySelector('#campaign-live [data-stat=sent]').textContent"
            f" > {first}", timeout=15_000)
        bar = page.locator("#campaign-live progress")
        assert 0 < int(await bar.get_attribute("value") or 0) <= total
        await expect(page.locator('#campaign-live [data-stat="rate"]')).to_have_text(
            re.compile(r"^[\d,]+\.\d$"))

        # Pause: the state and the buttons change in place; nothing more is sent.
        await page.locator("#campaign-pause").click()
        await expect(page.locator("#campaign-result")).to_contain_text("Paused campaign")
        await expect(page.locator("#campaign-live .campaign-state")).to_have_text("paused")
        await expect(page.locator("#campaign-resume")).to_be_visible()
        await expect(page.locator("#campaign-pause")).to_have_count(0)
        await expect(page.locator(".campaign-reason")).to_contain_text(
            "paused by anonymous on the dashboard")
        await eventually(lambda: _quiet(mail, campaign["queue"]))
        assert (await mail.campaigns.get(cid))["remaining"] > 0

        await page.locator("#campaign-resume").click()
        await expect(page.locator("#campaign-live .campaign-state")).to_have_text("running")
        # To the end: every figure final, and the page stops polling.
        await expect(page.locator("#campaign-live .campaign-state")).to_have_text(
            "completed", timeout=30_000)
        assert await _stat(page, "sent") == total and await _stat(page, "remaining") == 0
        assert await bar.get_attribute("value") == str(total)
        assert await page.locator("#campaign-live").get_attribute("hx-trigger") is None
        await expect(page.locator(".campaign-times")).to_contain_text("finished 20")
        await expect(page.locator("#campaign-live button")).to_have_count(0)
        assert await page.evaluate("window.__notReloaded === true")  # updated in place
    finally:
        await mail.stop_serving_campaigns()
        await handlers.close()
    browser_log.assert_clean()


async def _quiet(mail: MailManager, queue: str) -> bool:
    return (await mail.queues.get_job_counts(queue))["active"] == 0


async def test_the_template_preview_rerenders_and_its_frame_is_sandboxed(
        mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog) -> None:
    await page.goto(f"{live_server}/templates")
    await page.get_by_role("link", name="notification", exact=True).first.click()
    await expect(page).to_have_url(f"{live_server}/templates/notification")
    subject = page.locator("#template-preview .preview-subject")
    await expect(subject).to_have_text("Your export is ready")
    frame = page.frame_locator("#template-preview iframe.mail-html")
    await expect(frame.locator("h1")).to_have_text("Your export is ready")

    # The frame: sandboxed with no permission at all, its document out of the page's reach.
    iframe = page.locator("#template-preview iframe.mail-html")
    assert await iframe.get_attribute("sandbox") == ""
    assert await iframe.evaluate("f => f.sandbox.length === 0 && f.contentDocument === null")

    # Edit the sample data: the preview follows (debounced), without a reload.
    await page.evaluate("window.__notReloaded = true")
    editor = page.locator("#sample-variables")
    await editor.fill(json.dumps({"title": "Disk <almost> full", "message": "Free some space"},
                                 indent=2))
    await expect(subject).to_have_text("Disk <almost> full")
    await expect(frame.locator("h1")).to_have_text("Disk <almost> full")
    await expect(page.locator("#template-preview .preview-text")).to_contain_text(
        "Free some space")

    # A mistake: the error and its line, in place of the preview.
    await editor.fill('{\n  "title": "x",\n  "message": oops\n}')
    error = page.locator("#template-preview .template-error")
    await expect(error).to_contain_text("The sample data is not JSON")
    await expect(error).to_contain_text("line 3")
    await expect(error.locator("pre.error-line")).to_contain_text('"message": oops')
    await editor.fill('{"message": "no title"}')
    await expect(error).to_contain_text("needs 'title'")
    await expect(error).to_contain_text("notification/subject.txt, line 1")
    assert await page.evaluate("window.__notReloaded === true")

    # Send a test: what is in the editor is what is sent, to the address given.
    sink = await mail.start_dev_sink()
    handlers = create_email_handlers(mail.settings.model_copy(update={"smtp_url": sink.url}))
    await editor.fill(json.dumps({"title": "Sent from the page", "message": "Hi"}))
    await expect(subject).to_have_text("Sent from the page")
    await page.locator('form.send-test input[name="address"]').fill("grace@example.com")
    await page.get_by_role("button", name="Send a test").click()
    result = page.locator("#send-test-result")
    await expect(result).to_contain_text("Queued a test of notification to grace@example.com")
    mail.start_worker(mail.settings.default_queue, handlers)
    try:
        messages = await eventually(lambda: _received(mail))
        assert messages[0]["envelope_to"] == ["grace@example.com"]
        assert messages[0]["subject"] == "Sent from the page"
    finally:
        await mail.workers.close()
        await handlers.close()
    await result.get_by_role("link", name="Open the job").click()
    await expect(page).to_have_url(re.compile(
        rf"{live_server}/queues/{mail.settings.default_queue}/jobs/\d+$"))
    await expect(page.locator("body")).to_contain_text("send-notification")
    browser_log.assert_clean(expected_statuses=(422,))


async def _received(mail: MailManager) -> list[dict[str, Any]] | None:
    messages = await mail.outbox.list_messages(5)
    return [dict(m) for m in messages] if messages else None


async def test_a_new_campaign_from_the_form_with_an_uploaded_csv(
        mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog,
        tmp_path: Any) -> None:
    listing = tmp_path / "readers.csv"
    listing.write_text("email,name\nada@example.com,Ada\nbob@example.com,Bob\nnot-an-address,X\n")
    await page.goto(f"{live_server}/campaigns")
    await expect(page.locator("#campaigns-table")).to_contain_text("No campaign yet")
    await page.locator("#new-campaign > summary").click()
    form = page.locator("#new-campaign form")
    await form.locator('input[name="name"]').fill("From the form")
    await form.locator('select[name="template"]').select_option("newsletter")
    await form.locator('input[name="recipients_file"]').set_input_files(str(listing))
    await form.locator('textarea[name="recipients"]').fill("grace@example.com")
    await form.locator('textarea[name="variables"]').fill(json.dumps(NEWS))
    await page.get_by_role("button", name="Enqueue the campaign").click()
    # htmx goes to the new campaign's page (HX-Redirect).
    await expect(page).to_have_url(re.compile(rf"{live_server}/campaigns/[0-9a-f]+$"))
    await expect(page.locator("#campaign-live h1")).to_have_text("From the form")
    await expect(page.locator('#campaign-live [data-stat="total"]')).to_have_text("3")
    await expect(page.locator(".invalid-reasons")).to_contain_text("not-an-address")
    # A mistake is said in place, one line.
    await page.goto(f"{live_server}/campaigns")
    await page.locator("#new-campaign > summary").click()
    await page.get_by_role("button", name="Enqueue the campaign").click()
    await expect(page.locator("#new-campaign-result")).to_contain_text("no recipients")
    browser_log.assert_clean(expected_statuses=(400,))
