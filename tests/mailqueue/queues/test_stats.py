"""Throughput series and durations (mailqueue/queues/stats.py) against known data.

Known data is either written straight into Redis the way BullMQ lays it out (sorted sets
scored by finishedOn, the id counter, the metrics hash and list), so every bucket's count is
known in advance, or produced by real workers (Python, and Node BullMQ without metrics).
"""

from __future__ import annotations

import time
from typing import Any

from mailqueue.queues import stats
from mailqueue.queues.stats import DAY, HOUR, NO_HISTORY, percentile
from tests.mailqueue.conftest import Stack, wait_for_counts

MIN = 60_000
# A fixed "now": 30 s into a minute, so bucket edges are easy to reason about.
NOW = 1_800_000_000_000 - 1_800_000_000_000 % (15 * MIN) + 30_000


def key(stack: Stack, queue: str, *parts: str) -> str:
    return ":".join((stack.prefix, queue, *parts))


async def finished(stack: Stack, queue: str, kind: str, finishes: list[int],
                   jobs_made: int | None = None) -> None:
    """Jobs in the `kind` set finished at `finishes` (ms); the id counter at `jobs_made`
    (default: as many as there are jobs, i.e. none removed)."""
    for n, at in enumerate(finishes):
        await stack.client.zadd(key(stack, queue, kind), {f"{kind}-{n}": at})
    made = jobs_made if jobs_made is not None else len(finishes)
    current = int(await stack.client.get(key(stack, queue, "id")) or 0)
    await stack.client.set(key(stack, queue, "id"), current + made)


async def series(stack: Stack, queue: str, window: stats.Window = HOUR,
                 now: int = NOW) -> stats.Series:
    return (await stats.read_series(stack.client, stack.prefix, [queue], window,
                                          now))[queue]


async def test_sets_give_a_per_minute_series(stack: Stack) -> None:
    # 3 in the current minute, 2 a minute ago, 1 at 59 minutes ago (the oldest bucket),
    # one 2 hours ago (outside), and failures 5 minutes ago.
    this_minute = NOW - NOW % MIN
    await finished(stack, "q", "completed", [NOW - 1000, NOW - 20_000, this_minute,
                                             this_minute - 1, this_minute - MIN,
                                             this_minute - 59 * MIN, NOW - 120 * MIN])
    await finished(stack, "q", "failed", [this_minute - 5 * MIN + 10,
                                          this_minute - 5 * MIN + 20])
    s = await series(stack, "q")
    completed, failed = s["completed"]["values"], s["failed"]["values"]
    assert len(completed) == 60 and s["start"] == this_minute - 59 * MIN
    assert completed[-1] == 3 and completed[-2] == 2 and completed[0] == 1
    assert sum(v or 0 for v in completed) == 6
    assert failed[-6] == 2 and sum(v or 0 for v in failed) == 2
    assert s["completed"]["sources"] == ["set"] and s["completed"]["known_from"] is None
    assert not s["no_history"]

    day = await series(stack, "q", DAY)
    assert len(day["completed"]["values"]) == 96
    assert sum(v or 0 for v in day["completed"]["values"]) == 7
    quarter = NOW - NOW % (15 * MIN)
    in_last_quarter = [t for t in (NOW - 1000, NOW - 20_000, this_minute, this_minute - 1,
                                   this_minute - MIN) if t >= quarter]
    assert day["completed"]["values"][-1] == len(in_last_quarter)


async def test_a_clock_ahead_counts_in_the_newest_bucket(stack: Stack) -> None:
    await finished(stack, "ahead", "completed", [NOW + 5 * MIN])
    assert (await series(stack, "ahead"))["completed"]["values"][-1] == 1


async def test_trimmed_sets_know_only_since_their_oldest_job(stack: Stack) -> None:
    # 10 jobs made, 3 kept (removeOnComplete: 3): before the oldest kept one, unknown.
    oldest = NOW - 10 * MIN
    await finished(stack, "trim", "completed", [oldest, NOW - 5 * MIN, NOW], jobs_made=10)
    s = await series(stack, "trim")
    values = s["completed"]["values"]
    assert all(v is None for v in values[:49]), values[:52]
    assert values[49] == 1 and values[-1] == 1 and sum(v or 0 for v in values) == 3
    assert s["completed"]["known_from"] == oldest and s["completed"]["jobs_removed"]
    assert not s["no_history"]
    # The failed set is empty after removals: nothing known about failures either.
    assert all(v is None for v in s["failed"]["values"])


async def test_no_history_when_sets_are_trimmed_and_no_metrics(stack: Stack) -> None:
    await finished(stack, "gone", "completed", [], jobs_made=25)  # removeOnComplete: true
    s = await series(stack, "gone")
    assert s["no_history"] and s["completed"]["sources"] == []
    # Nothing ever made and nothing removed: zeros are true, not unknown.
    await stack.client.hset(key(stack, "fresh", "meta"), "opts.maxLenEvents", 10000)
    fresh = await series(stack, "fresh")
    assert not fresh["no_history"] and fresh["completed"]["values"] == [0] * 60
    assert NO_HISTORY == "no history kept (removeOnComplete) — enable metrics"


async def _metrics(stack: Stack, queue: str, kind: str, prev_ts: int, count: int,
                   prev_count: int, data: list[int]) -> None:
    meta = key(stack, queue, "metrics", kind)
    await stack.client.hset(meta, mapping={"prevTS": prev_ts, "count": count,
                                           "prevCount": prev_count})
    if data:
        await stack.client.rpush(f"{meta}:data", *data)


async def test_metrics_are_aligned_to_the_clock_and_survive_trimming(stack: Stack) -> None:
    # As BullMQ's collectMetrics leaves them: the last flush 3 minutes ago with 4 finished
    # since (in that minute), and data[i] the (i + 1)th minute before it.
    flushed = NOW - 3 * MIN
    await _metrics(stack, "m", "completed", flushed, count=20, prev_count=16,
                   data=[5, 0, 7] + [1] * 100)
    await finished(stack, "m", "completed", [], jobs_made=200)  # all removed
    s = await series(stack, "m")
    values = s["completed"]["values"]
    assert values[-1] == values[-2] == values[-3] == 0  # nothing since the flush
    assert values[-4] == 4 and values[-5] == 5 and values[-6] == 0 and values[-7] == 7
    assert values[0] == 1 and None not in values
    assert s["completed"]["sources"] == ["metrics"] and not s["no_history"]
    # The failed side has neither metrics nor kept jobs.
    assert all(v is None for v in s["failed"]["values"])

    # A short metrics list: before its first point metrics were off, which is unknown.
    await _metrics(stack, "short", "completed", flushed, count=2, prev_count=1, data=[3])
    await finished(stack, "short", "completed", [], jobs_made=4)
    short = (await series(stack, "short"))["completed"]
    assert short["values"][-5] == 3 and short["values"][-6] is None
    assert short["known_from"] == (flushed // MIN - 1) * MIN


async def test_metrics_and_sets_merge_by_the_larger_count(stack: Stack) -> None:
    # A Python worker with metrics and a Node worker without: the set saw both.
    this_minute = NOW - NOW % MIN
    await _metrics(stack, "both", "completed", this_minute - MIN + 5, count=3, prev_count=1,
                   data=[1])
    await finished(stack, "both", "completed", [this_minute - MIN + 1, this_minute - MIN + 2,
                                                this_minute - MIN + 3, this_minute - 2 * MIN])
    s = (await series(stack, "both"))["completed"]
    assert s["values"][-2] == 3 and s["values"][-3] == 1 and s["sources"] == ["metrics", "set"]


async def test_overview_reads_series_in_its_one_pipeline(stack: Stack) -> None:
    await finished(stack, "a", "completed", [NOW - 1000, NOW - 2000])
    await finished(stack, "b", "completed", [], jobs_made=5)
    await stack.client.rpush(key(stack, "b", "wait"), "x")  # make b a queue with a waiting job
    overview = await stack.queues.get_overview(["a", "b"], now_ms=NOW)
    assert overview["a"]["completed_per_minute"][:1] == [2]
    assert overview["a"]["series"]["completed"]["values"][-1] == 2
    assert overview["b"]["series"]["no_history"]
    assert overview["b"]["counts"]["waiting"] == 1
    # A SCRIPT FLUSH (or a restarted Redis) is recovered from.
    await stack.client.script_flush()
    again = await stack.queues.get_overview(["a"], now_ms=NOW)
    assert again["a"]["completed_per_minute"][:1] == [2]


# --- durations ---------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50 and percentile(values, 95) == 95
    assert percentile([7], 95) == 7 and percentile([3, 1, 2], 50) == 2


async def test_wait_and_run_percentiles_from_known_jobs(stack: Stack) -> None:
    # 100 jobs: job n waited n*10 ms (plus a 1 s delay for even ones, not counted) and ran
    # n ms; finished one ms apart.
    base = HOUR.start(NOW)
    for n in range(1, 101):
        delay = 1000 if n % 2 == 0 else 0
        added, started = base + n * 1000, base + n * 1000 + delay + n * 10
        done = started + n
        await stack.client.hset(key(stack, "timed", str(n)), mapping={
            "timestamp": added, "processedOn": started, "finishedOn": done, "delay": delay,
            "name": "job", "data": "{}"})
        await stack.client.zadd(key(stack, "timed", "completed"), {str(n): done})
    await stack.client.set(key(stack, "timed", "id"), 100)
    charts = await stack.queues.get_charts("timed", now_ms=NOW)
    d = charts["durations"]
    assert d["sample"] == 100
    assert d["wait"] == {"p50": 500, "p95": 950} and d["run"] == {"p50": 50, "p95": 95}
    assert sum(v or 0 for v in charts["hour"]["completed"]["values"]) == 100

    # The sample is bounded: the newest N only.
    small = await stats.read_queue_charts(stack.client, stack.prefix, "timed", NOW,
                                                sample=10)
    assert small["durations"]["sample"] == 10 and small["durations"]["run"]["p50"] == 95


# --- real workers --------------------------------------------------------------------------


async def test_python_worker_series_counts_what_it_finished(stack: Stack) -> None:
    async def ok(data: Any, job: Any) -> str:
        if data.get("fail"):
            raise RuntimeError("no")
        return "ok"

    for n in range(5):
        await stack.queues.add_job("py", "job", {"fail": n == 0}, {"attempts": 1})
    stack.workers.start_worker("py", {"job": ok})
    await wait_for_counts(stack, "py", 15, completed=4, failed=1)
    now = int(time.time() * 1000)
    charts = await stack.queues.get_charts("py", now_ms=now)
    hour = charts["hour"]
    assert sum(v or 0 for v in hour["completed"]["values"]) == 4
    assert sum(v or 0 for v in hour["failed"]["values"]) == 1
    assert "set" in hour["completed"]["sources"]
    assert charts["durations"]["sample"] == 4
    assert charts["durations"]["run"]["p50"] is not None


async def test_node_worker_without_metrics_has_a_true_series(stack: Stack, node: Any) -> None:
    await node.run("add", queue="nodeq", jobs=[
        {"name": "job", "data": {"fail": "boom"} if n < 2 else {}, "opts": {"attempts": 1}}
        for n in range(7)])
    await node.run("work", queue="nodeq", jobs=7, seconds=30)
    now = int(time.time() * 1000)
    s = (await stats.read_series(stack.client, stack.prefix, ["nodeq"], HOUR, now)
         )["nodeq"]
    assert not await stack.client.exists(key(stack, "nodeq", "metrics", "completed"))
    assert sum(v or 0 for v in s["completed"]["values"]) == 5
    assert sum(v or 0 for v in s["failed"]["values"]) == 2
    assert s["completed"]["sources"] == ["set"] and None not in s["completed"]["values"]

    # removeOnComplete: true, no metrics: nothing can be known, and the series says so.
    await node.run("add", queue="nodegone", jobs=[
        {"name": "job", "data": {}, "opts": {"removeOnComplete": True, "removeOnFail": True}}
        for _ in range(3)])
    await node.run("work", queue="nodegone", jobs=3, seconds=30)
    gone = (await stats.read_series(stack.client, stack.prefix, ["nodegone"], HOUR,
                                          int(time.time() * 1000)))["nodegone"]
    assert gone["no_history"]
