"""Redis Cluster support: clients, the hash-tag rule, and reads that must visit every master.

`REDIS_CLUSTER=true` (settings) makes every client a `redis.asyncio.RedisCluster` seeded from
REDIS_URL (any node of the cluster). BullMQ keeps a queue's keys apart only by prefix, and its
Lua scripts touch many keys of a queue (and of a flow's other queues) at once, which Redis
Cluster allows only within one hash slot: the prefix must be a hash tag such as `{mail}`, so
that every key of every queue lands on one slot (docs/bullmq-notes.md, "Redis Cluster").

What differs on a cluster, and is handled here:
- bullmq's `addBulk` and `FlowProducer.add` run its scripts (EVALSHA) in a MULTI pipeline,
  which redis-py blocks on a cluster pipeline ("Calling pipelined function evalsha is
  blocked"). `MailRedisCluster` allows EVALSHA in its pipelines and loads the scripts on the
  masters first (all keys share one slot, so a MULTI is still one node's transaction).
- bullmq closes the client it is given when its Queue/Worker/FlowProducer closes: each gets
  a cluster client of its own (`bullmq_connection`).
- SCAN: redis-py's cluster `scan_iter` already walks every master. CLIENT LIST and INFO go
  to one node by default: `client_lists` and `node_infos` ask every master.
"""

from __future__ import annotations

from collections.abc import Collection, Generator, Mapping
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mailqueue.bullmq_fixes import find_workers, pool_options
from mailqueue.errors import MailQueueError
from mailqueue.types import WorkerInfo

# Marks a connection-options dict as "a cluster": popped before it reaches redis-py.
CLUSTER_OPTION = "cluster"
# Options of a single-node connection that a cluster client does not take.
_NOT_FOR_CLUSTER = ("db", "unix_socket_path", "single_connection_client")


def hash_tag(key: str) -> str | None:
    """The hash tag of a key or prefix as Redis Cluster reads it (`{...}`), or None."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end < 0 or end == start + 1:
        return None
    return key[start + 1:end]


def check_cluster_prefix(prefix: str) -> None:
    """Refuse a prefix that would spread a queue's keys over several slots."""
    if hash_tag(prefix) is None:
        raise MailQueueError(
            f"on Redis Cluster QUEUE_PREFIX must be a hash tag like {{mail}} (got {prefix!r}): "
            "BullMQ's scripts use many keys of a queue at once, which a cluster allows only "
            "within one hash slot. Set QUEUE_PREFIX={mail} (or any {name})."
        )


def is_cluster(connection: Mapping[str, Any]) -> bool:
    return bool(connection.get(CLUSTER_OPTION))


def with_cluster_flag(connection: Mapping[str, Any], cluster: bool) -> dict[str, Any]:
    """Connection options (from `connection_options`) marked as a cluster's, or not."""
    options = dict(connection)
    if cluster:
        options[CLUSTER_OPTION] = True
    else:
        options.pop(CLUSTER_OPTION, None)
    return options


def _cluster_kwargs(connection: Mapping[str, Any]) -> dict[str, Any]:
    options = {k: v for k, v in connection.items()
               if k != CLUSTER_OPTION and k not in _NOT_FOR_CLUSTER}
    if options.get("db"):
        raise MailQueueError("Redis Cluster has only database 0: remove /<db> from REDIS_URL")
    return options


MAX_CONNECTIONS = 100  # per client, i.e. per MailManager
POOL_WAIT_S = 20.0  # how long a command waits for a free connection before it fails


def make_client(connection: Mapping[str, Any], **overrides: Any) -> aioredis.Redis:
    """A client (decode_responses) for these options: a cluster client when they say so.

    Typed as `redis.asyncio.Redis`: RedisCluster offers the same commands for everything this
    project sends (single-slot keys; CLIENT LIST and INFO go through the helpers below).
    """
    if is_cluster(connection):
        if connection.get("db"):
            raise MailQueueError("Redis Cluster has only database 0: remove /<db> from REDIS_URL")
        kwargs = {**_cluster_kwargs(connection), **overrides}
        return cast(aioredis.Redis, MailRedisCluster(decode_responses=True, **kwargs))
    options = pool_options({k: v for k, v in connection.items() if k != CLUSTER_OPTION})
    # A bounded pool that waits for a free connection: under a burst (a hundred page loads
    # at once) a plain pool past its limit fails the request at once instead.
    pool = aioredis.BlockingConnectionPool(
        decode_responses=True, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_S,
        **{**options, **overrides},
    )
    return aioredis.Redis.from_pool(pool)


def redis_error_reason(exc: BaseException, command_timeout_s: float) -> str:
    """Why a Redis command failed, in words; a timeout names the setting behind it."""
    if isinstance(exc, RedisTimeoutError) and command_timeout_s:
        return (f"Redis did not answer within {command_timeout_s:g} s "
                "(REDIS_COMMAND_TIMEOUT_S): it is stalled or overloaded")
    return f"{type(exc).__name__}: {exc}"


def bullmq_connection(connection: Mapping[str, Any]) -> Any:
    """What to pass as a bullmq Queue/Worker/FlowProducer's `connection`.

    A plain dict for one Redis without a socket timeout (a Worker's: bullmq builds its own
    clients from it). With a socket timeout (REDIS_COMMAND_TIMEOUT_S, a Queue's or a
    FlowProducer's), a client built here: bullmq's own retries a command 20 times on
    TimeoutError, which would both hide a stalled Redis (the page waits out the stall again)
    and send a write (an addJob) again that Redis may still run when it wakes. This one
    retries what bullmq retries on a Redis that is away or loading, never a timeout.
    On a cluster, a new cluster client for each bullmq object: bullmq closes the client it
    was given when the object closes, so one shared client would be closed under everybody
    else.
    """
    if is_cluster(connection):
        return make_client(connection)
    options = {k: v for k, v in connection.items() if k != CLUSTER_OPTION}
    if options.get("socket_timeout") is None:
        return options
    # As bullmq's RedisConnection builds it (one connection, decoded replies, backing off
    # up to 20 s), minus the retry on timeouts. BusyLoadingError is a ConnectionError.
    retry = Retry(ExponentialBackoff(cap=20, base=1), 20,
                  supported_errors=(RedisConnectionError,))
    return aioredis.Redis(decode_responses=True, single_connection_client=True, retry=retry,
                          **options)


def as_cluster(client: Any) -> RedisCluster | None:
    return client if isinstance(client, RedisCluster) else None


async def client_lists(client: aioredis.Redis) -> list[list[dict[str, Any]]]:
    """CLIENT LIST of every master (one list per node); of the one Redis otherwise."""
    cluster = as_cluster(client)
    if cluster is None:
        return [await client.client_list()]
    await cluster.initialize()
    lists = []
    for node in cluster.get_primaries():
        lists.append(await cluster.client_list(target_nodes=node))
    return lists


async def node_infos(client: aioredis.Redis, section: str | None = None
                     ) -> list[tuple[str, dict[str, Any]]]:
    """INFO (one section or all) of every master, as (node name, info); one Redis: one entry."""
    cluster = as_cluster(client)
    if cluster is None:
        info = await client.info(section) if section else await client.info()
        return [("", info)]
    await cluster.initialize()
    result = []
    for node in cluster.get_primaries():
        info = (await cluster.info(section, target_nodes=node) if section
                else await cluster.info(target_nodes=node))
        result.append((node.name, info))
    return result


async def node_of_key(client: aioredis.Redis, key: str) -> str | None:
    """The name (host:port) of the master that holds `key`; None for a single Redis."""
    cluster = as_cluster(client)
    if cluster is None:
        return None
    await cluster.initialize()
    node = cluster.get_node_from_key(key)
    return node.name if node is not None else None


class _Queued:
    """An awaitable that gives back a pipeline untouched."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    def __await__(self) -> Generator[Any, None, Any]:
        return self._value().__await__()

    async def _value(self) -> Any:
        return self.pipe


class ScriptingClusterPipeline(ClusterPipeline):
    """A cluster pipeline that runs Lua scripts (EVALSHA), as bullmq's addBulk and flows do.

    redis-py blocks EVALSHA in cluster pipelines because a node may not know the script
    (NOSCRIPT inside the pipeline). Each script is loaded on every master before the
    pipeline runs; a NOSCRIPT anyway (a master restarted meanwhile) in a MULTI aborts the
    whole transaction, so it is loaded again and the transaction retried once.
    """

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        # redis-py's AsyncScript awaits what this returns: not the pipeline itself, whose
        # __await__ (initialize) would empty the commands queued so far.
        return _Queued(self.execute_command("EVALSHA", sha, numkeys, *keys_and_args))

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True
                      ) -> list[Any]:
        client = cast(MailRedisCluster, self.cluster_client)
        shas = [cmd.args[1] for cmd in self._command_stack()
                if str(cmd.args[0]).upper() == "EVALSHA"]
        if not shas:
            return await super().execute(raise_on_error, allow_redirections)
        await client.load_scripts(shas)
        retry = self._transaction and list(self._command_stack())
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except (NoScriptError, ResponseError) as exc:
            if not retry or "NOSCRIPT" not in str(exc).upper():
                raise
        client.forget_loaded_scripts()
        await client.load_scripts(shas)
        self._restore_stack(retry)
        return await super().execute(raise_on_error, allow_redirections)

    def _command_stack(self) -> list[Any]:
        return list(getattr(self._execution_strategy, "_command_queue", []))

    def _restore_stack(self, commands: list[Any]) -> None:
        strategy = self._execution_strategy
        strategy._command_queue = list(commands)  # type: ignore[attr-defined]


class MailRedisCluster(RedisCluster):
    """RedisCluster whose pipelines run registered Lua scripts (see ScriptingClusterPipeline)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scripts: dict[str, str] = {}
        self._loaded_scripts: set[str] = set()

    def register_script(self, script: Any) -> AsyncScript:  # type: ignore[override]
        registered = AsyncScript(self, script)
        text = script.decode() if isinstance(script, bytes) else str(script)
        self._scripts[registered.sha] = text
        return registered

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None
                 ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # raises, as redis-py does
        return ScriptingClusterPipeline(self, transaction)  # type: ignore[abstract]

    async def load_scripts(self, shas: list[str]) -> None:
        """SCRIPT LOAD (on every master) each script not loaded by this client yet."""
        for sha in dict.fromkeys(shas):
            if sha in self._loaded_scripts:
                continue
            text = self._scripts.get(sha)
            if text is None:
                continue  # not ours: let Redis answer NOSCRIPT if it does not know it
            await self.script_load(text)
            self._loaded_scripts.add(sha)

    def forget_loaded_scripts(self) -> None:
        self._loaded_scripts.clear()


def find_workers_on_cluster(
    node_clients: list[list[dict[str, Any]]], prefix: str, queue: str | None = None,
    known_queues: Collection[str] = (),
) -> list[WorkerInfo]:
    """`find_workers` over the CLIENT LIST of every master of a cluster.

    A cluster client names its connections on *every* master (bullmq sets the name on each
    node) and opens as many per node as it has commands in flight, so connections are not
    paired there: a named worker (`...:w:<name>`, as every worker this project starts) is one
    worker, and it is counted on the master where it has the most connections (the one
    holding the queue's slot). Unnamed workers (Node's) are paired as usual, from that master.
    """
    best: dict[str, tuple[int, list[WorkerInfo]]] = {}
    for clients in node_clients:
        groups: dict[str, list[WorkerInfo]] = {}
        for worker in find_workers(clients, prefix, queue, known_queues):
            groups.setdefault(worker["client_name"], []).append(worker)
        for client_name, workers in groups.items():
            if workers[0]["name"]:
                workers = [{
                    **workers[0],
                    "age_s": max(w["age_s"] for w in workers),
                    "idle_s": min(w["idle_s"] for w in workers),
                    "connections": sum(w["connections"] for w in workers),
                }]
            connections = sum(w["connections"] for w in workers)
            if client_name not in best or connections > best[client_name][0]:
                best[client_name] = (connections, workers)
    result = [w for _, workers in best.values() for w in workers]
    result.sort(key=lambda w: (w["queue"], w["language"], w["client_name"], w["addr"]))
    return result
