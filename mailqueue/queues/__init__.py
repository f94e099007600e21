"""Queues: BullMQ's queues and their jobs, read and operated, for the manager layer.

`QueueManager` (manager.py) answers for the package; each concern is a module of its own:
handles and discovery, counts and charts (stats.py), one job's page (job_view.py), table
reads (job_reads.py), writes (job_writes.py), schedulers, global limits, alerts.
"""

from mailqueue.queues.manager import QueueManager

__all__ = ["QueueManager"]
