"""/messages and /suppressions in Chromium (issue 13, points 1-2): search the delivery log
and follow an entry to its outbox copy and its job (whose page lists its messages); add an
address to the suppression list through the page, see a bad one refused in place, remove it.
Real Redis, a worker sending over SMTP to the development sink, uvicorn and Chromium."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from mailqueue.mail.handlers import create_email_handlers
from mailqueue.manager import MailManager
from tests.browser.conftest import BrowserLog
from tests.dashboard.test_messages_pages import QUEUE, RESET, run


async def test_search_messages_and_follow_one_to_its_outbox_copy_and_job(
    mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog
) -> None:
    sink = await mail.start_dev_sink()
    handlers = create_email_handlers(mail.settings.model_copy(update={"smtp_url": sink.url}))
    mail.start_worker(QUEUE, handlers)
    try:
        sink.fail_recipient("ada@example.com", 451, times=1)
        reset = await run(mail, "send-reset-password", RESET, attempts=3,
                          backoff={"type": "fixed", "delay": 50})
        await run(mail, "send-notification",
                  {"to": "bob@example.com", "title": "Disk full", "message": "Free it"})
    finally:
        await mail.stop_worker(QUEUE)
        await handlers.close()

    await page.goto(live_server + "/")
    await page.get_by_role("link", name="Messages", exact=True).click()
    rows = page.locator("table.messages tbody tr")
    await expect(rows).to_have_count(3)
    await page.locator('form.message-search input[name="q"]').fill("ada@example.com")
    await page.locator('form.message-search input[name="q"]').press("Enter")
    await expect(page).to_have_url(f"{live_server}/messages?q=ada%40example.com&outcome="
                                   "&template=&since=&until=")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0).locator(".badge.outcome")).to_have_text("sent")
    await expect(rows.nth(1).locator(".badge.outcome")).to_have_text("deferred")
    await expect(rows.nth(1)).to_contain_text("451")

    await page.locator('form.message-search select[name="outcome"]').select_option("deferred")
    await page.get_by_role("button", name="Search").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first.locator(".badge.outcome")).to_have_text("deferred")

    # The sent entry: its page links the outbox copy and the job.
    await page.goto(f"{live_server}/messages?q=ada%40example.com&outcome=sent")
    await rows.first.locator("td:nth-child(4) a").click()
    await expect(page.locator("dl.message-entry")).to_contain_text(
        reset["return_value"]["message_id"])
    await page.get_by_role("link", name="the development sink's copy").click()
    await expect(page.locator("iframe.mail-html")).to_have_count(1)
    await page.go_back()
    await page.locator("dl.message-entry a", has_text=f"#{reset['id']}").click()
    section = page.locator("#job-messages")
    await expect(section.locator("table.messages tbody tr")).to_have_count(2)
    await expect(section.locator("h2")).to_contain_text("Messages 2")
    browser_log.assert_clean()


async def test_add_and_remove_a_suppression_through_the_page(
    mail: MailManager, live_server: str, page: Any, browser_log: BrowserLog
) -> None:
    await mail.desk.suppressions.add("gone@example.com", "bounce", by="smtp",
                                     reply="550 5.1.1 No such user", code=550)
    await page.goto(live_server + "/suppressions")
    await expect(page.locator(".reason-counts")).to_contain_text("1 in all")
    await page.locator("details.suppress-add > summary").click()
    form = page.locator("form.suppress-form")
    # A bad address: refused in place, in one line; nothing added.
    await form.locator('input[name="address"]').fill("ada@localhost")
    await form.get_by_role("button", name="Suppress").click()
    await expect(page.locator("#suppress-add-result .result.error")).to_contain_text("ada@")
    assert await mail.desk.suppressions.count() == 1

    await form.locator('input[name="address"]').fill("Ada@Example.com")
    await form.locator('select[name="reason"]').select_option("complaint")
    await form.locator('input[name="note"]').fill("reported as spam")
    await form.get_by_role("button", name="Suppress").click()
    await expect(page.locator(".notice-line")).to_have_text(
        "Added ada@example.com to the suppression list.")
    row = page.locator("table.suppressions tr", has_text="ada@example.com")
    await expect(row).to_contain_text("complaint")
    await expect(row).to_contain_text("reported as spam")
    await expect(page.locator(".reason-counts")).to_contain_text("2 in all")
    entry = await mail.desk.suppressions.get("ada@example.com")
    assert entry is not None and entry.reason == "complaint" and entry.by == "anonymous"

    await row.get_by_role("button", name="Remove ada@example.com").click()
    await expect(page.locator(".notice-line")).to_contain_text(
        "Removed ada@example.com from the suppression list")
    await expect(page.locator("table.suppressions tr", has_text="ada@example.com")
                 ).to_have_count(0)
    assert await mail.desk.suppressions.get("ada@example.com") is None
    assert any("Take ada@example.com off the suppression list" in d
               for d in browser_log.dialogs)
    actions = [(e["action"], e["result"]) for e in await mail.get_audit_log(5)]
    assert actions[:3] == [("unsuppress", "ok"), ("suppress", "ok"), ("suppress", "error")]
    browser_log.assert_clean(expected_statuses=(422,))


LONG_ADDRESS = ("a.very.long.recipient.address.for.wrapping.tests@"
                "subdomain.enterprise-customer.example.com")
LONG_REPLY = ("550 5.1.1 <" + LONG_ADDRESS + ">: Recipient address rejected: user unknown in "
              "virtual mailbox table; see https://mail.example.com/help/errors/550-5.1.1?ref="
              + "0123456789abcdef" * 8)


async def fill_desk(mail: MailManager, rows: int = 12) -> str:
    """Delivery-log entries of every outcome and suppressed addresses of every reason, long
    values included (the pages' layout and weight tests); the newest entry's id."""
    from mailqueue.mail.message_log import Attempt, LogEntry

    outcomes: list[tuple[Any, int | None, str]] = [
        ("sent", 250, "250 2.0.0 Ok: queued as 4Xk2p1"),
        ("deferred", 451, "451 4.7.1 Greylisted, please try again in 300 seconds"),
        ("failed", 550, LONG_REPLY), ("suppressed", None, "bounce: " + LONG_REPLY)]
    ids: list[str] = []
    for n in range(rows):
        outcome, code, reply = outcomes[n % 4]
        recipients = [LONG_ADDRESS] if n % 4 == 2 else [f"customer{n}@example.com"]
        if n % 5 == 0:
            recipients += [f"cc{k}.{n}@example.com" for k in range(4)]
        ids += await mail.desk.messages.write([(
            LogEntry(outcome, recipients, code, reply,
                     replies={r: reply for r in recipients} if code else {}),
            Attempt(f"<tenant-acme.transactional.{n}@notifications.acme-corp.example.com>",
                    "tenant-acme-corporation.transactional", f"password-reset-{n:06d}",
                    1 + n % 3, ("reset-password", "welcome", "newsletter")[n % 3],
                    "Your password reset link for the Acme Corporation customer portal "
                    f"(expires in 30 minutes) #{n}", 2822))])
    sl = mail.desk.suppressions
    reasons: tuple[Any, ...] = ("bounce", "unsubscribe", "manual", "complaint")
    for n in range(rows):
        reason = reasons[n % 4]
        address = LONG_ADDRESS.replace("tests@", f"tests{n}@") if n % 3 == 0 \
            else f"person{n}@example.com"
        await sl.add(address, reason, by="smtp" if reason == "bounce" else "ops",
                     note="" if reason == "bounce" else "asked by phone, ticket #4411",
                     reply=LONG_REPLY if reason == "bounce" else "",
                     code=550 if reason == "bounce" else None)
    return ids[-1]
