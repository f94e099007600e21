"""Issue 11, point 8: one worker whose SMTP server is unreachable must not fail the queue.

Two real `mailqueue worker` processes share a queue: one points SMTP_URL at a closed port
(nothing listens), the other at the test's sink. Before the circuit breaker, the broken
worker kept taking jobs, failed each at once and spent its attempts: about 10% of the jobs
failed for good. Now its transport's breaker opens after a few connection failures, the
jobs it took go back to the queue without spending an attempt, and the worker stops taking
jobs while the breaker is open; the workers page and /health say so.

Figures are printed (`pytest -s`) and written to test-artifacts/reliability/<scenario>.json.
"""

from __future__ import annotations

import asyncio
import html
import socket
from typing import Any

import httpx
import pytest

from mailqueue.redis_server import free_port
from mailqueue.worker_gates import gate_key

from .system import start_dashboard, start_worker
from .test_smtp_faults import NOTIFY, QUEUE, System, report, system, wait_for  # noqa: F401

PUT_BACK_LOG = "put back"


@pytest.mark.parametrize("runtime", ["native", "bullmq"])
async def test_a_worker_with_smtp_down_puts_jobs_back_and_stops_taking_them(
    system: System, runtime: str,  # noqa: F811
) -> None:
    total = 300
    broken_port = free_port()  # nothing listens: every connection is refused
    broken_where = f"127.0.0.1:{broken_port}"
    broken = await asyncio.to_thread(
        start_worker, system.tmp_path, redis_url=system.redis.url, prefix=system.prefix,
        concurrency=10, SMTP_URL=f"smtp://{broken_where}?timeout=5", WORKER_RUNTIME=runtime,
    )
    good = await system.worker(concurrency=10, WORKER_RUNTIME=runtime)
    dashboard = None
    try:
        # The queue's default job options: 3 attempts, exponential back-off from 2 s.
        jobs = await system.mail.add_jobs(QUEUE, [
            {"name": "send-notification", "data": {**NOTIFY, "to": f"b{i}@example.com"}}
            for i in range(total)
        ])
        job_ids = [str(job.id) for job in jobs]
        drain_s = await wait_for(lambda: system.finished(total), 120, "drained queue")
        counts = await system.mail.queues.get_job_counts(QUEUE)
        ids = await system.outbox_ids()

        # Every run of a job by the broken worker left a log line naming its SMTP server:
        # "transient failure ... cannot reach" (an attempt spent, breaker still closed) or
        # "... put back" (no attempt spent, breaker open).
        spent = put_back = 0
        for job_id in job_ids:
            logs = await system.mail.queues.get_job_logs(QUEUE, job_id)
            lines = logs["logs"] if isinstance(logs, dict) else logs
            mine = [line for line in lines if broken_where in line]
            put_back += sum(1 for line in mine if PUT_BACK_LOG in line)
            spent += sum(1 for line in mine if PUT_BACK_LOG not in line)

        figures = {
            "runtime": runtime,
            "jobs": total,
            "completed": counts.get("completed", 0),
            "failed": counts.get("failed", 0),
            "broken_worker_runs": spent + put_back,
            "broken_worker_attempts_spent": spent,
            "broken_worker_put_back": put_back,
            "seconds_to_drain": round(drain_s, 1),
            "distinct_delivered": len(ids),
            "duplicates": sum(n - 1 for n in ids.values()),
        }
        report(f"smtp-broken-worker-{runtime}", figures)
        assert counts.get("completed", 0) == total and counts.get("failed", 0) == 0, figures
        assert set(ids) == system.expected_ids(job_ids) and figures["duplicates"] == 0
        # The breaker opens at the 3rd consecutive connection failure: at most 2 attempts are
        # spent, plus what the other slots had taken meanwhile is put back; then nothing more.
        assert spent <= 2, figures
        assert 1 <= put_back <= 10, figures

        # The broken worker is still up, its breaker open: the dashboard shows it.
        host = socket.gethostname().replace(" ", "_") or "host"
        broken_name = f"{host}-{broken.process.pid}-1"  # WorkerManager's naming
        state = await system.mail.client.hgetall(gate_key(system.prefix, broken_name))
        dashboard, base = await asyncio.to_thread(
            start_dashboard, system.tmp_path, redis_url=system.redis.url, prefix=system.prefix)
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            page = html.unescape((await http.get("/workers")).text)
            api = (await http.get("/api/workers")).json()
            health = await http.get("/health")
            health_json: dict[str, Any] = health.json()
            # Without the good worker, no worker of the queue can send: unhealthy.
            await asyncio.to_thread(good.stop)

            async def unhealthy() -> bool:
                return (await http.get("/health")).status_code == 503

            await wait_for(unhealthy, 30, "/health 503 with every worker's SMTP down")
            alone = (await http.get("/health")).json()
        await asyncio.to_thread(broken.stop)
        left_behind = await system.mail.client.exists(gate_key(system.prefix, broken_name))
    finally:
        for process in (broken, good, dashboard):
            if process is not None:
                await asyncio.to_thread(process.stop)

    # Published for the dashboard while open, removed when the worker stops.
    assert state.get("state") in ("open", "half-open"), state
    assert broken_where in state.get("error", "") + state.get("target", ""), state
    assert not left_behind
    rows_html = page.split("<tbody>")[1].split("</tbody>")[0]
    assert "SMTP down since" in rows_html and broken_name in rows_html, rows_html
    assert "next try in" in rows_html or "trying now" in rows_html, rows_html
    rows = [w for q in api["queues"] for w in q["workers"] if w["name"] == broken_name]
    assert rows and rows[0]["smtp_down"]["state"] in ("open", "half-open"), api
    assert health.status_code == 200 and health_json["healthy"] is True, health_json
    assert any(broken_name in w and "SMTP" in w for w in health_json.get("warnings", [])), \
        health_json
    assert alone["healthy"] is False
    assert any("no worker" in w and QUEUE in w for w in alone.get("warnings", [])), alone
