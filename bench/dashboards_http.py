"""The HTTP rows of the dashboards bench: each of our pages against the Bull Board JSON call
that fills the same view, one request at a time on a keep-alive connection, gzip accepted.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx

REQUESTS = 50
PER_PAGE = 50
DEEP_PAGE = 10_000
STATES = ("waiting", "delayed", "completed", "failed")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def timed(client: httpx.Client, url: str, n: int = REQUESTS) -> dict[str, Any]:
    """Median and p95 (ms) of n GETs after 2 warm-ups, and the bytes on the wire."""
    for _ in range(2):
        client.get(url).raise_for_status()
    times, size = [], 0
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        size = response.num_bytes_downloaded
    return {"median": statistics.median(times), "p95": p95(times), "bytes": size}


def pairs(counts: dict[str, int], job_id: str) -> list[tuple[str, str, str]]:
    """(row label, our path, Bull Board's API path) for every HTTP row."""
    rows = [("Overview (every queue, counts)", "/", "/api/queues?page=1&jobsPerPage=50")]
    for state in STATES:
        total = counts.get(state, 0)
        last = max(1, -(-total // PER_PAGE))
        for page in dict.fromkeys((1, min(DEEP_PAGE, last))):
            rows.append((f"`emails` {state} ({total:,}), page {page:,}",
                         f"/queues/emails?state={state}&page={page}&per_page={PER_PAGE}",
                         f"/api/queues?activeQueue=emails&status={state}&page={page}"
                         f"&jobsPerPage={PER_PAGE}"))
    rows.append(("A failed job's page (stack trace)", f"/queues/emails/jobs/{job_id}",
                 f"/api/queues/emails/{job_id}"))
    return rows


def http_rows(ours: str, theirs: str, counts: dict[str, int], job_id: str
              ) -> list[dict[str, Any]]:
    results = []
    headers = {"Accept-Encoding": "gzip"}
    with httpx.Client(headers=headers, timeout=60) as a, httpx.Client(headers=headers,
                                                                       timeout=60) as b:
        for label, our_path, their_path in pairs(counts, job_id):
            row = {"label": label, "ours": timed(a, ours + our_path),
                   "theirs": timed(b, theirs + their_path)}
            row["ratio"] = row["ours"]["median"] / row["theirs"]["median"]
            print(f"  {label}: ours {row['ours']['median']:.1f} ms (p95 "
                  f"{row['ours']['p95']:.1f}, {row['ours']['bytes']:,} B), Bull Board "
                  f"{row['theirs']['median']:.1f} ms (p95 {row['theirs']['p95']:.1f}, "
                  f"{row['theirs']['bytes']:,} B): {row['ratio']:.2f}x", flush=True)
            results.append(row)
    return results
