"""FlowManager: adds BullMQ flows (trees of dependent jobs) through one FlowProducer, and
answers for the flows under its prefix: their trees (tree.py), index and metrics (index.py).

The predefined e-mail flows (the seed's createEmailFlow, createNewsletterFlow,
createConditionalFlow, createRetryFlow) belong to the mail issue: they are builders of
definitions for `add_flow`, and live with the e-mail handlers (mailqueue/mail/flow_builders.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

import redis.asyncio as aioredis
from bullmq import FlowProducer

from mailqueue.cluster import bullmq_connection
from mailqueue.errors import InvalidFlowError, MailQueueError
from mailqueue.flows.definitions import prepare_flow, queue_names
from mailqueue.flows.index import FlowIndex, FlowMetrics
from mailqueue.flows.tree import FlowNode, FlowTrees, parse_flow_id
from mailqueue.mail import flow_builders
from mailqueue.mail.flow_builders import NewsletterFlow
from mailqueue.queues import QueueManager
from mailqueue.redis_memory import is_redis_full, redis_full_error


class AddedFlow(TypedDict):
    """What add_flow answers: the flow id ("<queue>:<root job id>"), the root, its tree."""

    flow_id: str
    queue: str
    job_id: str
    tree: FlowNode


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
        self.trees = FlowTrees(client, prefix)
        self.index = FlowIndex(client, prefix, queues)

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

    async def add_flow(self, definition: Mapping[str, Any]) -> AddedFlow:
        """Add a flow {name, queueName, data, opts, children: [...]} atomically.

        Each node's opts go over the QueueManager's default job options. Returns the flow id
        ("<queue>:<root job id>", accepted by `get_flow_by_id`), the root's queue and id, and
        the tree as `get_flow` reads it.
        """
        prepared = prepare_flow(definition, self.prefix, self._queues.default_job_options)
        try:
            tree = await self._producer_handle().add(dict(prepared))
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
        queue, job_id = prepared["queueName"], str(tree["job"].id)
        flow_id = f"{queue}:{job_id}"
        await self.index.record(flow_id, queue_names(prepared))
        return {
            "flow_id": flow_id, "queue": queue, "job_id": job_id,
            "tree": await self.get_flow(queue, job_id),
        }

    # --- reading (tree.py, index.py) ---------------------------------------------------------

    async def get_flow(
        self, queue: str, job_id: str, max_depth: int = 10, max_children: int = 1000
    ) -> FlowNode:
        """The tree under `queue`/`job_id`, every node with its state (FlowTrees.read)."""
        return await self.trees.read(queue, job_id, max_depth, max_children)

    async def get_flow_by_id(self, flow_id: str, max_depth: int = 10, max_children: int = 1000
                             ) -> FlowNode:
        """The tree of a flow id as add_flow returned it ("<queue>:<job id>")."""
        queue, job_id = parse_flow_id(flow_id)
        return await self.trees.read(queue, job_id, max_depth, max_children)

    async def get_flow_metrics(self) -> FlowMetrics:
        """Flows by state, parents waiting for children, durations (FlowIndex.metrics)."""
        return await self.index.metrics()

    # --- the e-mail workflows (mailqueue/mail/flow_builders.py) ---------------------------------

    async def create_email_flow(self, template: str, to: Any, **kwargs: Any) -> AddedFlow:
        """validate-email -> render-email -> send-rendered; see mail.flow_builders."""
        return await flow_builders.create_email_flow(self, template, to, **kwargs)

    async def create_newsletter_flow(
        self, campaign: Mapping[str, Any], recipients: Iterable[Any], **kwargs: Any
    ) -> NewsletterFlow:
        """A campaign parent and its recipients in batches; see mail.flow_builders."""
        return await flow_builders.create_newsletter_flow(self, self._queues, campaign,
                                                          recipients, **kwargs)

    async def create_conditional_flow(self, template: str, to: Any, **kwargs: Any
                                      ) -> AddedFlow:
        """check-condition, then send or skip with the reason; see mail.flow_builders."""
        return await flow_builders.create_conditional_flow(self, template, to, **kwargs)

    async def create_retry_flow(self, template: str, to: Any, **kwargs: Any) -> AddedFlow:
        """Retries with backoff, then a fallback relay or an admin notice (mail.flow_builders)."""
        return await flow_builders.create_retry_flow(self, template, to, **kwargs)
