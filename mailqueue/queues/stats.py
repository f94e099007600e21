"""Throughput and durations of a queue, read from what BullMQ keeps: no extra bookkeeping.

Two sources say how many jobs finished per minute:

- the `completed` and `failed` sorted sets, scored by finish time (`finishedOn`). Every
  worker writes them, Node or Python, metrics option or not; but `removeOnComplete` /
  `removeOnFail` (and `clean`) trim them from the oldest end, so they only know the time
  since their oldest member once jobs have been removed;
- BullMQ's optional metrics (`<queue>:metrics:<kind>` and its `:data` list of per-minute
  counts), written only by workers started with the `metrics` option, which survive the
  trimming but know nothing before metrics were turned on.

A series merges both, bucket by bucket: where both know a bucket the larger count wins
(each one can only miss jobs: trimmed sets, or workers without metrics), where neither knows
it the bucket is `None` ("unknown"), never 0. Which sources a series used is part of it.

Everything for one queue and window is one Lua script (lua/queue_series.lua: ZCOUNT per
bucket, the metrics, the counts that tell whether jobs were removed), so a page of 50 queues
is one pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypedDict

import redis.asyncio as aioredis

from mailqueue.keys import Keys
from mailqueue.lua import load_script

MINUTE_MS = 60_000
DURATION_SAMPLE = 500  # newest completed jobs read for the wait and run time percentiles

KINDS = ("completed", "failed")
NO_HISTORY = "no history kept (removeOnComplete) — enable metrics"


@dataclass(frozen=True)
class Window:
    """`buckets` buckets of `bucket_ms`, aligned to the clock, the newest holding now."""

    name: str
    bucket_ms: int
    buckets: int

    def start(self, now_ms: int) -> int:
        return (now_ms // self.bucket_ms + 1 - self.buckets) * self.bucket_ms


HOUR = Window("hour", MINUTE_MS, 60)
DAY = Window("day", 15 * MINUTE_MS, 96)  # 24 h in quarter hours: 96 ZCOUNTs, bounded work


class KindSeries(TypedDict):
    values: list[int | None]  # per bucket, oldest first; None: nothing can be known
    sources: list[str]  # "metrics", "set": what the known buckets came from
    # ms: from when on the window is known (None: all of it); its bucket is a lower bound
    known_from: int | None
    jobs_removed: bool  # the queue's id counter is ahead of its jobs: some were removed


class Series(TypedDict):
    window: str
    start: int  # ms, the oldest bucket's start
    bucket_ms: int
    now: int
    completed: KindSeries
    failed: KindSeries
    no_history: bool  # neither kind knows any bucket: say so rather than draw a flat line


def _series_keys(keys: Keys) -> list[str]:
    """The series script's KEYS, in its order (see lua/queue_series.lua)."""
    return [keys.completed, keys.failed, keys.metrics("completed"), keys.metrics("failed"),
            keys.metrics("completed") + ":data", keys.metrics("failed") + ":data", keys.id,
            keys.wait, keys.paused, keys.active, keys.delayed, keys.prioritized,
            keys.waiting_children]


async def queue_series_command(client: aioredis.Redis, pipe: Any, keys: Keys, window: Window,
                               now_ms: int) -> None:
    """Queue the series script (lua/queue_series.lua) for one queue and window in `client`'s
    pipeline `pipe` (its reply: `parse_series`)."""
    await load_script(client, "queue_series")(
        keys=_series_keys(keys), args=[window.start(now_ms), window.bucket_ms, window.buckets],
        client=pipe)


def _ints(text: str | bytes | None) -> list[int]:
    if not text:
        return []
    s = text.decode() if isinstance(text, bytes) else text
    return [int(float(x)) if x else 0 for x in s.split(",")]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _kind(window: Window, start: int, now_ms: int, set_counts: list[int], oldest: str,
          meta: str, data: list[int], removed: bool) -> KindSeries:
    n, width = window.buckets, window.bucket_ms
    # The sets know every bucket unless jobs were removed; then only from their oldest
    # member on (an empty set after removals knows nothing).
    set_from: float | None = None
    if removed:
        set_from = float(oldest) if oldest else math.inf
    prev_ts, count, prev_count, length = [*meta.split(","), "", "", ""][:4]
    metric_counts = [0] * n
    metrics_from = math.inf
    if prev_ts:
        # BullMQ's collectMetrics: `count - prevCount` finished in prevTS's minute, data[i]
        # in the minute i + 1 before it, and nothing since (a finish would have moved
        # prevTS). Before the list's oldest point metrics were off: unknown, not zero.
        minute = int(float(prev_ts)) // MINUTE_MS
        metrics_from = (minute - int(length or 0)) * MINUTE_MS
        points = [(minute, int(count or 0) - int(prev_count or 0))]
        points += [(minute - 1 - i, v) for i, v in enumerate(data)]
        for m, v in points:
            index = (m * MINUTE_MS - start) // width
            if 0 <= index < n:
                metric_counts[index] += v
    values: list[int | None] = []
    used: set[str] = set()
    for i in range(n):
        end = start + (i + 1) * width
        known = []
        if set_from is None or end > set_from:
            known.append(set_counts[i] if i < len(set_counts) else 0)
            used.add("set")
        if end > metrics_from:
            known.append(metric_counts[i])
            used.add("metrics")
        values.append(max(known) if known else None)
    earliest = min(-math.inf if set_from is None else set_from, metrics_from)
    return {"values": values, "sources": sorted(used),
            "known_from": None if earliest <= start else int(min(earliest, now_ms)),
            "jobs_removed": removed}


def parse_series(reply: list[Any], window: Window, now_ms: int) -> Series:
    """One queue's script reply as a `Series` of `window` ending at `now_ms`."""
    start = window.start(now_ms)
    counter, present = [*_ints(reply[8]), 0, 0][:2]
    removed = counter > present
    kinds = {}
    for k, kind in enumerate(KINDS):
        buckets, oldest, meta, data = reply[4 * k: 4 * k + 4]
        kinds[kind] = _kind(window, start, now_ms, _ints(buckets), _text(oldest), _text(meta),
                            _ints(data), removed)
    return {"window": window.name, "start": start, "bucket_ms": window.bucket_ms,
            "now": now_ms, "completed": kinds["completed"], "failed": kinds["failed"],
            "no_history": all(v is None for kind in KINDS for v in kinds[kind]["values"])}


class Metrics(TypedDict):
    """One kind of BullMQ's per-minute metrics, as Node's getMetrics reads them."""

    count: int
    prev_ts: int
    per_minute: list[int]  # newest first
    points: int  # how many minutes the list holds


async def read_metrics(client: aioredis.Redis, key: str, points: int) -> Metrics:
    """One BullMQ metrics hash and the newest `points` of its per-minute list (newest
    first, as written: not aligned to the clock, see `_kind` for that)."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(key)
    pipe.lrange(f"{key}:data", 0, max(points, 1) - 1)
    pipe.llen(f"{key}:data")
    meta, data, length = await pipe.execute()
    return {
        "count": int(meta.get("count", 0)),
        "prev_ts": int(meta.get("prevTS", 0)),
        "per_minute": [int(float(x)) for x in data],
        "points": int(length),
    }


def known_newest_first(kind: KindSeries) -> list[int]:
    """A kind's counts newest first, up to the first bucket nobody knows (the shape of the
    per-minute lists `/api/queues` has always had)."""
    known = []
    for value in reversed(kind["values"]):
        if value is None:
            break
        known.append(value)
    return known


async def read_series(client: aioredis.Redis, prefix: str, queues: list[str], window: Window,
                      now_ms: int) -> dict[str, Series]:
    """Series of many queues in one round trip."""
    pipe = client.pipeline(transaction=False)
    for q in queues:
        await queue_series_command(client, pipe, Keys(prefix, q), window, now_ms)
    replies = await pipe.execute()
    return {q: parse_series(r, window, now_ms) for q, r in zip(queues, replies, strict=True)}


# --- durations ------------------------------------------------------------------------------


class Percentiles(TypedDict):
    p50: int | None
    p95: int | None


class Durations(TypedDict):
    sample: int  # completed jobs read (the newest, at most DURATION_SAMPLE)
    oldest: int | None  # ms: finish time of the oldest job in the sample
    newest: int | None
    wait: Percentiles  # ms from added (or due, if delayed) to started
    run: Percentiles  # ms from started to finished (the last attempt)


def percentile(values: list[int], p: float) -> int | None:
    """The nearest-rank percentile: a value that occurred, not an interpolation."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


def durations_of(hashes: list[list[Any]]) -> Durations:
    """Wait and run time percentiles from [timestamp, processedOn, finishedOn, delay] each."""
    waits, runs, finished = [], [], []
    for fields in hashes:
        try:
            added, started, done = (int(float(_text(f))) for f in fields[:3])
        except ValueError:  # removed between the two reads, or never started
            continue
        delay = int(float(_text(fields[3]) or 0)) if len(fields) > 3 else 0
        # A delayed job waits from when it became due, not from when it was added.
        waits.append(max(started - added - delay, 0))
        runs.append(max(done - started, 0))
        finished.append(done)
    return {"sample": len(runs), "oldest": min(finished, default=None),
            "newest": max(finished, default=None),
            "wait": {"p50": percentile(waits, 50), "p95": percentile(waits, 95)},
            "run": {"p50": percentile(runs, 50), "p95": percentile(runs, 95)}}


class QueueCharts(TypedDict):
    hour: Series
    day: Series
    durations: Durations


async def read_queue_charts(client: aioredis.Redis, prefix: str, queue: str, now_ms: int,
                            sample: int = DURATION_SAMPLE) -> QueueCharts:
    """What the queue page draws, in one round trip: the hour and day series, and the times
    of the newest `sample` completed jobs (four fields each)."""
    keys = Keys(prefix, queue)
    pipe = client.pipeline(transaction=False)
    for window in (HOUR, DAY):
        await queue_series_command(client, pipe, keys, window, now_ms)
    await load_script(client, "queue_durations")(keys=[keys.completed],
                                                 args=[keys.base, sample], client=pipe)
    hour, day, times = await pipe.execute()
    hashes = [row.split(",") for row in _text(times).split(";") if row]
    return {"hour": parse_series(hour, HOUR, now_ms), "day": parse_series(day, DAY, now_ms),
            "durations": durations_of(hashes)}
