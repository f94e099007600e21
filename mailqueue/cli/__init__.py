"""The `mailqueue` command. Each module adds its commands to the one Typer app:
serve (run, dashboard), unsubscribe (unsubscribe-server), worker, mail (send, status), ops
(queues, jobs, retry, pause, resume, clean), campaigns (newsletter send, campaign ...), desk
(messages, suppress add|remove|list).

The CLI is the top layer: it may start the web layer (`mailqueue.dashboard`), which it imports
only inside the commands that serve it, so `import mailqueue.cli` stays free of Starlette.
"""

from __future__ import annotations

from mailqueue.cli import campaigns, desk, mail, ops, serve, unsubscribe, worker
from mailqueue.cli.common import app

__all__ = ["app", "campaigns", "desk", "mail", "ops", "serve", "unsubscribe", "worker"]
