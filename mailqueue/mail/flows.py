"""The job handlers that run the four e-mail workflows (the seed's createEmailFlow,
createNewsletterFlow, createConditionalFlow, createRetryFlow); their builders, which add
the flows, are in mailqueue/mail/flow_builders.py.

In a BullMQ flow a parent runs after its children, so a chain "A then B then C" is the tree
C(parent) <- B <- A(leaf), and each step reads what the step below returned with
`job.getChildrenValues()`. Every step returns a dict with a `step` key naming what it is.

    email:       send-rendered <- render-email <- validate-email
    newsletter:  newsletter-summary <- newsletter-gate, newsletter-batch x N (100 each)
    conditional: conditional-send <- check-condition
    retry:       retry-summary <- fallback-send <- retry-send
    the seed's:  email-workflow <- validate-email, prepare-template <- send-welcome
                 (mailqueue/mail/workflow.py)

`create_flow_handlers(settings)` gives the built-in e-mail handlers *and* these, sharing one
SMTP pool, so one worker on the e-mail queue serves every job of every flow.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis
from bullmq.custom_errors import UnrecoverableError

from mailqueue.errors import MailQueueError
from mailqueue.mail.errors import (
    InvalidAddressError,
    InvalidMailDataError,
    PermanentMailError,
    PutBackError,
    TemplateNotFoundError,
    TransientDeliveryError,
    TransientMailError,
)
from mailqueue.mail.flow_builders import check_conditions_shape
from mailqueue.mail.handlers import (
    EmailHandlers,
    Handler,
    MailService,
    create_email_handlers,
)
from mailqueue.mail.jobdata import normalize_mail_data, snake_case
from mailqueue.mail.message import parse_address, parse_address_list
from mailqueue.mail.sending import put_back
from mailqueue.mail.templates import RenderedMail
from mailqueue.mail.transport import SmtpTransport
from mailqueue.mail.workflow import workflow_steps
from mailqueue.settings import Settings

MAX_LISTED_FAILURES = 20
BATCH_CONCURRENCY = 5  # sends in flight per batch job, like the SMTP pool's default size
_ADDRESS_FIELDS = ("to", "cc", "bcc", "reply_to")
# Options validate-email passes on to send-rendered as they are (checked when it builds).
_PER_RECIPIENT = frozenset({"template", "unsubscribe_url", "to", "cc", "bcc"})
_PASSED_OPTIONS = ("from", "headers", "attachments", "unsubscribe_url", "subject", "in_reply_to",
                   "references")
_CONTROL_FIELDS = frozenset({"fallback_smtp_url", "admin", "conditions", "context", "not_after"})


# --- handlers --------------------------------------------------------------------------------


def _job_key(job: Any) -> str:
    return f"{job.queue.prefix}:{job.queue.name}:{job.id}"


async def _child_value(job: Any, step: str) -> dict[str, Any] | None:
    values = await job.getChildrenValues()
    for value in values.values():
        if isinstance(value, dict) and value.get("step") == step:
            return value
    return None


def _mail_step(fn: Callable[[Any, Any], Awaitable[dict[str, Any]]]) -> Handler:
    """Permanent mail errors fail the job at once (UnrecoverableError); others are retried."""

    async def handler(data: Any, job: Any) -> dict[str, Any]:
        try:
            if not isinstance(data, dict):
                raise InvalidMailDataError("job data must be an object")
            return await fn(data, job)
        except PutBackError as exc:
            await put_back(job, exc)  # sending now, or SMTP down: no attempt spent
        except PermanentMailError as exc:
            await job.log(f"permanent failure, not retried: {exc}")
            raise UnrecoverableError(str(exc)) from exc

    handler.__name__ = fn.__name__
    return handler


@dataclass(frozen=True, slots=True)
class _MessageKey:
    """What MailService.build needs of a job to derive a Message-ID (queue and id)."""

    queue: Any
    id: str


def _lookup(context: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    value: Any = context
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def evaluate_conditions(check: Mapping[str, Any], now_ms: int | None = None) -> dict[str, Any]:
    """{send, reason} for a check-condition job's data: the first unmet condition is the reason."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    not_after = check.get("not_after")
    if not_after is not None and now_ms > int(not_after):
        late = (now_ms - int(not_after)) / 1000
        return {"send": False, "reason": f"too late: checked {late:.1f} s after not_after"}
    conditions = check.get("conditions") or []
    context = check.get("context") or {}
    for condition in conditions:
        field = condition["field"]
        found, value = _lookup(context, field)
        if "exists" in condition:
            if found != bool(condition["exists"]):
                return {"send": False,
                        "reason": f"{field} is {'missing' if not found else 'present'}"}
        elif not found:
            return {"send": False, "reason": f"{field} is missing"}
        elif "equals" in condition and value != condition["equals"]:
            return {"send": False, "reason": f"{field} is {value!r}, not {condition['equals']!r}"}
        elif "not_equals" in condition and value == condition["not_equals"]:
            return {"send": False, "reason": f"{field} is {value!r}"}
        elif "in" in condition and value not in condition["in"]:
            return {"send": False,
                    "reason": f"{field} is {value!r}, not one of {condition['in']!r}"}
    return {"send": True, "reason": f"all {len(conditions)} condition(s) met"}


class MailHandlers(EmailHandlers):
    """The built-in e-mail handlers and the flow handlers, sharing one SMTP pool."""

    def __init__(self, email: EmailHandlers) -> None:
        super().__init__(email.service, dict(email))
        # A second transport per fallback SMTP URL, built on first use.
        self._fallbacks: dict[str, tuple[EmailHandlers, SmtpTransport]] = {}
        self.update(self._flow_handlers())

    async def close(self) -> None:
        fallbacks, self._fallbacks = self._fallbacks, {}
        for _handlers, transport in fallbacks.values():
            await transport.close()
        await super().close()

    def _fallback(self, url: str) -> EmailHandlers:
        if url not in self._fallbacks:
            service = self.service
            transport = SmtpTransport(url)
            handlers = create_email_handlers(
                service.settings, transport=transport, redis=service.redis,
                template_dir=service.renderer.template_dir,
            )
            # The primary relay's permanent refusal put the address on the suppression list
            # as a bounce; the fallback relay is there to try it all the same (an
            # unsubscribe or an operator's entry still stops it).
            handlers.service.ignored_suppressions = frozenset({"bounce"})
            self._fallbacks[url] = (handlers, transport)
        return self._fallbacks[url][0]

    def _flow_handlers(self) -> dict[str, Handler]:
        service: MailService = self.service
        send_email = self["send-email"]
        send_notification = self["send-notification"]

        @_mail_step
        async def validate_email(data: dict[str, Any], job: Any) -> dict[str, Any]:
            fields = normalize_mail_data(data)
            template = fields.options.get("template")
            # The seed's workflow validates `{to}` alone: no template, addresses only.
            if template is not None and (not isinstance(template, str)
                                         or not service.renderer.exists(template)):
                known = ", ".join(service.renderer.list_templates())
                raise TemplateNotFoundError(f"no e-mail template {template!r}; templates: {known}")
            envelope: dict[str, Any] = {}
            for field in _ADDRESS_FIELDS:
                addresses = parse_address_list(fields.options.get(field), fields.name_of(field))
                if addresses:
                    envelope[field] = [{"email": a.email, "name": a.name} for a in addresses]
            if "to" not in envelope:
                raise InvalidMailDataError(
                    f"{fields.quoted('to')} is required: an address, or a list of them"
                )
            for field in _PASSED_OPTIONS:
                if fields.options.get(field) is not None:
                    envelope[field] = fields.options[field]
            to = [a["email"] for a in envelope["to"]]
            if template is None:
                await job.log(f"valid: {len(to)} recipient(s)")
                return {"step": "validate", "valid": True, "template": None, "to": to,
                        "envelope": envelope}
            variables = fields.template_variables(template)
            await job.log(f"valid: template {template!r} to {len(to)} recipient(s)")
            return {"step": "validate", "valid": True, "template": template, "to": to,
                    "envelope": envelope, "variables": variables}

        @_mail_step
        async def render_email(data: dict[str, Any], job: Any) -> dict[str, Any]:
            checked = await _child_value(job, "validate")
            if checked is None or not checked.get("template"):
                raise InvalidMailDataError(
                    "render-email found no validate-email result with a template"
                )
            mail = service.renderer.render(checked["template"], checked["variables"])
            subject = checked["envelope"].get("subject")
            if isinstance(subject, str) and subject.strip():
                mail = RenderedMail(" ".join(subject.split()), mail.html, mail.text)
            await job.log(f"rendered {checked['template']!r}: {mail.subject!r}")
            return {"step": "render", "template": checked["template"],
                    "envelope": checked["envelope"], "subject": mail.subject,
                    "html": mail.html, "text": mail.text}

        @_mail_step
        async def send_rendered(data: dict[str, Any], job: Any) -> dict[str, Any]:
            rendered = await _child_value(job, "render")
            if rendered is None:
                raise InvalidMailDataError("send-rendered found no render-email result")
            envelope = rendered["envelope"]
            mail = RenderedMail(subject=rendered["subject"], html=rendered["html"],
                                text=rendered["text"])
            message = service.build(envelope, job, mail, envelope.get("unsubscribe_url"))
            # The template's delivery mode (settings.json) holds in a flow too.
            mode = service.delivery_mode({}, rendered.get("template"))
            result = await service.deliver(job, message, mode)
            return {"step": "send", "subject": mail.subject, **result}

        async def newsletter_gate(data: Any, job: Any) -> dict[str, Any]:
            return {"step": "gate", **(data if isinstance(data, dict) else {})}

        @_mail_step
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
            failed_children = await redis.hgetall(f"{_job_key(job)}:failed")
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

        async def check_condition(data: Any, job: Any) -> dict[str, Any]:
            if not isinstance(data, dict):
                raise UnrecoverableError("check-condition: job data must be an object")
            try:
                check_conditions_shape(list(data.get("conditions") or []))
            except MailQueueError as exc:
                raise UnrecoverableError(str(exc)) from exc
            decision = evaluate_conditions(data)
            await job.log(f"{'send' if decision['send'] else 'skip'}: {decision['reason']}")
            return {"step": "check", **decision}

        async def conditional_send(data: Any, job: Any) -> dict[str, Any]:
            decision = await _child_value(job, "check")
            if decision is None:
                raise UnrecoverableError("conditional-send found no check-condition result")
            if not decision["send"]:
                await job.log(f"skipped: {decision['reason']}")
                return {"step": "conditional", "sent": False, "skipped": True,
                        "reason": decision["reason"]}
            result = await send_email(_without_control(data), job)
            return {"step": "conditional", "sent": True, "skipped": False,
                    "reason": decision["reason"], **result}

        async def retry_send(data: Any, job: Any) -> dict[str, Any]:
            result = await send_email(_without_control(data), job)
            return {"step": "primary", **result}

        async def fallback_send(data: Any, job: Any) -> dict[str, Any]:
            primary = await _child_value(job, "primary")
            if primary is not None:
                return {"step": "fallback", "path": "primary", "primary_error": None,
                        "result": primary}
            redis: aioredis.Redis = job.queue.client
            failed: dict[Any, Any] = await redis.hgetall(f"{_job_key(job)}:failed")
            child_key, reason = next(iter(failed.items()), (None, "unknown failure"))
            reason = str(reason)
            primary_attempts = None
            if child_key is not None:
                made = await redis.hmget(child_key, ["atm", "attemptsMade"])
                primary_attempts = int(made[0] or made[1] or 0)
            await job.log(f"primary path failed ({reason}); using the fallback")
            url, admin = data.get("fallback_smtp_url"), data.get("admin")
            if url:
                result = await self._fallback(url)["send-email"](_without_control(data), job)
                path = "fallback-transport"
            elif admin:
                notice = {
                    "to": admin,
                    "title": f"Could not deliver {data.get('template')!r} to {data.get('to')}",
                    "message": f"The message failed after {primary_attempts} attempt(s): "
                               f"{reason}",
                }
                result = await send_notification(notice, job)
                path = "admin-notification"
            else:
                raise UnrecoverableError(f"primary path failed ({reason}) and no fallback is set")
            return {"step": "fallback", "path": path, "primary_error": reason,
                    "primary_attempts": primary_attempts, "result": result}

        async def retry_summary(data: Any, job: Any) -> dict[str, Any]:
            outcome = await _child_value(job, "fallback")
            if outcome is None:
                raise UnrecoverableError("retry-summary found no fallback-send result")
            result = outcome.get("result") or {}
            return {"step": "retry-summary", "delivered_by": outcome["path"],
                    "primary_error": outcome.get("primary_error"),
                    "primary_attempts": outcome.get("primary_attempts"),
                    "message_id": result.get("message_id"),
                    "accepted": result.get("accepted", [])}

        return {
            "validate-email": validate_email,
            "render-email": render_email,
            "send-rendered": send_rendered,
            "newsletter-gate": newsletter_gate,
            "newsletter-batch": newsletter_batch,
            "newsletter-summary": newsletter_summary,
            "check-condition": check_condition,
            "conditional-send": conditional_send,
            "retry-send": retry_send,
            "fallback-send": fallback_send,
            "retry-summary": retry_summary,
            **{name: _mail_step(step) for name, step in workflow_steps(service).items()},
        }


def _without_control(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    return {k: v for k, v in data.items() if k not in _CONTROL_FIELDS}


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


def create_flow_handlers(
    settings: Settings | None = None,
    *,
    transport: SmtpTransport | None = None,
    template_dir: str | Path | None = None,
    redis: aioredis.Redis | None = None,
) -> MailHandlers:
    """The built-in e-mail handlers plus every flow step's handler, sharing one SMTP pool.

    Same arguments as `create_email_handlers`; `close()` closes the pool(s).
    """
    return MailHandlers(create_email_handlers(
        settings, transport=transport, template_dir=template_dir, redis=redis,
    ))
