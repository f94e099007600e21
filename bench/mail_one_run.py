"""One timed run of one mail bench variant: N jobs added by Node, the workers started, the
queue resumed once they are ready, then the figures over the window from the first job taken
to the queue empty, and the checks that make them count (every message received, no job
failed, the workers still up).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from typing import Any

from mail_counters import (
    POLL_COMMANDS,
    Monitor,
    Probe,
    commandstats,
    machine_cpu,
    redis_cpu,
    tree_cpu,
)
from mail_processes import Context, MailBenchError, add_jobs, start_workers

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

    def still_going(when: str, late: str) -> None:
        """Each wait of the run ends when a worker process has died or the deadline passed."""
        if problem := workers.dead():
            raise MailBenchError(f"{variant}: {problem} {when}")
        if time.monotonic() > deadline:
            raise MailBenchError(f"{variant}: {late} {timeout:.0f} s")

    try:
        # The queue is paused until every worker process is up: no process's start-up (our
        # children import for a second or so) overlaps another's work in the window.
        while not workers.ready():
            still_going("at start", "not ready in")
            time.sleep(0.05)
        time.sleep(0.5)  # what a worker does just after its ready line
        resumed = time.time()
        probe.resume(prefix, queue)
        while wait >= n:  # the clock starts when the first job leaves the wait list
            still_going("before taking a job", "no job taken in")
            time.sleep(0.005)
            wait, rest, failed = probe.left(prefix, queue)
        started = time.perf_counter()
        polls0 = probe.polls
        info0 = probe.info()
        cpu0, sink_cpu0, machine0 = tree_cpu(workers.pids), ctx.sink.cpu(), machine_cpu()
        while wait + rest:
            if failed:  # no need to wait for the rest: the run measures failures
                raise MailBenchError(f"{variant}: {probe.failures(prefix, queue)}")
            still_going(f"with {wait + rest} jobs left", f"{wait + rest} jobs left after")
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
    for command, per_poll in POLL_COMMANDS.items():
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


def cleanup(probe: Probe, prefix: str) -> None:
    """The run's own keys (its prefix), so Redis stays small from run to run."""
    keys = list(probe.client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        probe.client.unlink(*keys[start:start + 500])
