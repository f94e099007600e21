"""No-op jobs per second: WorkerManager vs a raw bullmq Worker vs a Node BullMQ Worker.

Variants: `native` (WorkerManager, WORKER_RUNTIME=native), `manager` (WorkerManager on
bullmq-python's Worker, WORKER_RUNTIME=bullmq), `raw` (a bullmq Worker), `node`, ...
Besides jobs/s each run notes the Redis commands per job (INFO commandstats: EVALSHA and
BZPOPMIN, what workers send; the commands scripts run inside Redis are left out) and, for
`native`, the round trips per job (its pipelined batches count one each).

    .venv/bin/python bench/workers.py [--jobs 10000] [--runs 3] [--concurrency 50]

Same Redis (an EmbeddedRedis of its own), same run, the variants taking turns: for each, Node
BullMQ adds `--jobs` no-op jobs (removeOnComplete), the worker starts, and the clock runs from
its start until the queue is empty (wait + active + delayed = 0). Then the machine-wide
figure: `--processes` worker processes (WorkerManager in each) against as many Node ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import redis
from bullmq import Worker

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "bench" / "node"
sys.path.insert(0, str(ROOT / "bench"))


def add_jobs(redis_url: str, queue: str, n: int) -> None:
    subprocess.run(["node", "add.mjs", json.dumps({"redis": redis_url, "queue": queue, "n": n,
                                                   "removeOnComplete": True})],
                   cwd=NODE_DIR, check=True, stdout=subprocess.DEVNULL, timeout=300)


def left(client: redis.Redis, queue: str) -> int:
    pipe = client.pipeline(transaction=False)
    pipe.llen(f"bull:{queue}:wait")
    pipe.llen(f"bull:{queue}:active")
    pipe.zcard(f"bull:{queue}:prioritized")
    return sum(pipe.execute())


CLOCK: dict[str, float] = {}  # queue -> when its first job was taken


async def until_empty(client: redis.Redis, queue: str, timeout: float = 600) -> None:
    """Wait until the queue is drained; notes in CLOCK when the first job left `wait` (the
    clock starts there for every variant: no process or connection start-up counted)."""
    deadline = time.monotonic() + timeout
    total = None
    while (n := left(client, queue)) or queue not in CLOCK:
        total = n if total is None else total
        if queue not in CLOCK and n < total:
            CLOCK[queue] = time.perf_counter()
        if time.monotonic() > deadline:
            raise SystemExit(f"workers bench: {queue} not drained in {timeout} s")
        await asyncio.sleep(0.005)


# The metrics option the WorkerManager sets on every worker (one data point per minute,
# written by each job's finishing script); the raw worker gets the same, so the pair
# differs only by the manager layer. `raw-no-metrics` is raw bullmq without it.
METRICS = {"maxDataPoints": 10_080}


# Commands a worker sends itself. INFO commandstats also counts the commands that scripts
# run inside Redis (HGET...), which are no round trips: only these can come from a client
# and never from a script (bullmq's work is all EVALSHA, plus the blocking wait).
_CLIENT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "bzpopmin")
PIPED: dict[str, tuple[int, int]] = {}  # queue -> (calls sent in batches, batches)


def command_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
               for name in _CLIENT_COMMANDS)


async def python_worker(redis_url: str, queue: str, concurrency: int, managed: bool,
                        seconds: float = 600, metrics: bool = True,
                        sync_handler: bool = False, runtime: str | None = None) -> None:
    """A worker until the queue is empty (or `seconds`)."""
    client = redis.Redis.from_url(redis_url)
    if managed:
        from mailqueue.manager import MailManager
        from mailqueue.settings import Settings

        settings = Settings(_env_file=None, redis_url=redis_url, queue_prefix="bull",  # type: ignore[call-arg]
                            data_dir=Path(tempfile.gettempdir()) / "mailqueue-bench-workers",
                            # None: WORKER_RUNTIME or its default (the N-process children)
                            **cast(dict[str, Any], {"worker_runtime": runtime} if runtime else {}))
        async with MailManager(settings) as mail:
            async def noop_handler(data: Any, job: Any) -> None:
                return None

            # An async no-op like the raw worker's; `manager-sync` runs a plain function,
            # which the manager calls in a thread (asyncio.to_thread) so it never blocks.
            handler = (lambda data, job: None) if sync_handler else noop_handler
            managed_worker = mail.start_worker(queue, {"noop": handler},
                                               concurrency=concurrency)
            await until_empty(client, queue, seconds)
            pipe = getattr(managed_worker.worker, "script_pipe", None)
            if pipe is not None:
                PIPED[queue] = (pipe.calls, pipe.batches)
    else:
        async def noop(job: Any, token: str) -> None:
            return None

        opts: dict[str, Any] = {"connection": redis_url, "prefix": "bull",
                                "concurrency": concurrency}
        if metrics:
            opts["metrics"] = METRICS
        worker = Worker(queue, noop, opts)
        await until_empty(client, queue, seconds)
        await worker.close()
    client.close()


def node_workers(redis_url: str, queue: str, concurrency: int, processes: int
                 ) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen(["node", "worker.mjs", json.dumps(
        {"redis": redis_url, "queue": queue, "concurrency": concurrency, "quiet": True,
         "seconds": 600})], cwd=NODE_DIR, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)]


def python_processes(redis_url: str, queue: str, concurrency: int, processes: int
                     ) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen([sys.executable, __file__, "--child", redis_url, queue,
                              str(concurrency)], stdout=subprocess.PIPE, text=True)
            for _ in range(processes)]


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)


RUN = iter(range(1_000_000))
# variant -> per run: (Redis commands per job, round trips per job or None)
TRAFFIC: dict[str, list[tuple[float, float | None]]] = {}


async def one_run(redis_url: str, variant: str, n: int, concurrency: int, processes: int = 1
                  ) -> float:
    queue = f"noop-{variant}-{processes}-{next(RUN)}"
    add_jobs(redis_url, queue, n)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    CLOCK.pop(queue, None)
    before = command_calls(client)
    if variant == "native":
        await python_worker(redis_url, queue, concurrency, managed=True, runtime="native")
    elif variant == "manager" and processes == 1:
        await python_worker(redis_url, queue, concurrency, managed=True, runtime="bullmq")
    elif variant == "manager-sync":
        await python_worker(redis_url, queue, concurrency, managed=True, sync_handler=True,
                            runtime="bullmq")
    elif variant in ("raw", "raw-no-metrics"):
        await python_worker(redis_url, queue, concurrency, managed=False,
                            metrics=variant == "raw")
    elif variant == "node":
        procs = node_workers(redis_url, queue, concurrency, processes)
        await until_empty(client, queue)
        stop(procs)
    else:  # WorkerManager in `processes` processes
        procs = python_processes(redis_url, queue, concurrency, processes)
        await until_empty(client, queue)
        stop(procs)
    elapsed = time.perf_counter() - CLOCK[queue]
    commands = command_calls(client) - before
    # Each command is a round trip of its own, except those written in one batch.
    piped_calls, batches = PIPED.pop(queue, (0, 0))
    trips = (commands - piped_calls + batches) / n if variant == "native" else None
    TRAFFIC.setdefault(variant, []).append((commands / n, trips))
    client.close()
    return n / elapsed


async def bench(redis_url: str, args: argparse.Namespace) -> dict[str, Any]:
    variants = [v for v in args.worker_variants.split(",") if v]
    rates: dict[str, list[float]] = {v: [] for v in variants}
    await one_run(redis_url, "raw", 500, args.worker_concurrency)  # warm up
    TRAFFIC.clear()
    for _ in range(args.worker_runs):
        for variant in rates:
            rates[variant].append(await one_run(redis_url, variant, args.worker_jobs,
                                                args.worker_concurrency))
    results: dict[str, Any] = {k.replace("-", "_"): statistics.median(v)
                               for k, v in rates.items()}
    results["all_runs"] = rates
    results["commands_per_job"] = {v: statistics.median(c for c, _ in runs)
                                   for v, runs in TRAFFIC.items() if v in rates}
    results["round_trips_per_job"] = {
        v: statistics.median(t for _, t in runs if t is not None)
        for v, runs in TRAFFIC.items() if v in rates and any(t is not None for _, t in runs)}
    if "native" in results:
        for other in ("raw", "node", "manager"):
            if other in results:
                results[f"native_vs_{other}"] = results["native"] / results[other]
    if "manager" in results and "raw" in results:
        # Both with metrics on and an async no-op handler: only the manager layer differs.
        results["manager_cost"] = 1 - results["manager"] / results["raw"]
    print("  no-op jobs/s, 1 process: " + ", ".join(
        f"{k} {v:,.0f}" for k, v in results.items() if k.replace("_", "-") in rates)
        + (f"; the manager costs {results['manager_cost']:.1%}"
           if "manager_cost" in results else ""), flush=True)
    print("  Redis commands per job: " + ", ".join(
        f"{k} {v:.2f}" for k, v in results["commands_per_job"].items())
        + "".join(f"; round trips per job, {k}: {v:.3f}"
                  for k, v in results["round_trips_per_job"].items())
        + "".join(f"; native / {o} {results[f'native_vs_{o}']:.2f}x"
                  for o in ("raw", "node", "manager") if f"native_vs_{o}" in results),
        flush=True)
    if args.skip_processes:
        return results
    p = args.processes
    results["processes"] = p
    results["args_runs"], results["args_concurrency"] = args.worker_runs, args.worker_concurrency
    results["manager_n"] = statistics.median(
        [await one_run(redis_url, "managers", args.worker_jobs * 2, args.worker_concurrency, p)
         for _ in range(args.worker_runs)])
    results["node_n"] = statistics.median(
        [await one_run(redis_url, "node", args.worker_jobs * 2, args.worker_concurrency, p)
         for _ in range(args.worker_runs)])
    print(f"  no-op jobs/s, {p} processes: WorkerManager {results['manager_n']:,.0f}, Node "
          f"{results['node_n']:,.0f}", flush=True)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--worker-jobs", dest="worker_jobs", type=int, default=10_000)
    parser.add_argument("--worker-runs", dest="worker_runs", type=int, default=3)
    parser.add_argument("--worker-concurrency", dest="worker_concurrency", type=int, default=50)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--worker-variants", dest="worker_variants",
                        default="native,manager,raw,node,manager-sync,raw-no-metrics",
                        help="comma-separated: native, manager, manager-sync, raw, "
                        "raw-no-metrics, node")
    parser.add_argument("--skip-processes", dest="skip_processes", action="store_true",
                        help="only the 1-process figures")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from dashboards import npm_install

    from mailqueue.redis_server import EmbeddedRedis

    npm_install()
    with tempfile.TemporaryDirectory(prefix="mailqueue-bench-workers-") as tmp:
        server = EmbeddedRedis(data_dir=Path(tmp) / "redis", appendonly=False).start()
        try:
            return asyncio.run(bench(server.url, args))
        finally:
            server.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":  # one WorkerManager process
        _, _, url, queue, concurrency = sys.argv
        asyncio.run(python_worker(url, queue, int(concurrency), managed=True))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    print(json.dumps(run(parser.parse_args()), indent=1))


if __name__ == "__main__":
    main()
