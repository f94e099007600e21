"""Checking a flow definition before it is added: each node's fields and options, with the
queue's default job options applied, every mistake named by where it is
("children[1].opts: ...")."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

from mailqueue.errors import InvalidFlowError, InvalidJobOptionsError, MailQueueError
from mailqueue.job_options import merge_job_options, validate_job_options, validate_queue_name
from mailqueue.keys import Keys

MAX_DEFINITION_DEPTH = 32

_NODE_KEYS = {"name", "queueName", "data", "opts", "children"}
_EXCLUSIVE_PARENT_OPTIONS = (
    "failParentOnFailure", "ignoreDependencyOnFailure", "removeDependencyOnFailure",
    "continueParentOnFailure",
)


class FlowJob(TypedDict):
    """One node of a checked definition, as bullmq's FlowProducer.add takes it."""

    name: str
    queueName: str
    data: Any
    opts: dict[str, Any]
    children: list[FlowJob]


def queue_names(node: FlowJob) -> set[str]:
    """Every queue a checked definition adds jobs to."""
    names = {node["queueName"]}
    for child in node["children"]:
        names |= queue_names(child)
    return names


def prepare_flow(
    definition: Any, prefix: str, default_job_options: dict[str, Any]
) -> FlowJob:
    """Check a definition {name, queueName, data, opts, children: [...]}, and return it with
    `default_job_options` under each node's opts; raises InvalidFlowError."""
    return _prepare(definition, "", 0, prefix, default_job_options)


def _prepare(
    node: Any, path: str, depth: int, prefix: str, default_job_options: dict[str, Any]
) -> FlowJob:
    """Check one node (and its children) and return it with default options applied."""

    def bad(field: str, problem: str) -> InvalidFlowError:
        where = f"{path}.{field}" if path and field else (path or field or "flow")
        return InvalidFlowError(f"{where}: {problem}")

    if not isinstance(node, Mapping):
        raise bad("", f"a flow node must be a mapping, not {type(node).__name__}")
    if depth > MAX_DEFINITION_DEPTH:
        raise bad("", f"flows nest at most {MAX_DEFINITION_DEPTH} levels deep")
    unknown = set(node) - _NODE_KEYS
    if unknown:
        raise bad(
            "", f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
            f"a node has {', '.join(sorted(_NODE_KEYS))}",
        )
    name = node.get("name")
    if not isinstance(name, str) or not name.strip():
        raise bad("name", f"a non-empty string is required, not {name!r}")
    try:
        queue = validate_queue_name(node.get("queueName"))
    except MailQueueError as exc:
        raise bad("queueName", str(exc)) from None
    data = node.get("data")
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise bad("data", f"must be JSON-serialisable: {exc}") from None
    opts = node.get("opts")
    opts = {} if opts is None else opts
    try:
        validate_job_options(opts)
    except InvalidJobOptionsError as exc:
        raise bad("opts", str(exc)) from None
    opts = dict(opts)
    if "parent" in opts:
        if depth > 0:
            raise bad("opts", "'parent' is set by the flow itself; only the root names one")
        opts["parent"] = _parent_option(opts["parent"], prefix, bad)
    if "repeat" in opts:
        raise bad("opts", "a flow job cannot repeat; schedule the flow's root instead")
    exclusive = [o for o in _EXCLUSIVE_PARENT_OPTIONS if opts.get(o)]
    if len(exclusive) > 1:
        raise bad("opts", f"these options cannot be used together: {', '.join(exclusive)}")
    children = node.get("children")
    children = [] if children is None else children
    if not isinstance(children, list):
        raise bad("children", f"must be a list, not {type(children).__name__}")
    where = f"{path}.children" if path else "children"
    return {
        "name": name,
        "queueName": queue,
        "data": data if data is not None else {},
        "opts": merge_job_options(default_job_options, opts),
        "children": [
            _prepare(child, f"{where}[{index}]", depth + 1, prefix, default_job_options)
            for index, child in enumerate(children)
        ],
    }


def _parent_option(
    parent: Any, prefix: str, bad: Callable[[str, str], InvalidFlowError]
) -> dict[str, str]:
    """The root's `parent` option: {id, queue}, queue qualified with the prefix if bare."""
    if not isinstance(parent, Mapping) or not isinstance(parent.get("queue"), str) \
            or not isinstance(parent.get("id"), str) or not parent.get("id"):
        raise bad("opts.parent", f"must be {{'id': str, 'queue': str}}, not {parent!r}")
    queue = parent["queue"]
    if ":" not in queue:  # a bare queue name; BullMQ wants "<prefix>:<queue>"
        try:
            validate_queue_name(queue)
        except MailQueueError as exc:
            raise bad("opts.parent.queue", str(exc)) from None
        queue = Keys(prefix, queue).qualified
    return {"id": parent["id"], "queue": queue}
