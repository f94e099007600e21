"""Campaigns: one template to many recipients, with progress, pause, resume and cancel.

A campaign is a queue of its own, `campaign-<id>`, holding one `send-email` job per
recipient (data: the recipient, the template, the shared variables and the recipient's
own, and `campaign_id`). Being a queue makes the operations exact and cheap: pause and
resume are BullMQ's (O(1)); cancel drains the queue — it removes what is waiting or delayed,
never a job in flight; what is left is the queue's own count. Workers serve the queues of
active campaigns (WorkerManager.serve_campaigns, in `mailqueue worker` and `mailqueue run`).

Progress: `sent` and `suppressed` are counted by the delivery log's script as each send is
recorded (no extra round trip), `failed` is the queue's failed count, `remaining` the jobs
not finished. A send error (a 4xx or 5xx reply) adds to `errors_in_a_row`, a sent message
resets it; at `error_limit` in a row the worker pauses the campaign and says why, so a
broken relay does not burn through the list. (A relay that cannot be reached at all opens
the transport's circuit breaker instead: the worker holds, nothing is spent.)

Recipients are read from any iterable in batches (a list, a CSV file, a generator):
memory stays bounded whatever their number.
"""

from __future__ import annotations

import csv
import json
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO, TypedDict

import redis.asyncio as aioredis

from mailqueue.errors import MailQueueError
from mailqueue.mail.addresses import parse_address, shown
from mailqueue.mail.errors import InvalidMailDataError
from mailqueue.mail.key_namespace import NAMESPACE
from mailqueue.mail.message_log import campaign_key
from mailqueue.queues import QueueManager

QUEUE_PREFIX = "campaign-"
DEFAULT_BATCH = 1_000
DEFAULT_ERROR_LIMIT = 20
STATES = ("enqueuing", "running", "paused", "completed", "cancelled")
_UNFINISHED = ("waiting", "active", "delayed", "paused", "prioritized", "waiting-children")
_INVALID_SHOWN = 20


class CampaignError(MailQueueError, ValueError):
    """A campaign that does not exist, or an operation its state does not allow."""


@dataclass(frozen=True, slots=True)
class Recipient:
    address: str
    variables: dict[str, Any]


def recipient_rows(stream: TextIO) -> Iterator[str | dict[str, str]]:
    """A list of recipients as people write one: CSV with a header holding `email` (or `to`)
    gives a mapping per row (the other columns are the recipient's variables); else one
    address per line (blank lines and `#` comments skipped). `mailqueue newsletter send` and
    the campaign page read their lists with it."""
    first = stream.readline().lstrip("\ufeff")
    header = [c.strip().lower() for c in next(csv.reader([first]))] if first.strip() else []
    if "email" in header or "to" in header:
        for row in csv.DictReader(stream, fieldnames=header):
            yield {k: v for k, v in row.items() if k}
        return
    for line in (first, *stream):
        if line.strip() and not line.lstrip().startswith("#"):
            yield line.strip()


def recipients_from(items: Iterable[Any]) -> Iterator[Recipient | str]:
    """Each item as a Recipient, or the reason it is not one (a str, counted as invalid).

    Items: an address (`"ada@example.com"`, `"Ada <ada@example.com>"`), or a mapping with
    `email` or `to` and any other fields, which become the recipient's template variables.
    """
    for item in items:
        if isinstance(item, str):
            raw, variables = item.strip(), {}
        elif isinstance(item, dict):
            variables = {str(k): v for k, v in item.items()
                         if k not in ("email", "to") and v not in (None, "")}
            raw = str(item.get("email") or item.get("to") or "").strip()
            if not raw and any(v not in (None, "") for v in item.values()):
                yield f"{shown(item)}: no 'email' (or 'to')"
                continue
        else:
            yield f"{shown(item)}: not an address or a mapping"
            continue
        if not raw:
            continue  # a blank line
        try:
            address = parse_address(raw, "recipient")
        except InvalidMailDataError as exc:
            yield str(exc)
            continue
        if address.name and "name" not in variables:
            variables["name"] = address.name
        yield Recipient(address.email, variables)


class Campaign(TypedDict):
    """A campaign and its progress."""

    id: str
    name: str
    template: str | None
    queue: str
    state: str  # running, paused, completed, cancelled
    reason: str  # why it paused or ended
    total: int
    sent: int
    failed: int
    suppressed: int
    deferred: int
    remaining: int
    done: int
    invalid: int
    invalid_reasons: list[Any]
    errors_in_a_row: int
    error_limit: int
    rate: float  # e-mails/s while running
    eta_s: int | None
    created_at: int
    started_at: int
    finished_at: int | None
    created_by: str
    variables: dict[str, Any]


class Campaigns:
    """Create, read and steer campaigns of one prefix."""

    def __init__(self, client: aioredis.Redis, prefix: str, queues: QueueManager) -> None:
        self.client = client
        self.prefix = prefix
        self.queues = queues
        self._index = f"{prefix}:{NAMESPACE}:campaigns"
        self._active = f"{prefix}:{NAMESPACE}:campaigns:active"

    def _key(self, campaign_id: str) -> str:
        return campaign_key(self.prefix, campaign_id)

    async def create(self, template: str, recipients: Iterable[Any], *,
                     variables: dict[str, Any] | None = None, name: str = "",
                     created_by: str = "api", error_limit: int = DEFAULT_ERROR_LIMIT,
                     batch: int = DEFAULT_BATCH, attempts: int = 3,
                     on_batch: Any = None) -> Campaign:
        """Enqueue a campaign: `template` to every recipient, read in batches of `batch`.

        `on_batch(enqueued, invalid)` is called after each batch (a progress bar). Returns
        the campaign (see `get`). Invalid recipients are skipped and counted, the first
        ones' reasons kept.
        """
        if not isinstance(template, str) or not template.strip():
            raise CampaignError("a campaign needs a template name")
        if error_limit < 1 or batch < 1:
            raise CampaignError("error_limit and batch must be at least 1")
        campaign_id = uuid.uuid4().hex[:10]
        queue = f"{QUEUE_PREFIX}{campaign_id}"
        key = self._key(campaign_id)
        now = _now_ms()
        await self.client.hset(key, mapping={
            "id": campaign_id, "name": name.strip()[:200] or f"{template} {campaign_id}",
            "template": template, "queue": queue, "state": "enqueuing", "total": 0,
            "invalid": 0, "error_limit": error_limit, "created_at": now,
            "created_by": created_by, "paused_ms": 0, "variables": json.dumps(variables or {}),
        })
        await self.client.zadd(self._index, {campaign_id: now})
        await self.queues.create_queue(queue)
        await self.client.sadd(self._active, campaign_id)  # workers start serving it
        shared = dict(variables or {})
        job_opts = {"attempts": attempts, "backoff": {"type": "exponential", "delay": 5000},
                    "removeOnComplete": True}
        total = invalid = 0
        reasons: list[str] = []
        pending: list[dict[str, Any]] = []
        for item in recipients_from(recipients):
            if isinstance(item, str):
                invalid += 1
                if len(reasons) < _INVALID_SHOWN:
                    reasons.append(item)
                continue
            pending.append({"name": "send-email", "opts": job_opts, "data": {
                **shared, **item.variables, "to": item.address, "template": template,
                "campaign_id": campaign_id}})
            if len(pending) >= batch:
                total += await self._enqueue(queue, key, pending)
                pending = []
                if on_batch is not None:
                    on_batch(total, invalid)
        if pending:
            total += await self._enqueue(queue, key, pending)
        await self.client.hset(key, mapping={
            "invalid": invalid, "invalid_reasons": json.dumps(reasons),
            "state": "running", "started_at": _now_ms()})
        if on_batch is not None:
            on_batch(total, invalid)
        return await self.get(campaign_id)

    async def _enqueue(self, queue: str, key: str, jobs: list[dict[str, Any]]) -> int:
        await self.queues.add_jobs(queue, jobs)
        await self.client.hincrby(key, "total", len(jobs))
        return len(jobs)

    async def get(self, campaign_id: str) -> Campaign:
        """The campaign with its progress: total, sent, failed, suppressed, remaining, rate
        (e-mails/s while running), ETA (s), state and the reason of a pause."""
        raw = await self.client.hgetall(self._key(campaign_id))
        if not raw:
            raise CampaignError(f"no campaign {campaign_id!r}")
        data = {_text(k): _text(v) for k, v in raw.items()}
        counts = await self.queues.get_job_counts(data["queue"]) \
            if await self.queues.queue_exists(data["queue"]) else {}
        return await self._progress(data, counts)

    async def _progress(self, data: dict[str, str], counts: dict[str, int]
                        ) -> Campaign:
        now = _now_ms()
        total, sent = int(data.get("total", 0)), int(data.get("sent", 0))
        suppressed = int(data.get("suppressed", 0))
        failed = int(counts.get("failed", 0))
        remaining = sum(int(counts.get(s, 0)) for s in _UNFINISHED)
        state = data.get("state", "running")
        if state == "running" and remaining == 0:
            state = "completed"
            await self.client.hset(self._key(data["id"]), mapping={
                "state": state, "finished_at": now})
            await self.client.srem(self._active, data["id"])
            data["finished_at"] = str(now)
        started = int(data.get("started_at") or data.get("created_at") or now)
        end = int(data.get("finished_at") or now)
        paused_ms = int(data.get("paused_ms", 0))
        if state == "paused" and data.get("paused_at"):
            paused_ms += now - int(data["paused_at"])
        elapsed_s = max((end - started - paused_ms) / 1000, 0.001)
        done = sent + failed + suppressed
        rate = done / elapsed_s if done else 0.0
        return {
            "id": data["id"], "name": data.get("name", ""), "template": data.get("template"),
            "queue": data["queue"], "state": state, "reason": data.get("reason", ""),
            "total": total, "sent": sent, "failed": failed, "suppressed": suppressed,
            "deferred": int(data.get("deferred", 0)), "remaining": remaining,
            "done": done, "invalid": int(data.get("invalid", 0)),
            "invalid_reasons": json.loads(data.get("invalid_reasons") or "[]"),
            "errors_in_a_row": int(data.get("errors_in_a_row", 0)),
            "error_limit": int(data.get("error_limit", DEFAULT_ERROR_LIMIT)),
            "rate": round(rate, 2),
            "eta_s": round(remaining / rate) if rate and state == "running" else None,
            "created_at": int(data.get("created_at", 0)), "started_at": started,
            "finished_at": int(data["finished_at"]) if data.get("finished_at") else None,
            "created_by": data.get("created_by", ""),
            "variables": json.loads(data.get("variables") or "{}"),
        }

    async def refresh(self, campaign_id: str) -> None:
        """Note a campaign's end (completed) in its state; forget one whose hash is gone."""
        try:
            await self.get(campaign_id)
        except CampaignError:
            await self.client.srem(self._active, campaign_id)

    async def list(self, limit: int = 50) -> list[Campaign]:
        """The newest campaigns first, with their progress."""
        ids = await self.client.zrevrange(self._index, 0, limit - 1)
        found: list[Campaign] = []
        for campaign_id in ids:
            try:
                found.append(await self.get(_text(campaign_id)))
            except CampaignError:
                await self.client.zrem(self._index, _text(campaign_id))  # its hash is gone
        return found

    async def active_ids(self) -> set[str]:
        """The campaigns whose queue workers should serve."""
        return {_text(i) for i in await self.client.smembers(self._active)}

    async def pause(self, campaign_id: str, reason: str = "") -> Campaign:
        """Stop sending: the queue pauses (jobs in flight finish). Idempotent."""
        campaign = await self.get(campaign_id)
        if campaign["state"] in ("completed", "cancelled"):
            raise CampaignError(f"campaign {campaign_id} is {campaign['state']}")
        if campaign["state"] != "paused":
            await self.queues.pause(campaign["queue"])
            await self.client.hset(self._key(campaign_id), mapping={
                "state": "paused", "paused_at": _now_ms(), "reason": reason[:300]})
        return await self.get(campaign_id)

    async def resume(self, campaign_id: str) -> Campaign:
        campaign = await self.get(campaign_id)
        if campaign["state"] != "paused":
            raise CampaignError(f"campaign {campaign_id} is {campaign['state']}, not paused")
        key = self._key(campaign_id)
        paused_at = await self.client.hget(key, "paused_at")
        if paused_at:
            await self.client.hincrby(key, "paused_ms", _now_ms() - int(paused_at))
        await self.client.hset(key, mapping={"state": "running", "reason": "",
                                             "errors_in_a_row": 0})
        await self.client.hdel(key, "paused_at")
        await self.queues.resume(campaign["queue"])
        return await self.get(campaign_id)

    async def cancel(self, campaign_id: str) -> Campaign:
        """Remove what has not been sent (waiting, delayed, paused jobs); jobs in flight
        finish. The campaign keeps its counts."""
        campaign = await self.get(campaign_id)
        if campaign["state"] in ("completed", "cancelled"):
            raise CampaignError(f"campaign {campaign_id} is {campaign['state']}")
        await self.queues.drain(campaign["queue"], include_delayed=True)
        await self.client.hset(self._key(campaign_id), mapping={
            "state": "cancelled", "finished_at": _now_ms(),
            "reason": f"cancelled with {campaign['remaining']:,} not sent"})
        await self.client.srem(self._active, campaign_id)
        if campaign["state"] == "paused":
            await self.queues.resume(campaign["queue"])  # lets the in-flight ones end
        return await self.get(campaign_id)

    async def note_errors(self, campaign_id: str, errors_in_a_row: int) -> bool:
        """After a send error: pause the campaign when `errors_in_a_row` reaches its limit.
        True when it paused it."""
        campaign = await self.get(campaign_id)
        if campaign["state"] != "running" or errors_in_a_row < campaign["error_limit"]:
            return False
        await self.pause(campaign_id, f"paused after {errors_in_a_row} send errors in a row; "
                                      "check the SMTP relay, then resume")
        return True


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
