"""Scenario 5a, load: 100 SSE clients (half on the busiest queue's page stream, half on the
overview's) while a separate process adds jobs at 1,000 a second (2,000 events a second:
`added` and `waiting`) for 60 s, against a real `mailqueue dashboard` process. Checks: every
client is still connected and receiving at the end; the dashboard's RSS stays bounded; the
coalescing keeps every client at 10 SSE messages a second or fewer. The event rate is
measured from `/api/events/stream`.

Figures are printed (`pytest -s`) and written to test-artifacts/reliability/load.json.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mailqueue.redis_server import EmbeddedRedis
from tests.faults import load_support
from tests.faults.load_support import BUSY, LoadDashboard, Producer, record, rss_kb

# The load scenario's own Redis (no AOF) and dashboard process.
load_redis = load_support.load_redis
dashboard = load_support.dashboard

SSE_CLIENTS = 100
FLOOD_S = float(os.environ.get("LOAD_FLOOD_S", 60))
ADDS_PER_S = 1000  # each add writes two events: `added` and `waiting`
MAX_MESSAGES_PER_S = 10
RSS_BOUND_KB = 200 * 1024

pytestmark = pytest.mark.timeout(240)


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
        dashboard: LoadDashboard) -> None:
    process, _, host, port = dashboard
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
