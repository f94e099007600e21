"""WorkerManager starting workers against the suite's real Redis: jobs routed by name to their
handlers, handler errors and retries, concurrency, metrics, the handler registry, and the
arguments a worker refuses."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import pytest
from bullmq import Job

from mailqueue.errors import MailQueueError
from mailqueue.workers import (
    HandlerRegistry,
    WorkerManager,
    default_handlers,
    register_handler,
)
from tests.mailqueue.conftest import Stack, wait_for_counts


async def test_jobs_are_routed_by_name_to_sync_and_async_handlers(stack: Stack) -> None:
    async def welcome(data: Any, job: Job) -> str:
        return f"welcome {data['to']}"

    def reset(data: Any, job: Job) -> dict[str, Any]:
        return {"reset": data["to"], "job": job.name}

    stack.workers.start_worker("route", {"send-welcome": welcome, "send-reset": reset})
    a = await stack.queues.add_job("route", "send-welcome", {"to": "ada@example.com"})
    b = await stack.queues.add_job("route", "send-reset", {"to": "bob@example.com"})
    await wait_for_counts(stack, "route", 5, completed=2)
    assert (await stack.queues.get_job("route", str(a.id)))["return_value"] == \
        "welcome ada@example.com"
    assert (await stack.queues.get_job("route", str(b.id)))["return_value"] == \
        {"reset": "bob@example.com", "job": "send-reset"}


async def test_unknown_job_name_fails_at_once_without_retries(stack: Stack) -> None:
    async def known(data: Any, job: Job) -> None:
        return None

    stack.workers.start_worker("unknown", {"send-welcome": known, "send-notification": known})
    job = await stack.queues.add_job("unknown", "send-welcom", {}, {"attempts": 5})
    await wait_for_counts(stack, "unknown", 5, failed=1)
    info = await stack.queues.get_job("unknown", str(job.id))
    assert info["state"] == "failed"
    assert info["attempts_made"] == 1  # unrecoverable: the 4 other attempts are not made
    reason = info["failed_reason"] or ""
    assert "'send-welcom'" in reason
    assert "send-notification, send-welcome" in reason


async def test_handler_errors_fail_the_job_and_are_retried(stack: Stack) -> None:
    calls = 0

    async def flaky(data: Any, job: Job) -> str:
        nonlocal calls
        calls += 1
        if calls < 2:
            raise RuntimeError("SMTP said 451")
        return "sent"

    stack.workers.start_worker("flaky", {"send": flaky})
    job = await stack.queues.add_job(
        "flaky", "send", {}, {"attempts": 3, "backoff": {"type": "fixed", "delay": 50}}
    )
    await wait_for_counts(stack, "flaky", 5, completed=1)
    info = await stack.queues.get_job("flaky", str(job.id))
    assert info["return_value"] == "sent" and info["attempts_made"] == 2


async def test_concurrency_runs_that_many_jobs_at_once(stack: Stack) -> None:
    running = peak = 0

    async def slow(data: Any, job: Job) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.4)
        running -= 1

    await stack.queues.add_jobs("conc", [{"name": "slow", "data": {}} for _ in range(8)])
    started = time.monotonic()
    managed = stack.workers.start_worker("conc", {"slow": slow}, concurrency=4)
    assert managed.concurrency == 4
    await wait_for_counts(stack, "conc", 5, completed=8)
    assert peak == 4
    assert time.monotonic() - started < 1.6  # two rounds of 0.4 s, not eight


async def test_metrics_are_written_for_completed_and_failed_jobs(stack: Stack) -> None:
    async def maybe(data: Any, job: Job) -> None:
        if data.get("fail"):
            raise ValueError("bad address")

    stack.workers.start_worker("metrics", {"send": maybe})
    await stack.queues.add_jobs("metrics", [
        {"name": "send", "data": {"fail": i % 3 == 0}, "opts": {"attempts": 1}}
        for i in range(9)
    ])
    await wait_for_counts(stack, "metrics", 5, completed=6, failed=3)
    completed = await stack.queues.get_metrics("metrics", "completed")
    failed = await stack.queues.get_metrics("metrics", "failed")
    assert completed["count"] == 6 and failed["count"] == 3


async def test_registry_and_register_handler(stack: Stack) -> None:
    registry = HandlerRegistry()

    @registry.register("send-invoice")
    async def invoice(data: Any, job: Job) -> str:
        return "invoice"

    registry.register("ping", lambda data, job: "pong")
    assert sorted(registry) == ["ping", "send-invoice"]

    @register_handler("test-default-handler")
    def default(data: Any, job: Job) -> str:
        return "default"

    try:
        assert default_handlers["test-default-handler"] is default
        stack.workers.start_worker("registry", registry)
        job = await stack.queues.add_job("registry", "ping", {})
        await wait_for_counts(stack, "registry", 5, completed=1)
        assert (await stack.queues.get_job("registry", str(job.id)))["return_value"] == "pong"
    finally:
        default_handlers.remove("test-default-handler")


async def test_default_handlers_include_registered_ones(stack: Stack) -> None:
    pytest.importorskip("mailqueue.mail.handlers", reason="the e-mail handlers are not in yet")

    @register_handler("test-extra")
    async def extra(data: Any, job: Job) -> str:
        return "extra"

    try:
        stack.workers.start_worker("defaults", None)
        job = await stack.queues.add_job("defaults", "test-extra", {})
        await wait_for_counts(stack, "defaults", 5, completed=1)
        assert (await stack.queues.get_job("defaults", str(job.id)))["return_value"] == "extra"
        assert "send-welcome" in WorkerManager.create_email_handlers()
    finally:
        default_handlers.remove("test-extra")


def test_missing_email_handlers_give_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Both: once an earlier test has imported the flows, they no longer import the handlers.
    monkeypatch.setitem(sys.modules, "mailqueue.mail.handlers", None)
    monkeypatch.setitem(sys.modules, "mailqueue.mail.flow_handlers", None)
    with pytest.raises(MailQueueError, match="e-mail handlers cannot be loaded"):
        WorkerManager.create_email_handlers()


@pytest.mark.parametrize(
    ("queue", "handlers", "options", "message"),
    [
        ("q", {"a": print}, {"concurrency": 0}, "concurrency"),
        ("q", {"a": print}, {"prefix": "x"}, "set by the manager"),
        ("q", {"a": print}, {"limiter": {"max": 0, "duration": 1000}}, "limiter"),
        ("q", {"a": print}, {"limiter": {"max": 5}}, "limiter"),
        ("q", {}, {}, "No handlers"),
        ("q", {"a": "not callable"}, {}, "not callable"),
        ("bad:name", {"a": print}, {}, "Bad queue name"),
    ],
)
async def test_bad_worker_arguments_are_refused(
    stack: Stack, queue: str, handlers: dict[str, Any], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(MailQueueError, match=message):
        stack.workers.start_worker(queue, handlers, **options)
    assert stack.workers.workers() == []
