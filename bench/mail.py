"""E-mails per second, side by side: Node BullMQ + nodemailer vs `mailqueue worker` (issue 12).

    .venv/bin/python bench/mail.py [--runs 3] [--emails 5000] [--noop]

One Redis (an EmbeddedRedis of its own, never the machine's 6379) and one SMTP sink
(`bench/mail_sink.py`: aiosmtpd, accepts and discards, touches no Redis) serve every variant;
the variants take turns, `--runs` times, and each figure is the median of its runs:

- `node`: `bench/node/mailworker.mjs`, an npm `bullmq` Worker (concurrency 50) whose processor
  renders the notification e-mail with template literals and sends it with `nodemailer`
  (`pool: true, maxConnections: 5`);
- `ours`: `mailqueue worker <queue> --concurrency 50`, one process, the installed command
  configured by its environment (REDIS_URL, QUEUE_PREFIX, SMTP_URL to the sink with pool=5,
  LOG_LEVEL=WARNING; every other setting its default), so it measures whatever the tree holds;
- `ours-auto`: the same with `--processes auto`;
- `node-auto` (not run unless asked, `--mail-variants`): as many Node processes.

Each run: Node BullMQ (`bench/node/addmail.mjs`) adds `--emails` jobs `send-notification` with
camelCase data {to, name, title, message, actionUrl, actionLabel} and removeOnComplete, to a
queue under a key prefix of the run's own (so no run's audit writer or discovery sees another
run's queues), and pauses it; the worker starts; when every worker process has said it is
ready, the bench resumes the queue; the clock runs from the first job taken (the wait list
shorter than N) to the queue empty (wait, active, prioritized, delayed). Over that window:

- worker CPU ms per e-mail: utime + stime of the worker process and its children (psutil);
- Redis round trips per e-mail: INFO stats `total_reads_processed` (read events on client
  sockets: a pipelined batch is one), less the bench's own (one per poll and per INFO);
- Redis commands executed per e-mail: INFO commandstats, every command, the ones that Lua
  scripts run inside Redis included, less the bench's own polls;
- Redis CPU (INFO used_cpu_*), sink CPU, and the machine's busy share.

Each round also times the same messages sent with no queue, through our SmtpTransport (pool of
5, 50 at once) from one process: the ceiling the sink and the pool set.

Then, untimed, one pass per variant under MONITOR (`--monitor-emails`, 0 to skip) counts the
commands the worker's clients SENT (MONITOR marks those a script runs as `lua`).

Every run checks that the sink received exactly N messages, that no job failed and that the
worker is still running; a failed check marks the variant failed (its figures are not used).
Our worker's log lines (WARNING and up) are kept and reported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "bench" / "node"
POOL = 5
# Our settings' name prefixes (mailqueue/settings.py): stripped from the environment our worker
# inherits, so it runs on its defaults plus what the bench sets, whatever the caller's shell has.
_OUR_ENV = ("redis_", "smtp_", "mail_", "dashboard_", "worker_", "job_", "queue_", "alert_",
            "audit_", "mailqueue_", "log_level")

# The figures in issue 12 when it was filed (one process unless said), for reference.
FILED = {"rate_1": "0.32x", "cpu": "~2.5x", "rate_auto": "0.41x", "trips": "~11x",
         "noop_raw": "~1x", "noop_node": "~0.15x"}


class MailBenchError(Exception):
    """A run whose checks failed: its figures measure a failure, not the worker."""


# --- the sink ---------------------------------------------------------------------------------

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


# --- the measured Redis, and what the bench itself sends to it --------------------------------

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
_POLL_COMMANDS = {"llen": 2, "zcard": 3}


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


# --- the variants -----------------------------------------------------------------------------

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


# Lines of our worker's output that are its normal chatter, not a problem.
_CHATTER = re.compile(r"^(\[worker \d+\] )?(Redis:|Worker:|Stopping|Stopped\.|Using |"
                      r"redis://|Connected to )")


def one_run(ctx: Context, variant: str, n: int, monitor: bool = False) -> dict[str, Any]:
    prefix, queue = f"mb{next(ctx.runs)}", "emails"
    probe = ctx.probe
    add_jobs(ctx.redis_url, prefix, queue, n, pause=True)
    wait, rest, failed = probe.left(prefix, queue)
    if wait != n:
        raise MailBenchError(f"{variant}: {wait} jobs waiting after adding {n}")
    sink_before = ctx.sink.stats()
    watcher = None
    if monitor:
        host, port = ctx.redis_url.removeprefix("redis://").split("/")[0].rsplit(":", 1)
        watcher = Monitor(host, int(port))
    workers = start_workers(variant, ctx, prefix, queue, ctx.logdir)
    timeout = max(120.0, n / 20)
    deadline = time.monotonic() + timeout
    output: list[str] = []
    ok = False
    try:
        # The queue is paused until every worker process is up: no process's start-up (our
        # children import for a second or so) overlaps another's work in the window.
        while not workers.ready():
            if problem := workers.dead():
                raise MailBenchError(f"{variant}: {problem} at start")
            if time.monotonic() > deadline:
                raise MailBenchError(f"{variant}: not ready in {timeout:.0f} s")
            time.sleep(0.05)
        time.sleep(0.5)  # what a worker does just after its ready line
        resumed = time.time()
        probe.resume(prefix, queue)
        while wait >= n:  # the clock starts when the first job leaves the wait list
            if problem := workers.dead():
                raise MailBenchError(f"{variant}: {problem} before taking a job")
            if time.monotonic() > deadline:
                raise MailBenchError(f"{variant}: no job taken in {timeout:.0f} s")
            time.sleep(0.005)
            wait, rest, failed = probe.left(prefix, queue)
        started = time.perf_counter()
        polls0 = probe.polls
        info0 = probe.info()
        cpu0, sink_cpu0, machine0 = tree_cpu(workers.pids), ctx.sink.cpu(), machine_cpu()
        while wait + rest:
            if failed:  # no need to wait for the rest: the run measures failures
                raise MailBenchError(f"{variant}: {probe.failures(prefix, queue)}")
            if problem := workers.dead():
                raise MailBenchError(f"{variant}: {problem} with {wait + rest} jobs left")
            if time.monotonic() > deadline:
                raise MailBenchError(f"{variant}: {wait + rest} jobs left after {timeout:.0f} s")
            time.sleep(0.01)
            wait, rest, failed = probe.left(prefix, queue)
        elapsed, wall1 = time.perf_counter() - started, time.time()
        cpu1, sink_cpu1, machine1 = tree_cpu(workers.pids), ctx.sink.cpu(), machine_cpu()
        polls = probe.polls - polls0
        info1 = probe.info()
        if failed:
            raise MailBenchError(f"{variant}: {probe.failures(prefix, queue)}")
        sink_after = ctx.sink.stats()
        if problem := workers.dead():
            raise MailBenchError(f"{variant}: {problem} at the end of the run")
        ok = True
    except MailBenchError as exc:
        output = workers.stop(10)
        last = [line[:300] for line in output[-3:]]
        raise MailBenchError(f"{exc}; the worker's last lines: {last}") from None
    finally:
        output = workers.stop(60 if ok else 10)  # (once: a second call returns the same)
        if watcher is not None:
            watcher.close()
        cleanup(probe, prefix)
    received = sink_after["messages"] - sink_before["messages"]
    if received != n:
        raise MailBenchError(f"{variant}: the sink received {received} messages for {n} jobs")
    if variant.startswith("node"):
        done = [json.loads(line) for line in output if line.startswith('{"event":"done"')]
        if len(done) != len(workers.procs):
            raise MailBenchError(f"{variant}: {len(done)} of {len(workers.procs)} Node "
                                 f"processes closed cleanly; output: {output[-3:]}")
        if sum(d["failed"] for d in done) or any(d["failures"] for d in done):
            raise MailBenchError(f"{variant}: Node reported failures: {done}")
        problems = [line for line in output if not line.startswith('{"event":')]
    else:
        problems = [line for line in output if not _CHATTER.match(line)]
    stats0, stats1 = commandstats(info0), commandstats(info1)
    executed = Counter({k: v - stats0.get(k, 0) for k, v in stats1.items()})
    for command, per_poll in _POLL_COMMANDS.items():
        executed[command] -= per_poll * polls
    executed["info"] -= 1
    executed = Counter({k: v for k, v in executed.items() if v > 0})
    reads = int(info1["total_reads_processed"]) - int(info0["total_reads_processed"])
    busy = (machine1[0] - machine0[0]) / max(machine1[1] - machine0[1], 1e-9)
    result: dict[str, Any] = {
        "rate": n / elapsed,
        "seconds": elapsed,
        "cpu_ms": (cpu1 - cpu0) * 1000 / n,
        # the bench's own: one read per poll, one for the closing INFO
        "round_trips": (reads - polls - 1) / n,
        "commands_executed": sum(executed.values()) / n,
        "redis_cpu_ms": (redis_cpu(info1) - redis_cpu(info0)) * 1000 / n,
        "sink_cpu_ms": (sink_cpu1 - sink_cpu0) * 1000 / n,
        "machine_busy": busy,
        "bytes": (sink_after["bytes"] - sink_before["bytes"]) / n,
        "connections": sink_after["connections"] - sink_before["connections"],
        "log": problems[:10],
    }
    if watcher is not None:
        # From the resume on: every command of the N jobs, the first ones' included.
        window = [(source, cmd) for ts, source, cmd in watcher.seen
                  if resumed <= ts <= wall1 and source != probe.addr]
        sent = Counter(cmd for source, cmd in window if source != "lua")
        inside = Counter(cmd for source, cmd in window if source == "lua")
        result["sent"] = {k: v / n for k, v in sent.most_common()}
        result["in_scripts"] = sum(inside.values()) / n
    return result


# --- SMTP alone: the ceiling the sink and a pool of 5 set, without any queue ------------------

def smtp_alone_child(url: str, n: int, in_flight: int) -> None:
    """(In a process of its own.) Send n notification messages, built beforehand, through our
    SmtpTransport (pool of 5) with `in_flight` sends at once; print seconds and CPU seconds."""
    import asyncio

    from mailqueue.mail.message import Address, build_message
    from mailqueue.mail.transport import SmtpTransport

    node = json.loads(subprocess.run(["node", "mailworker.mjs", "--render", "7"], cwd=NODE_DIR,
                                     check=True, capture_output=True, text=True).stdout)
    sender = Address("noreply@localhost", "mailqueue")
    batch = [build_message(sender=sender, to=[Address(f"user{i}@example.com")],
                           subject=node["subject"], text=node["text"], html=node["html"],
                           message_id=f"<emails.{i}@localhost>") for i in range(n)]

    async def send_all() -> float:
        transport = SmtpTransport(f"{url}&pool={POOL}")
        slots = asyncio.Semaphore(in_flight)

        async def one(message: Any) -> None:
            async with slots:
                await transport.send(message)

        await transport.send(batch[0])  # connected
        started = time.perf_counter()
        await asyncio.gather(*(one(m) for m in batch[1:]))
        elapsed = time.perf_counter() - started
        await transport.close()
        return elapsed

    cpu0 = time.process_time()
    seconds = asyncio.run(send_all())
    print(json.dumps({"seconds": seconds, "cpu": time.process_time() - cpu0, "sent": n - 1}))


def smtp_alone(ctx: Context, n: int) -> dict[str, Any]:
    before, sink_cpu0 = ctx.sink.stats(), ctx.sink.cpu()
    done = subprocess.run([sys.executable, __file__, "--smtp-alone", ctx.sink.url, str(n),
                           str(ctx.concurrency)], capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise MailBenchError(f"smtp alone: exit {done.returncode}: {done.stderr[-600:]}")
    sink_cpu1, after = ctx.sink.cpu(), ctx.sink.stats()
    result = json.loads(done.stdout.splitlines()[-1])
    if after["messages"] - before["messages"] != n:
        raise MailBenchError(f"smtp alone: the sink received "
                             f"{after['messages'] - before['messages']} of {n} messages")
    sent = result["sent"]
    return {"rate": sent / result["seconds"], "sender_cpu_ms": result["cpu"] * 1000 / n,
            "sink_cpu_ms": (sink_cpu1 - sink_cpu0) * 1000 / n}


def cleanup(probe: Probe, prefix: str) -> None:
    """The run's own keys (its prefix), so Redis stays small from run to run."""
    keys = list(probe.client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        probe.client.unlink(*keys[start:start + 500])


# --- the whole bench --------------------------------------------------------------------------

def template_check() -> str:
    """Node's template literals against our `notification` template, for one job's data."""
    from mailqueue.mail.jobdata import normalize_mail_data
    from mailqueue.mail.templates import TemplateRenderer

    node = json.loads(subprocess.run(["node", "mailworker.mjs", "--render", "7"], cwd=NODE_DIR,
                                     check=True, capture_output=True, text=True).stdout)
    fields = normalize_mail_data(node["data"])
    ours = TemplateRenderer(None).render("notification",
                                         fields.template_variables("notification"))
    if (ours.subject, ours.html, ours.text) == (node["subject"], node["html"], node["text"]):
        return f"identical (HTML {len(ours.html):,} + text {len(ours.text):,} characters)"
    return (f"DIFFERENT: ours HTML {len(ours.html):,} + text {len(ours.text):,}, Node HTML "
            f"{len(node['html']):,} + text {len(node['text']):,} characters")


def calibrate(probe: Probe) -> int:
    """Read events that k polls and one INFO make: k + 1 when nothing else talks to Redis."""
    first = probe.info()
    for _ in range(50):
        probe.left("calibration", "none")
    last = probe.info()
    return int(last["total_reads_processed"]) - int(first["total_reads_processed"])


def npm_ready() -> None:
    if not (NODE_DIR / "node_modules" / "nodemailer").exists() \
            or not (NODE_DIR / "node_modules" / "bullmq").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR,
                       check=True, timeout=600)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from mailqueue.redis_server import EmbeddedRedis

    npm_ready()
    variants = [v for v in args.mail_variants.split(",") if v]
    unknown = set(variants) - {"node", "ours", "ours-auto", "node-auto"}
    if unknown:
        raise SystemExit(f"--mail-variants: unknown {sorted(unknown)}")
    auto = max(len(os.sched_getaffinity(0)), 1)  # what `--processes auto` starts
    results: dict[str, Any] = {
        "emails": args.emails, "runs": args.runs, "concurrency": args.mail_concurrency,
        "pool": POOL, "auto_processes": auto, "cpus": os.cpu_count(), "variants": {},
        "errors": {},
        "template": template_check(), "monitor_emails": args.monitor_emails,
    }
    print(f"  templates, Node vs ours: {results['template']}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="mailqueue-bench-mail-"))
    server = EmbeddedRedis(data_dir=tmp / "redis", appendonly=False).start()
    sink = Sink()
    try:
        probe = Probe(server.url)
        info = probe.info()
        results["redis_version"] = info.get("redis_version")
        if "total_reads_processed" not in info:
            raise SystemExit("mail bench: this Redis has no total_reads_processed (6.0+ has)")
        results["calibration_reads"] = calibrate(probe)
        if results["calibration_reads"] != 51:
            print(f"  note: 50 polls + 1 INFO made {results['calibration_reads']} read events "
                  "(51 expected): round trips are off by the difference", flush=True)
        ctx = Context(server.url, sink, probe, args.mail_concurrency, auto, tmp,
                      args.ours_env or [])
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}

        def attempt(variant: str, n: int, monitor: bool = False) -> dict[str, Any] | None:
            if variant in results["errors"]:
                return None
            try:
                return one_run(ctx, variant, n, monitor)
            except MailBenchError as exc:
                results["errors"][variant] = str(exc)
                print(f"  FAILED {exc}", flush=True)
                return None

        if args.mail_warmup:
            for variant in variants:
                attempt(variant, args.mail_warmup)
        smtp: list[dict[str, Any]] = []
        for i in range(args.runs):
            for variant in variants:
                run = attempt(variant, args.emails)
                if run is not None:
                    runs[variant].append(run)
                    print(f"  run {i + 1} {label(variant, auto)}: {run['rate']:,.0f} e-mails/s, "
                          f"{run['cpu_ms']:.2f} ms CPU, {run['round_trips']:.2f} round trips "
                          f"per e-mail", flush=True)
            if args.smtp_alone and "smtp-alone" not in results["errors"]:
                try:
                    smtp.append(smtp_alone(ctx, args.emails))
                except MailBenchError as exc:
                    results["errors"]["smtp-alone"] = str(exc)
                    print(f"  FAILED {exc}", flush=True)
                    continue
                print(f"  run {i + 1} SMTP alone (no queue): {smtp[-1]['rate']:,.0f} "
                      "messages/s", flush=True)
        if smtp:
            results["smtp_alone"] = {key: statistics.median(r[key] for r in smtp)
                                     for key in smtp[0]}
            results["smtp_alone"]["rates"] = [r["rate"] for r in smtp]
        for variant, done in runs.items():
            if variant in results["errors"] or not done:
                continue
            summary: dict[str, Any] = {
                key: statistics.median(r[key] for r in done)
                for key in ("rate", "cpu_ms", "round_trips", "commands_executed",
                            "redis_cpu_ms", "sink_cpu_ms", "machine_busy", "bytes",
                            "connections")}
            summary["cpus"] = os.cpu_count()
            summary["rates"] = [r["rate"] for r in done]
            summary["cpu_ms_runs"] = [r["cpu_ms"] for r in done]
            summary["log"] = sorted({line for r in done for line in r["log"]})[:10]
            results["variants"][variant] = summary
        if args.monitor_emails:
            for variant in variants:
                if variant in results["variants"]:
                    run = attempt(variant, args.monitor_emails, monitor=True)
                    if run is not None:
                        results["variants"][variant]["sent"] = run["sent"]
                        results["variants"][variant]["in_scripts"] = run["in_scripts"]
    finally:
        sink.close()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def label(variant: str, auto: int) -> str:
    return {"node": "Node BullMQ + nodemailer, 1 process",
            "node-auto": f"Node BullMQ + nodemailer, {auto} processes",
            "ours": "mailqueue worker, 1 process",
            "ours-auto": f"mailqueue worker --processes auto ({auto})"}[variant]


# --- the goal table ---------------------------------------------------------------------------

def goal_rows(mail: dict[str, Any] | None, workers: dict[str, Any] | None
              ) -> list[dict[str, Any]]:
    """measure, reference (Node, or bullmq-python), ours, ratio, goal, met, filed."""
    rows: list[dict[str, Any]] = []
    v = (mail or {}).get("variants", {})
    errors = (mail or {}).get("errors", {})
    node, ours, auto = v.get("node"), v.get("ours"), v.get("ours-auto")

    def row(measure: str, ref: float | None, value: float | None, fmt: str, goal: str,
            ok: Any, filed: str, variants: tuple[str, str] = ("node", "ours")) -> None:
        ratio = value / ref if ref and value is not None else None
        cells = [None if x is None else format(x, fmt) for x in (ref, value)]
        for i, variant in enumerate(variants):
            if variant in errors:
                cells[i] = "FAILED"
        rows.append({"measure": measure, "ref": cells[0], "ours": cells[1],
                     "ratio": ratio, "goal": goal,
                     "met": None if ratio is None else bool(ok(ratio)), "filed": filed})

    if mail:
        n_auto = mail.get("auto_processes", "N")
        row("e-mails/s, 1 process, vs Node (1 process)", node and node["rate"],
            ours and ours["rate"], ",.0f", ">= 2.0x", lambda r: r >= 2.0, FILED["rate_1"])
        row("worker CPU ms per e-mail, vs Node", node and node["cpu_ms"],
            ours and ours["cpu_ms"], ".2f", "<= 0.5x", lambda r: r <= 0.5, FILED["cpu"])
        row(f"e-mails/s, --processes auto ({n_auto}), vs Node 1 process",
            node and node["rate"], auto and auto["rate"], ",.0f", ">= 2.0x",
            lambda r: r >= 2.0, FILED["rate_auto"], ("node", "ours-auto"))
        row("Redis round trips per e-mail, vs Node", node and node["round_trips"],
            ours and ours["round_trips"], ".2f", "<= 1.2x", lambda r: r <= 1.2, FILED["trips"])
    if workers and "native" in workers:
        row("no-op jobs/s, 1 process, native runtime vs plain bullmq-python Worker "
            "(reference column: bullmq-python)", workers.get("raw"), workers["native"], ",.0f",
            ">= 3x", lambda r: r >= 3, FILED["noop_raw"], ("", ""))
        row("no-op jobs/s, 1 process, native runtime vs Node BullMQ Worker",
            workers.get("node"), workers["native"], ",.0f", ">= 0.5x", lambda r: r >= 0.5,
            FILED["noop_node"], ("", ""))
    return rows


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _ratio(row: dict[str, Any]) -> str:
    return "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"


def _met_text(row: dict[str, Any], markdown: bool = False) -> str:
    if row["met"] is None:
        return "-"
    return "met" if row["met"] else ("**not met**" if markdown else "NOT MET")


def print_goal_table(mail: dict[str, Any] | None, workers: dict[str, Any] | None) -> None:
    rows = goal_rows(mail, workers)
    if not rows:
        return
    header = ["measure", "Node", "ours", "ratio", "goal", "met?", "when filed"]
    table = [header] + [[r["measure"], _cell(r["ref"]), _cell(r["ours"]), _ratio(r), r["goal"],
                         _met_text(r), r["filed"]] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    print("issue 12 goals (ours / Node; 'when filed': the ratios in the issue):")
    for i, line in enumerate(table):
        print("  " + " | ".join(cell.ljust(w) if j == 0 else cell.rjust(w)
                                for j, (cell, w) in enumerate(zip(line, widths, strict=True))))
        if i == 0:
            print("  " + "-+-".join("-" * w for w in widths))


_PARTS = (("worker", "cpu_ms"), ("sink", "sink_cpu_ms"), ("Redis", "redis_cpu_ms"))


def cores(s: dict[str, Any]) -> str:
    """CPU ms per e-mail times e-mails per second: the cores each part kept busy; the rest of
    the machine's busy time is everything else (the bench's polls, other work)."""
    used = {name: s[key] * s["rate"] / 1000 for name, key in _PARTS}
    rest = s["machine_busy"] * s.get("cpus", os.cpu_count() or 1) - sum(used.values())
    return " / ".join(f"{name} {value:.2f}" for name, value in used.items()) + \
        f" / rest of the machine {max(rest, 0):.2f}"


def smtp_alone_text(mail: dict[str, Any]) -> str:
    s = mail["smtp_alone"]
    runs = ", ".join(f"{r:,.0f}" for r in s["rates"])
    return (f"SMTP alone, no queue (the same messages, built beforehand, through our "
            f"SmtpTransport with a pool of {mail['pool']} and {mail['concurrency']} sends at once, "
            f"from one process, to the same sink): {s['rate']:,.0f} messages/s (runs: {runs}); "
            f"sender CPU {s['sender_cpu_ms']:.2f} ms, sink CPU {s['sink_cpu_ms']:.2f} ms per "
            "message: the ceiling that the sink and a pool of 5 set on a single process")


def print_details(mail: dict[str, Any]) -> None:
    auto = mail["auto_processes"]
    print(f"per variant ({mail['emails']:,} e-mails, medians of {mail['runs']} runs, "
          f"concurrency {mail['concurrency']}, SMTP pool {mail['pool']}):")
    for variant, s in mail["variants"].items():
        runs = ", ".join(f"{r:,.0f}" for r in s["rates"])
        print(f"  {label(variant, auto)}: {s['rate']:,.0f} e-mails/s (runs: {runs}); per e-mail: "
              f"worker CPU {s['cpu_ms']:.2f} ms, Redis round trips {s['round_trips']:.2f}, "
              f"Redis commands executed {s['commands_executed']:.1f}, Redis CPU "
              f"{s['redis_cpu_ms']:.2f} ms, sink CPU {s['sink_cpu_ms']:.2f} ms; machine busy "
              f"{s['machine_busy']:.0%}; {s['bytes']:,.0f} bytes a message, "
              f"{s['connections']:.0f} SMTP connections; cores in use: {cores(s)}")
        if "sent" in s:
            sent = ", ".join(f"{k} {v:.2f}" for k, v in s["sent"].items() if v >= 0.005)
            print(f"    commands sent per e-mail (MONITOR pass): {sum(s['sent'].values()):.2f}: "
                  f"{sent}; run inside scripts: {s['in_scripts']:.1f}")
        for line in s["log"]:
            print(f"    worker output: {line}")
    if "smtp_alone" in mail:
        print(f"  {smtp_alone_text(mail)}")
    for variant, error in mail["errors"].items():
        print(f"  {variant} FAILED: {error}")


# --- docs/performance.md ----------------------------------------------------------------------

def report(mail: dict[str, Any] | None, workers: dict[str, Any] | None) -> str:
    if not mail:
        return ""
    rows = goal_rows(mail, workers)
    goal_lines = "\n".join(
        f"| {r['measure']} | {_cell(r['ref'])} | {_cell(r['ours'])} | {_ratio(r)} | {r['goal']} "
        f"| {_met_text(r, True)} | {r['filed']} |" for r in rows)
    auto = mail["auto_processes"]
    detail_lines = "\n".join(
        f"| {label(v, auto)} | {s['rate']:,.0f} ({', '.join(f'{r:,.0f}' for r in s['rates'])}) "
        f"| {s['cpu_ms']:.2f} | {s['round_trips']:.2f} | "
        + (f"{sum(s['sent'].values()):.2f}" if "sent" in s else "-")
        + f" | {s['commands_executed']:.1f} | {s['redis_cpu_ms']:.2f} | {s['sink_cpu_ms']:.2f} "
        f"| {cores(s)} | {s['machine_busy']:.0%} | {s['bytes']:,.0f} |"
        for v, s in mail["variants"].items())
    sent_lines = "".join(
        f"- {label(v, auto)}: " + ", ".join(f"{k} {x:.2f}" for k, x in s["sent"].items()
                                            if x >= 0.005) + "\n"
        for v, s in mail["variants"].items() if "sent" in s)
    errors = "".join(f"\n**{v} failed**: {e}\n" for v, e in mail["errors"].items())
    smtp = f"\n{smtp_alone_text(mail)}.\n" if "smtp_alone" in mail else ""
    logs = "".join(f"\nOutput of {label(v, auto)} during the runs: "
                   + "; ".join(f"`{line}`" for line in s["log"]) + "\n"
                   for v, s in mail["variants"].items() if s["log"])
    return f"""
## E-mails per second: ours vs Node BullMQ + nodemailer (`bench/mail.py`, issue 12)

{mail["emails"]:,} e-mails per run, medians of {mail["runs"]} runs, the variants taking turns on
one Redis (embedded, Redis {mail.get("redis_version")}) and one SMTP sink (aiosmtpd in its own
process, accepts and discards, no Redis). Node BullMQ adds the jobs (`send-notification`,
camelCase data, removeOnComplete; the queue paused until the workers are up); worker
concurrency {mail["concurrency"]}, SMTP pool of {mail["pool"]}; the clock runs from the first
job taken to the queue empty. Node: `bench/node/mailworker.mjs` (bullmq 6.7.0 + nodemailer
10.6.1 pooled, template literals); ours: `mailqueue worker` (the built-in `notification`
template). The templates' output for the same data: {mail["template"]}. "When filed": the
ratios in issue 12 when it was filed.

| measure | Node | ours | ratio | goal | met? | when filed |
|---|---|---|---|---|---|---|
{goal_lines}
{errors}
| Variant | E-mails/s (runs) | Worker CPU ms / e-mail | Redis round trips / e-mail | \
Commands sent / e-mail | Commands executed / e-mail | Redis CPU ms / e-mail | Sink CPU ms / \
e-mail | Cores in use: worker / sink / Redis / rest | Machine busy | Bytes / message |
|---|---|---|---|---|---|---|---|---|---|---|
{detail_lines}
{smtp}
- Worker CPU: user + system time of the worker process and its children over the window
  (psutil). Cores in use: CPU ms per e-mail times e-mails/s. Machine busy: the whole
  machine's, other work on it included.
- Round trips: INFO `total_reads_processed` delta (read events on client sockets: a
  pipelined batch counts once), less the bench's own polls.
- Commands executed: INFO commandstats delta, every command, those Lua scripts run inside
  Redis included. Commands sent: what the worker's connections sent, from a separate untimed
  pass of {mail.get("monitor_emails", 0):,} e-mails under MONITOR (which tells the commands
  scripts run apart); an EVALSHA is named by its number of keys and first key (bullmq's
  scripts: 14 keys moveToFinished, 11 moveToActive; `delivered:N`: our send-once claim and
  delivery record):

{sent_lines}{logs}"""


# --- entry points -----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--emails", type=int, default=5000, help="e-mails per run")
    parser.add_argument("--mail-concurrency", dest="mail_concurrency", type=int, default=50)
    parser.add_argument("--mail-warmup", dest="mail_warmup", type=int, default=300,
                        help="e-mails of an unmeasured first run of each variant (0: none)")
    parser.add_argument("--monitor-emails", dest="monitor_emails", type=int, default=500,
                        help="e-mails of the untimed MONITOR pass per variant (0: none)")
    parser.add_argument("--mail-variants", dest="mail_variants", default="node,ours,ours-auto",
                        help="comma-separated: node, ours, ours-auto, node-auto")
    parser.add_argument("--no-smtp-alone", dest="smtp_alone", action="store_false",
                        help="leave out the SMTP-alone ceiling (our transport, no queue)")
    parser.add_argument("--ours-env", dest="ours_env", action="append", metavar="KEY=VALUE",
                        help="a setting for our worker (e.g. WORKER_RUNTIME=bullmq); repeatable")


def run(args: argparse.Namespace) -> dict[str, Any]:
    results = bench(args)
    print_details(results)
    return results


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--smtp-alone":
        smtp_alone_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--noop", action="store_true",
                        help="also the no-op jobs/s rows (bench/workers.py: native, raw, node)")
    add_arguments(parser)
    args = parser.parse_args()
    print("e-mails, ours vs Node BullMQ + nodemailer:", flush=True)
    results = run(args)
    workers_results = None
    if args.noop:
        sys.path.insert(0, str(ROOT / "bench"))
        import workers

        wparser = argparse.ArgumentParser()
        workers.add_arguments(wparser)
        wargs = wparser.parse_args(["--worker-variants", "native,raw,node", "--skip-processes",
                                    "--worker-runs", str(args.runs)])
        print("workers (no-op jobs):", flush=True)
        workers_results = workers.run(wargs)
    print_goal_table(results, workers_results)
    out = ROOT / "test-artifacts" / "bench-mail.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"mail": results, "workers": workers_results}, indent=1,
                              default=str))
    if results["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
