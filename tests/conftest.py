"""Shared fixtures: one real Redis for the whole run, started by the suite on a free port.

Each test gets its own key prefix, so tests never see each other's queues and nothing is
ever flushed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from mailqueue.redis_server import EmbeddedRedis
from mailqueue.settings import Settings

# For every test that asks: the Node BullMQ harness (`node_harness`, `node`) and the dashboard
# bound to the test's MailManager (`app`, `client`, `live_server`).
pytest_plugins = ["tests.node_support", "tests.app_support"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(data_dir=tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(redis_url: str, prefix: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=redis_url,
        queue_prefix=prefix,
        data_dir=tmp_path / "data",
        job_backoff_delay_ms=100,
    )


@pytest.fixture
async def mail(settings: Settings) -> AsyncIterator[MailManager]:
    async with MailManager(settings) as manager:
        yield manager


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def sink(redis_client: aioredis.Redis, prefix: str) -> AsyncIterator[MailSink]:
    """A development SMTP sink on a free port, its outbox under the test's prefix."""
    server = MailSink(redis_client, prefix)
    await server.start()
    yield server
    await server.stop()
