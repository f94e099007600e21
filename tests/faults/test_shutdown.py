"""Fault scenario 8 (issue 5): SIGTERM to `mailqueue run` with jobs in flight.

`mailqueue run` with REDIS_URL unset and DATA_DIR under the test's tmp starts its own Redis
child (the `Redis:` banner says "embedded"), the SMTP sink, a worker and the dashboard.
With e-mail jobs being sent, SIGTERM: the process exits 0; every job finished or is back in
a waiting state (none active, none failed); nothing is left running (no redis-server child
on that data directory, neither port listening); the data is on disk: a new Redis on the
same directory finds every job.

A Redis already answering on localhost:6379 would be used instead of an embedded one: the
test never touches it, and skips (loudly) in that case.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from mailqueue.manager import MailManager
from mailqueue.redis_server import LOCAL_DEFAULT_URL, EmbeddedRedis, free_port, ping
from mailqueue.settings import Settings
from tests.faults.system import MailqueueProcess
from tests.faults.test_worker_killed import report
from tests.mailqueue.mail.test_mail_faults import NOTIFY
from tests.waiting import eventually

TOTAL = 2000


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain `text` (here: the Redis data dir)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and int(pid) != os.getpid():
            found.append(f"{pid}: {cmdline}")
    return found


async def test_sigterm_to_run_with_jobs_in_flight(tmp_path: Path, prefix: str) -> None:
    if ping(LOCAL_DEFAULT_URL, timeout=0.3):
        pytest.skip("SKIPPED LOUDLY: a Redis answers on localhost:6379, so `mailqueue run` "
                    "would use it instead of an embedded one; this test never touches it")
    dashboard_port = free_port()
    run = MailqueueProcess(tmp_path, ["run", "--port", str(dashboard_port)], redis_url="",
                           prefix=prefix, LOG_LEVEL="WARNING")
    try:
        run.wait_for_output("Ctrl-C to stop", timeout=60)
        banner = re.search(r"Redis: (redis://127\.0\.0\.1:(\d+)) \((.*)\)", run.output())
        assert banner, run.output()
        url, redis_port, source = banner.group(1), int(banner.group(2)), banner.group(3)
        assert source.startswith("embedded"), f"not an embedded Redis: {source}"
        data_dir = tmp_path / "data" / "redis"
        assert str(data_dir) in source, source

        settings = Settings(_env_file=None, redis_url=url,  # type: ignore[call-arg]
                            queue_prefix=prefix, data_dir=tmp_path / "client-data")
        async with MailManager(settings) as mail:
            opts = {"attempts": 5, "removeOnComplete": False, "removeOnFail": False}
            jobs = []
            for start in range(0, TOTAL, 500):
                jobs += await mail.add_jobs("emails", [
                    {"name": "send-notification",
                     "data": {**NOTIFY, "to": f"u{i}@example.com"}, "opts": opts}
                    for i in range(start, start + 500)
                ])

            async def in_flight() -> bool:
                counts = await mail.queues.get_job_counts("emails")
                return counts.get("completed", 0) >= 50 and counts.get("active", 0) > 0

            await eventually(in_flight, 60)
            before = await mail.queues.get_job_counts("emails")
            run.signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            code = run.process.wait(90)
            stop_s = time.monotonic() - stopped_at
    finally:
        run.stop()
    output = run.log_path.read_text(errors="replace")  # the log is closed by stop()
    assert code == 0, output
    assert "Stopped." in output, output
    assert "Traceback" not in output, output

    # Nothing left running: no redis-server on that data directory, no port listening.
    assert processes_mentioning(str(data_dir)) == []
    assert not listening(redis_port), "the embedded Redis still listens"
    assert not listening(dashboard_port), "the dashboard still listens"

    # The data is on disk: a Redis started on the same directory has every job, none active.
    server = EmbeddedRedis(data_dir=data_dir).start()
    try:
        settings = Settings(_env_file=None, redis_url=server.url,  # type: ignore[call-arg]
                            queue_prefix=prefix, data_dir=tmp_path / "client-data")
        async with MailManager(settings) as mail:
            states: dict[str, int] = {}
            for job in jobs:
                info = await mail.queues.get_job("emails", str(job.id))
                states[info["state"]] = states.get(info["state"], 0) + 1
            after = await mail.queues.get_job_counts("emails")
    finally:
        server.stop()
    report("shutdown", {
        "jobs": TOTAL,
        "completed_at_sigterm": before.get("completed", 0),
        "active_at_sigterm": before.get("active", 0),
        "stop_s": round(stop_s, 1),
        "completed_after_restart": states.get("completed", 0),
        "waiting_after_restart": states.get("waiting", 0) + states.get("delayed", 0)
        + states.get("prioritized", 0),
        "active_after_restart": after.get("active", 0),
        "failed_after_restart": after.get("failed", 0),
    })
    assert sum(states.values()) == TOTAL, states
    assert set(states) <= {"completed", "waiting", "delayed", "prioritized"}, states
    assert after.get("active", 0) == 0 and after.get("failed", 0) == 0, after
    assert states.get("completed", 0) >= before.get("completed", 0)
