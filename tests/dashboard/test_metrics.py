"""/health (200 or 503) and /metrics in the Prometheus text exposition format."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx

from mailqueue.dashboard.app import create_app
from mailqueue.dashboard.views.metrics import escape_label
from mailqueue.manager import MailManager
from mailqueue.redis_server import EmbeddedRedis
from mailqueue.settings import Settings

_SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)'                       # metric name
    r'(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})?'  # labels
    r' (-?(?:\d+(?:\.\d+)?(?:e[+-]?\d+)?|NaN|\+Inf|-Inf))$'
)
_ESCAPE = re.compile(r"\\(.)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def parse_prometheus(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A strict little parser of the text format: every line a comment or a valid sample."""
    assert text.endswith("\n")
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("gauge", "counter") and name not in typed
            typed.add(name)
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        assert name in typed, f"{name} has no TYPE line before it"
        pairs = frozenset(
            (k, _ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), v))
            for k, v in _LABEL.findall(labels or "")
        )
        samples[(name, pairs)] = float(value)
    return samples


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


async def _ok(data: Any, job: Any) -> str:
    return "ok"


async def _boom(data: Any, job: Any) -> None:
    raise RuntimeError("no")


def test_label_escaping() -> None:
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


async def test_metrics_parse_and_count(client: httpx.AsyncClient, mail: MailManager) -> None:
    mail.start_worker("emails", {"ok": _ok, "boom": _boom})
    await mail.add_job("emails", "ok", {})
    await mail.add_job("emails", "boom", {}, attempts=1)
    await mail.add_job("emails", "later", {}, delay=60_000)
    odd = 'we"ird\\name'
    await mail.add_job(odd, "x", {})
    await mail.queues.pause(odd)
    for _ in range(200):
        counts = await mail.queues.get_job_counts("emails")
        if counts["completed"] == 1 and counts["failed"] == 1:
            break
        await asyncio.sleep(0.05)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_prometheus(response.text)
    assert samples[_key("mailqueue_redis_up")] == 1
    assert samples[_key("mailqueue_jobs", queue="emails", state="completed")] == 1
    assert samples[_key("mailqueue_jobs", queue="emails", state="failed")] == 1
    assert samples[_key("mailqueue_jobs", queue="emails", state="delayed")] == 1
    assert samples[_key("mailqueue_completed_total", queue="emails")] == 1
    assert samples[_key("mailqueue_failed_total", queue="emails")] == 1
    assert samples[_key("mailqueue_workers", queue="emails")] == 1
    assert samples[_key("mailqueue_queue_paused", queue="emails")] == 0
    assert samples[_key("mailqueue_queue_paused", queue=odd)] == 1
    assert samples[_key("mailqueue_jobs", queue=odd, state="paused")] + samples[
        _key("mailqueue_jobs", queue=odd, state="waiting")] == 1
    assert _key("mailqueue_event_reader_lag_ms") in samples


async def test_health_is_200_when_healthy(client: httpx.AsyncClient, mail: MailManager) -> None:
    await mail.create_queue("emails")
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["healthy"] is True and "emails" in body["queues"]


async def test_health_is_503_and_redis_down_when_redis_is_gone(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path / "redis").start()
    settings = Settings(_env_file=None,  # type: ignore[call-arg]
                        redis_url=server.url, queue_prefix="h", data_dir=tmp_path / "data")
    mail = await MailManager(settings).start()
    try:
        app = create_app(settings, mail)
        app.state.mail = mail
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3000") as c:
            assert (await c.get("/health")).status_code == 200
            server.stop()
            response = await c.get("/health")
            assert response.status_code == 503
            assert response.json()["healthy"] is False and response.json()["error"]
            metrics = await c.get("/metrics")
            assert metrics.status_code == 200
            assert parse_prometheus(metrics.text)[_key("mailqueue_redis_up")] == 0
    finally:
        server.stop()
        await mail.close()
