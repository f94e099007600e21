"""The native worker runtime (WORKER_RUNTIME=native): Node BullMQ's Worker loop in Python,
over the Lua scripts bullmq-python ships. See `loop.NativeWorker`."""

from mailqueue.runtime.loop import NativeWorker
from mailqueue.runtime.scripts import ScriptPipe

__all__ = ["NativeWorker", "ScriptPipe"]
