"""What every e-mail flow step's handler shares: a permanent mail error fails the job at once,
the result of the step below, the children that failed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bullmq.custom_errors import UnrecoverableError

from mailqueue.keys import Keys
from mailqueue.mail.errors import InvalidMailDataError, PermanentMailError, PutBackError
from mailqueue.mail.handlers import Handler
from mailqueue.mail.sending import put_back


def failed_children_key(job: Any) -> str:
    """The hash of a parent's children that failed and let it run all the same
    (ignoreDependencyOnFailure): child key -> failed reason."""
    return f"{Keys(job.queue.prefix, job.queue.name).job(str(job.id))}:failed"


async def child_value(job: Any, step: str) -> dict[str, Any] | None:
    """The result of the child that returned {"step": step, ...}, if one did."""
    values = await job.getChildrenValues()
    for value in values.values():
        if isinstance(value, dict) and value.get("step") == step:
            return value
    return None


def mail_step(fn: Callable[[Any, Any], Awaitable[dict[str, Any]]]) -> Handler:
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
