"""The Lua text read again for every queue handle (docs/bullmq-notes.md #10): one copy shared.

One workaround of bullmq 3.4.4, named after the bug it covers; its canary test
(tests/mailqueue/test_bullmq_canaries.py) fails the day bullmq fixes the bug, and then this
module goes.
"""

from __future__ import annotations

import functools

# Every bullmq Queue builds its own RedisConnection, which reads all ~60 Lua files from disk
# and keeps its own copy of their text (~270 KB a queue): the dashboard of a Redis with 1,000
# queues held ~300 MB of the same scripts. Each file is now read once per process and the
# one string shared by every handle (the scripts are part of the installed package and never
# change while it runs).

def share_lua_script_text() -> None:
    from bullmq import redis_connection

    if not isinstance(redis_connection.loadScript, functools._lru_cache_wrapper):
        redis_connection.loadScript = functools.cache(redis_connection.loadScript)


share_lua_script_text()
