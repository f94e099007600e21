"""Auto-pipelined calls of bullmq's Lua scripts on a worker's one command connection.

bullmq-python runs every script call as its own round trip on a single-connection client
(`single_connection_client=True`, a lock around each command): 50 jobs finishing at once
are 50 round trips one after the other. Node's ioredis writes commands as they come and
reads the replies in order. `ScriptPipe` does the same for the calls made on the hot path
(moveToFinished): the calls made while a batch is on the wire are written together as the
next batch, one write and one read loop, on the same connection (so CLIENT LIST still shows
the worker's two connections), holding the client's own lock so that other commands
(lock renewal, job.log) never interleave with a batch.

Every call is made with a redis-py Script object, never a SHA of its own: bullmq's (its
moveToFinished: same text, same SHA as every other bullmq client) and ours, from
mailqueue.lua's `load_script` (the delivery claim and record, the delivery log). The pipe
writes EVALSHA with the object's `.sha`; a NOSCRIPT reply (Redis restarted, SCRIPT FLUSH)
re-runs that call through the Script itself, which loads its text and runs it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

# One pending call: the script, its keys, its arguments, the future of its reply.
_Call = tuple[AsyncScript, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]

# Encoded RESP bulk strings of the strings that recur in every call (the queue's keys, the
# script SHA, "completed"...): redis-py's packer encodes each of the ~22 arguments of a
# moveToFinished call afresh, a quarter of the worker's CPU in a profile of no-op jobs.
_BULK_CACHE: dict[str, bytes] = {}
_BULK_CACHE_MAX = 4096
_CACHED_MAX_LEN = 200


def _bulk(value: Any) -> bytes:
    if isinstance(value, str):
        cached = _BULK_CACHE.get(value)
        if cached is not None:
            return cached
        data = value.encode()
        bulk = b"$%d\r\n%b\r\n" % (len(data), data)
        if len(value) <= _CACHED_MAX_LEN:
            if len(_BULK_CACHE) >= _BULK_CACHE_MAX:
                _BULK_CACHE.clear()  # job ids pass through too: keep it bounded
            _BULK_CACHE[value] = bulk
        return bulk
    if isinstance(value, bytes):
        return b"$%d\r\n%b\r\n" % (len(value), value)
    if isinstance(value, bool):  # not sent by bullmq's packers; as redis-py refuses it
        raise TypeError("a bool is not a Redis argument")
    if isinstance(value, int):
        data = b"%d" % value
        return b"$%d\r\n%b\r\n" % (len(data), data)
    if isinstance(value, float):
        return _bulk(repr(value))
    raise TypeError(f"cannot send {type(value).__name__} to Redis")


def pack_evalsha(sha: str, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
    """One EVALSHA command in RESP, as redis-py would write it."""
    parts = [b"*%d\r\n" % (3 + len(keys) + len(args)), _bulk("EVALSHA"), _bulk(sha),
             _bulk(len(keys))]
    parts += map(_bulk, keys)
    parts += map(_bulk, args)
    return b"".join(parts)


class ScriptPipe:
    """Batches script calls on `client`'s single connection (one round trip per batch).

    Falls back to one call per round trip (redis-py's Script) for any other client: a
    cluster client, or a client with a pool of connections.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._direct = not (isinstance(client, aioredis.Redis)
                            and getattr(client, "single_connection_client", False))
        self._pending: list[_Call] = []
        self._flusher: asyncio.Task[None] | None = None
        # Read by the bench (round trips per job): batches written, calls in them.
        self.batches = 0
        self.calls = 0

    async def prepare(self, *scripts: AsyncScript) -> None:
        """Load the scripts into Redis now, so the first batch is not a NOSCRIPT one."""
        for script in scripts:
            await self._client.script_load(script.script)

    def call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]
             ) -> asyncio.Future[Any]:
        """Queue one call; the future resolves to its reply (or raises its error)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._direct:
            self._chain(asyncio.ensure_future(script(keys=keys, args=args)), future)
            return future
        self._pending.append((script, keys, args, future))
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return future

    async def idle(self) -> None:
        """Until no batch is on the wire or waiting (before the connection is closed)."""
        while self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush(self) -> None:
        try:
            while self._pending:
                # One more turn of the loop before writing: the calls other slots make in it
                # (a claim, a completion) go in the same write and the same read.
                await asyncio.sleep(0)
                batch, self._pending = self._pending, []
                await self._send(batch)
        finally:
            self._flusher = None

    async def _send(self, batch: list[_Call]) -> None:
        client = self._client
        if client.connection is None:
            await client.initialize()
        replies: list[Any] = []
        # redis-py's lock of a single-connection client: a command of anyone else (lock
        # renewal, a handler's job.log) waits for the whole batch, never splits it.
        async with client._single_conn_lock:
            conn = client.connection
            try:
                packed = b"".join([pack_evalsha(script.sha, keys, args)
                                   for script, keys, args, _ in batch])
                await conn.send_packed_command(packed, check_health=False)
                self.batches += 1
                self.calls += len(batch)
                for _ in batch:
                    try:
                        replies.append(await conn.read_response())
                    except ResponseError as error:  # that call's error; the stream is in step
                        replies.append(error)
            except BaseException as error:
                # Half a batch read: the connection is out of step; redis-py reconnects it
                # (and names it again) on the next command.
                await conn.disconnect(nowait=True)
                failure = error if isinstance(error, Exception) else RedisConnectionError(
                    "cancelled while a batch of script calls was on the wire")
                for *_, future in batch[len(replies):]:
                    if not future.done():
                        future.set_exception(failure)
                batch = batch[:len(replies)]
                if not isinstance(error, Exception):
                    raise
        for (script, keys, args, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its waiter was cancelled (a forced close)
                continue
            if isinstance(reply, NoScriptError):
                self._chain(asyncio.ensure_future(script(keys=keys, args=args)), future)
            elif isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    @staticmethod
    def _chain(task: asyncio.Future[Any], future: asyncio.Future[Any]) -> None:
        def done(finished: asyncio.Future[Any]) -> None:
            if future.done():
                if not finished.cancelled():
                    finished.exception()  # retrieved: no "never retrieved" warning
                return
            if finished.cancelled():
                future.cancel()
            elif finished.exception() is not None:
                future.set_exception(finished.exception())  # type: ignore[arg-type]
            else:
                future.set_result(finished.result())

        task.add_done_callback(done)
