"""The job handlers that run the four e-mail workflows (the seed's createEmailFlow,
createNewsletterFlow, createConditionalFlow, createRetryFlow) and the seed's workflow example,
gathered with the built-in e-mail handlers; the workflows' builders, which add the flows, are
mailqueue/mail/flow_builders.py.

In a BullMQ flow a parent runs after its children, so a chain "A then B then C" is the tree
C(parent) <- B <- A(leaf), and each step reads what the step below returned with
`job.getChildrenValues()`. Every step returns a dict with a `step` key naming what it is.

    email:       send-rendered <- render-email <- validate-email
    newsletter:  newsletter-summary <- newsletter-gate, newsletter-batch x N (100 each)
                 (mailqueue/mail/newsletter_steps.py)
    conditional: conditional-send <- check-condition
    retry:       retry-summary <- fallback-send <- retry-send
    the seed's:  email-workflow <- validate-email, prepare-template <- send-welcome
                 (mailqueue/mail/workflow.py)

`create_flow_handlers(settings)` gives the built-in e-mail handlers *and* these, sharing one
SMTP pool, so one worker on the e-mail queue serves every job of every flow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from bullmq.custom_errors import UnrecoverableError

from mailqueue.errors import MailQueueError
from mailqueue.mail.errors import InvalidMailDataError, TemplateNotFoundError
from mailqueue.mail.flow_conditions import check_conditions_shape, evaluate_conditions
from mailqueue.mail.flow_steps import child_value, failed_children_key, mail_step
from mailqueue.mail.handlers import (
    EmailHandlers,
    Handler,
    MailService,
    create_email_handlers,
)
from mailqueue.mail.jobdata import normalize_mail_data
from mailqueue.mail.message import parse_address_list
from mailqueue.mail.newsletter_steps import newsletter_steps
from mailqueue.mail.templates import RenderedMail
from mailqueue.mail.transport import SmtpTransport
from mailqueue.mail.workflow import workflow_steps
from mailqueue.settings import Settings

_ADDRESS_FIELDS = ("to", "cc", "bcc", "reply_to")
# Options validate-email passes on to send-rendered as they are (checked when it builds).
_PASSED_OPTIONS = ("from", "headers", "attachments", "unsubscribe_url", "subject", "in_reply_to",
                   "references")
# The retry and conditional flows' own fields: not the message's, so not passed to send-email.
_CONTROL_FIELDS = frozenset({"fallback_smtp_url", "admin", "conditions", "context", "not_after"})


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

        @mail_step
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

        @mail_step
        async def render_email(data: dict[str, Any], job: Any) -> dict[str, Any]:
            checked = await child_value(job, "validate")
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

        @mail_step
        async def send_rendered(data: dict[str, Any], job: Any) -> dict[str, Any]:
            rendered = await child_value(job, "render")
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
            decision = await child_value(job, "check")
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
            primary = await child_value(job, "primary")
            if primary is not None:
                return {"step": "fallback", "path": "primary", "primary_error": None,
                        "result": primary}
            redis: aioredis.Redis = job.queue.client
            failed: dict[Any, Any] = await redis.hgetall(failed_children_key(job))
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
            outcome = await child_value(job, "fallback")
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
            **newsletter_steps(service),
            "check-condition": check_condition,
            "conditional-send": conditional_send,
            "retry-send": retry_send,
            "fallback-send": fallback_send,
            "retry-summary": retry_summary,
            **{name: mail_step(step) for name, step in workflow_steps(service).items()},
        }


def _without_control(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    return {k: v for k, v in data.items() if k not in _CONTROL_FIELDS}


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
