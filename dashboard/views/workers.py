"""The workers and Redis page: every live worker per queue (Python and Node), Redis health."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailqueue.manager import MailManager

from ..context import mail_of, page_context
from ..render import render


async def workers_overview(mail: MailManager) -> dict[str, Any]:
    """Workers grouped by queue (queues without a worker too), and the Redis summary."""
    queues, workers, redis = await asyncio.gather(
        mail.queues.list_queues(), mail.workers.list_workers(), mail.redis_info()
    )
    # Workers whose SMTP server is down (circuit breaker open) published it in Redis.
    gates = await mail.workers.gate_states(workers)
    by_queue: dict[str, list[dict[str, Any]]] = {name: [] for name in queues}
    for worker in workers:
        by_queue.setdefault(worker["queue"], []).append(
            {**worker, "smtp_down": gates.get(worker["name"] or "")})
    return {
        "queues": [{"name": name, "workers": by_queue[name]} for name in sorted(by_queue)],
        "total_workers": len(workers),
        "redis": redis,
    }


async def workers_page(request: Request) -> Response:
    context = await page_context(request, "workers_page")
    context.update(await workers_overview(mail_of(request)))
    return render(request, "pages/workers.html", context)


async def api_workers(request: Request) -> Response:
    return JSONResponse(await workers_overview(mail_of(request)))
