"""Worker discovery across Node and Python (docs/bullmq-notes.md #7): CLIENT LIST, both namings.

One workaround of bullmq 3.4.4, named after the bug it covers; its canary test
(tests/mailqueue/test_bullmq_canaries.py) fails the day bullmq fixes the bug, and then this
module goes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from mailqueue.types import WorkerInfo

# Python bullmq names a worker's connections `<prefix>:<queue>`, Node BullMQ
# `<prefix>:<base64(queue)>`, both optionally followed by `:w:<worker name>`; each side's
# getWorkers sees only its own. A worker holds two connections (commands + blocking wait)
# under one name, so connections are paired into workers, never counted one by one.
# Node's QueueEvents connection (`...:qe`) is not a worker.


def parse_client_list(text: str) -> list[dict[str, str]]:
    """Parse the raw reply of CLIENT LIST (one `key=value ...` line per connection)."""
    clients = []
    for line in text.splitlines():
        fields: dict[str, str] = {}
        for pair in line.split(" "):
            key, sep, value = pair.partition("=")
            if sep:
                fields[key] = value
        if fields:
            clients.append(fields)
    return clients


def _node_queue_name(segment: str) -> str | None:
    """The queue name a Node client-name segment encodes, or None if it is not base64 text."""
    if len(segment) % 4 or not segment:
        return None
    try:
        decoded = base64.b64decode(segment, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not decoded or ":" in decoded or not decoded.isprintable():
        return None
    if base64.b64encode(decoded.encode("utf-8")).decode("ascii") != segment:
        return None
    return decoded


def find_workers(
    clients: Iterable[Mapping[str, Any]], prefix: str, queue: str | None = None,
    known_queues: Collection[str] = (),
) -> list[WorkerInfo]:
    """BullMQ workers (Python and Node) among CLIENT LIST entries, one dict per worker.

    `queue` keeps the workers of one queue; `known_queues` settles a name that reads both as a
    Python queue name and as base64 (a known queue name wins, as Python).
    Each dict: queue, name, addr, age_s, idle_s, language, client_name, connections.
    """
    head = f"{prefix}:"
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for client in clients:
        raw = str(client.get("name") or "")
        if not raw.startswith(head):
            continue
        segment, _, suffix = raw[len(head):].partition(":")
        if suffix and not suffix.startswith("w:"):
            continue  # `qe` (Node QueueEvents) and anything else that is not a worker
        node_queue = None if segment in known_queues else _node_queue_name(segment)
        if node_queue is not None:
            queue_name, language = node_queue, "node"
        else:
            queue_name, language = segment, "python"
        if not queue_name or (queue is not None and queue_name != queue):
            continue
        groups.setdefault((queue_name, language, raw), []).append(client)

    workers: list[WorkerInfo] = []
    for (queue_name, language, raw), connections in groups.items():
        worker_name = raw[len(head):].partition(":")[2][2:]
        # Connections sharing a name are ordered as Redis created them (client id).
        ordered = sorted(connections, key=lambda c: int(c.get("id") or 0))
        if worker_name:
            # A named worker (every worker this project starts: host-pid-n) is one worker
            # however many connections its pool opened: commands in flight at once (a job's
            # log line while it runs) add connections under the same name.
            groups_of = [ordered]
        else:
            # Unnamed workers hold two connections each (a main and a blocking one).
            groups_of = [ordered[start:start + 2] for start in range(0, len(ordered), 2)]
        for group in groups_of:
            first = group[0]
            workers.append({
                "queue": queue_name,
                "name": worker_name or None,
                "addr": str(first.get("addr") or ""),
                "age_s": max(int(c.get("age") or 0) for c in group),
                "idle_s": min(int(c.get("idle") or 0) for c in group),
                "language": language,
                "client_name": raw,
                "connections": len(group),
            })
    workers.sort(key=lambda w: (w["queue"], w["language"], w["client_name"], w["addr"]))
    return workers
