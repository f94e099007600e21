"""What the mail bench counts on the measured Redis and the machine: the bench's own polls
(so they come off the workers' figures), INFO commandstats, CPU seconds of process trees and
of the machine, and a MONITOR reader for the commands clients sent.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import redis


class Probe:
    """The bench's one connection to the measured Redis: polls and INFO, each counted so that
    its reads and commands come off the workers' figures."""

    def __init__(self, url: str) -> None:
        # One connection for everything (pipelines included): MONITOR names it by address.
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=1,
                                                     decode_responses=True)
        self.client = redis.Redis(connection_pool=pool)
        self.addr = str(self.client.client_info()["addr"])
        self.polls = 0
        self.infos = 0

    def left(self, prefix: str, queue: str) -> tuple[int, int, int]:
        """(waiting, active + prioritized + delayed, failed): one pipelined round trip."""
        pipe = self.client.pipeline(transaction=False)
        key = f"{prefix}:{queue}"
        pipe.llen(f"{key}:wait")
        pipe.llen(f"{key}:active")
        pipe.zcard(f"{key}:prioritized")
        pipe.zcard(f"{key}:delayed")
        pipe.zcard(f"{key}:failed")
        wait, active, prioritized, delayed, failed = pipe.execute()
        self.polls += 1
        return int(wait), int(active) + int(prioritized) + int(delayed), int(failed)

    def failures(self, prefix: str, queue: str) -> str:
        """How many jobs failed, and the first reasons."""
        key = f"{prefix}:{queue}"
        ids = [str(i) for i in self.client.zrange(f"{key}:failed", 0, 49)]  # decoded replies
        reasons = Counter(str(self.client.hget(f"{key}:{i}", "failedReason"))[:300]
                          for i in ids)
        return f"{self.client.zcard(f'{key}:failed')} jobs failed, e.g. " + "; ".join(
            f"{reason!r} ({count} of the first {len(ids)})" for reason, count in
            reasons.most_common(3))

    def resume(self, prefix: str, queue: str) -> None:
        """Queue.resume(): BullMQ's pause script (bullmq-python's copy), sent from here so that
        it is none of the workers' commands."""
        import bullmq

        script = Path(bullmq.__file__).parent / "commands" / "pause-7.lua"
        key = f"{prefix}:{queue}"
        self.client.eval(script.read_text(), 7, f"{key}:paused", f"{key}:wait", f"{key}:meta",
                         f"{key}:prioritized", f"{key}:events", f"{key}:delayed",
                         f"{key}:marker", "resumed", "1")

    def info(self) -> dict[str, Any]:
        self.infos += 1
        return dict(self.client.info("all"))


# Per poll: 2 LLEN + 3 ZCARD in one pipelined write (one read event).
# Per poll: 2 LLEN + 3 ZCARD in one pipelined write (one read event).
POLL_COMMANDS = {"llen": 2, "zcard": 3}


def commandstats(info: dict[str, Any]) -> dict[str, int]:
    return {key.removeprefix("cmdstat_").lower(): int(value["calls"])
            for key, value in info.items() if key.startswith("cmdstat_")}


def redis_cpu(info: dict[str, Any]) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) of these processes and their children, alive now."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = proc.cpu_times()
                    total += times.user + times.system
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) \
        + getattr(t, "steal", 0)
    return busy, busy + t.idle + getattr(t, "iowait", 0)


# --- MONITOR: the commands clients sent, apart from those scripts ran ---------------------------

_MONITOR_LINE = re.compile(
    rb'^\+(\d+\.\d+) \[\d+ ([^\]]+)\] "([^"]+)"(?: "[^"]*" "(\d+)" "([^"]*)")?')


_ID = re.compile(r"<[^>]*>|\d+")  # job ids, Message-IDs: one name for every job's key


def _command_name(match: re.Match[bytes]) -> str:
    """`evalsha` with its number of keys and its first key (after the prefix and queue):
    bullmq's scripts are named by their key count (moveToFinished-14...)."""
    name = match[3].decode().lower()
    if name in ("evalsha", "eval") and match[4] is not None:
        parts = match[5].decode(errors="replace").split(":", 2)
        first = parts[-1] if len(parts) == 3 else ":".join(parts)
        first = _ID.sub("N", first)
        return f"{name}({match[4].decode()} keys, {first})"
    return name


class Monitor:
    """A MONITOR connection read by a thread: (time, source, command) of every command."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.sendall(b"MONITOR\r\n")
        self.seen: list[tuple[float, str, str]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while chunk := self.sock.recv(1 << 20):
                buffer += chunk
                *lines, buffer = buffer.split(b"\r\n")
                for line in lines:
                    match = _MONITOR_LINE.match(line)
                    if match:
                        self.seen.append((float(match[1]), match[2].decode(),
                                          _command_name(match)))

    def close(self) -> None:
        time.sleep(0.2)  # the last lines in flight
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)
