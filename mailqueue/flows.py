"""FlowManager: adds BullMQ flows (trees of dependent jobs) and reads them back from Redis.

bullmq for Python has no getFlow / getDependencies (docs/bullmq-notes.md #5), so a tree is read
from the keys BullMQ keeps for each parent job:

    <prefix>:<queue>:<id>:dependencies   set   child keys not yet processed
    <prefix>:<queue>:<id>:processed      hash  child key -> return value (JSON)
    <prefix>:<queue>:<id>:failed         hash  child key -> failed reason (ignoreDependency...)
    <prefix>:<queue>:<id>:unsuccessful   zset  child keys that failed (failParentOnFailure...)

and a child's own hash carries `parentKey` and `parent` ({"id", "queueKey"}). A child key is
`<prefix>:<queue>:<id>` where the prefix may itself hold ':' or be a `{tag}`: queue names
and job ids never hold ':', so a key is split from the right.

The predefined e-mail flows (the seed's createEmailFlow, createNewsletterFlow,
createConditionalFlow, createRetryFlow) belong to the mail issue: they are builders of
definitions for `add_flow`, and live with the e-mail handlers, not here.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from bullmq import FlowProducer

from mailqueue.cluster import bullmq_connection
from mailqueue.errors import (
    InvalidFlowError,
    InvalidJobOptionsError,
    JobNotFoundError,
    MailQueueError,
)
from mailqueue.job_options import merge_job_options, validate_job_options, validate_queue_name
from mailqueue.mail import flow_builders
from mailqueue.queues import QueueManager
from mailqueue.redis_memory import is_redis_full, redis_full_error

# Root flows added through add_flow, newest kept: score = timestamp, member "<queue>:<id>".
FLOW_INDEX_SUFFIX = "__mailqueue__:flows"
FLOW_INDEX_CAP = 5_000
MAX_DEFINITION_DEPTH = 32
MAX_TREE_NODES = 10_000
_PIPELINE_CHUNK = 500

_NODE_KEYS = {"name", "queueName", "data", "opts", "children"}
_EXCLUSIVE_PARENT_OPTIONS = (
    "failParentOnFailure", "ignoreDependencyOnFailure", "removeDependencyOnFailure",
    "continueParentOnFailure",
)
_JOB_FIELDS = (
    "name", "timestamp", "processedOn", "finishedOn", "atm", "attemptsMade", "failedReason",
    "returnvalue", "progress", "parentKey", "parent",
)
# The order of bullmq's getState script: sorted sets first, then the lists.
_ZSET_STATES = (
    ("completed", "completed"), ("failed", "failed"), ("delayed", "delayed"),
    ("prioritized", "prioritized"), ("waiting-children", "waiting-children"),
)
_LIST_STATES = (("active", "active"), ("wait", "waiting"), ("paused", "waiting"))


def split_job_key(key: str) -> tuple[str, str, str]:
    """`<prefix>:<queue>:<id>` -> (prefix, queue, id); the prefix may contain ':'."""
    parts = key.rsplit(":", 2)
    if len(parts) != 3 or not all(parts):
        raise MailQueueError(f"Not a BullMQ job key: {key!r}")
    return parts[0], parts[1], parts[2]


def parse_flow_id(flow_id: str) -> tuple[str, str]:
    """A flow id "<queue>:<job id>" (as add_flow returns it) -> (queue, job id)."""
    queue, sep, job_id = str(flow_id).partition(":")
    if not sep or not queue or not job_id or ":" in job_id:
        raise MailQueueError(f"Bad flow id {flow_id!r}: expected '<queue>:<job id>'")
    return queue, job_id


def _json_or_raw(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def _int_or_none(value: str | None) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def _queue_names(node: Mapping[str, Any]) -> set[str]:
    names = {str(node["queueName"])}
    for child in node["children"]:
        names |= _queue_names(child)
    return names


def _percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def _parent_ref(fields: Mapping[str, str | None]) -> dict[str, str] | None:
    """Where a job's parent lives, from its `parent` JSON or, failing that, `parentKey`."""
    raw = fields.get("parent")
    if raw:
        try:
            parent = json.loads(raw)
            queue_key, parent_id = parent.get("queueKey"), parent.get("id")
            if isinstance(queue_key, str) and parent_id is not None:
                return {"queue": queue_key.rsplit(":", 1)[-1], "id": str(parent_id)}
        except (ValueError, AttributeError):
            pass
    parent_key = fields.get("parentKey")
    if parent_key:
        try:
            _, queue, job_id = split_job_key(parent_key)
        except MailQueueError:
            return None
        return {"queue": queue, "id": job_id}
    return None


class _NodeRead:
    """What one pipelined read learnt about one job key."""

    __slots__ = ("counts", "exists", "fields", "key", "state")

    def __init__(self, key: str) -> None:
        self.key = key
        self.fields: dict[str, str | None] = {}
        self.exists = False
        self.state = "unknown"
        self.counts = {"pending": 0, "processed": 0, "failed": 0, "unsuccessful": 0}


class FlowManager:
    """Adds flows through one bullmq FlowProducer and reads flow trees from Redis."""

    def __init__(
        self,
        connection: dict[str, Any],
        client: aioredis.Redis,
        prefix: str,
        queues: QueueManager,
    ) -> None:
        self._connection = connection
        self._client = client
        self.prefix = prefix
        self._queues = queues
        self._producer: FlowProducer | None = None
        self._closed = False
        # Queues this manager added flow jobs to: QueueManager's discovery is cached for a
        # moment and would miss a queue that only just got its first (flow) job.
        self._flow_queues: set[str] = set()

    @property
    def index_key(self) -> str:
        return f"{self.prefix}:{FLOW_INDEX_SUFFIX}"

    def _producer_handle(self) -> FlowProducer:
        if self._closed:  # a producer made now would own a client nobody closes
            raise MailQueueError("The flow manager is closed")
        if self._producer is None:
            self._producer = FlowProducer(
                {"connection": bullmq_connection(self._connection), "prefix": self.prefix}
            )
        return self._producer

    async def close(self) -> None:
        self._closed = True
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.close()

    # --- adding ------------------------------------------------------------------------------

    async def add_flow(self, definition: Mapping[str, Any]) -> dict[str, Any]:
        """Add a flow {name, queueName, data, opts, children: [...]} atomically.

        Each node's opts go over the QueueManager's default job options. Returns the flow id
        ("<queue>:<root job id>", accepted by `get_flow_by_id`), the root's queue and id, and
        the tree as `get_flow` reads it.
        """
        prepared = self._prepare(definition, "", 0)
        try:
            tree = await self._producer_handle().add(prepared)
        except ValueError as exc:  # bullmq's own option checks
            raise InvalidFlowError(str(exc)) from None
        except Exception as exc:  # bullmq raises a bare Exception (e.g. missing parent)
            if is_redis_full(exc):  # one MULTI/EXEC: the whole flow or nothing
                raise await redis_full_error(
                    self._client, f"flow {prepared['name']!r} was not added"
                ) from None
            if getattr(exc, "code", None) is not None:  # the root's parent cannot take it
                raise InvalidFlowError(f"opts.parent: {exc}") from None
            raise MailQueueError(f"Cannot add flow {prepared['name']!r}: {exc}") from None
        if tree is None:
            raise MailQueueError("FlowManager is closing; the flow was not added")
        self._flow_queues.update(_queue_names(prepared))
        queue, job_id = prepared["queueName"], str(tree["job"].id)
        flow_id = f"{queue}:{job_id}"
        pipe = self._client.pipeline(transaction=False)
        pipe.zadd(self.index_key, {flow_id: int(time.time() * 1000)})
        pipe.zremrangebyrank(self.index_key, 0, -FLOW_INDEX_CAP - 1)
        await pipe.execute()
        return {
            "flow_id": flow_id, "queue": queue, "job_id": job_id,
            "tree": await self.get_flow(queue, job_id),
        }

    def _prepare(self, node: Any, path: str, depth: int) -> dict[str, Any]:
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
        queue = node.get("queueName")
        try:
            validate_queue_name(queue)
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
            opts["parent"] = self._parent_option(opts["parent"], bad)
        if "repeat" in opts:
            raise bad("opts", "a flow job cannot repeat; schedule the flow's root instead")
        exclusive = [o for o in _EXCLUSIVE_PARENT_OPTIONS if opts.get(o)]
        if len(exclusive) > 1:
            raise bad("opts", f"these options cannot be used together: {', '.join(exclusive)}")
        children = node.get("children")
        children = [] if children is None else children
        if not isinstance(children, list):
            raise bad("children", f"must be a list, not {type(children).__name__}")
        prefix = f"{path}.children" if path else "children"
        return {
            "name": name,
            "queueName": queue,
            "data": data if data is not None else {},
            "opts": merge_job_options(self._queues.default_job_options, opts),
            "children": [
                self._prepare(child, f"{prefix}[{index}]", depth + 1)
                for index, child in enumerate(children)
            ],
        }

    def _parent_option(
        self, parent: Any, bad: Callable[[str, str], InvalidFlowError]
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
            queue = f"{self.prefix}:{queue}"
        return {"id": parent["id"], "queue": queue}

    # --- reading -----------------------------------------------------------------------------

    async def get_flow_by_id(self, flow_id: str, max_depth: int = 10, max_children: int = 1000
                             ) -> dict[str, Any]:
        """The tree of a flow id as add_flow returned it ("<queue>:<job id>")."""
        queue, job_id = parse_flow_id(flow_id)
        return await self.get_flow(queue, job_id, max_depth, max_children)

    async def get_flow(
        self, queue: str, job_id: str, max_depth: int = 10, max_children: int = 1000
    ) -> dict[str, Any]:
        """The tree under `queue`/`job_id`, every node with its state, read level by level.

        Each level costs two pipelined round trips, whatever its width. A node whose children
        were left out (deeper than `max_depth`, more than `max_children`, or past
        MAX_TREE_NODES in all) says so with `truncated: True`; its counts stay exact.
        """
        validate_queue_name(queue)
        job_id = str(job_id)
        if not job_id or ":" in job_id:
            raise JobNotFoundError(f"No job {job_id!r} in queue {queue!r}")
        if max_depth < 0 or max_children < 0:
            raise MailQueueError("max_depth and max_children must be >= 0")
        root_key = f"{self.prefix}:{queue}:{job_id}"
        # Per node key: where its parent saw it (for children whose own hash was removed).
        seen_as: dict[str, tuple[str, Any]] = {}
        nodes: dict[str, dict[str, Any]] = {}
        level = [root_key]
        total = 1
        depth = 0
        root: dict[str, Any] | None = None
        while level:
            reads = await self._read_nodes(level)
            if depth == 0 and not reads[0].exists:
                raise JobNotFoundError(f"No job {job_id!r} in queue {queue!r}")
            expand: list[_NodeRead] = []
            for read in reads:
                node = self._node(read, seen_as.get(read.key))
                nodes[read.key] = node
                has_children = sum(read.counts.values()) > 0
                if has_children and depth < max_depth and total < MAX_TREE_NODES:
                    expand.append(read)
                elif has_children:
                    node["truncated"] = True
            if root is None:
                root = nodes[root_key]
                root["parent"] = _parent_ref(reads[0].fields)
            children_of = await self._read_children(expand, max_children)
            next_level: list[str] = []
            for read in expand:
                node = nodes[read.key]
                found = children_of[read.key]
                if len(found) < sum(read.counts.values()):
                    node["truncated"] = True
                for child_key, relation in found.items():
                    if child_key in nodes or child_key in seen_as:
                        continue  # BullMQ never makes cycles; a hand-edited Redis might
                    if total >= MAX_TREE_NODES:
                        node["truncated"] = True
                        break
                    try:
                        split_job_key(child_key)
                    except MailQueueError:
                        continue
                    seen_as[child_key] = relation
                    node["children"].append(child_key)
                    next_level.append(child_key)
                    total += 1
            level = next_level
            depth += 1
        assert root is not None
        return self._assemble(root, nodes)

    def _assemble(self, node: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
        children = [self._assemble(nodes[key], nodes) for key in node["children"] if key in nodes]
        children.sort(key=lambda c: (c["timestamp"] or 0, c["queue"], c["name"] or "", c["id"]))
        node["children"] = children
        return node

    def _node(self, read: _NodeRead, relation: tuple[str, Any] | None) -> dict[str, Any]:
        _, queue, job_id = split_job_key(read.key)
        f = read.fields
        state = read.state
        return_value = _json_or_raw(f.get("returnvalue"))
        failed_reason = f.get("failedReason")
        if not read.exists and relation is not None:
            # The child's hash is gone (removeOnComplete / removeOnFail), but its parent
            # still records how it ended.
            kind, value = relation
            if kind == "processed":
                state, return_value = "completed", _json_or_raw(value)
            elif kind in ("failed", "unsuccessful"):
                state = "failed"
                failed_reason = value if kind == "failed" else None
        return {
            "queue": queue,
            "id": job_id,
            "name": f.get("name"),
            "state": state,
            "removed": not read.exists,
            "progress": _json_or_raw(f.get("progress")) if f.get("progress") else 0,
            "attempts_made": _int_or_none(f.get("atm") or f.get("attemptsMade")) or 0,
            "failed_reason": failed_reason,
            "return_value": return_value,
            "processed_on": _int_or_none(f.get("processedOn")),
            "finished_on": _int_or_none(f.get("finishedOn")),
            "timestamp": _int_or_none(f.get("timestamp")),
            "pending": read.counts["pending"],
            "processed": read.counts["processed"],
            "failed": read.counts["failed"] + read.counts["unsuccessful"],
            "truncated": False,
            "children": [],
        }

    async def _read_nodes(self, keys: Sequence[str]) -> list[_NodeRead]:
        """Fields, state and child counts of many job keys, in two pipelined round trips."""
        reads = [_NodeRead(key) for key in keys]
        per_node = 1 + len(_ZSET_STATES) + 4
        for start in range(0, len(reads), _PIPELINE_CHUNK):
            chunk = reads[start:start + _PIPELINE_CHUNK]
            pipe = self._client.pipeline(transaction=False)
            for read in chunk:
                base, _, job_id = read.key.rpartition(":")
                pipe.hmget(read.key, list(_JOB_FIELDS))
                for suffix, _state in _ZSET_STATES:
                    pipe.zscore(f"{base}:{suffix}", job_id)
                pipe.scard(f"{read.key}:dependencies")
                pipe.hlen(f"{read.key}:processed")
                pipe.hlen(f"{read.key}:failed")
                pipe.zcard(f"{read.key}:unsuccessful")
            results = await pipe.execute()
            unplaced: list[_NodeRead] = []
            for index, read in enumerate(chunk):
                row = results[index * per_node:(index + 1) * per_node]
                read.fields = dict(zip(_JOB_FIELDS, row[0], strict=True))
                read.exists = read.fields.get("name") is not None or bool(
                    read.fields.get("timestamp")
                )
                scores = row[1:1 + len(_ZSET_STATES)]
                for (_suffix, state), score in zip(_ZSET_STATES, scores, strict=True):
                    if score is not None:
                        read.state = state
                        break
                pending, processed, failed, unsuccessful = row[1 + len(_ZSET_STATES):]
                read.counts = {
                    "pending": int(pending), "processed": int(processed),
                    "failed": int(failed), "unsuccessful": int(unsuccessful),
                }
                if read.state == "unknown" and read.exists:
                    unplaced.append(read)
            if unplaced:
                pipe = self._client.pipeline(transaction=False)
                for read in unplaced:
                    base, _, job_id = read.key.rpartition(":")
                    for suffix, _state in _LIST_STATES:
                        pipe.lpos(f"{base}:{suffix}", job_id)
                positions = await pipe.execute()
                width = len(_LIST_STATES)
                for index, read in enumerate(unplaced):
                    row = positions[index * width:(index + 1) * width]
                    for (_suffix, state), pos in zip(_LIST_STATES, row, strict=True):
                        if pos is not None:
                            read.state = state
                            break
        return reads

    async def _read_children(
        self, parents: Sequence[_NodeRead], limit: int
    ) -> dict[str, dict[str, tuple[str, Any]]]:
        """Child key -> (how the parent holds it, value) for each parent, at most `limit` each.

        Pending children first, then processed, failed and unsuccessful ones; a collection
        larger than what is left of the limit is sampled (SRANDMEMBER / HRANDFIELD).
        """
        result: dict[str, dict[str, tuple[str, Any]]] = {p.key: {} for p in parents}
        if not parents:
            return result
        pipe = self._client.pipeline(transaction=False)
        plan: list[tuple[str, str, bool]] = []  # (parent key, kind, sampled)
        for parent in parents:
            left = limit
            for kind in ("pending", "processed", "failed", "unsuccessful"):
                count = parent.counts[kind]
                take = min(count, left)
                if take <= 0:
                    continue
                left -= take
                sampled = take < count
                key = f"{parent.key}:{'dependencies' if kind == 'pending' else kind}"
                if kind == "pending":
                    if sampled:
                        pipe.srandmember(key, take)
                    else:
                        pipe.smembers(key)
                elif kind == "unsuccessful":
                    pipe.zrange(key, 0, take - 1)
                elif sampled:
                    pipe.hrandfield(key, take, withvalues=True)
                else:
                    pipe.hgetall(key)
                plan.append((parent.key, kind, sampled))
        if not plan:
            return result
        replies = await pipe.execute()
        for (parent_key, kind, sampled), reply in zip(plan, replies, strict=True):
            found = result[parent_key]
            if kind in ("pending", "unsuccessful"):
                for child in sorted(reply):
                    found.setdefault(child, (kind, None))
            else:
                pairs = (
                    dict(zip(reply[::2], reply[1::2], strict=True)) if sampled else dict(reply)
                )
                for child, value in sorted(pairs.items()):
                    found.setdefault(child, (kind, value))
        return result

    # --- metrics -----------------------------------------------------------------------------

    async def get_flow_metrics(self) -> dict[str, Any]:
        """Flows by state and how long finished flows took.

        `by_state` counts the root flows added through add_flow (the newest FLOW_INDEX_CAP);
        `waiting_children` counts every parent job waiting for its children in every queue
        under the prefix, so flows added by Node apps or other producers show there too.
        Durations are finishedOn - timestamp of finished (completed or failed) tracked flows.
        """
        members = await self._client.zrange(self.index_key, 0, -1)
        keys = [f"{self.prefix}:{member!s}" for member in members]
        reads = await self._read_nodes(keys) if keys else []
        by_state: dict[str, int] = {}
        durations: list[int] = []
        for read in reads:
            state = read.state if read.exists else "removed"
            by_state[state] = by_state.get(state, 0) + 1
            if state in ("completed", "failed"):
                finished = _int_or_none(read.fields.get("finishedOn"))
                started = _int_or_none(read.fields.get("timestamp"))
                if finished is not None and started is not None:
                    durations.append(max(0, finished - started))
        queues = sorted(set(await self._queues.list_queues()) | self._flow_queues)
        waiting: dict[str, int] = {}
        if queues:
            pipe = self._client.pipeline(transaction=False)
            for name in queues:
                pipe.zcard(f"{self.prefix}:{name}:waiting-children")
            for name, count in zip(queues, await pipe.execute(), strict=True):
                if count:
                    waiting[name] = int(count)
        durations.sort()
        return {
            "tracked": len(reads),
            "by_state": by_state,
            "waiting_children": {"total": sum(waiting.values()), "by_queue": waiting},
            "durations_ms": {
                "count": len(durations),
                "avg": round(sum(durations) / len(durations), 1) if durations else None,
                "p50": _percentile(durations, 0.50) if durations else None,
                "p95": _percentile(durations, 0.95) if durations else None,
                "min": durations[0] if durations else None,
                "max": durations[-1] if durations else None,
            },
        }

    # --- the e-mail workflows (mailqueue/mail/flow_builders.py) ---------------------------------

    async def create_email_flow(self, template: str, to: Any, **kwargs: Any) -> dict[str, Any]:
        """validate-email -> render-email -> send-rendered; see mail.flow_builders."""
        return await flow_builders.create_email_flow(self, template, to, **kwargs)

    async def create_newsletter_flow(
        self, campaign: Mapping[str, Any], recipients: Iterable[Any], **kwargs: Any
    ) -> dict[str, Any]:
        """A campaign parent and its recipients in batches; see mail.flow_builders."""
        return await flow_builders.create_newsletter_flow(self, self._queues, campaign,
                                                          recipients, **kwargs)

    async def create_conditional_flow(
        self, template: str, to: Any, **kwargs: Any
    ) -> dict[str, Any]:
        """check-condition, then send or skip with the reason; see mail.flow_builders."""
        return await flow_builders.create_conditional_flow(self, template, to, **kwargs)

    async def create_retry_flow(self, template: str, to: Any, **kwargs: Any) -> dict[str, Any]:
        """Retries with backoff, then a fallback relay or an admin notice (mail.flow_builders)."""
        return await flow_builders.create_retry_flow(self, template, to, **kwargs)
