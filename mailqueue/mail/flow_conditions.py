"""The conditional flow's conditions: their shape, checked when the flow is built and when
its check-condition step runs, and their evaluation against the step's context."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TypedDict

from mailqueue.errors import MailQueueError


class Decision(TypedDict):
    """Whether conditional-send sends, and why (the first unmet condition, or all met)."""

    send: bool
    reason: str


def check_conditions_shape(conditions: list[Any]) -> None:
    """Raise MailQueueError unless each condition is {field, one of equals, not_equals, in,
    exists}."""
    for index, condition in enumerate(conditions):
        ops = set(condition) - {"field"} if isinstance(condition, Mapping) else set()
        if not isinstance(condition, Mapping) or not isinstance(condition.get("field"), str) \
                or len(ops) != 1 or not ops <= {"equals", "not_equals", "in", "exists"}:
            raise MailQueueError(
                f"conditions[{index}]: expected {{'field': 'a.b', one of equals, not_equals, "
                f"in, exists: value}}, not {condition!r}"
            )


def _lookup(context: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    value: Any = context
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def evaluate_conditions(check: Mapping[str, Any], now_ms: int | None = None) -> Decision:
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
