"""mailqueue: asynchronous e-mail over BullMQ queues in Redis, with a live dashboard."""

from __future__ import annotations

__version__ = "0.1.0"
