"""The Redis namespace of the mail package's own keys: `<prefix>:__mailqueue__:...`.

A name no BullMQ queue has, and never ending in :meta, :id or :events, so queue discovery
does not mistake the outbox, the sinks, the delivery record, the delivery log, the
suppression list or the campaigns for a queue.
"""

NAMESPACE = "__mailqueue__"
