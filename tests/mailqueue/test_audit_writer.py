"""The elected audit writer (issue 12): one process per prefix writes the job lifecycle.

In-process tests (several EventManagers = several processes, on the suite's Redis) check the
lease, the cursor and the fencing; the process tests run real `mailqueue worker` processes on
a Redis of the test's own, count commands per client with MONITOR, and SIGKILL the holder.
"""

from __future__ import annotations

import collections
import signal
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
import redis.asyncio as aioredis
from bullmq import Job, Worker

from mailqueue.bullmq_fixes import connection_options
from mailqueue.events.audit_writer import LEASE_TTL_MS
from mailqueue.lua import load_script
from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from mailqueue.settings import Settings
from tests.faults.system import MailqueueProcess, own_redis
from tests.waiting import eventually

LEASE_MS = 1500  # in-process tests: a short lease keeps takeovers quick
NOTIFY = {"title": "Disk full", "message": "Free some space"}
FAST_STALLS = {"WORKER_LOCK_DURATION_MS": "2000", "WORKER_STALLED_INTERVAL_MS": "1000"}


async def lifecycle_entries(mail: MailManager) -> collections.Counter[tuple[str, str]]:
    """(action, target) of every completed/failed entry in the audit log, with counts."""
    entries = await mail.get_audit_log(100_000)
    return collections.Counter((e["action"], e["target"]) for e in entries
                               if e["actor"] == "system" and e["action"] in ("completed",
                                                                             "failed"))


async def finished_jobs(client: aioredis.Redis, prefix: str, queue: str
                        ) -> collections.Counter[tuple[str, str]]:
    """What the audit log must hold: one entry per completed or failed job."""
    done = await client.zrange(f"{prefix}:{queue}:completed", 0, -1)
    failed = await client.zrange(f"{prefix}:{queue}:failed", 0, -1)
    return collections.Counter([("completed", f"{queue}/{j}") for j in done]
                               + [("failed", f"{queue}/{j}") for j in failed])


def holder_pid(value: str | None) -> int | None:
    return int(value.split(":")[1]) if value else None


# --- in-process: lease, cursor, fencing -------------------------------------------------------


@pytest.fixture
async def managers(settings: Settings) -> AsyncIterator[list[MailManager]]:
    """Three MailManagers on one prefix, standing in for three processes."""
    opened = [MailManager(settings) for _ in range(3)]
    for mail in opened:
        await mail.__aenter__()
    yield opened
    for mail in opened:
        await mail.__aexit__(None, None, None)


async def run_jobs(mail: MailManager, redis_url: str, prefix: str, queue: str,
                   count: int) -> None:
    """`count` jobs through a plain bullmq Worker: every fifth fails for good."""
    async def process(job: Job, token: str) -> Any:
        if job.data["i"] % 5 == 0:
            raise RuntimeError(f"no {job.data['i']}")
        return {"i": job.data["i"]}

    await mail.create_queue(queue)
    before = await mail.queues.get_job_counts(queue)
    jobs = await mail.add_jobs(queue, [{"name": "x", "data": {"i": i}, "opts": {"attempts": 1}}
                                       for i in range(count)])
    worker = Worker(queue, process, {"connection": connection_options(redis_url),
                                     "prefix": prefix})
    try:
        async def done() -> bool:
            counts = await mail.queues.get_job_counts(queue)
            return (counts["completed"] + counts["failed"]
                    >= before.get("completed", 0) + before.get("failed", 0) + len(jobs))

        await eventually(done, 30, "jobs processed")
    finally:
        await worker.close()


async def test_one_holder_writes_each_entry_once_and_the_others_read_nothing(
    managers: list[MailManager], redis_client: aioredis.Redis, redis_url: str, prefix: str,
) -> None:
    for mail in managers:
        await mail.events.setup_audit_listeners(lease_ms=LEASE_MS)
    holders = [m for m in managers if m.events.audit_writer and m.events.audit_writer.holding]
    assert len(holders) == 1
    await run_jobs(managers[0], redis_url, prefix, "aw", 60)
    expected = await finished_jobs(redis_client, prefix, "aw")
    assert sum(expected.values()) == 60 and expected[("failed", "aw/1")] == 1

    async def written() -> bool:
        return sum((await lifecycle_entries(managers[0])).values()) >= 60

    await eventually(written, 10, "60 audit entries")
    assert await lifecycle_entries(managers[0]) == expected
    for mail in managers:
        if mail not in holders:  # no reader task at all in the other processes
            assert mail.events._task is None
            assert (await mail.get_event_stats())["audit_writer"]["watched_queues"] == []


async def test_handover_and_a_gap_without_holder_lose_and_double_nothing(
    managers: list[MailManager], redis_client: aioredis.Redis, redis_url: str, prefix: str,
) -> None:
    first, second, third = managers
    await first.events.setup_audit_listeners(lease_ms=LEASE_MS)
    await second.events.setup_audit_listeners(lease_ms=LEASE_MS)
    assert first.events.audit_writer and first.events.audit_writer.holding
    await run_jobs(first, redis_url, prefix, "ho", 20)

    async def all_written() -> bool:
        return await lifecycle_entries(third) == await finished_jobs(redis_client, prefix, "ho")

    await eventually(all_written, 10, "first holder's entries")
    # A clean close releases the lease: the standby takes over well within the TTL.
    started = time.monotonic()
    await first.events.close()
    writer = second.events.audit_writer
    assert writer is not None

    async def second_holds() -> bool:
        return writer.holding

    await eventually(second_holds, LEASE_MS / 1000, "takeover after a clean close")
    assert time.monotonic() - started < LEASE_MS / 1000
    await run_jobs(third, redis_url, prefix, "ho", 20)
    await eventually(all_written, 10, "second holder's entries")
    # Nobody holds the lease while more jobs finish; a later holder resumes from the cursor.
    await second.events.close()
    await run_jobs(third, redis_url, prefix, "ho", 20)
    assert sum((await lifecycle_entries(third)).values()) == 40
    await third.events.setup_audit_listeners(lease_ms=LEASE_MS)
    await eventually(all_written, 10, "entries for the jobs finished while nobody held the lease")
    assert sum((await lifecycle_entries(third)).values()) == 60


async def test_a_holder_that_lost_its_lease_writes_nothing(
    managers: list[MailManager], redis_client: aioredis.Redis, redis_url: str, prefix: str,
) -> None:
    mail = managers[0]
    await mail.events.setup_audit_listeners(lease_ms=60_000)
    writer = mail.events.audit_writer
    assert writer is not None and writer.holding
    # As if this process had stalled past its TTL and another had taken the lease meanwhile.
    await redis_client.set(writer.lease_key, "elsewhere:1:x", px=60_000)
    await run_jobs(mail, redis_url, prefix, "fe", 10)

    async def stepped_down() -> bool:
        return not writer.holding

    await eventually(stepped_down, 10, "the fenced holder stops")
    assert await lifecycle_entries(mail) == collections.Counter()
    # The lease comes free: a successor takes it and writes each of those entries once.
    await redis_client.delete(writer.lease_key)
    await managers[1].events.setup_audit_listeners(lease_ms=60_000)

    async def all_written() -> bool:
        return await lifecycle_entries(mail) == await finished_jobs(redis_client, prefix, "fe")

    await eventually(all_written, 10, "entries after retaking the lease")


async def test_a_batch_written_twice_is_written_once(
    mail: MailManager, redis_client: aioredis.Redis,
) -> None:
    await mail.events.setup_audit_listeners(lease_ms=60_000)
    writer = mail.events.audit_writer
    assert writer is not None and writer.holding
    token = await redis_client.get(writer.lease_key)
    assert token is not None
    events = [{"id": f"{ms}-0", "queue": "dup", "event": "completed", "jobId": str(ms),
               "returnvalue": None} for ms in (10, 11, 12)]
    args = (writer.lease_key, token, writer.cursor_key, "dup")
    assert await mail.events.audit.write_job_events(*args, "12-0", events) == 3
    assert await mail.events.audit.write_job_events(*args, "12-0", events) == 0  # e.g. a retry
    assert await mail.events.audit.write_job_events(*args, "13-0", events) == 0
    assert await redis_client.hget(writer.cursor_key, "dup") == "13-0"
    assert await mail.events.audit.write_job_events(
        writer.lease_key, "not-the-holder", writer.cursor_key, "dup", "14-0", events) == -1
    assert sum((await lifecycle_entries(mail)).values()) == 3


# --- real worker processes -----------------------------------------------------------------


class CommandCounter:
    """MONITOR on the test's own Redis: commands counted per client port, in a thread."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, decode_responses=True)
        self.per_port: collections.defaultdict[int, collections.Counter[str]] = (
            collections.defaultdict(collections.Counter))
        self.scripts: collections.Counter[str] = collections.Counter()
        self._monitor = self._client.monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with_errors = (redis.ConnectionError, ValueError, AttributeError, OSError)
        try:
            for item in self._monitor.listen():
                parts = item["command"].split(" ", 2)
                command = parts[0].lower()
                port = int(item.get("client_port") or 0)
                self.per_port[port][command] += 1
                if command == "evalsha" and len(parts) > 1:
                    self.scripts[parts[1]] += 1
        except with_errors:
            return  # closed

    def close(self) -> None:
        # Closing the connection ends listen() in the thread.
        self._monitor.connection.disconnect()
        self._thread.join(5)
        self._client.close()


def client_ports(pid: int) -> set[int]:
    proc = psutil.Process(pid)
    return {c.laddr.port for c in proc.net_connections(kind="tcp") if c.raddr}


@pytest.fixture
async def own(tmp_path: Path, prefix: str) -> AsyncIterator[tuple[MailManager, MailSink, str]]:
    """A Redis of this test's own (MONITOR sees only this test), a manager and an SMTP sink."""
    server = own_redis(tmp_path / "redis")
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    settings = Settings(_env_file=None,  # type: ignore[call-arg]
                        redis_url=server.url, queue_prefix=prefix, data_dir=tmp_path / "data")
    sink = MailSink(client, prefix, max_messages=10_000)
    await sink.start()
    try:
        async with MailManager(settings) as mail:
            yield mail, sink, server.url
    finally:
        await sink.stop()
        await client.aclose()
        server.stop()


def audit_lease(prefix: str) -> str:
    return f"{prefix}:__mailqueue__:audit-writer"


async def start_two_workers(tmp_path: Path, mail: MailManager, url: str, prefix: str,
                            sink: MailSink, **env: str
                            ) -> tuple[list[MailqueueProcess], int | None]:
    """Two `mailqueue worker` processes on "emails", the sink refusing gone@example.com (so
    add_mails' every 50th mail fails); and the pid of the one holding the audit lease."""
    sink.fail_recipient("gone@example.com", 550)
    await mail.create_queue("emails")
    workers = [MailqueueProcess(tmp_path, ["worker", "emails", "--concurrency", "20"],
                                redis_url=url, prefix=prefix, SMTP_URL=sink.url, **env)
               for _ in range(2)]
    for worker in workers:
        worker.wait_for_output("Ctrl-C to stop", timeout=60)
    return workers, holder_pid(await mail.client.get(audit_lease(prefix)))


async def add_mails(mail: MailManager, total: int) -> None:
    """`total` e-mails; every 50th to an address the sink refuses (550): a failed job."""
    for start in range(0, total, 250):
        await mail.add_jobs("emails", [
            {"name": "send-notification",
             "data": {**NOTIFY, "to": "gone@example.com" if i % 50 == 0 else f"u{i}@example.com"},
             "opts": {"attempts": 1}} for i in range(start, min(start + 250, total))
        ])


async def wait_all_audited(mail: MailManager, total: int, timeout: float) -> None:
    assert mail.client is not None
    client, prefix = mail.client, mail.settings.queue_prefix

    async def done() -> bool:
        expected = await finished_jobs(client, prefix, "emails")
        return sum(expected.values()) == total and await lifecycle_entries(mail) == expected

    await eventually(done, timeout, f"{total} jobs finished, each with one audit entry")


async def test_two_worker_processes_one_reader_one_entry_per_job(
    own: tuple[MailManager, MailSink, str], tmp_path: Path, prefix: str,
) -> None:
    mail, sink, url = own
    total = 500
    counter = CommandCounter(url)
    workers, holder = await start_two_workers(tmp_path, mail, url, prefix, sink)
    try:
        pids = [w.process.pid for w in workers]
        assert holder in pids
        ports = {pid: client_ports(pid) for pid in pids}
        await add_mails(mail, total)
        await wait_all_audited(mail, total, 120)
        for pid in pids:  # connections opened during the run too
            ports[pid] |= client_ports(pid)
    finally:
        for worker in workers:
            worker.stop()
        counter.close()
    expected = await finished_jobs(mail.client, prefix, "emails")
    assert expected[("failed", "emails/1")] == 1 and sum(expected.values()) == total

    per_pid = {pid: sum((counter.per_port[p] for p in ports[pid]), collections.Counter())
               for pid in pids}
    other = next(pid for pid in pids if pid != holder)
    assert per_pid[other]["xread"] == 0, per_pid[other]
    assert per_pid[holder]["xread"] > 0
    writes = counter.scripts[load_script(mail.client, "audit_write_batch").sha]
    xreads = sum(c["xread"] for c in counter.per_port.values())
    print(f"\n[audit writer, 2 worker processes, {total} mails] XREAD/mail="
          f"{xreads / total:.3f} audit-Lua/mail={writes / total:.3f} "
          f"commands/mail={sum(sum(c.values()) for c in counter.per_port.values()) / total:.1f}")
    assert writes < total  # batched: fewer write calls than entries


async def test_sigkill_the_lease_holder_mid_run(
    own: tuple[MailManager, MailSink, str], tmp_path: Path, prefix: str,
) -> None:
    mail, sink, url = own
    total = 500
    workers, holder = await start_two_workers(tmp_path, mail, url, prefix, sink, **FAST_STALLS)
    try:
        victim = next(w for w in workers if w.process.pid == holder)
        survivor = next(w for w in workers if w is not victim)
        await add_mails(mail, total)

        async def some_done() -> bool:
            counts = await mail.queues.get_job_counts("emails")
            return counts["completed"] + counts["failed"] >= total // 5

        await eventually(some_done, 60, "a fifth of the mails sent")
        victim.kill()
        killed_at = time.monotonic()
        assert sum((await finished_jobs(mail.client, prefix, "emails")).values()) < total, \
            "all jobs finished before the kill"

        async def taken_over() -> bool:
            return holder_pid(await mail.client.get(audit_lease(prefix))) == survivor.process.pid

        await eventually(taken_over, LEASE_TTL_MS / 1000 + 2, "the survivor takes the lease")
        takeover_s = time.monotonic() - killed_at
        # The lease was renewed at most a third of a TTL before the kill, so it ran out
        # within the TTL; the survivor woke up just after (plus this loop's polling).
        assert takeover_s < LEASE_TTL_MS / 1000 + 0.5, takeover_s
        await wait_all_audited(mail, total, 120)
    finally:
        for worker in workers:
            worker.stop()
    print(f"\n[audit writer, SIGKILL of the holder] takeover after {takeover_s:.2f} s "
          f"(TTL {LEASE_TTL_MS / 1000:g} s)")
    assert victim.process.returncode == -signal.SIGKILL
