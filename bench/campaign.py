"""A campaign's enqueue: time and peak RSS for N recipients read from a generator.

    .venv/bin/python bench/campaign.py REDIS_URL N [PREFIX]

Runs in a process of its own, so its peak RSS (getrusage ru_maxrss) is the campaign's; prints
one JSON line {recipients, seconds, rss_before_mb, peak_rss_mb}. `bench/run.py` runs it for
10,000 and 100,000 recipients: memory that stays flat between the two is bounded.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from mailqueue.manager import MailManager
from mailqueue.settings import Settings


def readers(n: int) -> Iterator[dict[str, str]]:
    return ({"email": f"reader{i}@example.com", "name": f"Reader {i}"} for i in range(n))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def main(redis_url: str, n: int, prefix: str) -> None:
    settings = Settings(_env_file=None, redis_url=redis_url,  # type: ignore[call-arg]
                        queue_prefix=prefix, data_dir=Path("/tmp") / "mailqueue-bench-campaign")
    async with MailManager(settings) as mail:
        before = _rss_mb()
        started = time.perf_counter()
        campaign = await mail.campaigns.create(
            "newsletter", readers(n), variables={"campaign": "Bench"}, created_by="bench")
        seconds = time.perf_counter() - started
        assert campaign["total"] == n, campaign
        await mail.campaigns.cancel(campaign["id"])
        await mail.queues.obliterate(campaign["queue"], force=True)
    print(json.dumps({"recipients": n, "seconds": round(seconds, 3),
                      "rss_before_mb": round(before, 1), "peak_rss_mb": round(_rss_mb(), 1)}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3
                     else "bench-campaign"))
