"""The browser rows of the dashboards bench, in Chromium through Playwright: page weight,
cold load, live update and idle viewers' Redis load, ours against Bull Board.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from dashboards_http import PER_PAGE, p95
from dashboards_servers import LIVE_QUEUE, NODE_DIR, node_json

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run",
                 # 20 tabs in the background keep their timers and connections as in front.
                 "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                 "--disable-backgrounding-occluded-windows"]

# Bull Board draws each job as a card; ours as a table row. Both: the first job of the list.
OUR_TABLE = "table.jobs tbody tr"
THEIR_TABLE = "[class*='card-'] [class*='jobId-']"


@contextlib.asynccontextmanager
async def chromium() -> Any:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                          headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def cold_load(browser: Any, url: str, selector: str, runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs + 1):  # the first one warms the server, not the browser
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        started = time.perf_counter()
        await page.goto(url, wait_until="commit")
        await page.wait_for_selector(selector, state="visible", timeout=60_000)
        times.append((time.perf_counter() - started) * 1000)
        await context.close()
    times = times[1:]
    return {"median": statistics.median(times), "p95": p95(times)}


async def first_load_bytes(browser: Any, url: str) -> int:
    """Bytes a first visit transfers (empty cache), every resource of the page, as Chromium
    counts them (DevTools `encodedDataLength`: headers and bodies as sent, gzip as served).
    A live stream that never finishes loading is an update, not the page: left out."""
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    await cdp.send("Network.enable")
    await cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    sizes: dict[str, int] = {}
    cdp.on("Network.loadingFinished",
           lambda e: sizes.__setitem__(e["requestId"], int(e["encodedDataLength"])))
    await page.goto(url, wait_until="networkidle", timeout=60_000)
    await cdp.detach()
    await context.close()
    return sum(sizes.values())


# Our pages weighed in Chromium (issue 14's budget: 60 KB each), and Bull Board's page.
OUR_PAGES = ("/", "/queues/emails?state=failed", "/schedules", "/workers", "/events",
             "/messages", "/suppressions", "/campaigns", "/templates", "/templates/welcome")


async def page_weights(browser: Any, ours: str, theirs: str, failed_id: str
                       ) -> dict[str, int]:
    weights = {path: await first_load_bytes(browser, ours + path) for path in OUR_PAGES}
    job = f"/queues/emails/jobs/{failed_id}"
    weights[job] = await first_load_bytes(browser, ours + job)
    weights["Bull Board: /queue/emails?status=failed"] = await first_load_bytes(
        browser, f"{theirs}/queue/emails?status=failed")
    return weights


# The page's completed count for LIVE_QUEUE, as a number (None if not drawn yet).
OUR_COUNT_JS = """() => {
  const a = [...document.querySelectorAll('#queue-tabs a')]
    .find((x) => x.textContent.trim().startsWith('completed'));
  return a ? a.querySelector('.count').textContent.trim() : null;
}"""
THEIR_COUNT_JS = """() => {
  const a = document.querySelector('a[href*="status=completed"]');
  if (!a) return null;
  const badge = a.querySelector('[class*="badge-"]');
  return badge ? badge.textContent.trim() : '0';
}"""


async def until_count(page: Any, count_js: str, other_than: Any, timeout: float = 30) -> float:
    """Poll the page's count (every ~5 ms: the pages' CSP forbids wait_for_function's eval)
    until it is not `other_than`; the wall-clock ms when it was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await page.evaluate(count_js) != other_than:
            return time.time() * 1000
        await asyncio.sleep(0.005)
    raise SystemExit(f"the count on {page.url} did not change in {timeout} s")


async def live_latency(browser: Any, url: str, count_js: str, redis_url: str,
                       samples: int) -> dict[str, float]:
    """Per sample: add a job, a Node worker completes it; ms from its finishedOn to the
    moment the page shows the new completed count (a poll of the DOM every 10 ms)."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(url)
    await until_count(page, count_js, None)
    client = redis.Redis.from_url(redis_url)
    latencies = []
    # Started (and awaited ready) before any sample is timed: blocking here costs nothing.
    worker = subprocess.Popen(["node", "worker.mjs", json.dumps(  # noqa: ASYNC220
        {"redis": redis_url, "queue": LIVE_QUEUE, "concurrency": 1, "seconds": 900})],
        cwd=NODE_DIR, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        worker.stdout.readline()  # ready
        for i in range(samples):
            before = await page.evaluate(count_js)
            await asyncio.sleep(0.3 + (i % 7) * 0.37)  # not in step with anyone's polling
            node_json("add.mjs", {"redis": redis_url, "queue": LIVE_QUEUE, "n": 1}, 60)
            line = await asyncio.to_thread(worker.stdout.readline)
            finished_ms = json.loads(line)["finishedOn"]
            seen_ms = await until_count(page, count_js, before)
            latencies.append(seen_ms - finished_ms)
    finally:
        worker.terminate()
        worker.wait(10)
        client.close()
        await context.close()
    return {"median": statistics.median(latencies), "p95": p95(latencies),
            "samples": len(latencies)}


def command_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


async def idle_viewers(browser: Any, url: str, selector: str, redis_url: str, tabs: int,
                       seconds: float) -> float:
    """Redis commands/s while `tabs` pages sit open on `url` (after they have loaded)."""
    # One browser context per tab, like `tabs` viewers: in one context Chromium opens at most
    # 6 HTTP/1.1 connections per host, and each of our pages holds one for its SSE stream.
    contexts = []
    for _ in range(tabs):
        context = await browser.new_context()
        contexts.append(context)
        page = await context.new_page()
        await page.goto(url, wait_until="commit")
        await page.wait_for_selector(selector, state="visible", timeout=60_000)
    await asyncio.sleep(2)
    client = redis.Redis.from_url(redis_url)
    try:
        before, started = command_calls(client), time.perf_counter()
        await asyncio.sleep(seconds)
        after, elapsed = command_calls(client), time.perf_counter() - started
    finally:
        client.close()
        for context in contexts:
            await context.close()
    return (after - before - 1) / elapsed  # less our own INFO


async def browser_rows(ours: str, theirs: str, redis_url: str, args: argparse.Namespace,
                       failed_id: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    our_failed = f"{ours}/queues/emails?state=failed&page=1&per_page={PER_PAGE}"
    their_failed = f"{theirs}/queue/emails?status=failed"
    async with chromium() as browser:
        results["weights"] = await page_weights(browser, ours, theirs, failed_id)
        heaviest = max((n, p) for p, n in results["weights"].items() if p.startswith("/"))
        print(f"  page weight: heaviest of ours {heaviest[0] / 1024:.1f} KB ({heaviest[1]}), "
              f"Bull Board's failed tab {list(results['weights'].values())[-1] / 1024:.0f} KB",
              flush=True)
        results["cold_ours"] = await cold_load(browser, our_failed, OUR_TABLE, args.cold_runs)
        results["cold_theirs"] = await cold_load(browser, their_failed, THEIR_TABLE,
                                                 args.cold_runs)
        print(f"  cold load, failed tab: ours {results['cold_ours']['median']:.0f} ms, "
              f"Bull Board {results['cold_theirs']['median']:.0f} ms", flush=True)
        results["live_ours"] = await live_latency(
            browser, f"{ours}/queues/{LIVE_QUEUE}?state=waiting", OUR_COUNT_JS, redis_url,
            args.live_samples)
        results["live_theirs"] = await live_latency(
            browser, f"{theirs}/queue/{LIVE_QUEUE}?status=waiting", THEIR_COUNT_JS,
            redis_url, max(5, args.live_samples // 2))
        print(f"  live update: ours p50 {results['live_ours']['median']:.0f} ms, Bull Board "
              f"p50 {results['live_theirs']['median']:.0f} ms", flush=True)
        results["idle_ours"] = await idle_viewers(
            browser, f"{ours}/queues/emails?state=waiting", OUR_TABLE, redis_url, args.tabs,
            args.idle_seconds)
        results["idle_theirs"] = await idle_viewers(
            browser, f"{theirs}/queue/emails?status=waiting", THEIR_TABLE, redis_url,
            args.tabs, args.idle_seconds)
        print(f"  {args.tabs} idle tabs: ours {results['idle_ours']:.0f} Redis commands/s, "
              f"Bull Board {results['idle_theirs']:.0f}/s", flush=True)
    return results
