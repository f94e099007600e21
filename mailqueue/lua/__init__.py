"""The project's own Lua scripts, one `.lua` file each in this folder, and their one loader.

Every script is called the same way: `load_script(client, "name")` gives redis-py's Script
for `name.lua`, bound to `client`. Calling it (`await script(keys=[...], args=[...])`) runs
EVALSHA and, on NOSCRIPT (Redis restarted, SCRIPT FLUSH), loads the text and runs it again;
`script(keys=..., args=..., client=pipe)` queues it in a pipeline. Its `.sha` and `.script`
are what the native worker's pipe (mailqueue.runtime.scripts) writes and loads.

A script may share functions with others: a line `--#include other.lua` is replaced by that
file's text (mailqueue.mail.message_log's functions, used by two scripts). Each file is read
once per process; bullmq's own scripts are bullmq's, loaded by bullmq.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript

_INCLUDE = re.compile(r"^--#include (\S+)\.lua$", re.MULTILINE)


def load_script(client: Any, name: str) -> AsyncScript:
    """The script `name` (`mailqueue/lua/<name>.lua`) registered on `client` (redis-py's
    `register_script`: a Redis, a RedisCluster, or mailqueue.cluster.MailRedisCluster)."""
    script: AsyncScript = client.register_script(_source(name))
    return script


@functools.cache
def _source(name: str) -> str:
    text = resources.files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda found: _source(found.group(1)), text)
