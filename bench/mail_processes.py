"""The processes a mail bench run sets up: the SMTP sink, the workers under test (Node's or
ours) and Node's job adder, and the context one run is given.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mail_counters import Probe, tree_cpu

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "bench" / "node"
POOL = 5
# Our settings' name prefixes (mailqueue/settings.py): stripped from the environment our worker
# inherits, so it runs on its defaults plus what the bench sets, whatever the caller's shell has.
_OUR_ENV = ("redis_", "smtp_", "mail_", "dashboard_", "worker_", "job_", "queue_", "alert_",
            "audit_", "mailqueue_", "log_level")


class MailBenchError(Exception):
    """A run whose checks failed: its figures measure a failure, not the worker."""


class Sink:
    """bench/mail_sink.py in its own process; `stats()` asks it for its counters."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "mail_sink.py")],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("smtp://"):
            raise SystemExit(f"mail bench: the sink did not start ({self.url!r})")
        _, _, rest = self.url.partition("://")
        self.port = int(rest.split("?")[0].rsplit(":", 1)[1])

    def stats(self) -> dict[str, int]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return dict(json.loads(self.process.stdout.readline()))

    def cpu(self) -> float:
        return tree_cpu([self.process.pid])

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@dataclass
class Workers:
    procs: list[subprocess.Popen[bytes]]
    logs: list[IO[bytes]] = field(default_factory=list)
    log_paths: list[Path] = field(default_factory=list)
    stopped: list[str] | None = None  # what they wrote, once stopped

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def ready(self) -> bool:
        """Every process has said it is ready (Node: its `ready` line; ours: the line that
        ends with "Ctrl-C to stop", the supervisor's for --processes)."""
        text = "".join(path.read_text(errors="replace") for path in self.log_paths)
        lines = text.splitlines()
        node = sum(line.startswith('{"event":"ready"') for line in lines)
        ours = sum("Ctrl-C to stop" in line and not line.startswith("[worker") for line in lines)
        return node + ours >= len(self.procs) and bool(lines)

    def dead(self) -> str | None:
        for p in self.procs:
            if p.poll() is not None:
                return f"worker process {p.pid} exited with code {p.returncode}"
        return None

    def stop(self, timeout: float = 60) -> list[str]:
        """SIGTERM (a graceful close), then what the processes wrote."""
        if self.stopped is not None:
            return self.stopped
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        for f in self.logs:
            f.close()
        self.stopped = [line for path in self.log_paths
                        for line in path.read_text(errors="replace").splitlines() if line.strip()]
        return self.stopped


def mailqueue_command() -> list[str]:
    script = Path(sys.executable).with_name("mailqueue")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mailqueue.cli"]


def our_env(redis_url: str, prefix: str, smtp_url: str, extra: list[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith(_OUR_ENV)}
    env.update(REDIS_URL=redis_url, QUEUE_PREFIX=prefix, SMTP_URL=f"{smtp_url}&pool={POOL}",
               LOG_LEVEL="WARNING")
    for item in extra:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def start_workers(variant: str, ctx: Context, prefix: str, queue: str, logdir: Path) -> Workers:
    processes = ctx.auto if variant.endswith("-auto") else 1
    logs: list[IO[bytes]] = []
    paths: list[Path] = []
    procs: list[subprocess.Popen[bytes]] = []
    if variant.startswith("node"):
        command = json.dumps({"redis": ctx.redis_url, "prefix": prefix, "queue": queue,
                              "smtp": ctx.sink.url, "concurrency": ctx.concurrency,
                              "pool": POOL})
        for i in range(processes):
            path = logdir / f"{prefix}-node-{i}.log"
            log = path.open("wb")
            procs.append(subprocess.Popen(["node", "mailworker.mjs", command], cwd=NODE_DIR,
                                          stdout=log, stderr=subprocess.STDOUT))
            logs.append(log)
            paths.append(path)
    else:
        args = [*mailqueue_command(), "worker", queue, "--concurrency", str(ctx.concurrency)]
        if processes > 1:
            args += ["--processes", "auto"]
        path = logdir / f"{prefix}-ours.log"
        log = path.open("wb")
        # cwd: a directory without a .env, which our settings would read.
        procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                      env=our_env(ctx.redis_url, prefix, ctx.sink.url,
                                                  ctx.ours_env),
                                      cwd=logdir))
        logs.append(log)
        paths.append(path)
    return Workers(procs, logs, paths)


def add_jobs(redis_url: str, prefix: str, queue: str, n: int, pause: bool = False) -> None:
    subprocess.run(["node", "addmail.mjs", json.dumps(
        {"redis": redis_url, "prefix": prefix, "queue": queue, "n": n, "pause": pause})],
        cwd=NODE_DIR, check=True, stdout=subprocess.DEVNULL, timeout=300)


@dataclass
class Context:
    redis_url: str
    sink: Sink
    probe: Probe
    concurrency: int
    auto: int
    logdir: Path
    ours_env: list[str]
    runs: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))


def node_rendering() -> dict[str, Any]:
    """Node's notification e-mail for one job's data (subject, html, text, data)."""
    done = subprocess.run(["node", "mailworker.mjs", "--render", "7"], cwd=NODE_DIR, check=True,
                          capture_output=True, text=True)
    rendering: dict[str, Any] = json.loads(done.stdout)
    return rendering
