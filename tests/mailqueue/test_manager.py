"""The MailManager facade, queue side: lifecycle, jobs, schedules, stats and health."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from bullmq import Job

from mailqueue.errors import (
    InvalidJobOptionsError,
    InvalidScheduleError,
    MailQueueError,
    RedisUnavailableError,
    UnknownQueueError,
)
from mailqueue.manager import MailManager
from mailqueue.redis_server import LOCAL_DEFAULT_URL, EmbeddedRedis, free_port, ping
from mailqueue.settings import Settings
from mailqueue.types import JOB_STATES
from tests.waiting import eventually


async def completed(mail: MailManager, queue: str, n: int) -> bool:
    return (await mail.queues.get_job_counts(queue))["completed"] >= n


# --- lifecycle ----------------------------------------------------------------------------


async def test_a_manager_that_is_not_started_says_so(settings: Settings) -> None:
    mail = MailManager(settings)
    with pytest.raises(MailQueueError, match="not started"):
        await mail.add_job("emails", "send-welcome", {})
    await mail.close()  # closing an unstarted manager is harmless


async def test_start_and_close_are_idempotent(settings: Settings) -> None:
    mail = MailManager(settings)
    assert await mail.start() is mail
    client = mail.client
    assert await mail.start() is mail
    assert mail.client is client
    assert mail.redis is not None and mail.redis.source == "REDIS_URL"
    await mail.close()
    await mail.close()
    with pytest.raises(MailQueueError, match="not started"):
        mail.queues  # noqa: B018


async def test_overrides_replace_settings(settings: Settings) -> None:
    async with MailManager(settings, job_attempts=9) as mail:
        assert mail.settings.job_attempts == 9
        job = await mail.add_job("emails", "n", {})
        assert job.opts["attempts"] == 9
    assert settings.job_attempts == 3, "the caller's settings are not changed"


async def test_an_unreachable_redis_is_a_clear_error(settings: Settings) -> None:
    bad = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}",
                                      "redis_connect_timeout_s": 0})
    with pytest.raises(RedisUnavailableError, match="does not answer: Connection refused"):
        async with MailManager(bad):
            pass


class PasswordRedis(EmbeddedRedis):
    """An embedded Redis that wants a password (its URL, used to wait for it, carries it)."""

    password = "hunter2-s3cret"

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        super().__init__(data_dir=data_dir, port=port,
                         extra_args=["--requirepass", self.password])

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"


async def test_start_waits_for_a_redis_that_comes_up_later_and_logs_each_attempt(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = PasswordRedis(tmp_path / "late", port=free_port())
    own = settings.model_copy(update={"redis_url": server.url, "redis_connect_timeout_s": 30})
    mail = MailManager(own)
    with caplog.at_level(logging.WARNING, logger="mailqueue.manager"):
        starting = asyncio.ensure_future(mail.start())
        try:
            # Redis is not there yet: start keeps trying (one line per attempt)...
            await eventually(lambda: _logged(caplog, "not answering"), timeout=10)
            assert not starting.done()
            # ...and gets through once it comes up (as a container started later would).
            await asyncio.to_thread(server.start)
            await asyncio.wait_for(starting, 15)
            job = await mail.add_job("emails", "n", {})
            assert job.id is not None
        finally:
            starting.cancel()
            await mail.close()
            server.stop()
    lines = [r.getMessage() for r in caplog.records if "not answering" in r.getMessage()]
    assert lines[0] == (f"Redis at redis://:***@127.0.0.1:{server.port}/0 not answering "
                        "(Connection refused); retrying in 1 s")
    assert all(PasswordRedis.password not in r.getMessage() for r in caplog.records)


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


async def test_start_gives_up_after_the_timeout_with_one_clear_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://:hunter2-s3cret@127.0.0.1:{free_port()}/0"
    own = settings.model_copy(update={"redis_url": url, "redis_connect_timeout_s": 1.5})
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="mailqueue.manager"), \
            pytest.raises(RedisUnavailableError) as caught:
        await MailManager(own).start()
    assert 1.5 <= time.monotonic() - started < 10
    message = str(caught.value)
    assert "does not answer: Connection refused (waited 1.5 s, REDIS_CONNECT_TIMEOUT_S)" in \
        message
    assert "hunter2" not in message and "\n" not in message
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    # Back-off from 1 s, the last wait cut to what the timeout leaves (about 0.5 s).
    waits = [float(line.rsplit(" in ", 1)[1].removesuffix(" s")) for line in retries]
    assert len(waits) == 2 and waits[0] == 1 and 0 < waits[1] <= 0.6, retries


async def test_a_wrong_password_is_not_waited_for(settings: Settings, tmp_path: Path) -> None:
    server = PasswordRedis(tmp_path / "pw").start()
    try:
        wrong = server.url.replace(PasswordRedis.password, "wrong")
        own = settings.model_copy(update={"redis_url": wrong, "redis_connect_timeout_s": 60})
        started = time.monotonic()
        with pytest.raises(RedisUnavailableError, match="does not answer"):
            await MailManager(own).start()
        assert time.monotonic() - started < 5, "waiting cannot fix a password"
    finally:
        server.stop()


async def test_no_password_in_what_start_logs_describes_or_reports(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = PasswordRedis(tmp_path / "secret").start()
    try:
        own = settings.model_copy(update={"redis_url": server.url,
                                          "dashboard_auth": "admin:dash-s3cret"})
        with caplog.at_level(logging.DEBUG, logger="mailqueue"):
            async with MailManager(own) as mail:
                assert mail.redis is not None
                shown = [mail.redis.describe(), repr(mail.settings),
                         json.dumps(await mail.health_check()),
                         json.dumps(await mail.redis_info())]
        shown += [r.getMessage() for r in caplog.records]
        assert f"Redis: redis://:***@127.0.0.1:{server.port}/0 (REDIS_URL)" in shown
        for text in shown:
            assert "s3cret" not in text
    finally:
        server.stop()


async def test_without_redis_url_an_embedded_redis_is_started_and_stopped(
    settings: Settings, tmp_path: Path
) -> None:
    if ping(LOCAL_DEFAULT_URL, timeout=0.3):
        pytest.skip("a Redis answers on localhost:6379, so nothing would be embedded")
    own = settings.model_copy(update={"redis_url": None, "data_dir": tmp_path / "data"})
    async with MailManager(own) as mail:
        assert mail.redis is not None and mail.redis.embedded is not None
        assert mail.redis.source.startswith("embedded")
        port = mail.redis.embedded.port
        job = await mail.add_job("emails", "send-welcome", {"to": "ada@example.com"})
        # Started from a worker thread (asyncio.to_thread): it must outlive that thread.
        await asyncio.sleep(0.3)
        info = await mail.queues.get_job("emails", str(job.id))
        assert info["data"] == {"to": "ada@example.com"}
    assert not ping(f"redis://127.0.0.1:{port}", timeout=0.3), "close() stops our Redis"
    assert (tmp_path / "data" / "redis").is_dir()

    # The AOF kept the job: a new manager on the same data directory finds it.
    async with MailManager(own) as mail:
        info = await mail.queues.get_job("emails", str(job.id))
        assert info["name"] == "send-welcome"


# --- jobs ----------------------------------------------------------------------------------


async def test_create_queue_is_idempotent(mail: MailManager) -> None:
    await mail.create_queue("emails")
    await mail.create_queue("emails")
    assert await mail.queues.list_queues(refresh=True) == ["emails"]
    stats = await mail.get_queue_stats("emails")
    assert stats["counts"] == dict.fromkeys(JOB_STATES, 0)


async def test_add_job_takes_options_as_keywords_over_the_defaults(
    mail: MailManager, redis_client: aioredis.Redis, prefix: str
) -> None:
    job = await mail.add_job("emails", "send-welcome", {"to": "ada@example.com"},
                             attempts=5, delay=60_000, jobId="welcome-ada")
    assert job.id == "welcome-ada"
    opts = json.loads(await redis_client.hget(f"{prefix}:emails:welcome-ada", "opts") or "{}")
    assert opts["attempts"] == 5
    assert opts["delay"] == 60_000
    assert opts["backoff"] == {"type": "exponential", "delay": 100}
    assert opts["removeOnComplete"] == 1000
    assert (await mail.get_queue_stats("emails"))["counts"]["delayed"] == 1


async def test_bad_input_through_the_facade(mail: MailManager) -> None:
    with pytest.raises(InvalidJobOptionsError, match="Unknown job option"):
        await mail.add_job("emails", "n", {}, retries=3)
    with pytest.raises(InvalidJobOptionsError, match="attempts"):
        await mail.add_job("emails", "n", {}, attempts=0)
    with pytest.raises(MailQueueError, match="Bad queue name"):
        await mail.create_queue("a:b")
    with pytest.raises(UnknownQueueError, match="'nowhere'"):
        await mail.get_queue_stats("nowhere")
    with pytest.raises(InvalidScheduleError, match="Bad cron"):
        await mail.schedule_job("emails", "n", {}, cron="every day")
    with pytest.raises(InvalidScheduleError, match="exactly one"):
        await mail.schedule_job("emails", "n", {})


async def test_add_jobs_and_process_them_with_a_worker(mail: MailManager) -> None:
    seen: list[Any] = []

    async def welcome(data: Any, job: Job) -> str:
        seen.append(data["to"])
        return "sent"

    jobs = await mail.add_jobs(
        "emails", [{"name": "send-welcome", "data": {"to": f"u{i}@example.com"}} for i in range(5)]
    )
    assert len(jobs) == 5
    mail.start_worker("emails", {"send-welcome": welcome}, concurrency=2)
    await eventually(lambda: completed(mail, "emails", 5))
    assert sorted(seen) == sorted(f"u{i}@example.com" for i in range(5))

    stats = await mail.get_queue_stats("emails")
    assert stats["counts"]["completed"] == 5
    assert stats["workers"] == 1
    assert stats["paused"] is False
    assert isinstance(stats["completed_per_minute"], list)
    metrics = await mail.get_all_queue_metrics()
    assert metrics["emails"]["completed"]["count"] == 5, "workers record metrics"
    await mail.stop_worker("emails")
    # Redis drops a closed connection from CLIENT LIST a moment after the client leaves.
    await eventually(lambda: _no_workers(mail, "emails"), timeout=5)


async def test_lock_settings_reach_a_python_api_worker_and_explicit_options_win(
    settings: Settings, redis_client: aioredis.Redis, prefix: str
) -> None:
    release = asyncio.Event()

    async def hold(data: Any, job: Job) -> None:
        await release.wait()

    own = settings.model_copy(update={"worker_lock_duration_ms": 1500,
                                      "worker_stalled_interval_ms": 1000})
    async with MailManager(own) as mail:
        settings_worker = mail.start_worker("locks", {"hold": hold})
        explicit_worker = mail.start_worker("locks-explicit", {"hold": hold},
                                            lockDuration=5000)
        first = await mail.add_job("locks", "hold", {})
        second = await mail.add_job("locks-explicit", "hold", {})
        try:
            # The job's lock in Redis lives as long as the worker was told (renewed at half).
            first_ttl = await _lock_ttl(redis_client, f"{prefix}:locks:{first.id}:lock")
            second_ttl = await _lock_ttl(redis_client,
                                         f"{prefix}:locks-explicit:{second.id}:lock")
            assert 0 < first_ttl <= 1500
            assert 1500 < second_ttl <= 5000
            assert settings_worker.worker.opts["stalledInterval"] == 1000
            assert explicit_worker.worker.opts["stalledInterval"] == 1000
            assert "limiter" not in settings_worker.worker.opts  # not the e-mail queue
        finally:
            release.set()


async def _lock_ttl(client: aioredis.Redis, key: str, timeout: float = 10) -> int:
    ttl = await eventually(lambda: client.pttl(key), timeout, f"{key} locked",
                           accept=lambda found: found >= 0, interval=0.02)
    return int(ttl)


async def _no_workers(mail: MailManager, queue: str) -> bool:
    return (await mail.get_queue_stats(queue))["workers"] == 0


# --- schedules -----------------------------------------------------------------------------


async def test_schedules_through_the_facade(mail: MailManager) -> None:
    daily = await mail.schedule_job("emails", "send-digest", {"kind": "daily"},
                                    cron="30 7 * * *", tz="Europe/Paris")
    assert (daily["cron"], daily["tz"]) == ("30 7 * * *", "Europe/Paris")
    poll = await mail.schedule_job("emails", "poll", {}, every=5_000, scheduler_id="poller",
                                   attempts=1)
    assert poll["every_ms"] == 5_000
    assert poll["template"]["opts"]["attempts"] == 1
    assert {s["id"] for s in await mail.list_schedules()} == {"send-digest", "poller"}
    assert await mail.remove_schedule("emails", "poller") is True
    assert await mail.remove_schedule("emails", "poller") is False
    assert [s["id"] for s in await mail.list_schedules("emails")] == ["send-digest"]


async def test_an_every_schedule_runs(mail: MailManager) -> None:
    runs: list[float] = []

    async def tick(data: Any, job: Job) -> None:
        runs.append(time.monotonic())

    await mail.schedule_job("ticks", "tick", {}, every=300)
    mail.start_worker("ticks", {"tick": tick}, concurrency=1)
    await eventually(lambda: _at_least(runs, 3), timeout=15)


async def _at_least(items: list[Any], n: int) -> bool:
    return len(items) >= n


# --- health ------------------------------------------------------------------------------


async def test_health_check_reports_redis_and_every_queue(
    mail: MailManager, redis_url: str
) -> None:
    await mail.add_job("emails", "n", {})
    await mail.create_queue("reports")
    mail.start_worker("reports", {"n": lambda data, job: None})
    report = await mail.health_check()
    assert report["healthy"] is True
    assert report["redis"]["url"] == redis_url
    assert report["redis"]["source"] == "REDIS_URL"
    assert report["redis"]["ping_ms"] >= 0
    version = redis.Redis.from_url(redis_url).info("server")["redis_version"]
    assert report["redis"]["version"] == version
    assert report["queues"]["emails"]["counts"]["waiting"] == 1
    assert set(report["queues"]) == {"emails", "reports"}
    await eventually(lambda: _workers_seen(mail, "reports"))
    report = await mail.health_check()
    assert report["queues"]["reports"]["workers"] == 1
    assert report["queues"]["emails"]["workers"] == 0


async def _workers_seen(mail: MailManager, queue: str) -> bool:
    return (await mail.get_queue_stats(queue))["workers"] == 1


async def test_health_check_is_unhealthy_when_redis_goes_away(
    settings: Settings, tmp_path: Path
) -> None:
    from mailqueue.redis_server import EmbeddedRedis

    server = EmbeddedRedis(data_dir=tmp_path / "gone").start()
    own = settings.model_copy(update={"redis_url": server.url})
    async with MailManager(own) as mail:
        assert (await mail.health_check())["healthy"] is True
        server.kill()
        report = await mail.health_check()
        assert report["healthy"] is False
        assert "error" in report


async def test_more_concurrent_commands_than_the_pool_holds_wait_instead_of_failing(
    mail: MailManager, prefix: str
) -> None:
    import asyncio

    from mailqueue.cluster import MAX_CONNECTIONS

    # Each BLPOP holds a connection for 0.2 s: 150 at once need 50 more than the pool has.
    key = f"{prefix}:pool-test"
    results = await asyncio.gather(
        *(mail.client.blpop([key], timeout=0.2) for _ in range(MAX_CONNECTIONS + 50))
    )
    assert results == [None] * (MAX_CONNECTIONS + 50)


async def test_subscribe_yields_events_and_resumes_from_a_cursor(mail: MailManager) -> None:
    import asyncio

    await mail.create_queue("subscribed")
    async with mail.subscribe(["subscribed"]) as events:
        await mail.add_job("subscribed", "first", {})
        first = await asyncio.wait_for(anext(events), 10)
    assert (first["queue"], first["event"]) == ("subscribed", "added")
    await mail.add_job("subscribed", "second", {})  # while nobody listens
    async with mail.subscribe(["subscribed"], last_id=first["cursor"]) as resumed:
        names = [(await asyncio.wait_for(anext(resumed), 10))["event"] for _ in range(3)]
    # first's "waiting", then second's "added" and "waiting": nothing lost, nothing twice
    assert names == ["waiting", "added", "waiting"]
