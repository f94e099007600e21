"""The first part of `make bench`: e-mail throughput, and enqueueing a newsletter and a
campaign, on a Redis of its own (an EmbeddedRedis on a temporary directory).

1. Messages per second to the SMTP sink (bench/sink.py, another process): the pool (5
   connections) vs a new connection per message, the same 20 sends in flight.
2. E-mails per second end to end: jobs on the queue -> `mailqueue worker` (another process)
   -> SMTP -> the sink.
3. `create_newsletter_flow` with 100,000 recipients from a generator: enqueue time, and
   peak Python memory (tracemalloc) in a second run.
4. A campaign (`MailManager.campaigns.create`, one job per recipient) of 10,000 and 100,000
   recipients from a generator: enqueue time and the peak RSS of its process
   (bench/campaign.py).
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
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
