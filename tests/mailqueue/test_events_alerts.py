"""Failure alerts: one alert per queue and per job name when failures reach the threshold
within the window, to sync and async callbacks, stored for the dashboard."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from mailqueue.bullmq_fixes import connection_options
from mailqueue.events import EventManager
from mailqueue.manager import MailManager
from mailqueue.settings import Settings
from tests.mailqueue.event_support import WorkerFactory, boom
from tests.waiting import eventually


async def test_alert_fires_once_at_the_threshold(
    settings: Settings, mail: MailManager,
    worker_factory: WorkerFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    tuned = settings.model_copy(update={"alert_failure_threshold": 3, "alert_window_s": 60})
    manager = EventManager(connection_options(settings.redis_url or ""), mail.client,
                           settings.queue_prefix, tuned)
    received: list[dict[str, Any]] = []
    awaited: list[dict[str, Any]] = []

    async def async_callback(alert: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        awaited.append(alert)

    manager.on_alert(received.append)
    manager.on_alert(async_callback)
    failures: list[dict[str, Any]] = []
    manager.on_event("al", "failed", failures.append)
    await asyncio.sleep(0.3)
    try:
        with caplog.at_level(logging.WARNING, logger="mailqueue.events"):
            await mail.add_job("al", "send-welcome", attempts=1)  # one other name
            worker_factory("al", boom)
            await eventually(lambda: len(failures) == 1)
            assert received == []
            for _ in range(5):
                await mail.add_job("al", "send-newsletter", attempts=1)
            await eventually(lambda: len(failures) == 6)
            await asyncio.sleep(0.3)

        # 3rd failure of the queue -> a queue alert; 3rd of send-newsletter -> a job alert.
        assert sorted((a["kind"], a["job_name"]) for a in received) == [
            ("job", "send-newsletter"), ("queue", "")]
        assert len(awaited) == 2
        assert all(a["queue"] == "al" and a["id"] for a in received)
        stored = await manager.get_alerts()
        assert sorted(a["id"] for a in stored) == sorted(a["id"] for a in received)
        assert {a["kind"] for a in stored} == {"queue", "job"}
        assert "failed 3 times within 60 s" in caplog.text
    finally:
        await manager.close()
