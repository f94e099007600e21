"""Our dashboard side by side with Bull Board, on one Redis filled by Node BullMQ.

    .venv/bin/python bench/dashboards.py [--scale 1] [--idle-seconds 60]

Used by bench/run.py (`make bench`); alone it prints the tables. Needs `npm install` in
bench/node (run.py does it) and, for the browser rows, Chromium at /usr/bin/chromium.

1. HTTP, one request at a time, keep-alive, gzip accepted: the overview, each state tab of
   `emails` at page 1 and at a deep page (10,000, or the last page when the state has fewer),
   and a failed job's page: our HTML page against the Bull Board JSON call that fills the
   same view. Median and p95 of `REQUESTS` requests, bytes on the wire.
2. Cold load in Chromium: a new browser context (empty cache) opens the failed tab of
   `emails`; the time until its job table is visible.
3. Live update: a page open on a small queue, a job completes (a Node worker), the time until
   the completed count on the page changes.
4. Idle viewers: 20 Chromium tabs open on `emails` for `--idle-seconds`; Redis commands per
   second from INFO commandstats (every client of this Redis: only the dashboard under test
   talks to it then).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import redis
from dashboards_browser import CHROMIUM, browser_rows
from dashboards_http import http_rows
from dashboards_servers import bull_board, fill, npm_install, our_dashboard

from mailqueue.redis_server import EmbeddedRedis


def run(args: argparse.Namespace) -> dict[str, Any]:
    npm_install()
    with tempfile.TemporaryDirectory(prefix="mailqueue-bench-dash-") as tmp:
        server = EmbeddedRedis(data_dir=Path(tmp) / "redis", appendonly=False).start()
        try:
            filled = fill(server.url, args.scale)
            counts = filled["emails"]
            client = redis.Redis.from_url(server.url)
            failed_id = client.zrevrange("bull:emails:failed", 0, 0)[0].decode()
            client.close()
            results: dict[str, Any] = {"fill_seconds": filled["seconds"], "counts": counts,
                                       "scale": args.scale}
            with our_dashboard(server.url) as ours, bull_board(server.url) as theirs:
                results["http"] = http_rows(ours, theirs, counts, failed_id)
                if CHROMIUM.exists() and not args.no_browser:
                    results.update(asyncio.run(browser_rows(ours, theirs, server.url, args,
                                                            failed_id)))
                else:
                    print("  no Chromium at /usr/bin/chromium: the browser rows are skipped")
            return results
        finally:
            server.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=float,
                        default=float(os.environ.get("BENCH_SCALE") or 1),
                        help="multiplies every job count of the fill (env BENCH_SCALE)")
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--tabs", type=int, default=20)
    parser.add_argument("--cold-runs", type=int, default=10)
    parser.add_argument("--live-samples", type=int, default=20)
    parser.add_argument("--no-browser", action="store_true")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    results = run(parser.parse_args())
    print(json.dumps(results, indent=1)[:4000])


if __name__ == "__main__":
    main()
