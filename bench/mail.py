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
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mail_counters import Probe
from mail_one_run import one_run
from mail_processes import NODE_DIR, POOL, ROOT, Context, MailBenchError, Sink, node_rendering
from mail_report import label, print_details, print_goal_table
from mail_smtp_alone import smtp_alone

# --- the whole bench --------------------------------------------------------------------------

def template_check() -> str:
    """Node's template literals against our `notification` template, for one job's data."""
    from mailqueue.mail.jobdata import normalize_mail_data
    from mailqueue.mail.templates import TemplateRenderer

    node = node_rendering()
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
