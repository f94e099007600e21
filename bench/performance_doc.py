"""docs/performance.md from a run's results: the machine, the versions, and a section per
part of the bench. What follows KEPT_MARK in the file is written by hand and kept.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

import dashboards_http
import mail_report

ROOT = Path(__file__).resolve().parent.parent


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
    text += mail_report.report(results.get("mail"), results.get("workers"))
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

Median / p95 of {dashboards_http.REQUESTS} sequential requests on a keep-alive connection, gzip
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
