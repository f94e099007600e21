"""E-mail throughput and the 100,000-recipient newsletter, measured on a Redis of its own.

    .venv/bin/python bench/run.py [--runs 3] [--messages 2000] [--jobs 3000] [--write]

First bench/throughput.py:
1. Messages per second to the SMTP sink (another process): the pool (5 connections) vs a
   new connection per message, the same 20 sends in flight.
2. E-mails per second end to end: jobs on the queue -> `mailqueue worker` (another process)
   -> SMTP -> the sink (a third process).
3. `create_newsletter_flow` with 100,000 recipients from a generator: enqueue time, and
   peak Python memory (tracemalloc) in a second run.
4. A campaign (`MailManager.campaigns.create`, one job per recipient) of 10,000 and 100,000
   recipients from a generator: enqueue time and the peak RSS of its process
   (bench/campaign.py).

Then bench/workers.py (no-op jobs/s), bench/mail.py (e-mails/s, ours vs Node BullMQ +
nodemailer, and the goal table of issue 12) and bench/dashboards.py; `--skip-workers`,
`--skip-mail`, `--skip-dashboards` leave them out.

Medians of `--runs` runs. Redis is an EmbeddedRedis on a temporary directory (never the
machine's 6379). `--write` puts the results in docs/performance.md (bench/performance_doc.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dashboards
import desk
import mail
import mail_report
import throughput
import workers
from performance_doc import write_report

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--write", action="store_true", help="write docs/performance.md")
    parser.add_argument("--from-json", type=Path,
                        help="only write docs/performance.md from a saved run's results")
    parser.add_argument("--skip-dashboards", action="store_true")
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--skip-mail", action="store_true",
                        help="leave out ours vs Node BullMQ + nodemailer (bench/mail.py)")
    parser.add_argument("--skip-desk", action="store_true",
                        help="leave out the delivery log at 1,000,000 entries (bench/desk.py)")
    parser.add_argument("--desk-entries", type=int, default=1_000_000)
    dashboards.add_arguments(parser)
    workers.add_arguments(parser)
    mail.add_arguments(parser)
    args = parser.parse_args()
    if args.from_json:
        write_report(json.loads(args.from_json.read_text()))
        return
    started = time.perf_counter()
    results = asyncio.run(throughput.bench(args))
    if not args.skip_workers:
        print("workers (no-op jobs):", flush=True)
        results["workers"] = workers.run(args)
    if not args.skip_mail:
        print("e-mails, ours vs Node BullMQ + nodemailer:", flush=True)
        results["mail"] = mail.run(args)
    if not args.skip_mail or not args.skip_workers:
        mail_report.print_goal_table(results.get("mail"), results.get("workers"))
    if not args.skip_desk:
        print(f"delivery log, {args.desk_entries:,} entries:", flush=True)
        results["desk"] = asyncio.run(desk.run(args.desk_entries, 30))
        print(desk.report(results["desk"]), flush=True)
    if not args.skip_dashboards:
        print(f"dashboards, ours vs Bull Board (scale {args.scale}):", flush=True)
        results["dashboards"] = dashboards.run(args)
    results["total_s"] = time.perf_counter() - started
    print(f"bench done in {results['total_s']:.0f} s")
    out = ROOT / "test-artifacts" / "bench-results.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    if args.write:
        write_report(results)


if __name__ == "__main__":
    main()
