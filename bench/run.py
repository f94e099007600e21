"""E-mail throughput and the 100,000-recipient newsletter, measured on a Redis of its own.

    .venv/bin/python bench/run.py [--runs 3] [--messages 2000] [--jobs 3000] [--write]

1. Messages per second to the SMTP sink (another process): the pool (5 connections) vs a
   new connection per message, the same 20 sends in flight.
2. E-mails per second end to end: jobs on the queue -> `mailqueue worker` (another process)
   -> SMTP -> the sink (a third process).
3. `create_newsletter_flow` with 100,000 recipients from a generator: enqueue time, and
   peak Python memory (tracemalloc) in a second run.
4. A campaign (`MailManager.campaigns.create`, one job per recipient) of 10,000 and 100,000
   recipients from a generator: enqueue time and the peak RSS of its process
   (bench/campaign.py).

Then bench/workers.py (no-op jobs/s), bench/mail.py (e-mails/s, ours vs Node BullMQ +
nodemailer, and the goal table of issue 12) and bench/dashboards.py; `--skip-workers`,
`--skip-mail`, `--skip-dashboards` leave them out.

Medians of `--runs` runs. Redis is an EmbeddedRedis on a temporary directory (never the
machine's 6379). `--write` puts the results in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dashboards
import desk
import mail
import workers

from mailqueue.mail.message import Address, OutgoingMessage, build_message
from mailqueue.mail.transport import SmtpTransport
from mailqueue.manager import MailManager
from mailqueue.redis_server import EmbeddedRedis
from mailqueue.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
IN_FLIGHT = 20


@contextlib.contextmanager
def sink_process(redis_url: str, prefix: str) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "sink.py"), redis_url, prefix],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def worker_process(redis_url: str, prefix: str, smtp_url: str, concurrency: int
                   ) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "REDIS_URL": redis_url, "QUEUE_PREFIX": prefix, "SMTP_URL": smtp_url,
           "LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mailqueue.cli", "worker", "--concurrency", str(concurrency)],
        env=env, stdout=subprocess.DEVNULL, cwd=tempfile.gettempdir(),
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(30)


def messages(n: int) -> list[OutgoingMessage]:
    sender = Address("noreply@localhost", "mailqueue bench")
    return [
        build_message(sender=sender, to=[Address(f"u{i}@example.com", "Zoë")],
                      subject="Bench ✓", text="Hello\n", html="<p>Hello</p>",
                      message_id=f"<bench.{i}@localhost>")
        for i in range(n)
    ]


async def send_all(url: str, batch: list[OutgoingMessage], pooled: bool) -> float:
    slots = asyncio.Semaphore(IN_FLIGHT)
    shared = SmtpTransport(url + "&pool=5") if pooled else None

    async def one(message: OutgoingMessage) -> None:
        async with slots:
            if shared is not None:
                await shared.send(message)
                return
            transport = SmtpTransport(url, pool_size=1)  # a new connection per message
            try:
                await transport.send(message)
            finally:
                await transport.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(m) for m in batch))
    elapsed = time.perf_counter() - started
    if shared is not None:
        await shared.close()
    return len(batch) / elapsed


async def end_to_end(mail: MailManager, n: int) -> float:
    queue = "emails"  # the worker process serves the default queue
    await mail.create_queue(queue)
    jobs = [{"name": "send-notification",
             "data": {"to": f"u{i}@example.com", "title": "Bench ✓", "message": "Hello"}}
            for i in range(n)]
    started = time.perf_counter()
    for start in range(0, n, 500):
        await mail.add_jobs(queue, jobs[start:start + 500])
    while True:
        counts = await mail.queues.get_job_counts(queue)
        if counts.get("completed", 0) + counts.get("failed", 0) >= n:
            break
        if time.perf_counter() - started > 120:
            raise SystemExit(f"end to end: the worker did not finish: {counts}")
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    if counts.get("failed", 0):
        raise SystemExit(f"{counts['failed']} e-mail jobs failed in the bench")
    await mail.queues.clean(queue, "completed")
    return n / elapsed


def recipients(n: int) -> Iterator[str]:
    return (f"reader{i}@example.com" for i in range(n))


async def newsletter(mail: MailManager, n: int, trace: bool) -> tuple[float, int]:
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    flow = await mail.flows.create_newsletter_flow(
        {"campaign": "Bench", "articles": []}, recipients(n), queue="newsletter"
    )
    elapsed = time.perf_counter() - started
    peak = 0
    if trace:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert flow["recipients"] == n, flow
    await mail.queues.obliterate("newsletter", force=True)
    return elapsed, peak


def campaign_enqueue(redis_url: str, n: int) -> dict[str, Any]:
    """bench/campaign.py in a process of its own: its peak RSS is the campaign's."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "campaign.py"), redis_url,
                           str(n)], capture_output=True, text=True, check=True, timeout=600)
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mailqueue-bench-") as tmp:
        server = EmbeddedRedis(data_dir=Path(tmp) / "redis", appendonly=False).start()
        try:
            return await _bench(args, server.url, tmp)
        finally:
            server.stop()


async def _bench(args: argparse.Namespace, redis_url: str, tmp: str) -> dict[str, Any]:
    settings = Settings(_env_file=None, redis_url=redis_url, queue_prefix="bench",  # type: ignore[call-arg]
                        data_dir=Path(tmp) / "data", job_remove_on_complete=0)
    results: dict[str, Any] = {}
    with sink_process(redis_url, "bench") as smtp_url:
        batch = messages(args.messages)
        await send_all(smtp_url, batch[:200], True)  # warm up
        pooled = [await send_all(smtp_url, batch, True) for _ in range(args.runs)]
        single = [await send_all(smtp_url, batch, False) for _ in range(args.runs)]
        results["pool"] = statistics.median(pooled)
        results["no_pool"] = statistics.median(single)
        print(f"to the sink, pool of 5:            {results['pool']:8.0f} messages/s")
        print(f"to the sink, connection per message: {results['no_pool']:6.0f} messages/s")
        print(f"  ratio pool / no pool: {results['pool'] / results['no_pool']:.2f}")
        async with MailManager(settings) as mail:
            with worker_process(redis_url, "bench", smtp_url, args.concurrency):
                await asyncio.sleep(2)  # the worker connects
                await end_to_end(mail, 200)  # warm up
                e2e = [await end_to_end(mail, args.jobs) for _ in range(args.runs)]
            results["e2e"] = statistics.median(e2e)
            print(f"end to end (queue -> worker process -> SMTP sink): {results['e2e']:.0f} "
                  "e-mails/s")
            print(f"  ratio end to end / transport alone (pool): "
                  f"{results['e2e'] / results['pool']:.2f}")
            times = [(await newsletter(mail, 100_000, False))[0] for _ in range(args.runs)]
            _, peak = await newsletter(mail, 100_000, True)
            results["newsletter_s"] = statistics.median(times)
            results["newsletter_peak"] = peak
            print(f"newsletter, 100,000 recipients: enqueued in {results['newsletter_s']:.2f} s "
                  f"(1,000 batches), peak Python memory {peak / 1e6:.1f} MB (tracemalloc)")
            results["campaign"] = [campaign_enqueue(redis_url, n) for n in (10_000, 100_000)]
            for row in results["campaign"]:
                print(f"campaign, {row['recipients']:,} recipients: enqueued in "
                      f"{row['seconds']:.2f} s, peak RSS {row['peak_rss_mb']:.0f} MB "
                      f"(before: {row['rss_before_mb']:.0f} MB)")
            info = await mail.client.info("server")
            results["redis_version"] = info.get("redis_version")
    results["runs"] = args.runs
    results["args"] = vars(args)
    return results


def _campaign_rows(rows: list[dict[str, Any]] | None) -> str:
    return "".join(
        f"| Campaign, {r['recipients']:,} recipients from a generator: enqueue time / peak "
        f"RSS of the process (before: {r['rss_before_mb']:.0f} MB) | {r['seconds']:.2f} s / "
        f"{r['peak_rss_mb']:.0f} MB |\n" for r in rows or [])


def _desk_report(d: dict[str, Any] | None) -> str:
    if not d:
        return ""
    rows = "".join(f"| {name} | {r['median_ms']:.2f} / {r['p95_ms']:.2f} | "
                   f"{r['entries_found_median']:.0f} |\n" for name, r in d["searches"].items())
    return f"""
## The delivery log at {d['entries']:,} entries (`bench/desk.py`)

Written through the log's own script, 500 entries a call, in {d['fill_s']} s; recipients
spread over 200,000 addresses and 1,000 domains (~5 entries an address, ~1,000 a domain).
Redis memory: {d['bytes_per_entry']} bytes per entry, its three indexes included. Each
search is `MailDesk.search_messages` (a page of 50), 30 random targets.

| Search | Median / p95 ms | Entries found (median) |
|---|---|---|
{rows}"""


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


KEPT_MARK = ("<!-- Sections below this line are written by hand; bench/run.py --write keeps "
             "them. -->")


def write_report(results: dict[str, Any]) -> None:
    a = results["args"]
    today = datetime.date.today().isoformat()
    text = f"""# Performance

The last run of `make bench` (`bench/run.py --write`), {today}.

- Machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}
- Versions: Python {platform.python_version()}, bullmq {version("bullmq")}, aiosmtplib \
{version("aiosmtplib")}, aiosmtpd {version("aiosmtpd")}, Redis {results["redis_version"]} \
(embedded, no persistence)
- Load average when the run ended: {os.getloadavg()[0]:.1f} (other work on the machine
  lowers every figure; the end-to-end one most, it is CPU-bound).
- Medians of {results["runs"]} runs. The SMTP sink (aiosmtpd, storing each message in
  Redis) runs in its own process; so does the worker.

| Measure | Result |
|---|---|
| Messages/s to the sink, pool of 5 connections ({a["messages"]} messages, 20 in flight) \
| {results["pool"]:,.0f} |
| Messages/s to the sink, a new connection per message | {results["no_pool"]:,.0f} |
| Ratio pool / connection per message | {results["pool"] / results["no_pool"]:.2f} |
| E-mails/s end to end: queue -> `mailqueue worker --concurrency {a["concurrency"]}` (1 \
process) -> SMTP -> sink ({a["jobs"]} jobs) | {results["e2e"]:,.0f} |
| Ratio end to end / transport alone | {results["e2e"] / results["pool"]:.2f} |
| Newsletter flow, 100,000 recipients from a generator: enqueue time (1,000 batches of \
100, 10 per Redis call) | {results["newsletter_s"]:.2f} s |
| Same: peak Python memory while enqueueing (tracemalloc) | \
{results["newsletter_peak"] / 1e6:.1f} MB |
{_campaign_rows(results.get("campaign"))}
End to end includes rendering the `notification` template, building the MIME message, the
no-double-send record in Redis, and bullmq's own work per job. The newsletter's peak
memory stays flat with the number of recipients: they are read from the iterable in step
with the enqueueing, 1,000 at a time. So does a campaign's (`mailqueue newsletter send`,
one job per recipient, `bench/campaign.py` in a process of its own): its peak RSS for
100,000 recipients is that for 10,000.
"""
    text += _desk_report(results.get("desk"))
    text += mail.report(results.get("mail"), results.get("workers"))
    text += workers_report(results.get("workers"))
    text += dashboards_report(results.get("dashboards"))
    path = ROOT / "docs" / "performance.md"
    # What was written by hand (profiles, before/after figures of one change) stays.
    old = path.read_text() if path.exists() else ""
    if KEPT_MARK in old:
        text = text.rstrip("\n") + "\n\n" + KEPT_MARK + old.split(KEPT_MARK, 1)[1]
    path.write_text(text)
    print("wrote docs/performance.md")


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def workers_report(w: dict[str, Any] | None) -> str:
    if not w:
        return ""
    cost = w["manager_cost"]
    return f"""
## Workers: no-op jobs per second (`bench/workers.py`)

Same Redis, same run, the variants taking turns ({w.get("args_runs", 3)} runs, medians); Node BullMQ
adds the jobs (removeOnComplete); the clock runs from the first job taken to the queue empty.
Concurrency {w.get("args_concurrency", 50)} everywhere.

| Worker | Jobs/s |
|---|---|
| WorkerManager (1 process) | {w["manager"]:,.0f} |
| Raw bullmq `Worker` for Python (1 process) | {w["raw"]:,.0f} |
| Node BullMQ `Worker` (1 process) | {w["node"]:,.0f} |
| Cost of the manager layer vs raw bullmq (goal 5% or less) | {cost:.1%} ({_met(cost <= 0.05)}) |
| WorkerManager in {w["processes"]} processes (what `mailqueue worker --processes \
{w["processes"]}` runs), machine-wide | {w["manager_n"]:,.0f} |
| Node BullMQ in {w["processes"]} processes, machine-wide | {w["node_n"]:,.0f} |
| Ratio Python / Node, {w["processes"]} processes | {w["manager_n"] / w["node_n"]:.2f} |
"""


def dashboards_report(d: dict[str, Any] | None) -> str:
    if not d:
        return ""
    c = d["counts"]
    rows = "\n".join(
        f"| {r['label']} | {r['ours']['median']:.1f} / {r['ours']['p95']:.1f} | "
        f"{r['ours']['bytes']:,} | {r['theirs']['median']:.1f} / {r['theirs']['p95']:.1f} | "
        f"{r['theirs']['bytes']:,} | {r['ratio']:.2f}x | {_met(r['ratio'] <= 1.0)} |"
        for r in d["http"])
    text = f"""
## Dashboards: ours vs Bull Board (`bench/dashboards.py`)

One Redis filled by Node BullMQ 6.7.0 (`bench/node/fill.mjs`, scale {d["scale"]}) in
{d["fill_seconds"]:.0f} s: `emails` with {c.get("waiting", 0):,} waiting,
{c.get("completed", 0):,} completed, {c.get("failed", 0):,} failed (stack traces),
{c.get("delayed", 0):,} delayed; 20 small queues; 1,000 flows (1 parent + 3 children);
50 job schedulers. Bull Board is @bull-board/api + @bull-board/express 9.10.1 on Express 5
(`bench/node/bullboard.mjs`, default settings), ours is `mailqueue dashboard`; both on
loopback, one after the other, never together.

### HTTP: our HTML page vs the Bull Board JSON call that fills the same view

Median / p95 of {dashboards.REQUESTS} sequential requests on a keep-alive connection, gzip
accepted (Bull Board does not compress); bytes on the wire. Goal: 1.0x or less.

| View | Ours ms (median / p95) | Ours bytes | Bull Board ms | Bull Board bytes | Ratio | Goal |
|---|---|---|---|---|---|---|
{rows}
"""
    if "cold_ours" in d:
        cold = d["cold_ours"]["median"] / d["cold_theirs"]["median"]
        live = d["live_ours"]["median"]
        idle = d["idle_ours"] / max(d["idle_theirs"], 1e-9)
        text += f"""
### In Chromium (/usr/bin/chromium, headless, Playwright)

| Measure | Ours | Bull Board | Ratio | Goal |
|---|---|---|---|---|
| Cold load of the failed tab of `emails`, new context (empty cache), until the first job \
row is visible: median / p95 ms | {d["cold_ours"]["median"]:.0f} / {d["cold_ours"]["p95"]:.0f} \
| {d["cold_theirs"]["median"]:.0f} / {d["cold_theirs"]["p95"]:.0f} | {cold:.2f}x | 0.5x or \
less: {_met(cold <= 0.5)} |
| Live update: a job completes (a Node worker) -> the completed count on an open page \
changes: p50 / p95 ms ({d["live_ours"]["samples"]} and {d["live_theirs"]["samples"]} samples) \
| {live:.0f} / {d["live_ours"]["p95"]:.0f} (SSE) | {d["live_theirs"]["median"]:.0f} / \
{d["live_theirs"]["p95"]:.0f} (polls every 5 s) | {live / d["live_theirs"]["median"]:.2f}x \
| ours p50 250 ms or less: {_met(live <= 250)} |
| Redis commands/s with 20 viewers on `emails` (waiting tab) for the idle period (INFO \
commandstats delta) | {d["idle_ours"]:,.1f} | {d["idle_theirs"]:,.1f} | {idle:.3f}x | 0.1x \
or less: {_met(idle <= 0.1)} |

The 20 viewers are 20 browser contexts with one tab each: in one context Chromium opens
at most 6 HTTP/1.1 connections per host, and each of our pages holds one for its SSE
stream, so a 7th tab of one browser on the same host waits (behind an HTTP/2 proxy, as
"Running in production" in the README advises, they share one connection).
"""
    if "weights" in d:
        rows = "\n".join(
            f"| `{page}` | {n / 1024:.1f} KB | "
            + (f"{_met(n <= 60 * 1024)} |" if page.startswith("/") else "(not ours) |")
            for page, n in d["weights"].items())
        text += f"""
### Page weight (issue 14: 60 KB or less per page)

Bytes a first visit transfers with an empty cache, every resource of the page (HTML, CSS,
scripts, icon), as Chromium counts them (DevTools `encodedDataLength`, gzip as served), on
the filled Redis above; our live stream is an update, not part of the page.

| Page | First load | Under 60 KB |
|---|---|---|
{rows}
"""
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--write", action="store_true", help="write docs/performance.md")
    parser.add_argument("--from-json", type=Path,
                        help="only write docs/performance.md from a saved run's results")
    parser.add_argument("--skip-dashboards", action="store_true")
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--skip-mail", action="store_true",
                        help="leave out ours vs Node BullMQ + nodemailer (bench/mail.py)")
    parser.add_argument("--skip-desk", action="store_true",
                        help="leave out the delivery log at 1,000,000 entries (bench/desk.py)")
    parser.add_argument("--desk-entries", type=int, default=1_000_000)
    dashboards.add_arguments(parser)
    workers.add_arguments(parser)
    mail.add_arguments(parser)
    args = parser.parse_args()
    if args.from_json:
        write_report(__import__("json").loads(args.from_json.read_text()))
        return
    started = time.perf_counter()
    results = asyncio.run(bench(args))
    if not args.skip_workers:
        print("workers (no-op jobs):", flush=True)
        results["workers"] = workers.run(args)
    if not args.skip_mail:
        print("e-mails, ours vs Node BullMQ + nodemailer:", flush=True)
        results["mail"] = mail.run(args)
    if not args.skip_mail or not args.skip_workers:
        mail.print_goal_table(results.get("mail"), results.get("workers"))
    if not args.skip_desk:
        print(f"delivery log, {args.desk_entries:,} entries:", flush=True)
        results["desk"] = asyncio.run(desk.run(args.desk_entries, 30))
        print(desk.report(results["desk"]), flush=True)
    if not args.skip_dashboards:
        print(f"dashboards, ours vs Bull Board (scale {args.scale}):", flush=True)
        results["dashboards"] = dashboards.run(args)
    results["total_s"] = time.perf_counter() - started
    print(f"bench done in {results['total_s']:.0f} s")
    out = ROOT / "test-artifacts" / "bench-results.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(__import__("json").dumps(results, indent=1, default=str))
    if args.write:
        write_report(results)


if __name__ == "__main__":
    main()
