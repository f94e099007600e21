"""A limit on password guessing: failed logins per client, then 429 with Retry-After.

Each client (by address) may fail `free_failures` times; every failure after that blocks it
for twice as long as the one before (from `first_block_s`, up to `max_block_s`). While blocked
every attempt is answered 429 without looking at the credentials — the right password too,
or guessing on would still find it. A success clears the client's record. A failure older
than `forget_after_s` is forgotten, so a person who mistyped a few times in a week is never
blocked. Records are capped (the oldest go first): a flood of addresses cannot grow memory.

Behind a proxy every client has the proxy's address; a guesser then blocks everyone for the
block's time, which is what a login limit has to accept (the proxy should rate-limit too).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Record:
    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0


class LoginLimiter:
    def __init__(self, *, free_failures: int = 10, first_block_s: float = 1.0,
                 max_block_s: float = 900.0, forget_after_s: float = 3600.0,
                 max_clients: int = 10_000) -> None:
        self.free_failures = free_failures
        self.first_block_s = first_block_s
        self.max_block_s = max_block_s
        self.forget_after_s = forget_after_s
        self.max_clients = max_clients
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def retry_after(self, client: str) -> float:
        """Seconds this client must wait before its credentials are looked at; 0 if none."""
        record = self._records.get(client)
        if record is None:
            return 0.0
        now = time.monotonic()
        if now - record.last_failure > self.forget_after_s:
            del self._records[client]
            return 0.0
        return max(record.blocked_until - now, 0.0)

    def failed(self, client: str) -> None:
        now = time.monotonic()
        record = self._records.pop(client, None) or _Record()
        if now - record.last_failure > self.forget_after_s:
            record = _Record()
        record.failures += 1
        record.last_failure = now
        over = record.failures - self.free_failures
        if over > 0:
            block = min(self.first_block_s * 2 ** min(over - 1, 30), self.max_block_s)
            record.blocked_until = now + block
        self._records[client] = record  # the most recent last
        while len(self._records) > self.max_clients:
            self._records.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._records.pop(client, None)
