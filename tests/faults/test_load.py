"""Scenario 5, load: many live clients under an event flood, and a queue of a million jobs.

5a. 100 SSE clients (half on the busiest queue's page stream, half on the overview's) while
    a separate process adds jobs at 1,000 a second (2,000 events a second: `added` and
    `waiting`) for 60 s, against a real `mailqueue dashboard` process. Checks: every client
    is still connected and receiving at the end; the dashboard's RSS stays bounded; the
    coalescing keeps every client at 10 SSE messages a second or fewer. The event rate is
    measured from `/api/events/stream`.
5b. 50 concurrent loads of the busiest queue's page (page 1 and page 10,000) and of the
    overview, with 1,000,000 jobs waiting in that queue: p50 and p95 latency, no errors.

Figures are printed (`pytest -s`) and written to test-artifacts/reliability/load.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from mailqueue.redis_server import EmbeddedRedis
from tests.faults.system import MailqueueProcess, own_redis, start_dashboard

ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability" / "load.json"
PREFIX = "load"
BUSY = "newsletter"
QUIET = ("receipts", "password-resets", "alerts")

SSE_CLIENTS = 100
FLOOD_S = float(os.environ.get("LOAD_FLOOD_S", 60))
ADDS_PER_S = 1000  # each add writes two events: `added` and `waiting`
MAX_MESSAGES_PER_S = 10
RSS_BOUND_KB = 200 * 1024

MILLION = 1_000_000
FILL_CHUNK = 10_000
CONCURRENT_LOADS = 50
LOAD_ROUNDS = 3
DEEP_PAGE = 10_000
PER_PAGE = 50
P95_BOUND_MS = 3000

pytestmark = pytest.mark.timeout(240)


# --- shared helpers --------------------------------------------------------------------


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


@pytest.fixture
def dashboard(tmp_path: Path, load_redis: EmbeddedRedis
              ) -> Iterator[tuple[MailqueueProcess, str]]:
    process, base = start_dashboard(tmp_path, redis_url=load_redis.url, prefix=PREFIX)
    try:
        yield process, base
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


# --- 5a: SSE clients under an event flood ------------------------------------------------

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


class SSEClient:
    """One raw-socket SSE client: counts `event:` lines per wall-clock second."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port, self.path = host, port, path
        self.status = 0
        self.per_second: Counter[int] = Counter()
        self.events: Counter[str] = Counter()
        self.messages = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.closed_by_server = False
        self.error: str | None = None
        self.started = asyncio.Event()  # set at the first message
        self.banners: list[str] = []  # "Live updates paused: ..." texts (the first few)
        self._event = ""

    async def run(self, stop: asyncio.Event, deadline: float) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), 10)
        except (OSError, TimeoutError) as exc:
            self.error = f"connect: {exc!r}"
            return
        try:
            writer.write((f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                          "Accept: text/event-stream\r\n\r\n").encode())
            await writer.drain()
            await self._read(reader, stop, deadline)
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as exc:
            self.error = repr(exc)
        finally:
            writer.close()
            with_suppress = asyncio.wait_for(writer.wait_closed(), 2)
            try:
                await with_suppress
            except (OSError, TimeoutError):
                pass

    async def _read(self, reader: asyncio.StreamReader, stop: asyncio.Event,
                    deadline: float) -> None:
        status_line = await asyncio.wait_for(reader.readline(), 10)
        self.status = int(status_line.split()[1])
        chunked = False
        while (line := await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b""):
            if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                chunked = True
        buffer = b""
        while not stop.is_set() and time.monotonic() < deadline:
            if chunked:
                size_line = await self._until_stop(reader.readline(), stop)
                if size_line is None:
                    return
                size = int(size_line.strip() or b"0", 16)
                if size == 0:
                    self.closed_by_server = True
                    return
                data = await reader.readexactly(size + 2)
                buffer += data[:-2]
            else:
                data = await self._until_stop(reader.read(65536), stop)
                if data is None:
                    return
                if not data:
                    self.closed_by_server = True
                    return
                buffer += data
            *lines, buffer = buffer.split(b"\n")
            now = time.monotonic()
            for raw in lines:
                if raw.startswith(b"data:") and self._event == "banner":
                    text = raw[5:].strip().decode(errors="replace")
                    if text and len(self.banners) < 5:
                        self.banners.append(text)
                if raw.startswith(b"event:"):
                    self.messages += 1
                    self._event = raw[6:].strip().decode()
                    self.events[self._event] += 1
                    self.per_second[int(now)] += 1
                    self.first_at = self.first_at or now
                    self.started.set()
                    self.last_at = now

    @staticmethod
    async def _until_stop(read: Any, stop: asyncio.Event) -> Any:
        """`read`, or None when `stop` is set first."""
        read_task = asyncio.ensure_future(read)
        stop_task = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({read_task, stop_task}, timeout=30,
                                     return_when=asyncio.FIRST_COMPLETED)
        if read_task in done:
            stop_task.cancel()
            return read_task.result()
        read_task.cancel()
        stop_task.cancel()
        if not done:
            raise TimeoutError("nothing read for 30 s")
        return None


async def test_100_sse_clients_under_2000_events_per_second(
        tmp_path: Path, load_redis: EmbeddedRedis,
        dashboard: tuple[MailqueueProcess, str]) -> None:
    process, base = dashboard
    make_queues(load_redis.url)
    url = urlsplit(base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    queue_path = f"/live?view=queue&queue={BUSY}&state=waiting"
    paths = [queue_path if i % 2 == 0 else "/live?view=overview" for i in range(SSE_CLIENTS)]
    clients = [SSEClient(host, port, p) for p in paths]
    counter = SSEClient(host, port, f"/api/events/stream?queues={BUSY}")
    stop = asyncio.Event()
    hard_deadline = time.monotonic() + FLOOD_S + 60
    tasks = [asyncio.create_task(c.run(stop, hard_deadline)) for c in [*clients, counter]]

    # Every client connected and given its first render before the flood starts.
    await asyncio.wait([asyncio.create_task(c.started.wait()) for c in clients], timeout=30)
    not_started = [c for c in clients if c.messages == 0]
    assert not not_started, (f"{len(not_started)} clients got no first render: "
                             f"{[c.error for c in not_started[:3]]}")
    await asyncio.sleep(1)  # a quiet second after the first renders: the baseline's RSS
    rss_start = rss_kb(process.process.pid)

    producer = await Producer.start(tmp_path, load_redis.url, ADDS_PER_S, FLOOD_S)
    flood_started = time.monotonic()
    counted_before = counter.events["job-event"]
    rss_samples = [rss_start]
    try:
        while (producer.process.returncode is None
               and time.monotonic() < flood_started + FLOOD_S + 30):
            await asyncio.sleep(1)  # the RSS sampling cadence
            rss_samples.append(rss_kb(process.process.pid))
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        flood_s = time.monotonic() - flood_started
        counted = counter.events["job-event"] - counted_before
        # Still connected and still receiving: every client had a message in the last 3 s.
        end = time.monotonic()
        rss_end = rss_kb(process.process.pid)
    finally:
        await producer.stop()
        stop.set()
        await asyncio.wait(tasks, timeout=15)
    producer_output = producer.output()
    assert producer.process.returncode == 0, producer_output

    dropped = [c for c in clients
               if c.closed_by_server or c.error or c.status != 200
               or c.last_at is None or end - c.last_at > 3.0]
    # Per-client message rate during the flood (whole seconds only).
    first_second, last_second = int(flood_started) + 1, int(end) - 1
    maxima = [max((c.per_second.get(s, 0) for s in range(first_second, last_second + 1)),
                  default=0) for c in clients]
    overall_max = [max(c.per_second.values(), default=0) for c in clients]
    medians = [statistics.median([c.per_second.get(s, 0)
                                  for s in range(first_second, last_second + 1)])
               for c in clients]
    figures = {
        "clients": len(clients), "flood_s": round(flood_s, 1),
        "producer": producer_output.strip(),
        "events_counted_on_stream": counted,
        "event_rate_per_s": round(counted / flood_s, 1),
        "rss_start_mb": round(rss_start / 1024, 1), "rss_end_mb": round(rss_end / 1024, 1),
        "rss_peak_mb": round(max(rss_samples) / 1024, 1),
        "messages_per_client_per_s_max": max(overall_max),
        "messages_per_client_per_s_max_during_flood": max(maxima),
        "messages_per_client_per_s_median": statistics.median(medians),
        "messages_per_client_total_median": statistics.median(c.messages for c in clients),
        "event_names": dict(sum((c.events for c in clients), Counter())),
        "dropped_clients": len(dropped),
        "banners": sorted({b for c in clients for b in c.banners})[:5],
    }
    record("5a_sse_clients", figures)

    assert not dropped, [(c.path, c.status, c.error, c.closed_by_server, c.last_at)
                         for c in dropped[:5]]
    # "Live updates paused: ..." under load is a failure too (it was "Too many connections").
    assert not figures["banners"], figures
    assert counted / flood_s >= 0.9 * 2 * ADDS_PER_S, figures
    assert rss_end < rss_start + RSS_BOUND_KB, figures
    assert max(overall_max) <= MAX_MESSAGES_PER_S, figures
    assert statistics.median(medians) >= 1, figures  # the clients were really fed


# --- 5b: a page of the busiest queue with a million jobs ---------------------------------

# Jobs ARGV[1] .. ARGV[1]+ARGV[2]-1 in BullMQ's layout: a hash per job, its id pushed on
# the left of `wait` (as bullmq's addStandardJob does), and the queue's `id` counter.
FILL_SCRIPT = """
local head = KEYS[1]
local first = tonumber(ARGV[1])
local last = first + tonumber(ARGV[2]) - 1
for i = first, last do
  local id = tostring(i)
  redis.call('HSET', head .. id, 'name', 'send',
    'data', '{"to":"user' .. id .. '@example.com"}', 'opts', ARGV[4],
    'timestamp', ARGV[3], 'delay', '0', 'priority', '0')
  redis.call('LPUSH', head .. 'wait', id)
end
redis.call('SET', head .. 'id', last)
return last
"""


def fill(url: str, queue: str, count: int) -> float:
    """`count` waiting jobs in `queue`, in chunks of FILL_CHUNK; returns the seconds taken."""
    client = redis.Redis.from_url(url)
    try:
        started = time.monotonic()
        script = client.register_script(FILL_SCRIPT)
        now_ms = str(int(time.time() * 1000))
        opts = json.dumps({"attempts": 3, "backoff": {"type": "exponential", "delay": 1000}})
        head = f"{PREFIX}:{queue}:"
        first = int(client.get(head + "id") or 0) + 1
        for start in range(first, first + count, FILL_CHUNK):
            script(keys=[head], args=[start, min(FILL_CHUNK, first + count - start), now_ms,
                                      opts])
        assert client.llen(head + "wait") >= count
        return time.monotonic() - started
    finally:
        client.close()


async def timed_loads(client: httpx.AsyncClient, path: str, expect: str
                      ) -> tuple[list[float], list[str]]:
    """LOAD_ROUNDS rounds of CONCURRENT_LOADS simultaneous GETs: latencies and errors."""
    latencies: list[float] = []
    errors: list[str] = []

    async def one() -> None:
        started = time.perf_counter()
        try:
            response = await client.get(path)
        except httpx.HTTPError as exc:
            errors.append(f"{path}: {exc!r}")
            return
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            errors.append(f"{path}: HTTP {response.status_code}")
        elif expect not in response.text:
            errors.append(f"{path}: {expect!r} not in the page")

    for _ in range(LOAD_ROUNDS):
        await asyncio.gather(*(one() for _ in range(CONCURRENT_LOADS)))
    return latencies, errors


async def test_50_concurrent_loads_of_a_queue_with_a_million_jobs(
        tmp_path: Path, load_redis: EmbeddedRedis,
        dashboard: tuple[MailqueueProcess, str]) -> None:
    process, base = dashboard
    make_queues(load_redis.url)
    fill_s = fill(load_redis.url, BUSY, MILLION)
    info = redis.Redis.from_url(load_redis.url)
    try:
        redis_mb = int(info.info("memory")["used_memory"]) / 2**20
        waiting = int(info.llen(f"{PREFIX}:{BUSY}:wait"))
    finally:
        info.close()
    deep_start = (DEEP_PAGE - 1) * PER_PAGE
    newest_id = waiting  # ids 1..N were pushed on the left: page 1 shows N, N-1, ...
    targets = {
        "queue_page_1": (f"/queues/{BUSY}?state=waiting&page=1&per_page={PER_PAGE}",
                         str(newest_id)),
        f"queue_page_{DEEP_PAGE}": (
            f"/queues/{BUSY}?state=waiting&page={DEEP_PAGE}&per_page={PER_PAGE}",
            str(newest_id - deep_start)),
        "overview": ("/", BUSY),
    }
    figures: dict[str, Any] = {"jobs": waiting, "fill_s": round(fill_s, 1),
                               "redis_used_memory_mb": round(redis_mb, 1),
                               "concurrency": CONCURRENT_LOADS, "rounds": LOAD_ROUNDS,
                               "rss_start_mb": round(rss_kb(process.process.pid) / 1024, 1)}
    errors: list[str] = []
    limits = httpx.Limits(max_connections=CONCURRENT_LOADS, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        for name, (path, expect) in targets.items():
            warm = await client.get(path)  # one load alone first, to compare
            assert warm.status_code == 200, warm.text[-2000:]
            latencies, failed = await timed_loads(client, path, expect)
            errors += failed
            figures[name] = {
                "requests": len(latencies) + len(failed),
                "p50_ms": round(percentile(latencies, 50) * 1000, 1),
                "p95_ms": round(percentile(latencies, 95) * 1000, 1),
                "max_ms": round(max(latencies) * 1000, 1),
                "errors": len(failed),
            }
    figures["rss_end_mb"] = round(rss_kb(process.process.pid) / 1024, 1)
    figures["errors"] = errors[:10]
    record("5b_million_jobs", figures)

    assert not errors, errors[:10]
    for name in targets:
        # 50 at once into one dashboard process on a 2-core machine (~10 ms of CPU each, so
        # the last of a wave waits ~0.5 s; 0.6-1.1 s p95 measured, other suites running).
        # Before the discovery fix the p50 was 80-110 s.
        assert figures[name]["p95_ms"] < P95_BOUND_MS, figures
