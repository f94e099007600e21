"""What the mail bench reports: the per-variant details it prints, the goal table of issue 12
(printed, and in docs/performance.md), and its section of docs/performance.md.
"""

from __future__ import annotations

import os
from typing import Any

# The figures in issue 12 when it was filed (one process unless said), for reference.
FILED = {"rate_1": "0.32x", "cpu": "~2.5x", "rate_auto": "0.41x", "trips": "~11x",
         "noop_raw": "~1x", "noop_node": "~0.15x"}


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
