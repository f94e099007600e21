"""A real `mailqueue worker` process for the fault and rate-limit tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mailqueue.manager import MailManager
from tests.waiting import eventually


class WorkerProcess:
    """`python -m mailqueue.cli worker` on the suite's Redis, under the test's prefix."""

    def __init__(
        self, tmp_path: Path, redis_url: str, prefix: str, smtp_url: str,
        concurrency: int = 10, **env: str,
    ) -> None:
        self.log_path = tmp_path / f"worker-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mailqueue.cli", "worker", "--concurrency", str(concurrency)],
            env={
                **os.environ, "REDIS_URL": redis_url, "QUEUE_PREFIX": prefix,
                "SMTP_URL": smtp_url, "LOG_LEVEL": "WARNING", **env,
            },
            cwd=tmp_path,  # no stray .env
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, mail: MailManager, queue: str = "emails",
                         timeout: float = 20) -> None:
        """Until this process's worker shows in Redis (CLIENT LIST), i.e. it takes jobs.

        Workers are named host-pid-n, so this finds its own even when other workers start at
        the same moment (counting workers before and after raced with them).
        """
        own = f"-{self.process.pid}-"

        async def registered() -> bool:
            assert self.process.poll() is None, f"the worker exited: {self.output()}"
            workers = await mail.workers.list_workers(queue)
            return any(own in (w["name"] or "") for w in workers)

        await eventually(registered, timeout, f"worker process {self.process.pid} in Redis",
                         interval=0.1)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]
