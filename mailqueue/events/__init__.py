"""Job events: the live reader (EventManager), subscriptions, and the elected audit writer.

- reader.py: EventManager, one XREAD loop per process while someone in it listens.
- subscriptions.py: listeners and resumable subscriptions fed by that reader.
- audit_writer.py: the one process per prefix, elected by a lease, that writes the job
  lifecycle into the audit log and records failure alerts.
- streams.py: stream ids, entry parsing, queue discovery.
"""

from mailqueue.events.reader import EventManager
from mailqueue.events.streams import parse_event
from mailqueue.events.subscriptions import Subscription

__all__ = ["EventManager", "Subscription", "parse_event"]
