"""The seed's workflow example in Python: a parent job that waits for its children.

`validate-email` and `prepare-template` run first (in any order, on any worker); the parent
`email-workflow` runs once both are done and sees their results.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bullmq import Job

from mailqueue.manager import MailManager

QUEUE = "email-processing"


async def validate_email(data: dict[str, Any], job: Job) -> dict[str, Any]:
    await job.updateProgress(100)
    return {"valid": "@" in data["to"], "to": data["to"]}


async def prepare_template(data: dict[str, Any], job: Job) -> dict[str, Any]:
    return {"template": data["template"], "prepared": True}


async def email_workflow(data: dict[str, Any], job: Job) -> dict[str, Any]:
    children = await job.getChildrenValues()
    return {"steps": len(children), "all_ok": all(v for v in children.values())}


async def main() -> None:
    async with MailManager() as mail:
        await mail.create_queue(QUEUE)
        mail.start_worker(QUEUE, {
            "validate-email": validate_email,
            "prepare-template": prepare_template,
            "email-workflow": email_workflow,
        })
        finished = asyncio.Event()
        flow = await mail.add_flow({
            "name": "email-workflow",
            "queueName": QUEUE,
            "data": {"type": "workflow"},
            "children": [
                {"name": "validate-email", "queueName": QUEUE,
                 "data": {"to": "test@example.com"}},
                {"name": "prepare-template", "queueName": QUEUE,
                 "data": {"template": "welcome"}},
            ],
        })
        print(f"Workflow created: {flow['flow_id']}")

        def on_completed(event: dict[str, Any]) -> None:
            if event["jobId"] == flow["job_id"]:
                finished.set()

        mail.on_event(QUEUE, "completed", on_completed)
        for _ in range(300):  # the parent may finish before the listener attaches
            tree = await mail.get_flow(QUEUE, flow["job_id"])
            if tree["state"] == "completed" or finished.is_set():
                break
            await asyncio.sleep(0.1)
        tree = await mail.get_flow(QUEUE, flow["job_id"])
        print(f"{tree['name']}: {tree['state']} -> {tree['return_value']}")
        for child in tree["children"]:
            print(f"  {child['name']}: {child['state']} -> {child['return_value']}")


if __name__ == "__main__":
    asyncio.run(main())
