"""The real system for fault tests: a Redis of the test's own, and `mailqueue` processes.

Fault tests kill and restart things, so each gets its own Redis (never the suite's shared
one) and runs workers and the dashboard as real processes of the `mailqueue` command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from mailqueue.redis_server import EmbeddedRedis, free_port
from mailqueue.settings import Settings
from tests.waiting import eventually, eventually_sync


def own_redis(directory: Path, *extra_args: str, port: int = 0) -> EmbeddedRedis:
    """A Redis for one test. `appendfsync always`: a SIGKILL loses no acknowledged write."""
    return EmbeddedRedis(
        data_dir=directory, port=port, extra_args=["--appendfsync", "always", *extra_args]
    ).start()


class MailqueueProcess:
    """`python -m mailqueue.cli <args>` with the test's settings; output kept in a log file."""

    def __init__(self, tmp_path: Path, args: list[str], *, redis_url: str, prefix: str,
                 **env: str) -> None:
        self.args = args
        self.log_path = tmp_path / f"{args[0]}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mailqueue.cli", *args],
            env={**os.environ, "REDIS_URL": redis_url, "QUEUE_PREFIX": prefix,
                 "DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "WARNING", **env},
            cwd=tmp_path,  # no stray .env
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        def printed() -> bool:
            assert self.process.poll() is None, f"{self.args[0]} exited:\n{self.output()}"
            return text in self.output()

        eventually_sync(printed, timeout, f"{self.args[0]} printing {text!r}", interval=0.05)

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait; SIGKILL if it does not stop in time. Returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode


def start_worker(tmp_path: Path, *, redis_url: str, prefix: str, queues: list[str] | None = None,
                 concurrency: int = 10, **env: str) -> MailqueueProcess:
    worker = MailqueueProcess(
        tmp_path, ["worker", *(queues or []), "--concurrency", str(concurrency)],
        redis_url=redis_url, prefix=prefix, **env,
    )
    worker.wait_for_output("Ctrl-C to stop")
    return worker


def start_dashboard(tmp_path: Path, *, redis_url: str, prefix: str, **env: str
                    ) -> tuple[MailqueueProcess, str]:
    """The dashboard under uvicorn in its own process; returns it and its base URL."""
    port = free_port()
    dashboard = MailqueueProcess(tmp_path, ["dashboard", "--port", str(port)],
                                 redis_url=redis_url, prefix=prefix, **env)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert dashboard.process.poll() is None, f"dashboard exited:\n{dashboard.output()}"
        try:
            # /health answers 503 while Redis is away: the dashboard is up all the same.
            return httpx.get(f"{base}/health", timeout=2).status_code in (200, 503)
        except httpx.TransportError:
            return False

    eventually_sync(answers, 30, "the dashboard answering /health")
    return dashboard, base


async def dashboard_serving(http: httpx.AsyncClient, base: str, timeout: float) -> None:
    """Until the dashboard's overview and /health both answer 200 (Redis is back to it)."""

    async def statuses() -> list[int | str]:
        try:
            return [(await http.get(base + path)).status_code for path in ("/", "/health")]
        except httpx.HTTPError as exc:
            return [repr(exc)]

    await eventually(statuses, timeout, f"{base}/ and /health answering 200",
                     accept=lambda found: found == [200, 200])


def own_settings(server: EmbeddedRedis, prefix: str, tmp_path: Path) -> Settings:
    """The settings of a manager in this process on a Redis of the test's own."""
    return Settings(_env_file=None, redis_url=server.url,  # type: ignore[call-arg]
                    queue_prefix=prefix, data_dir=tmp_path / "data")
