"""Issue 11, point 13: a Redis with 1,000 queues (one per tenant).

Before: every load of the overview sent 1.48 MB (every queue, and the sidebar listing every
queue on every page) and the dashboard process grew from 70 to 386 MB (each bullmq queue
handle read its own copy of ~270 KB of Lua scripts). Now the overview pages through the
queues, the sidebar lists the 40 that need a look, and the scripts are read once.
Figures are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import psutil
import pytest

from mailqueue.dashboard.views.overview import PER_PAGE, page_of_names
from mailqueue.manager import MailManager
from mailqueue.settings import Settings

from .system import own_redis, start_dashboard

QUEUES = 1000
MAX_PAGE_BYTES = 200_000
MAX_RSS_MB = 150


@pytest.fixture
def thousand_queues(tmp_path: Path) -> str:
    server = own_redis(tmp_path / "redis")

    async def fill() -> None:
        settings = Settings(_env_file=None,  # type: ignore[call-arg]
                            redis_url=server.url, queue_prefix="many",
                            data_dir=tmp_path / "data")
        async with MailManager(settings) as mail:
            for i in range(QUEUES):
                await mail.add_job(f"tenant-{i:04d}.mail", "send-welcome",
                                   {"to": f"t{i}@example.com"})
            await mail.add_job("tenant-0777.mail", "send-welcome", {"to": "x@example.com"})

    asyncio.run(fill())
    yield server.url
    server.stop()


def test_a_thousand_queues_page_through_in_small_loads(thousand_queues: str,
                                                      tmp_path: Path) -> None:
    dashboard, base = start_dashboard(tmp_path, redis_url=thousand_queues, prefix="many")
    try:
        process = psutil.Process(dashboard.process.pid)
        plain = {"Accept-Encoding": "identity"}  # the bytes before compression
        with httpx.Client(base_url=base, timeout=60, headers=plain) as http:
            first = http.get("/")
            assert first.status_code == 200
            assert len(first.content) < MAX_PAGE_BYTES, len(first.content)
            assert "page 1 of 20 · 1,000 queues" in first.text
            assert table_rows(first.text) == [f"tenant-{i:04d}.mail" for i in range(PER_PAGE)]
            last = http.get("/?page=20")
            assert table_rows(last.text) == [f"tenant-{i:04d}.mail" for i in range(950, 1000)]
            assert http.get("/?page=99").status_code == 200  # past the end: the last page
            found = http.get("/?q=0777")
            assert table_rows(found.text) == ["tenant-0777.mail"]
            assert "page 1 of" not in found.text
            # The sidebar: the queue that needs a look first, and how many more there are.
            queue_page = http.get("/queues/tenant-0500.mail")
            assert len(queue_page.content) < MAX_PAGE_BYTES, len(queue_page.content)
            assert "960 more queues" in queue_page.text
            sidebar = queue_page.text[queue_page.text.index('id="sidebar"'):]
            assert "tenant-0777.mail" in sidebar and "tenant-0500.mail" in sidebar
            # Scripts still get every queue.
            assert len(http.get("/api/queues").json()["queues"]) == QUEUES
            sizes = {path: len(http.get(path).content)
                     for path in ("/", "/?group=-", "/workers", "/events", "/schedules")}
        rss_mb = process.memory_info().rss / 2**20
        print(f"\n[1,000 queues] bytes per load: {sizes}; dashboard RSS {rss_mb:.0f} MB")
        assert all(size < MAX_PAGE_BYTES for size in sizes.values()), sizes
        assert rss_mb < MAX_RSS_MB, rss_mb
    finally:
        dashboard.stop()


def table_rows(page: str) -> list[str]:
    return re.findall(r'<td class="qname[^"]*"><a href="[^"]*">([^<]+)</a>', page)


def test_grouped_pages_hold_whole_groups() -> None:
    names = [f"a.{i:03d}" for i in range(30)] + [f"b.{i:03d}" for i in range(30)] + ["c.1"]
    first, pages = page_of_names(names, 1, ".")
    assert first == names[:30] and pages == 2  # a and b together would pass 50
    second, _ = page_of_names(names, 2, ".")
    assert second == names[30:]
    big = [f"x.{i:03d}" for i in range(120)]
    assert page_of_names(big, 1, ".") == (big[:50], 3)  # a group bigger than a page
    assert page_of_names(big, 3, ".") == (big[100:], 3)
    mixed, pages = page_of_names(["a.1", *big, "z.1"], 2, ".")
    assert mixed == big[:50] and pages == 4  # [a.1] [x 0-49] [x 50-99] [x 100-119, z.1]
    assert page_of_names(names, 5, "")[0] == names[50:]  # past the end: the last page
