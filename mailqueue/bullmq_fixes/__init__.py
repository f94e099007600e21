"""Every workaround for a bug of bullmq 3.4.4, one module per bug, named after it.

docs/bullmq-notes.md says what each bug is, how it was measured, and where its workaround
and its tests live: a regression test (tests/mailqueue/test_bullmq_fixes.py) that fails
without the workaround, and a canary (tests/mailqueue/test_bullmq_canaries.py) that runs the
bug's scenario on plain bullmq and fails the day bullmq fixes it — then the workaround goes.
"""

from mailqueue.bullmq_fixes.async_listeners import add_listener
from mailqueue.bullmq_fixes.idle_stalls import connection_options, pool_options
from mailqueue.bullmq_fixes.lua_text import share_lua_script_text
from mailqueue.bullmq_fixes.rate_limiter import RateLimitAwareWorker
from mailqueue.bullmq_fixes.subsecond_delays import enable_subsecond_delays
from mailqueue.bullmq_fixes.sync_processors import call_handler
from mailqueue.bullmq_fixes.worker_discovery import find_workers, parse_client_list

__all__ = [
    "RateLimitAwareWorker",
    "add_listener",
    "call_handler",
    "connection_options",
    "enable_subsecond_delays",
    "find_workers",
    "parse_client_list",
    "pool_options",
    "share_lua_script_text",
]
