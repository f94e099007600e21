"""Workers for the campaigns' queues: started when a campaign appears, stopped when it ends.

Each campaign is a queue of its own (mailqueue.campaigns). A process that sends mail
(`mailqueue worker`, `mailqueue run`) runs `CampaignWorkers.run()`: every `interval_s` it
reads the set of active campaigns and starts a worker, with the e-mail handlers it already
has, for each new one; a campaign that completed or was cancelled has its worker closed
(its jobs in flight finish first). It also gives the handlers the hook that pauses a
campaign after its limit of send errors in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from mailqueue.campaigns import QUEUE_PREFIX, Campaigns
from mailqueue.workers import WorkerManager

log = logging.getLogger(__name__)


class CampaignWorkers:
    def __init__(self, campaigns: Campaigns, workers: WorkerManager, handlers: Any,
                 concurrency: int | None = None, interval_s: float = 1.0) -> None:
        self.campaigns = campaigns
        self.workers = workers
        self.handlers = handlers
        self.concurrency = concurrency
        self.interval_s = interval_s
        self.serving: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        service = getattr(handlers, "service", None)
        if service is not None:  # the built-in handlers: pause on errors in a row
            service.on_campaign_errors = self._on_errors

    async def _on_errors(self, campaign_id: str, errors_in_a_row: int) -> None:
        if await self.campaigns.note_errors(campaign_id, errors_in_a_row):
            log.warning("Campaign %s paused after %d send errors in a row", campaign_id,
                        errors_in_a_row)

    def start(self) -> CampaignWorkers:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="mailqueue-campaign-workers")
        return self

    async def run(self) -> None:
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away for a moment: try again next round
                log.warning("Campaign workers: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def sync(self) -> None:
        """Start a worker for each active campaign, close those of ended ones."""
        for campaign_id in await self.campaigns.active_ids():
            await self.campaigns.refresh(campaign_id)  # notes a campaign that completed
        active = await self.campaigns.active_ids()
        for campaign_id in sorted(active - self.serving):
            self.workers.start_worker(f"{QUEUE_PREFIX}{campaign_id}", self.handlers,
                                      concurrency=self.concurrency)
            self.serving.add(campaign_id)
        for campaign_id in sorted(self.serving - active):
            self.serving.discard(campaign_id)
            await self.workers.stop_worker(f"{QUEUE_PREFIX}{campaign_id}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
