"""Our dashboard side by side with Bull Board, on one Redis filled by Node BullMQ.

    .venv/bin/python bench/dashboards.py [--scale 1] [--idle-seconds 60]

Used by bench/run.py (`make bench`); alone it prints the tables. Needs `npm install` in
bench/node (run.py does it) and, for the browser rows, Chromium at /usr/bin/chromium.

1. HTTP, one request at a time, keep-alive, gzip accepted: the overview, each state tab of
   `emails` at page 1 and at a deep page (10,000, or the last page when the state has fewer),
   and a failed job's page: our HTML page against the Bull Board JSON call that fills the
   same view. Median and p95 of `REQUESTS` requests, bytes on the wire.
2. Cold load in Chromium: a new browser context (empty cache) opens the failed tab of
   `emails`; the time until its job table is visible.
3. Live update: a page open on a small queue, a job completes (a Node worker), the time until
   the completed count on the page changes.
4. Idle viewers: 20 Chromium tabs open on `emails` for `--idle-seconds`; Redis commands per
   second from INFO commandstats (every client of this Redis: only the dashboard under test
   talks to it then).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis

from mailqueue.redis_server import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "bench" / "node"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run",
                 # 20 tabs in the background keep their timers and connections as in front.
                 "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                 "--disable-backgrounding-occluded-windows"]
REQUESTS = 50
PER_PAGE = 50
DEEP_PAGE = 10_000
STATES = ("waiting", "delayed", "completed", "failed")
LIVE_QUEUE = "live-bench"
SMALL_QUEUES = [f"small-{i:02d}" for i in range(20)]
QUEUES = ["emails", *SMALL_QUEUES, "flow-parents", "flow-children", "reports", LIVE_QUEUE]


def npm_install() -> None:
    if not (NODE_DIR / "node_modules" / "@bull-board" / "express").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR,
                       check=True, timeout=600)


def node_json(script: str, command: dict[str, Any], timeout: float = 1800) -> list[dict[str, Any]]:
    """Run a bench/node script to its end; its JSON lines (echoed as they come)."""
    process = subprocess.Popen(["node", script, json.dumps(command)], cwd=NODE_DIR,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        event = json.loads(line)
        lines.append(event)
        if event.get("event") == "step":
            print(f"  fill: {event['step']}: {event['jobs']:,} jobs in {event['seconds']:.1f} s",
                  flush=True)
        if time.monotonic() > deadline:
            process.kill()
            break
    if process.wait(60) != 0 or lines[-1].get("event") != "done":
        raise SystemExit(f"node {script} failed: {lines[-1:]}")
    return lines


@contextlib.contextmanager
def node_server(script: str, command: dict[str, Any]) -> Iterator[str]:
    process = subprocess.Popen(["node", script, json.dumps(command)], cwd=NODE_DIR,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        event = json.loads(process.stdout.readline() or "{}")
        if event.get("event") != "ready":
            raise SystemExit(f"node {script} did not start: {event}")
        yield event["url"]
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def our_dashboard(redis_url: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "QUEUE_PREFIX": "bull", "LOG_LEVEL": "WARNING"}
    for name in ("DASHBOARD_AUTH", "DASHBOARD_VIEWER_AUTH", "DASHBOARD_READ_ONLY"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "mailqueue.cli", "dashboard", "--host", "127.0.0.1",
         "--port", str(port)], env=env, stdout=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code < 500:
                    break
            time.sleep(0.2)
        else:
            raise SystemExit("our dashboard did not start")
        yield url
    finally:
        process.terminate()
        process.wait(30)


@contextlib.contextmanager
def bull_board(redis_url: str) -> Iterator[str]:
    with node_server("bullboard.mjs", {"redis": redis_url, "queues": QUEUES}) as url:
        yield url + "/ui"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def timed(client: httpx.Client, url: str, n: int = REQUESTS) -> dict[str, Any]:
    """Median and p95 (ms) of n GETs after 2 warm-ups, and the bytes on the wire."""
    for _ in range(2):
        client.get(url).raise_for_status()
    times, size = [], 0
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        size = response.num_bytes_downloaded
    return {"median": statistics.median(times), "p95": p95(times), "bytes": size}


def pairs(counts: dict[str, int], job_id: str) -> list[tuple[str, str, str]]:
    """(row label, our path, Bull Board's API path) for every HTTP row."""
    rows = [("Overview (every queue, counts)", "/", "/api/queues?page=1&jobsPerPage=50")]
    for state in STATES:
        total = counts.get(state, 0)
        last = max(1, -(-total // PER_PAGE))
        for page in dict.fromkeys((1, min(DEEP_PAGE, last))):
            rows.append((f"`emails` {state} ({total:,}), page {page:,}",
                         f"/queues/emails?state={state}&page={page}&per_page={PER_PAGE}",
                         f"/api/queues?activeQueue=emails&status={state}&page={page}"
                         f"&jobsPerPage={PER_PAGE}"))
    rows.append(("A failed job's page (stack trace)", f"/queues/emails/jobs/{job_id}",
                 f"/api/queues/emails/{job_id}"))
    return rows


def http_rows(ours: str, theirs: str, counts: dict[str, int], job_id: str
              ) -> list[dict[str, Any]]:
    results = []
    headers = {"Accept-Encoding": "gzip"}
    with httpx.Client(headers=headers, timeout=60) as a, httpx.Client(headers=headers,
                                                                       timeout=60) as b:
        for label, our_path, their_path in pairs(counts, job_id):
            row = {"label": label, "ours": timed(a, ours + our_path),
                   "theirs": timed(b, theirs + their_path)}
            row["ratio"] = row["ours"]["median"] / row["theirs"]["median"]
            print(f"  {label}: ours {row['ours']['median']:.1f} ms (p95 "
                  f"{row['ours']['p95']:.1f}, {row['ours']['bytes']:,} B), Bull Board "
                  f"{row['theirs']['median']:.1f} ms (p95 {row['theirs']['p95']:.1f}, "
                  f"{row['theirs']['bytes']:,} B): {row['ratio']:.2f}x", flush=True)
            results.append(row)
    return results


# --- the browser rows ----------------------------------------------------------------------

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


def fill(redis_url: str, scale: float) -> dict[str, Any]:
    lines = node_json("fill.mjs", {"redis": redis_url, "scale": scale})
    done = lines[-1]
    print(f"  fill: done in {done['seconds']:.0f} s: emails {done['emails']}", flush=True)
    return done


def run(args: argparse.Namespace) -> dict[str, Any]:
    npm_install()
    with tempfile.TemporaryDirectory(prefix="mailqueue-bench-dash-") as tmp:
        server = EmbeddedRedis(data_dir=Path(tmp) / "redis", appendonly=False).start()
        try:
            filled = fill(server.url, args.scale)
            counts = filled["emails"]
            client = redis.Redis.from_url(server.url)
            failed_id = client.zrevrange("bull:emails:failed", 0, 0)[0].decode()
            client.close()
            results: dict[str, Any] = {"fill_seconds": filled["seconds"], "counts": counts,
                                       "scale": args.scale}
            with our_dashboard(server.url) as ours, bull_board(server.url) as theirs:
                results["http"] = http_rows(ours, theirs, counts, failed_id)
                if CHROMIUM.exists() and not args.no_browser:
                    results.update(asyncio.run(browser_rows(ours, theirs, server.url, args,
                                                            failed_id)))
                else:
                    print("  no Chromium at /usr/bin/chromium: the browser rows are skipped")
            return results
        finally:
            server.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=float,
                        default=float(os.environ.get("BENCH_SCALE") or 1),
                        help="multiplies every job count of the fill (env BENCH_SCALE)")
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--tabs", type=int, default=20)
    parser.add_argument("--cold-runs", type=int, default=10)
    parser.add_argument("--live-samples", type=int, default=20)
    parser.add_argument("--no-browser", action="store_true")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    results = run(parser.parse_args())
    print(json.dumps(results, indent=1)[:4000])


if __name__ == "__main__":
    main()
