"""The steps of the newsletter flow (mailqueue/mail/flow_builders.py builds it):

    newsletter-summary <- newsletter-gate, newsletter-batch x N (100 recipients each)

A batch sends to its recipients, a few at once, each message built from the campaign (its
parent's data) and the recipient; the gate holds the summary back until every batch is
enqueued; the summary adds up what the batches sent, failed and skipped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis

from mailqueue.mail.errors import (
    InvalidAddressError,
    InvalidMailDataError,
    PermanentMailError,
    TransientDeliveryError,
    TransientMailError,
)
from mailqueue.mail.flow_steps import failed_children_key, mail_step
from mailqueue.mail.handlers import Handler, MailService
from mailqueue.mail.jobdata import normalize_mail_data, snake_case
from mailqueue.mail.message import parse_address

MAX_LISTED_FAILURES = 20
BATCH_CONCURRENCY = 5  # sends in flight per batch job, like the SMTP pool's default size
# What a batch takes from each recipient, not from the campaign.
_PER_RECIPIENT = frozenset({"template", "unsubscribe_url", "to", "cc", "bcc"})


@dataclass(frozen=True, slots=True)
class _MessageKey:
    """What MailService.build needs of a job to derive a Message-ID (queue and id)."""

    queue: Any
    id: str


async def _campaign_of(job: Any) -> dict[str, Any]:
    """A batch's campaign is its parent's data: stored once, not in each of 1,000 batches."""
    parent_key = getattr(job, "parentKey", None)
    if not parent_key:
        raise InvalidMailDataError("newsletter-batch must be a child of a newsletter-summary")
    raw = await job.queue.client.hget(parent_key, "data")
    if raw is None:
        raise InvalidMailDataError(f"the newsletter's parent job {parent_key} is gone")
    campaign = json.loads(raw)
    if not isinstance(campaign, dict):
        raise InvalidMailDataError("the newsletter's campaign data must be an object")
    return campaign


def newsletter_steps(service: MailService) -> dict[str, Handler]:
    """newsletter-gate, newsletter-batch and newsletter-summary, sending through `service`."""

    async def newsletter_gate(data: Any, job: Any) -> dict[str, Any]:
        return {"step": "gate", **(data if isinstance(data, dict) else {})}

    @mail_step
    async def newsletter_batch(data: dict[str, Any], job: Any) -> dict[str, Any]:
        recipients = data.get("recipients")
        if not isinstance(recipients, list):
            raise InvalidMailDataError("newsletter-batch needs 'recipients': a list")
        raw = await _campaign_of(job)
        campaign = normalize_mail_data(raw)
        template = str(campaign.options.get("template") or "newsletter")
        unsubscribe = campaign.options.get("unsubscribe_url")
        # The campaign's keys as written (each message's data is read like a job's), but
        # the recipients: one per message. The unsubscribe URL is per recipient too.
        variables = {k: v for k, v in raw.items() if snake_case(k) not in _PER_RECIPIENT}
        attempts = int((job.opts or {}).get("attempts") or 1)
        final = int(job.attemptsMade or 0) + 1 >= attempts

        async def send_one(index: int, recipient: Any) -> tuple[str, str, str | None]:
            label = recipient.get("email") if isinstance(recipient, Mapping) else recipient
            try:
                address = parse_address(recipient, f"recipients[{index}]")
            except InvalidAddressError as exc:
                return "skipped", str(label), str(exc)
            url = (unsubscribe.replace("{email}", quote(address.email, safe=""))
                   if isinstance(unsubscribe, str) else None)
            reader = {"email": address.email, "name": address.name}
            per_recipient = {**variables, "to": reader, "recipient": reader}
            if url is not None:
                per_recipient["unsubscribe_url"] = url
            try:
                _, _, message = service.prepare(
                    per_recipient, template, _MessageKey(job.queue, f"{job.id}.{index}"),
                )
                await service.deliver(job, message)
            except PermanentMailError as exc:
                return "failed", address.email, str(exc)
            except (TransientMailError, OSError) as exc:
                if not final:
                    return "retry", address.email, str(exc)
                return "failed", address.email, str(exc)
            return "sent", address.email, None

        # As many at once as the SMTP pool has connections: more would only queue, and
        # hold more of the worker's Redis connections (its pool is small).
        slots = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def bounded(index: int, recipient: Any) -> tuple[str, str, str | None]:
            async with slots:
                return await send_one(index, recipient)

        outcomes = await asyncio.gather(
            *(bounded(i, r) for i, r in enumerate(recipients))
        )
        retry = [o for o in outcomes if o[0] == "retry"]
        if retry:
            # The ones already sent are recorded: the next attempt does not send them again.
            raise TransientDeliveryError(
                f"{len(retry)} of {len(recipients)} recipient(s) deferred, e.g. "
                f"{retry[0][1]}: {retry[0][2]}"
            )
        counts = {kind: sum(1 for o in outcomes if o[0] == kind)
                  for kind in ("sent", "failed", "skipped")}
        failures = [{"email": email, "kind": kind, "reason": reason}
                    for kind, email, reason in outcomes if kind != "sent"]
        await job.updateProgress(100)
        return {"step": "batch", "batch": data.get("batch"), **counts,
                "failures": failures[:MAX_LISTED_FAILURES]}

    async def newsletter_summary(data: Any, job: Any) -> dict[str, Any]:
        values = await job.getChildrenValues()
        summary: dict[str, Any] = {"step": "summary", "campaign": (data or {}).get("campaign"),
                                   "sent": 0, "failed": 0, "skipped": 0, "batches": 0,
                                   "failed_batches": 0, "recipients": None, "failures": []}
        failures: list[Any] = summary["failures"]
        for value in values.values():
            if not isinstance(value, dict):
                continue
            if value.get("step") == "gate":
                summary["recipients"] = value.get("recipients")
            elif value.get("step") == "batch":
                summary["batches"] += 1
                for kind in ("sent", "failed", "skipped"):
                    summary[kind] += int(value.get(kind, 0))
                room = MAX_LISTED_FAILURES - len(failures)
                failures.extend(value.get("failures", [])[:max(0, room)])
        redis: aioredis.Redis = job.queue.client
        failed_children = await redis.hgetall(failed_children_key(job))
        for child_key, reason in failed_children.items():
            summary["failed_batches"] += 1
            raw = await redis.hget(child_key, "data")
            lost = len(json.loads(raw).get("recipients", [])) if raw else 0
            summary["failed"] += lost
            if len(failures) < MAX_LISTED_FAILURES:
                failures.append({"batch": child_key, "kind": "failed", "reason": reason})
        await job.log(f"newsletter {summary['campaign']!r}: {summary['sent']} sent, "
                      f"{summary['failed']} failed, {summary['skipped']} skipped")
        return summary

    return {
        "newsletter-gate": newsletter_gate,
        "newsletter-batch": newsletter_batch,
        "newsletter-summary": newsletter_summary,
    }
