"""Checking job options before BullMQ sees them: bullmq accepts nonsense silently."""

from __future__ import annotations

import re
from typing import Any

from mailqueue.errors import InvalidJobOptionsError, MailQueueError

_QUEUE_NAME = re.compile(r"^[^\s:][^:]{0,199}$")
MAX_PRIORITY = 2_097_152

KNOWN_OPTIONS = {
    "attempts", "backoff", "delay", "priority", "jobId", "lifo", "removeOnComplete",
    "removeOnFail", "timestamp", "deduplication", "parent", "failParentOnFailure",
    "ignoreDependencyOnFailure", "removeDependencyOnFailure", "continueParentOnFailure",
    "keepLogs", "stackTraceLimit", "sizeLimit", "repeat",
}


def validate_queue_name(name: object) -> str:
    if not isinstance(name, str) or not _QUEUE_NAME.match(name) or name != name.strip():
        raise MailQueueError(
            f"Bad queue name {name!r}: 1-200 characters, no ':' and no surrounding spaces"
        )
    return name


def _non_negative_int(options: dict[str, Any], key: str, minimum: int = 0) -> None:
    value = options.get(key)
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidJobOptionsError(f"{key} must be an integer >= {minimum}, not {value!r}")


def _keep_option(options: dict[str, Any], key: str) -> None:
    value = options.get(key)
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int) and value >= 0:
        return
    if isinstance(value, dict) and value and set(value) <= {"age", "count", "limit"} and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value.values()
    ):
        return
    raise InvalidJobOptionsError(
        f"{key} must be true/false, a count >= 0, or {{age, count, limit}}, not {value!r}"
    )


def validate_job_options(options: dict[str, Any]) -> dict[str, Any]:
    """Raise InvalidJobOptionsError naming the first bad option; return the options."""
    if not isinstance(options, dict):
        raise InvalidJobOptionsError(f"Job options must be a dict, not {type(options).__name__}")
    unknown = set(options) - KNOWN_OPTIONS
    if unknown:
        raise InvalidJobOptionsError(
            f"Unknown job option(s): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(KNOWN_OPTIONS))}"
        )
    _non_negative_int(options, "attempts", 1)
    _non_negative_int(options, "delay")
    _non_negative_int(options, "priority")
    _non_negative_int(options, "keepLogs")
    _non_negative_int(options, "stackTraceLimit")
    if (options.get("priority") or 0) > MAX_PRIORITY:
        raise InvalidJobOptionsError(f"priority must be <= {MAX_PRIORITY}")
    if options.get("lifo") is not None and not isinstance(options["lifo"], bool):
        raise InvalidJobOptionsError(f"lifo must be true or false, not {options['lifo']!r}")
    _non_negative_int(options, "timestamp")
    backoff = options.get("backoff")
    if backoff is not None:
        if isinstance(backoff, int) and not isinstance(backoff, bool):
            if backoff < 0:
                raise InvalidJobOptionsError("backoff must be >= 0 ms")
        elif isinstance(backoff, dict):
            unknown = set(backoff) - {"type", "delay"}
            if unknown:
                raise InvalidJobOptionsError(
                    f"backoff has unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                    "it takes type and delay"
                )
            if backoff.get("type") not in ("fixed", "exponential"):
                raise InvalidJobOptionsError(
                    f"backoff.type must be 'fixed' or 'exponential', not {backoff.get('type')!r}"
                )
            # bullmq's built-in strategies read `delay` with no default.
            delay = backoff.get("delay")
            if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
                raise InvalidJobOptionsError(f"backoff.delay must be ms >= 0, not {delay!r}")
        else:
            raise InvalidJobOptionsError(f"backoff must be ms or {{type, delay}}, not {backoff!r}")
    job_id = options.get("jobId")
    if job_id is not None:
        if not isinstance(job_id, str) or not job_id:
            raise InvalidJobOptionsError(f"jobId must be a non-empty string, not {job_id!r}")
        if _is_integer_text(job_id):
            # BullMQ's own ids are integers; a custom integer id could collide with them.
            # Same test as BullMQ for Node: `${parseInt(id, 10)}` === id.
            raise InvalidJobOptionsError(f"jobId {job_id!r} cannot be an integer")
        if ":" in job_id:
            raise InvalidJobOptionsError(f"jobId {job_id!r} cannot contain ':'")
    _keep_option(options, "removeOnComplete")
    _keep_option(options, "removeOnFail")
    return options


def _is_integer_text(text: str) -> bool:
    try:
        return str(int(text, 10)) == text
    except ValueError:
        return False


def merge_job_options(defaults: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Per-call options over defaults; a per-call backoff replaces the default whole."""
    return {**defaults, **options}


def whole_number(value: Any, what: str, low: int, high: int) -> int:
    """`value` (a number, or its text from a form) as an int within low..high; one line
    naming `what` when it is not one."""
    if isinstance(value, bool):
        raise MailQueueError(f"{what} must be a whole number")
    try:
        number = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise MailQueueError(f"{what} must be a whole number, not {value!r}") from None
    if isinstance(value, float) and value != number:
        raise MailQueueError(f"{what} must be a whole number, not {value!r}")
    if not low <= number <= high:
        raise MailQueueError(f"{what} must be within {low:,}..{high:,}")
    return number
