"""The delivery log at a million entries: search times and Redis memory per entry.

    .venv/bin/python bench/desk.py [--entries 1000000] [--samples 30]

On a Redis of its own (an EmbeddedRedis, never the machine's 6379): writes `--entries`
entries through the log's own script (500 per call; recipients spread over 200,000
addresses and 1,000 domains, so an address has ~5 entries and a domain ~1,000), then times
each search a user makes (`MailDesk.search_messages`, a page of 50): by address, by
domain, by Message-ID, the newest page, and the newest page of one outcome. Medians and p95
of `--samples` searches each, with random targets.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailqueue.desk import MailDesk  # noqa: E402
from mailqueue.mail.message_log import (  # noqa: E402
    Attempt,
    LogEntry,
    MessageLog,
    Outcome,
    Retention,
)
from mailqueue.redis_server import EmbeddedRedis  # noqa: E402

ADDRESSES, DOMAINS, PER_CALL = 200_000, 1_000, 500
OUTCOMES: tuple[Outcome, ...] = ("sent",) * 17 + ("deferred", "failed", "suppressed")


def address(i: int) -> str:
    return f"user{i % ADDRESSES}@d{i % DOMAINS}.example.com"


async def fill(log: MessageLog, n: int) -> float:
    started = time.perf_counter()
    for first in range(0, n, PER_CALL):
        await log.write([
            (LogEntry(OUTCOMES[i % len(OUTCOMES)], [address(i)], 250, "250 2.0.0 OK queued"),
             Attempt(f"<news.{i}@example.com>", "emails", str(i), 1, "newsletter",
                     "Spring news from the shop", 2_700))
            for i in range(first, min(first + PER_CALL, n))])
    return time.perf_counter() - started


async def timed(search: Any, samples: int) -> dict[str, float]:
    times, found = [], []
    for _ in range(samples):
        started = time.perf_counter()
        entries, _ = await search()
        times.append((time.perf_counter() - started) * 1000)
        found.append(len(entries))
    times.sort()
    return {"median_ms": round(statistics.median(times), 2),
            "p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
            "entries_found_median": statistics.median(found)}


async def run(n: int, samples: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mailqueue-bench-desk-") as tmp:
        server = EmbeddedRedis(data_dir=Path(tmp), appendonly=False).start()
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        try:
            log = MessageLog(client, "bench", Retention(max_entries=n, max_age_days=365))
            before = (await client.info("memory"))["used_memory"]
            fill_s = await fill(log, n)
            used = (await client.info("memory"))["used_memory"] - before

            async def audit(*_: Any) -> None:
                return None

            desk = MailDesk(client, "bench", audit)
            rng = random.Random(7)
            results: dict[str, Any] = {
                "entries": await log.count(), "fill_s": round(fill_s, 1),
                "bytes_per_entry": round(used / n), "searches": {}}
            searches = {
                "by address (exact)": lambda: desk.search_messages(
                    recipient=address(rng.randrange(n))),
                "by domain (@domain), newest 50": lambda: desk.search_messages(
                    recipient="@" + address(rng.randrange(n)).split("@")[1]),
                "by Message-ID": lambda: desk.search_messages(
                    message_id=f"<news.{rng.randrange(n)}@example.com>"),
                "newest 50, no filter": lambda: desk.search_messages(),
                "newest 50 failed (outcome filter)": lambda: desk.search_messages(
                    outcome="failed"),
            }
            for name, search in searches.items():
                results["searches"][name] = await timed(search, samples)
            return results
        finally:
            await client.aclose()
            server.stop()


def report(results: dict[str, Any]) -> str:
    lines = [f"delivery log: {results['entries']:,} entries written in {results['fill_s']} s, "
             f"{results['bytes_per_entry']} bytes of Redis memory per entry (indexes included)"]
    for name, row in results["searches"].items():
        lines.append(f"  {name:<36} median {row['median_ms']:7.2f} ms   p95 "
                     f"{row['p95_ms']:7.2f} ms   ({row['entries_found_median']:.0f} found)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    print(report(asyncio.run(run(args.entries, args.samples))))


if __name__ == "__main__":
    main()
