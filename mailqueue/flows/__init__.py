"""Flows, BullMQ's trees of dependent jobs: adding them and reading them back.

- manager.py: FlowManager, which adds flows through one FlowProducer and answers reads.
- definitions.py: a flow definition checked, with the default job options applied.
- tree.py: the tree under a job read from Redis, every node with its state (FlowNode).
- index.py: the flows added here, newest kept, and the flow metrics read from them.
"""

from mailqueue.flows.index import FlowMetrics
from mailqueue.flows.manager import AddedFlow, FlowManager
from mailqueue.flows.tree import FlowNode, parse_flow_id, split_job_key

__all__ = ["AddedFlow", "FlowManager", "FlowMetrics", "FlowNode", "parse_flow_id",
           "split_job_key"]
