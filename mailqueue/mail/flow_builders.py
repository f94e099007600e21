"""The four ready-made e-mail workflows (the seed's createEmailFlow, createNewsletterFlow,
createConditionalFlow, createRetryFlow): each builds one BullMQ flow and adds it;
mailqueue/mail/flow_handlers.py holds the handlers that run their steps (the trees are drawn
there).

They take what adds flows and jobs as structural types (`FlowAdder`, `JobAdder`), which
`mailqueue.flows.FlowManager` and `mailqueue.queues.QueueManager` are: the mail package
stays below the managers, which call these (FlowManager.create_email_flow...). A builder
answers what the FlowAdder's add_flow answered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypedDict, TypeVar

from mailqueue.errors import MailQueueError
from mailqueue.keys import Keys
from mailqueue.mail.flow_conditions import check_conditions_shape
from mailqueue.mail.message import parse_address

# What add_flow answers: {flow_id, queue, job_id, tree}, the tree's nodes {id, children...}.
Added = TypeVar("Added", bound=Mapping[str, Any])
Added_co = TypeVar("Added_co", bound=Mapping[str, Any], covariant=True)


class FlowAdder(Protocol[Added_co]):
    prefix: str

    async def add_flow(self, definition: Mapping[str, Any]) -> Added_co: ...


class JobAdder(Protocol):
    async def add_jobs(self, queue: str, jobs: list[dict[str, Any]]) -> Any: ...

    async def get_queue(self, name: str) -> Any: ...

    async def promote_job(self, queue: str, job_id: str) -> None: ...


DEFAULT_BATCH_SIZE = 100
# Batches added per Redis round trip (one MULTI pipeline each): 10 x 100 recipients.
DEFAULT_BATCHES_PER_CALL = 10
# The newsletter's gate child holds the summary back until every batch is enqueued; it is
# promoted at once when the builder ends. Should the builder die half-way, the gate opens
# by itself after this long and the summary reports what was enqueued.
GATE_HOLD_MS = 24 * 3600 * 1000


class NewsletterFlow(TypedDict):
    """What create_newsletter_flow answers: the flow, its root, and what it enqueued."""

    flow_id: str
    queue: str
    job_id: str
    batches: int
    recipients: int


# --- builders --------------------------------------------------------------------------------


def _mail_data(template: str, to: Any, variables: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(template, str) or not template:
        raise MailQueueError(f"template must be a template name, not {template!r}")
    if to is None or to == [] or to == "":
        raise MailQueueError("'to' is required: an address, or a list of them")
    return {**variables, "template": template, "to": to}


async def create_email_flow(
    flows: FlowAdder[Added], template: str, to: Any, *, queue: str = "emails",
    opts: Mapping[str, Any] | None = None, **variables: Any,
) -> Added:
    """validate-email -> render-email -> send-rendered, three jobs; returns add_flow's answer.

    A failed step fails the steps after it (failParentOnFailure), so the flow's root shows
    why nothing was sent.
    """
    data = _mail_data(template, to, variables)
    step_opts = {**(opts or {}), "failParentOnFailure": True}
    return await flows.add_flow({
        "name": "send-rendered", "queueName": queue, "data": {"template": template},
        "opts": dict(opts or {}),
        "children": [{
            "name": "render-email", "queueName": queue, "data": {"template": template},
            "opts": step_opts,
            "children": [{
                "name": "validate-email", "queueName": queue, "data": data, "opts": step_opts,
            }],
        }],
    })


async def create_conditional_flow(
    flows: FlowAdder[Added], template: str, to: Any, *,
    conditions: list[Mapping[str, Any]] | None = None,
    context: Mapping[str, Any] | None = None, not_after: int | None = None,
    queue: str = "emails", **variables: Any,
) -> Added:
    """check-condition, then conditional-send sends or skips, recording the reason.

    `conditions`: [{"field": "user.plan", "equals": "pro"}, {"field": "opt_in",
    "exists": True}, {"field": "country", "in": ["FR", "BE"]}, {"field": "x",
    "not_equals": 0}] checked against `context`; `not_after` (ms since the epoch): skip when
    the check runs later than that (a reminder that would arrive too late).
    """
    data = _mail_data(template, to, variables)
    checks = list(conditions or [])
    check_conditions_shape(checks)
    check = {"conditions": checks, "context": dict(context or {}), "not_after": not_after}
    return await flows.add_flow({
        "name": "conditional-send", "queueName": queue, "data": data,
        "children": [{
            "name": "check-condition", "queueName": queue, "data": check,
            "opts": {"failParentOnFailure": True},
        }],
    })


async def create_retry_flow(
    flows: FlowAdder[Added], template: str, to: Any, *, attempts: int = 5,
    backoff: Mapping[str, Any] | None = None, fallback_smtp_url: str | None = None,
    admin: str | None = None, queue: str = "emails", **variables: Any,
) -> Added:
    """retry-send (transient failures back off), then fallback-send, then retry-summary.

    When retry-send fails for good (a 5xx, or its attempts are used up), fallback-send sends
    the message through `fallback_smtp_url`, or else tells `admin` it could not be sent.
    retry-summary records which path delivered: primary, fallback-transport or
    admin-notification.
    """
    if not fallback_smtp_url and not admin:
        raise MailQueueError("a retry flow needs fallback_smtp_url or admin (or both)")
    if admin:
        parse_address(admin, "admin")
    data = _mail_data(template, to, variables)
    fallback = {**data, "fallback_smtp_url": fallback_smtp_url, "admin": admin}
    return await flows.add_flow({
        "name": "retry-summary", "queueName": queue,
        "data": {"template": template, "to": to},
        "children": [{
            "name": "fallback-send", "queueName": queue, "data": fallback,
            "opts": {"failParentOnFailure": True},
            "children": [{
                "name": "retry-send", "queueName": queue, "data": data,
                "opts": {
                    "attempts": attempts,
                    "backoff": dict(backoff or {"type": "exponential", "delay": 1000}),
                    "ignoreDependencyOnFailure": True,
                },
            }],
        }],
    })


async def create_newsletter_flow(
    flows: FlowAdder[Mapping[str, Any]], queues: JobAdder, campaign: Mapping[str, Any],
    recipients: Iterable[Any], *, queue: str = "emails", batch_size: int = DEFAULT_BATCH_SIZE,
    batches_per_call: int = DEFAULT_BATCHES_PER_CALL,
) -> NewsletterFlow:
    """One newsletter-summary parent per campaign, its recipients in newsletter-batch children.

    `campaign`: {"campaign": title, "articles": [...], "unsubscribe_url": "...{email}...",
    other template variables}. `recipients`: any iterable (a generator reading a file or a
    cursor is fine) of addresses or {"email", "name"}; it is read once, in step with the
    enqueueing, so the list is never held in memory. Each Redis call adds
    `batches_per_call` batches. Returns {flow_id, queue, job_id, batches, recipients}.
    """
    if batch_size < 1 or batches_per_call < 1:
        raise MailQueueError("batch_size and batches_per_call must be >= 1")
    title = campaign.get("campaign") or campaign.get("name")
    if not isinstance(title, str) or not title.strip():
        raise MailQueueError("campaign needs a 'campaign' (or 'name'): the newsletter's title")
    variables = {k: v for k, v in campaign.items() if k != "name"}
    variables["campaign"] = title
    added = await flows.add_flow({
        "name": "newsletter-summary", "queueName": queue, "data": variables,
        "children": [{
            "name": "newsletter-gate", "queueName": queue, "data": {},
            "opts": {"delay": GATE_HOLD_MS},
        }],
    })
    parent_id = str(added["job_id"])
    [gate] = added["tree"]["children"]
    parent = {"id": parent_id, "queue": Keys(flows.prefix, queue).qualified}
    batch_opts = {"parent": parent, "ignoreDependencyOnFailure": True}

    total = batches = 0
    pending: list[dict[str, Any]] = []
    current: list[Any] = []

    async def flush() -> None:
        if pending:
            await queues.add_jobs(queue, pending)
            pending.clear()

    for recipient in recipients:
        current.append(recipient)
        if len(current) == batch_size:
            pending.append({"name": "newsletter-batch",
                            "data": {"batch": batches, "recipients": current},
                            "opts": batch_opts})
            batches += 1
            total += len(current)
            current = []
            if len(pending) == batches_per_call:
                await flush()
    if current:
        pending.append({"name": "newsletter-batch",
                        "data": {"batch": batches, "recipients": current}, "opts": batch_opts})
        batches += 1
        total += len(current)
    await flush()
    q = await queues.get_queue(queue)
    gate_job = await q.getJob(gate["id"])
    if gate_job is not None:
        await gate_job.updateData({"batches": batches, "recipients": total})
    await queues.promote_job(queue, gate["id"])
    return {"flow_id": added["flow_id"], "queue": queue, "job_id": parent_id,
            "batches": batches, "recipients": total}

