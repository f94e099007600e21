"""Reading a flow tree back from Redis: every node of the tree under a job, with its state.

bullmq for Python has no getFlow / getDependencies (docs/bullmq-notes.md #5), so a tree is read
from the keys BullMQ keeps for each parent job:

    <prefix>:<queue>:<id>:dependencies   set   child keys not yet processed
    <prefix>:<queue>:<id>:processed      hash  child key -> return value (JSON)
    <prefix>:<queue>:<id>:failed         hash  child key -> failed reason (ignoreDependency...)
    <prefix>:<queue>:<id>:unsuccessful   zset  child keys that failed (failParentOnFailure...)

and a child's own hash carries `parentKey` and `parent` ({"id", "queueKey"}). A child key is
`<prefix>:<queue>:<id>` where the prefix may itself hold ':' or be a `{tag}`: queue names
and job ids never hold ':', so a key is split from the right.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

import redis.asyncio as aioredis

from mailqueue.errors import JobNotFoundError, MailQueueError
from mailqueue.job_options import validate_queue_name
from mailqueue.keys import Keys

MAX_TREE_NODES = 10_000
_PIPELINE_CHUNK = 500

_JOB_FIELDS = (
    "name", "timestamp", "processedOn", "finishedOn", "atm", "attemptsMade", "failedReason",
    "returnvalue", "progress", "parentKey", "parent",
)
# The order of bullmq's getState script: sorted sets first, then the lists (the key's
# state, the state reported: a paused queue's jobs are waiting).
_ZSET_STATES = ("completed", "failed", "delayed", "prioritized", "waiting-children")
_LIST_STATES = (("active", "active"), ("waiting", "waiting"), ("paused", "waiting"))
# A parent's children by how it holds them, and the name of the key that does.
_CHILD_KEYS = {"pending": "dependencies", "processed": "processed", "failed": "failed",
               "unsuccessful": "unsuccessful"}
_CHILD_KINDS = tuple(_CHILD_KEYS)


class ParentRef(TypedDict):
    """Where a job's parent lives."""

    queue: str
    id: str


class FlowNode(TypedDict):
    """One job of a flow tree as `FlowTrees.read` returns it (the dashboard's flow JSON)."""

    queue: str
    id: str
    name: str | None
    state: str
    removed: bool  # the job's hash is gone; its parent still records how it ended
    progress: Any
    attempts_made: int
    failed_reason: str | None
    return_value: Any
    processed_on: int | None
    finished_on: int | None
    timestamp: int | None
    pending: int  # children not yet processed
    processed: int
    failed: int
    truncated: bool  # some children were left out; the counts above stay exact
    children: list[FlowNode]
    parent: NotRequired[ParentRef | None]  # the root's only


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


def int_or_none(value: str | None) -> int | None:
    """A job hash's number field (BullMQ may write "123.0"), None when unset or not a number."""
    if value in (None, ""):
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def _json_or_raw(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def _parent_ref(fields: Mapping[str, str | None]) -> ParentRef | None:
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


class NodeRead:
    """What one pipelined read learnt about one job key."""

    __slots__ = ("counts", "exists", "fields", "job_id", "key", "keys", "state")

    def __init__(self, key: str) -> None:
        self.key = key
        prefix, queue, self.job_id = split_job_key(key)
        self.keys = Keys(prefix, queue)
        self.fields: dict[str, str | None] = {}
        self.exists = False
        self.state = "unknown"
        self.counts = dict.fromkeys(_CHILD_KINDS, 0)

    def children_key(self, kind: str) -> str:
        """The set, hash or sorted set in which this job holds its children of `kind`."""
        return f"{self.key}:{_CHILD_KEYS[kind]}"


async def read_nodes(client: aioredis.Redis, keys: Sequence[str]) -> list[NodeRead]:
    """Fields, state and child counts of many job keys, in two pipelined round trips."""
    reads = [NodeRead(key) for key in keys]
    per_node = 1 + len(_ZSET_STATES) + len(_CHILD_KINDS)
    for start in range(0, len(reads), _PIPELINE_CHUNK):
        chunk = reads[start:start + _PIPELINE_CHUNK]
        pipe = client.pipeline(transaction=False)
        for read in chunk:
            pipe.hmget(read.key, list(_JOB_FIELDS))
            for state in _ZSET_STATES:
                pipe.zscore(read.keys.state(state), read.job_id)
            pipe.scard(read.children_key("pending"))
            pipe.hlen(read.children_key("processed"))
            pipe.hlen(read.children_key("failed"))
            pipe.zcard(read.children_key("unsuccessful"))
        results = await pipe.execute()
        unplaced: list[NodeRead] = []
        for index, read in enumerate(chunk):
            row = results[index * per_node:(index + 1) * per_node]
            read.fields = dict(zip(_JOB_FIELDS, row[0], strict=True))
            read.exists = read.fields.get("name") is not None or bool(
                read.fields.get("timestamp")
            )
            scores = row[1:1 + len(_ZSET_STATES)]
            for state, score in zip(_ZSET_STATES, scores, strict=True):
                if score is not None:
                    read.state = state
                    break
            counts = row[1 + len(_ZSET_STATES):]
            read.counts = {kind: int(n) for kind, n in zip(_CHILD_KINDS, counts, strict=True)}
            if read.state == "unknown" and read.exists:
                unplaced.append(read)
        if unplaced:
            pipe = client.pipeline(transaction=False)
            for read in unplaced:
                for key_state, _state in _LIST_STATES:
                    pipe.lpos(read.keys.state(key_state), read.job_id)
            positions = await pipe.execute()
            width = len(_LIST_STATES)
            for index, read in enumerate(unplaced):
                row = positions[index * width:(index + 1) * width]
                for (_key_state, state), pos in zip(_LIST_STATES, row, strict=True):
                    if pos is not None:
                        read.state = state
                        break
    return reads


async def _read_children(
    client: aioredis.Redis, parents: Sequence[NodeRead], limit: int
) -> dict[str, dict[str, tuple[str, Any]]]:
    """Child key -> (how the parent holds it, value) for each parent, at most `limit` each.

    Pending children first, then processed, failed and unsuccessful ones; a collection
    larger than what is left of the limit is sampled (SRANDMEMBER / HRANDFIELD).
    """
    result: dict[str, dict[str, tuple[str, Any]]] = {p.key: {} for p in parents}
    if not parents:
        return result
    pipe = client.pipeline(transaction=False)
    plan: list[tuple[str, str, bool]] = []  # (parent key, kind, sampled)
    for parent in parents:
        left = limit
        for kind in _CHILD_KINDS:
            count = parent.counts[kind]
            take = min(count, left)
            if take <= 0:
                continue
            left -= take
            sampled = take < count
            key = parent.children_key(kind)
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
            pairs = dict(zip(reply[::2], reply[1::2], strict=True)) if sampled else dict(reply)
            for child, value in sorted(pairs.items()):
                found.setdefault(child, (kind, value))
    return result


def _node(read: NodeRead, relation: tuple[str, Any] | None) -> FlowNode:
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
        "queue": read.keys.queue,
        "id": read.job_id,
        "name": f.get("name"),
        "state": state,
        "removed": not read.exists,
        "progress": _json_or_raw(f.get("progress")) if f.get("progress") else 0,
        "attempts_made": int_or_none(f.get("atm") or f.get("attemptsMade")) or 0,
        "failed_reason": failed_reason,
        "return_value": return_value,
        "processed_on": int_or_none(f.get("processedOn")),
        "finished_on": int_or_none(f.get("finishedOn")),
        "timestamp": int_or_none(f.get("timestamp")),
        "pending": read.counts["pending"],
        "processed": read.counts["processed"],
        "failed": read.counts["failed"] + read.counts["unsuccessful"],
        "truncated": False,
        "children": [],
    }


def _assemble(key: str, nodes: dict[str, FlowNode], child_keys: dict[str, list[str]]
              ) -> FlowNode:
    node = nodes[key]
    children = [_assemble(child, nodes, child_keys) for child in child_keys.get(key, ())
                if child in nodes]
    children.sort(key=lambda c: (c["timestamp"] or 0, c["queue"], c["name"] or "", c["id"]))
    node["children"] = children
    return node


class FlowTrees:
    """Reads the flow trees of the queues under one prefix."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self.prefix = prefix

    async def read(
        self, queue: str, job_id: str, max_depth: int = 10, max_children: int = 1000
    ) -> FlowNode:
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
        root_key = Keys(self.prefix, queue).job(job_id)
        # Per node key: where its parent saw it (for children whose own hash was removed).
        seen_as: dict[str, tuple[str, Any]] = {}
        nodes: dict[str, FlowNode] = {}
        child_keys: dict[str, list[str]] = {}
        level = [root_key]
        total = 1
        depth = 0
        while level:
            reads = await read_nodes(self._client, level)
            if depth == 0 and not reads[0].exists:
                raise JobNotFoundError(f"No job {job_id!r} in queue {queue!r}")
            expand: list[NodeRead] = []
            for read in reads:
                node = _node(read, seen_as.get(read.key))
                nodes[read.key] = node
                has_children = sum(read.counts.values()) > 0
                if has_children and depth < max_depth and total < MAX_TREE_NODES:
                    expand.append(read)
                elif has_children:
                    node["truncated"] = True
            if depth == 0:
                nodes[root_key]["parent"] = _parent_ref(reads[0].fields)
            children_of = await _read_children(self._client, expand, max_children)
            next_level: list[str] = []
            for read in expand:
                node = nodes[read.key]
                found = children_of[read.key]
                if len(found) < sum(read.counts.values()):
                    node["truncated"] = True
                listed = child_keys.setdefault(read.key, [])
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
                    listed.append(child_key)
                    next_level.append(child_key)
                    total += 1
            level = next_level
            depth += 1
        return _assemble(root_key, nodes, child_keys)
