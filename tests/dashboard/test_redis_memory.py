"""Redis memory on /workers and in the health JSON (issue 14): used against maxmemory (or
"no limit") with the fragmentation ratio, from INFO memory."""

from __future__ import annotations

import html

import httpx
import redis.asyncio as aioredis

from mailqueue.manager import MailManager


async def test_redis_memory_used_of_max_with_fragmentation(
        mail: MailManager, client: httpx.AsyncClient, redis_client: aioredis.Redis) -> None:
    await mail.create_queue("q")
    old = (await redis_client.config_get("maxmemory"))["maxmemory"]
    try:
        await redis_client.config_set("maxmemory", "0")
        text = html.unescape((await client.get("/workers")).text)
        assert "no limit (maxmemory 0)" in text
        await redis_client.config_set("maxmemory", str(512 * 1024 * 1024))
        page = (await client.get("/workers")).text
        memory = page[page.index('id="redis-memory"'):]
        memory = memory[:memory.index("</dd>")]
        assert "used of 512.0 MiB maxmemory" in html.unescape(memory)
        frag = page[page.index('id="redis-fragmentation"'):]
        assert float(frag[frag.index(">") + 1:].split("<")[0]) > 0
        api = (await client.get("/api/workers")).json()["redis"]["memory"]
        assert api["maxmemory"] == 512 * 1024 * 1024 and api["used_memory"] > 0
        assert isinstance(api["fragmentation_ratio"], float)
        assert 0 < api["used_ratio"] < 1
        health = (await client.get("/health")).json()["redis"]["memory"]
        assert health["maxmemory"] == 512 * 1024 * 1024
        assert isinstance(health["fragmentation_ratio"], float)
    finally:
        await redis_client.config_set("maxmemory", old)
