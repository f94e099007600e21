"""Issue 14, "not usable on a phone": every page fits 360 px wide with no horizontal page
scroll; the sidebar becomes a menu (closed: one thin bar; a tap opens it; it stays open
across a live swap of the sidebar); the state tabs are one strip; the job table scrolls in
its own box. At 1024 and 1440 px nothing regressed: the sidebar stands beside the content. Zero
counts keep AA contrast and the keyboard focus ring shows, in light and dark.

With `SCREENSHOTS=docs/screenshots` set, the test also saves every page, light and dark, at
1440x900 and 390x844, as <page>-<theme>-<width>.png in that folder (the viewport, not the
whole page, so the files stay small). Real Redis, uvicorn, workers and Chromium (conftest).
"""

from __future__ import annotations

import asyncio
import os
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
from bullmq import Job
from playwright.async_api import expect

from mailqueue.manager import MailManager
from tests.browser.conftest import _CSP_LISTENER, BrowserLog
from tests.browser.test_campaign_and_templates_browser import fill_campaign
from tests.browser.test_dashboard_browser import wait_live
from tests.browser.test_mail_desk_pages import fill_desk
from tests.dashboard.test_job_page import job_url, wait_for_state

QUEUE = "tenant-acme-corporation.transactional.password-reset-notifications"
CHILDREN = "tenant-acme-corporation.render-children"
LONG_NAME = "send-password-reset-notification-with-the-localised-template-for-enterprise-customers"
LONG_ID = "password-reset-2024-11-18T09-30-00Z-customer-000000000000000000000000000000000000042"
LONG_REASON = ("SMTP 550 5.1.1 <a.very.long.recipient.address.for.wrapping.tests@"
               "subdomain.enterprise-customer.example.com>: Recipient address rejected: user "
               "unknown in virtual mailbox table; see https://mail.example.com/help/errors/"
               "550-5.1.1?ref=" + "0123456789abcdef" * 8)
PHONES = [(360, 740), (390, 844)]
# A queue that appears while the menu is open (a live swap of the sidebar), one per run.
NEW_QUEUES = {(360, "light"): "mail.welcome", (360, "dark"): "mail.digest",
              (390, "light"): "mail.receipts", (390, "dark"): "mail.invoices"}
TABLET = (1024, 768)  # the sidebar still beside the content; wide tables scroll in their box
DESKTOP = (1440, 900)
SCHEMES = ("light", "dark")
SHOTS = os.environ.get("SCREENSHOTS", "").strip()
SHOT_WIDTHS = {390, DESKTOP[0]}  # screenshots: one phone width, one desktop width
NOT_PICTURED = {"job-data", *(f"queue-{s}" for s in ("waiting", "active", "delayed",
                                                      "prioritized", "waiting-children",
                                                      "completed"))}
MENU_BAR_MAX = 60  # px of height the closed queue menu may take on a phone
TAB_STRIP_MAX = 48  # px: the state tabs are one row, not a stack


def _deep(depth: int, reason: str) -> None:
    """Raise `reason` `depth` frames down: a long stack trace."""
    if depth == 0:
        raise RuntimeError(reason)
    _deep(depth - 1, reason)


async def fill(mail: MailManager) -> tuple[asyncio.Event, dict[str, str]]:
    """Something in every page and every state tab; returns the switch that lets the
    active job finish, and the paths to visit."""
    release = asyncio.Event()

    async def boom(data: Any, job: Job) -> None:
        await job.log(f"connecting to smtp.example.com for {data['to']}")
        _deep(25, LONG_REASON)

    async def ok(data: Any, job: Job) -> dict[str, Any]:
        await job.log(f"sent to {data['to']}")
        return {"sent": data["to"], "message_id": "<" + "m" * 80 + "@example.com>"}

    async def hold(data: Any, job: Job) -> None:
        await job.updateProgress(40)
        await release.wait()

    # Completed and failed (long name, long id, long reason, long stack traces).
    failed = [await mail.add_job(QUEUE, LONG_NAME, {"to": f"user{n}@example.com"},
                                 attempts=2, jobId=f"{LONG_ID}-{n}") for n in range(3)]
    done = await mail.add_job(QUEUE, "send-welcome", {"to": "ada@example.com"})
    mail.start_worker(QUEUE, {LONG_NAME: boom, "send-welcome": ok})
    for job in failed:
        await wait_for_state(mail, QUEUE, str(job.id), "failed")
    await wait_for_state(mail, QUEUE, str(done.id), "completed")
    await mail.stop_worker(QUEUE)

    # Active (held by a worker of concurrency 1), then waiting, delayed, prioritized.
    held = await mail.add_job(QUEUE, "hold", {"to": "held@example.com"})
    mail.start_worker(QUEUE, {"hold": hold}, concurrency=1)
    await wait_for_state(mail, QUEUE, str(held.id), "active")
    big = {"to": "big@example.com", "token": "x" * 3000,
           "rows": [{"n": n, "html": f"<p>row {n} of a large payload</p>" * 4}
                    for n in range(1500)]}
    big_job = await mail.add_job(QUEUE, LONG_NAME, big, jobId=f"{LONG_ID}-big")
    for n in range(3):
        await mail.add_job(QUEUE, "send-welcome", {"to": f"w{n}@example.com"})
        await mail.add_job(QUEUE, "send-digest", {"to": f"d{n}@example.com"}, delay=3_600_000)
        await mail.add_job(QUEUE, "send-receipt", {"to": f"p{n}@example.com"}, priority=5)
    # Waiting-children: a flow whose parent is in the queue, its children elsewhere.
    flow = await mail.add_flow({
        "name": LONG_NAME, "queueName": QUEUE, "data": {"batch": 1},
        "children": [{"name": f"render-part-{n}-of-the-weekly-digest-for-enterprise-customers",
                      "queueName": CHILDREN, "data": {"n": n}} for n in range(3)],
    })
    await mail.schedule_job(QUEUE, "send-digest", {"to": "team@example.com", "list": "x" * 200},
                            cron="0 9 * * 1-5",
                            scheduler_id="weekly-digest-for-enterprise-customers-europe-west")

    campaign = await fill_campaign(mail)  # paused part-way (its mail is in the outbox)
    sink = await mail.start_dev_sink()
    message = EmailMessage()
    message["From"] = ("Acme Corporation Notifications "
                       "<no-reply@notifications.acme-corp.example.com>")
    message["To"] = ", ".join(f"recipient-number-{n}@enterprise-customer.example.com"
                              for n in range(4))
    message["Subject"] = ("Your password reset link for the Acme Corporation customer portal "
                          "(expires in 30 minutes)")
    message.set_content("Hello,\n\nreset your password: https://portal.example.com/reset?token="
                        + "a1b2c3d4" * 20 + "\n")
    message.add_alternative("<h1>Reset your password</h1><p>Hello, <a href='#'>reset it</a>.</p>",
                            subtype="html")
    await aiosmtplib.send(message, hostname=sink.host, port=sink.port, start_tls=False)
    entry = await fill_desk(mail)  # the delivery log and the suppression list
    return release, {
        "overview": "/",
        "queue": f"/queues/{QUEUE}?state=failed",
        "queue-latest": f"/queues/{QUEUE}/latest",
        "job": job_url(QUEUE, str(failed[0].id)),
        "job-data": job_url(QUEUE, str(big_job.id)),
        "flow": job_url(QUEUE, flow["tree"]["id"], "/flow"),
        "schedules": "/schedules",
        "workers": "/workers",
        "events": "/events",
        "outbox": "/outbox",
        "campaigns": "/campaigns",
        "campaign": f"/campaigns/{campaign}",
        "templates": "/templates",
        "template": "/templates/newsletter",
        "messages": "/messages",
        "message": f"/messages/{entry}",
        "suppressions": "/suppressions",
        # outbox-message: found from the outbox page's first link
    }


async def new_page(browser: Any, log: BrowserLog, width: int, height: int, scheme: str) -> Any:
    """A fresh context at this size and colour scheme (a touch phone below 800 px), with the
    conftest's CSP and error listeners."""
    phone = width < 800
    context = await browser.new_context(viewport={"width": width, "height": height},
                                        color_scheme=scheme, is_mobile=phone, has_touch=phone)
    context.set_default_timeout(10_000)
    await context.expose_binding("__reportCsp",
                                 lambda _source, text: log.csp_violations.append(text))
    await context.add_init_script(_CSP_LISTENER)
    page = await context.new_page()
    page.on("console", lambda m: log.console_errors.append(f"{m.text} ({page.url})")
            if m.type == "error" else None)
    page.on("pageerror", lambda exc: log.page_errors.append(str(exc)))
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.dismiss()))
    return page


# The page's measures, in one evaluation.
MEASURE = """() => {
  const box = el => el ? el.getBoundingClientRect() : null;
  const sidebar = document.getElementById('sidebar');
  const menu = sidebar ? (sidebar.closest('details') || sidebar) : null;
  // Rendered and not skipped (a closed <details> skips its content: content-visibility).
  const visible = el => !!el && el.checkVisibility({visibilityProperty: true})
                        && box(el).width > 0 && box(el).height > 0;
  const firstLink = sidebar ? sidebar.querySelector('a') : null;
  const clipped = el => {
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement)
      if (getComputedStyle(a).overflowX !== 'visible') return true; return false; };
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')].filter(el => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.right > width + 1 && !clipped(el);
  }).slice(0, 5).map(el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
                     + (typeof el.className === 'string' && el.className
                        ? '.' + el.className.trim().replace(/\\s+/g, '.') : '')
                     + ` (right ${Math.round(el.getBoundingClientRect().right)})`);
  return {
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    clientWidth: document.documentElement.clientWidth, wide,
    menu: menu ? {height: box(menu).height, right: box(menu).right, width: box(menu).width}
               : null,
    menuIsDetails: !!(menu && menu.tagName === 'DETAILS'),
    menuOpen: !!(menu && menu.open),
    linkVisible: visible(firstLink),
    sidebar: sidebar ? {left: box(sidebar).left, right: box(sidebar).right,
                        width: box(sidebar).width, height: box(sidebar).height} : null,
    main: box(document.querySelector('main')),
    tabs: box(document.getElementById('queue-tabs')),
  };
}"""

# The job table's scrolling box: the nearest ancestor that scrolls sideways.
TABLE_BOX = """() => {
  const table = document.querySelector('table.jobs');
  if (!table) return null;
  let el = table.parentElement;
  while (el && el !== document.body && !['auto', 'scroll'].includes(getComputedStyle(el).overflowX))
    el = el.parentElement;
  if (!el || el === document.body)
    return {found: false, tableWidth: table.getBoundingClientRect().width};
  const r = el.getBoundingClientRect();
  el.scrollLeft = 120;
  const scrolled = el.scrollLeft;
  el.scrollLeft = 0;
  return {found: true, right: r.right, clientWidth: el.clientWidth, scrollWidth: el.scrollWidth,
          scrolled, pageX: window.scrollX};
}"""

# The lowest contrast of a zero count against what it sits on (opacity included).
ZERO_CONTRAST = """() => {
  const rgba = c => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const lum = ([r, g, b]) => { const f = v => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  let worst = null;
  for (const el of document.querySelectorAll('.zero')) {
    if (!el.getClientRects().length) continue;
    const target = el.querySelector('a') || el;
    const fg = rgba(getComputedStyle(target).color);
    let alpha = fg[3], bg = null;
    for (let a = target; a; a = a.parentElement) {
      alpha *= Number(getComputedStyle(a).opacity);
      if (!bg) { const b = rgba(getComputedStyle(a).backgroundColor); if (b && b[3] > 0) bg = b; }
    }
    bg = bg || [255, 255, 255, 1];
    const mix = fg.slice(0, 3).map((v, i) => v * alpha + bg[i] * (1 - alpha));
    const [l1, l2] = [lum(mix), lum(bg)].sort((x, y) => y - x);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    if (!worst || ratio < worst.ratio) worst = {ratio, text: el.textContent.trim()};
  }
  return worst;
}"""


async def shoot(page: Any, name: str, scheme: str, width: int) -> None:
    if SHOTS and width in SHOT_WIDTHS:
        folder = Path(SHOTS)
        folder.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (a test, once per page)
        await page.evaluate("window.scrollTo(0, 0)")
        await page.screenshot(path=str(folder / f"{name}-{scheme}-{width}.png"), full_page=False)


async def check_layout(page: Any, where: str, width: int, problems: list[str]) -> dict[str, Any]:
    m = await page.evaluate(MEASURE)
    if m["scrollWidth"] > width or m["scrollWidth"] > m["innerWidth"]:
        problems.append(f"{where}: the page scrolls sideways to {m['scrollWidth']} px "
                        f"(window {m['innerWidth']} px); too wide: {m['wide']}")
    return dict(m)


async def test_every_page_fits_a_phone_and_the_desktop_is_unchanged(
        mail: MailManager, live_server: str, browser: Any, browser_log: BrowserLog) -> None:
    release, paths = await fill(mail)
    problems: list[str] = []
    try:
        for (width, height) in [*PHONES, TABLET, DESKTOP]:
            phone = width < 800
            for scheme in SCHEMES:
                page = await new_page(browser, browser_log, width, height, scheme)
                try:
                    await visit_all(page, live_server, paths, width, scheme, phone, problems)
                    if phone:
                        await check_menu(page, mail, live_server, width, scheme, problems)
                finally:
                    await page.context.close()
    finally:
        release.set()
        await mail.stop_worker(QUEUE)
    assert not problems, "\n".join(problems)
    assert not browser_log.csp_problems() and not browser_log.page_errors, browser_log


async def visit_all(page: Any, live_server: str, paths: dict[str, str], width: int, scheme: str,
                    phone: bool, problems: list[str]) -> None:
    # Every page, then every state tab of the queue, then one outbox message.
    visits = list(paths.items())
    for state in ("waiting", "active", "delayed", "prioritized", "waiting-children",
                  "completed"):
        visits.append((f"queue-{state}", f"/queues/{QUEUE}?state={state}"))
    visits.append(("outbox-message", None))
    for name, path in visits:
        if path is None:
            await page.goto(live_server + "/outbox")
            href = await page.locator("table.outbox a").first.get_attribute("href")
            await page.goto(href if href.startswith("http") else live_server + href)
            await expect(page.locator("iframe.mail-html")).to_have_count(1)
        else:
            response = await page.goto(live_server + path)
            assert response is not None and response.status == 200, (name, path)
        await wait_live(page)
        where = f"{name} at {width}px {scheme}"
        m = await check_layout(page, where, width, problems)

        if phone:
            if m["menu"] is None:
                problems.append(f"{where}: no sidebar")
            elif m["menu"]["height"] > MENU_BAR_MAX:
                problems.append(f"{where}: the closed sidebar takes {m['menu']['height']:.0f} px "
                                f"of height (at most {MENU_BAR_MAX})")
            elif m["linkVisible"]:
                problems.append(f"{where}: the queue links show while the menu is closed")
            if m["main"]["width"] < width - 40:
                problems.append(f"{where}: the content is {m['main']['width']:.0f} px wide "
                                f"of {width}")
        else:
            side, menu = m["sidebar"], m["menu"]
            if not side or not m["linkVisible"] or side["width"] < 150:
                problems.append(f"{where}: the sidebar is not shown ({side})")
            elif side["right"] > m["main"]["left"] + 1 \
                    or menu["height"] < page.viewport_size["height"] / 2:
                problems.append(f"{where}: the sidebar is not beside the content "
                                f"({side}, main {m['main']})")
        if name.startswith("queue"):
            if phone and m["tabs"] and m["tabs"]["height"] > TAB_STRIP_MAX:
                problems.append(f"{where}: the state tabs take {m['tabs']['height']:.0f} px "
                                f"of height (one strip: at most {TAB_STRIP_MAX})")
            box = await page.evaluate(TABLE_BOX)
            if name == "queue" and phone:
                if not box or not box["found"]:
                    problems.append(f"{where}: the job table ({box}) has no box of its own "
                                    "that scrolls sideways")
                elif box["scrollWidth"] <= box["clientWidth"] or box["scrolled"] <= 0 \
                        or box["right"] > width + 1:
                    problems.append(f"{where}: the job table's box does not scroll: {box}")
            if name == "queue" and width >= DESKTOP[0] and box and box.get("found") \
                    and box["scrollWidth"] > box["clientWidth"] + 1:
                problems.append(f"{where}: the job table needs a sideways scroll at "
                                f"{width} px: {box}")
        if name in ("overview", "queue"):
            worst = await page.evaluate(ZERO_CONTRAST)
            if worst and worst["ratio"] < 4.5:
                problems.append(f"{where}: a zero count ({worst['text']!r}) has contrast "
                                f"{worst['ratio']:.2f}:1 (AA: 4.5:1)")
        if name not in NOT_PICTURED:  # one queue tab, one job page in the pictures
            await shoot(page, name, scheme, width)


async def check_menu(page: Any, mail: MailManager, live_server: str, width: int, scheme: str,
                     problems: list[str]) -> None:
    """On the queue page: a tap opens the menu; a live swap of the sidebar keeps it open;
    the focus ring shows on the menu's toggle."""
    where = f"menu at {width}px {scheme}"
    await page.goto(f"{live_server}/queues/{QUEUE}?state=failed")
    await wait_live(page)
    toggle = page.locator("details:has(#sidebar) > summary")
    if await toggle.count() != 1:
        problems.append(f"{where}: no menu toggle (a <summary> of a <details> around #sidebar)")
        return
    await toggle.tap()
    link = page.locator(f'#sidebar a[href$="/queues/{QUEUE}"]')
    try:
        await expect(link).to_be_visible()
    except AssertionError:
        problems.append(f"{where}: a tap does not open the menu")
        return
    await check_layout(page, where + " (open)", width, problems)
    if width in SHOT_WIDTHS:
        await page.wait_for_timeout(400)  # the tap's highlight fades
        await shoot(page, "menu-open", scheme, width)
    # A live swap of the sidebar (a new queue appears) keeps the menu open.
    name = NEW_QUEUES[(width, scheme)]
    await mail.add_job(name, "send", {})
    try:
        await expect(page.locator(f'#sidebar a[href$="/queues/{name}"]')).to_be_visible()
    except AssertionError:
        problems.append(f"{where}: after a live swap of the sidebar the menu is closed")
    # The keyboard focus ring shows on the toggle.
    await toggle.focus()
    await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("Tab")
    ring = await page.evaluate("""() => { const s = getComputedStyle(document.activeElement);
        return {tag: document.activeElement.tagName, style: s.outlineStyle,
                width: parseFloat(s.outlineWidth)}; }""")
    if ring["tag"] != "SUMMARY" or ring["style"] == "none" or ring["width"] < 1:
        problems.append(f"{where}: no visible focus ring on the menu toggle: {ring}")
