"""The steps of the Node version's workflow example, so that it runs unchanged:

    email-workflow {type}            <- validate-email {to}
                                     <- prepare-template {template} <- send-welcome {to}

all on one queue, served by the built-in handlers. `validate-email` with no template is in
flow_handlers.py (it checks the addresses); here are the two steps that only this workflow has:
`prepare-template` checks the template exists and reports what it needs and what its
children sent; `email-workflow`, a parent, sums up its children. Both read their children's
results, which BullMQ runs first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mailqueue.mail.errors import TemplateNotFoundError
from mailqueue.mail.jobdata import REQUIRED_VARIABLES, normalize_mail_data

if TYPE_CHECKING:
    from mailqueue.mail.handlers import MailService

Step = Callable[[dict[str, Any], Any], Awaitable[dict[str, Any]]]


def _sent(values: dict[str, Any]) -> list[str]:
    """Message-IDs sent by these children, or below them."""
    sent: list[str] = []
    for value in values.values():
        if not isinstance(value, dict):
            continue
        if isinstance(value.get("message_id"), str):
            sent.append(value["message_id"])
        sent.extend(m for m in value.get("sent") or [] if isinstance(m, str))
    return sent


def workflow_steps(service: MailService) -> dict[str, Step]:
    """`prepare-template` and `email-workflow`; a PermanentMailError fails the job at once."""

    async def prepare_template(data: dict[str, Any], job: Any) -> dict[str, Any]:
        fields = normalize_mail_data(data)
        template = fields.options.get("template")
        if not isinstance(template, str) or not service.renderer.exists(template):
            known = ", ".join(service.renderer.list_templates())
            raise TemplateNotFoundError(
                f"prepare-template: no e-mail template {template!r} (give "
                f"{fields.quoted('template')}); templates: {known}"
            )
        children = await job.getChildrenValues()
        required = [fields.name_of(n) for n in REQUIRED_VARIABLES.get(template, ())]
        await job.log(f"template {template!r} ready; {len(children)} child job(s) done")
        return {"step": "prepare", "template": template, "required": required,
                "children": len(children), "sent": _sent(children)}

    async def email_workflow(data: dict[str, Any], job: Any) -> dict[str, Any]:
        children = await job.getChildrenValues()
        steps = sorted(str(v["step"]) for v in children.values()
                       if isinstance(v, dict) and v.get("step"))
        sent = _sent(children)
        await job.log(f"workflow done: {len(children)} step(s), {len(sent)} message(s) sent")
        return {"step": "workflow", "type": data.get("type"), "children": len(children),
                "steps": steps, "sent": sent}

    return {"prepare-template": prepare_template, "email-workflow": email_workflow}
