"""What the load scenarios (test_load_sse_flood, test_load_million_jobs, test_live_scale)
share: their own Redis without AOF and a real `mailqueue dashboard` process on it, a few
queues to show, a producer process that adds jobs at a steady rate, and the figures each
scenario records in test-artifacts/reliability/load.json.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import pytest

from mailqueue.redis_server import EmbeddedRedis
from tests.faults.system import MailqueueProcess, own_redis, start_dashboard

ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability" / "load.json"
PREFIX = "load"
BUSY = "newsletter"
QUIET = ("receipts", "password-resets", "alerts")


def record(scenario: str, figures: dict[str, Any]) -> None:
    """Print the figures and merge them into load.json (one key per scenario)."""
    print(f"\n[{scenario}] " + json.dumps(figures, indent=2))
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    try:
        existing = json.loads(ARTIFACT.read_text())
    except (OSError, ValueError):
        existing = {}
    existing[scenario] = {**figures, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    ARTIFACT.write_text(json.dumps(existing, indent=2) + "\n")


def rss_kb(pid: int) -> int:
    """VmRSS of a process, in kB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


@pytest.fixture
def load_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """The test's own Redis; no AOF (a load test measures the dashboard, not the disk)."""
    server = own_redis(tmp_path / "redis", "--appendonly", "no")
    try:
        yield server
    finally:
        server.stop()


class LoadDashboard(NamedTuple):
    """A real `mailqueue dashboard` on the scenario's Redis, once its queues exist."""

    process: MailqueueProcess
    base: str  # its URL
    host: str
    port: int


@pytest.fixture
def dashboard(tmp_path: Path, load_redis: EmbeddedRedis) -> Iterator[LoadDashboard]:
    process, base = start_dashboard(tmp_path, redis_url=load_redis.url, prefix=PREFIX)
    try:
        make_queues(load_redis.url)
        url = urlsplit(base)
        yield LoadDashboard(process, base, url.hostname or "127.0.0.1", url.port or 80)
    finally:
        code = process.stop()
        output = process.log_path.read_text(errors="replace")
        assert "Traceback" not in output, output[-4000:]
        assert code in (0, -15), f"dashboard exit code {code}:\n{output[-4000:]}"


def make_queues(url: str) -> None:
    """The busiest queue and a few quiet ones, each with a handful of jobs (via bullmq)."""
    script = (
        "import asyncio, sys\n"
        "from mailqueue.manager import MailManager\n"
        "async def main():\n"
        "    async with MailManager(redis_url=sys.argv[1], queue_prefix=sys.argv[2]) as mail:\n"
        "        for q in sys.argv[3:]:\n"
        "            await mail.add_jobs(q, [{'name': 'send', 'data': {'to': f'u{i}@example.com'}}"
        " for i in range(5)])\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", script, url, PREFIX, BUSY, *QUIET], check=True,
                   timeout=60, cwd=Path(__file__).parent)


PRODUCER = r"""
import asyncio, sys, time
from mailqueue.manager import MailManager

async def main(url, prefix, queue, rate, seconds):
    async with MailManager(redis_url=url, queue_prefix=prefix) as mail:
        start = time.monotonic()
        added = 0
        while (elapsed := time.monotonic() - start) < seconds:
            due = min(int(rate * elapsed) - added, 5000)
            if due > 0:
                await mail.add_jobs(queue, [
                    {"name": "send", "data": {"to": f"user{added + i}@example.com"}}
                    for i in range(due)])
                added += due
            await asyncio.sleep(0.02)
        print(f"added {added} in {time.monotonic() - start:.1f} s", flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])))
"""


class Producer:
    """PRODUCER in a process of its own, adding jobs to BUSY; its output in producer.log."""

    def __init__(self, tmp_path: Path, process: asyncio.subprocess.Process, log: Any) -> None:
        self.log_path, self.process, self._log = tmp_path / "producer.log", process, log

    @classmethod
    async def start(cls, tmp_path: Path, redis_url: str, per_s: float, seconds: float
                    ) -> Producer:
        log = (tmp_path / "producer.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PRODUCER, redis_url, PREFIX, BUSY, str(per_s), str(seconds),
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        return cls(tmp_path, process, log)

    async def stop(self) -> None:
        """Killed if still adding; waited for."""
        if self.process.returncode is None:
            self.process.kill()
        await asyncio.wait_for(self.process.wait(), 10)
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text()
