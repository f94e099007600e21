"""The context every full page shares: the sidebar of queues and the current section."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request

from dashboard.actions import mail_of


async def page_context(request: Request, section: str, current_queue: str | None = None
                       ) -> dict[str, Any]:
    """Sidebar queues with their waiting and failed counts, and the section for the nav."""
    mail = mail_of(request)
    names = await mail.queues.list_queues()
    counts = await asyncio.gather(*(mail.queues.get_job_counts(n) for n in names))
    return {
        "section": section,
        "current_queue": current_queue,
        "sidebar_queues": [
            {"name": name, "waiting": c.get("waiting", 0), "failed": c.get("failed", 0)}
            for name, c in zip(names, counts, strict=True)
        ],
    }
