"""Operator commands: what the dashboard does for a queue, from a terminal or a script.

`queues` and `jobs` read; `retry`, `pause`, `resume` and `clean` change a queue, and each
writes the audit log entry the dashboard's operator action of the same name writes (same
action names and targets), with the actor `cli:<os user>`. They go through the manager
layer's public API only: the CLI must not need the web layer to look after a queue.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from redis.exceptions import RedisError

from mailqueue.cli.common import (
    USAGE_ERROR,
    actor,
    app,
    fail,
    is_quiet,
    load_settings,
    run_async,
)
from mailqueue.errors import MailQueueError
from mailqueue.manager import MailManager
from mailqueue.queues.job_reads import MAX_PER_PAGE
from mailqueue.types import JOB_STATES, JobInfo

# The states the dashboard's Clean action offers (BullMQ cannot clean waiting-children).
CLEANABLE_STATES = ("completed", "failed", "delayed", "waiting", "active", "paused",
                    "prioritized")
# An operator asking for a queue's jobs is most often looking for what went wrong.
DEFAULT_JOBS_STATE = "failed"
DEFAULT_JOBS_LIMIT = 20

QueueArgument = Annotated[str, typer.Argument(help="The queue's name", show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON, for scripts")]

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
             "w": 604_800_000}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> int:
    """`30s`, `15m`, `1h`, `2d`, `1h30m`, `500ms` (or `0`) in milliseconds; ValueError else."""
    compact = text.strip().lower().replace(" ", "")
    if compact == "0":
        return 0
    if not compact or _DURATION_PART.sub("", compact):
        raise ValueError(f"{text!r} is not a duration: use a number and a unit, like 30s, 15m, "
                         "1h or 2d")
    return round(sum(float(n) * _UNITS_MS[unit]
                     for n, unit in _DURATION_PART.findall(compact)))


def _check_state(state: str, allowed: tuple[str, ...], what: str) -> str:
    if state not in allowed:
        fail(f"--state: {what} {state!r}: use one of {', '.join(allowed)}", USAGE_ERROR)
    return state


def _check_limit(limit: int, least: int) -> int:
    if limit < least:
        fail(f"--limit must be {least} or more, not {limit}", USAGE_ERROR)
    return limit


def _session(main: Callable[[MailManager], Awaitable[int | None]]) -> None:
    """Run `main(mail)` with a MailManager for a short command; one line for any failure."""
    settings = load_settings().for_short_command()

    async def session() -> int | None:
        try:
            async with MailManager(settings) as mail:
                return await main(mail)
        except RedisError as exc:  # Redis went away mid-command: a runtime failure, exit 1
            raise MailQueueError(f"Redis: {exc}") from None

    run_async(session)


# --- reading -------------------------------------------------------------------------------


@app.command()
def queues(as_json: JsonOption = False) -> None:
    """Every queue under the prefix (Node-made ones too): jobs per state, workers, paused."""

    async def main(mail: MailManager) -> int:
        names = await mail.queues.list_queues(refresh=True)
        # As the dashboard's overview: one pipeline for every queue's counts and paused
        # flag, and one CLIENT LIST for the workers.
        data, workers = await asyncio.gather(mail.queues.get_many_job_counts(names),
                                             mail.workers.list_workers())
        per_queue = Counter(w["queue"] for w in workers)
        rows = {name: {"counts": data[name]["counts"], "paused": data[name]["paused"],
                       "workers": per_queue.get(name, 0)} for name in names}
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
        elif rows:
            typer.echo(_queues_table(rows))
        else:
            typer.echo(f"(no queues under prefix {mail.settings.queue_prefix!r})")
        return 0

    _session(main)


def _queues_table(rows: dict[str, dict[str, Any]]) -> str:
    header = ["queue", *JOB_STATES, "workers", "status"]
    lines = [[name, *(str(row["counts"].get(s, 0)) for s in JOB_STATES), str(row["workers"]),
              "paused" if row["paused"] else "running"] for name, row in rows.items()]
    # Name left, numbers right, the status left: columns a person and `awk` both read.
    return _table(header, lines, right={i for i in range(1, len(header) - 1)})


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    last = len(header) - 1

    def line(cells: list[str]) -> str:
        text = "  ".join(c.rjust(w) if i in right else (c if i == last else c.ljust(w))
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return text.rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


# What the time column of `jobs` shows, per state: the moment that matters in that state.
_TIME_COLUMNS: dict[str, tuple[str, Callable[[JobInfo], int | None]]] = {
    "completed": ("finished", lambda j: j["finished_on"]),
    "failed": ("finished", lambda j: j["finished_on"]),
    "active": ("started", lambda j: j["processed_on"]),
    "delayed": ("runs-at", lambda j: j["timestamp"] + j["delay"]),
}
_ADDED: tuple[str, Callable[[JobInfo], int | None]] = ("added", lambda j: j["timestamp"])


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@app.command()
def jobs(
    queue: QueueArgument,
    state: Annotated[str, typer.Option(
        help=f"One of {', '.join(JOB_STATES)}", show_default=True,
        autocompletion=lambda: JOB_STATES,
    )] = DEFAULT_JOBS_STATE,
    limit: Annotated[int, typer.Option(help="At most this many, newest first")
                     ] = DEFAULT_JOBS_LIMIT,
    as_json: JsonOption = False,
) -> None:
    """The jobs of one queue in one state: id, name, when, attempts (and why, if failed)."""
    _check_state(state, JOB_STATES, "unknown state")
    _check_limit(limit, 1)

    async def main(mail: MailManager) -> int:
        found: list[JobInfo] = []
        total, page, per_page = 0, 1, min(limit, MAX_PER_PAGE)
        while len(found) < limit:
            result = await mail.queues.get_jobs(queue, state, page, per_page)
            total = result["total"] if page == 1 else total
            found += result["jobs"]
            if len(result["jobs"]) < per_page:
                break
            page += 1
        found = found[:limit]
        if as_json:
            typer.echo(json.dumps({"queue": queue, "state": state, "total": total,
                                   "jobs": found}, indent=2, default=str))
            return 0
        if not found:
            typer.echo(f"(no {state} jobs in {queue})")
            return 0
        typer.echo(_jobs_table(found, state))
        if total > len(found):
            typer.echo(f"({len(found)} of {total} {state} jobs; --limit for more)")
        return 0

    _session(main)


def _jobs_table(found: list[JobInfo], state: str) -> str:
    time_header, time_of = _TIME_COLUMNS.get(state, _ADDED)
    header = ["id", "name", time_header, "attempts"]
    rows = [[j["id"], j["name"], _when(time_of(j)), str(j["attempts_made"])] for j in found]
    if state == "failed":
        header.append("reason")
        for row, j in zip(rows, found, strict=True):
            row.append((j["failed_reason"] or "").strip().split("\n", 1)[0] or "-")
    return _table(header, rows, right={3})


# --- changing: each one audited --------------------------------------------------------------


@dataclass
class Outcome:
    """What a change did: `message` for the audit log, in the words the dashboard uses;
    `summary` for stdout (None: no line, nothing was done); `problems`, the parts that
    failed, one stderr line each, which make the command exit 1."""

    message: str
    target: str
    summary: str | None
    problems: list[str] = field(default_factory=list)

    @classmethod
    def done(cls, message: str, target: str) -> Outcome:
        return cls(message, target, summary=message)


async def _audited(mail: MailManager, action: str, target: str,
                   change: Callable[[], Awaitable[Outcome]]) -> Outcome:
    """Do `change` and write the audit entry, as the dashboard's `operator_action` does:
    the outcome, or the error (no such queue...) with result "error"."""
    try:
        outcome = await change()
    except MailQueueError as exc:
        await _record(mail, action, target, "error", str(exc))
        raise
    await _record(mail, action, outcome.target, "error" if outcome.problems else "ok",
                  outcome.message)
    return outcome


async def _record(mail: MailManager, action: str, target: str, result: str,
                  detail: str) -> None:
    try:
        await mail.record_audit(actor(), action, target, result, detail)
    except Exception as exc:  # the change happened; say the entry is missing, do not hide it
        typer.echo(f"mailqueue: warning: no audit entry written for {action} on {target}: "
                   f"{exc}", err=True)


def _change(action: str, queue: str, change: Callable[[MailManager], Awaitable[Outcome]]
            ) -> None:
    async def main(mail: MailManager) -> int:
        outcome = await _audited(mail, action, queue, lambda: change(mail))
        for problem in outcome.problems:
            typer.echo(f"mailqueue: {problem}", err=True)
        if outcome.summary is not None and not is_quiet():
            typer.echo(outcome.summary)
        return 1 if outcome.problems else 0

    _session(main)


@app.command()
def retry(
    queue: QueueArgument,
    job_ids: Annotated[list[str] | None, typer.Argument(
        metavar="[JOB]...", help="Ids of failed (or completed) jobs to run again",
        show_default=False,
    )] = None,
    all_failed: Annotated[bool, typer.Option(
        "--all-failed", help="Every failed job of the queue",
    )] = False,
) -> None:
    """Move failed jobs back to waiting: the given ones, or --all-failed."""
    ids = list(dict.fromkeys(job_ids or []))
    if all_failed and ids:
        fail("give job ids or --all-failed, not both", USAGE_ERROR)
    if not all_failed and not ids:
        fail("retry needs job ids or --all-failed", USAGE_ERROR)

    async def every_failed(mail: MailManager) -> Outcome:
        count = await mail.queues.retry_failed(queue)
        return Outcome.done(f"Retried {count} failed job(s) of {queue}", queue)

    async def selected(mail: MailManager) -> Outcome:
        await mail.queues.get_queue(queue)  # no such queue: one error, not one per job
        done, problems = [], []
        for job_id in ids:
            try:
                await mail.queues.retry_job(queue, job_id)
                done.append(job_id)
            except MailQueueError as exc:
                problems.append(str(exc))
        message = f"Retried {len(done)} job(s) of {queue}"
        if problems:
            message += f"; {len(problems)} not: " + "; ".join(problems[:5])
        # The target as the dashboard's "retry selected" writes it.
        return Outcome(message, f"{queue}/{','.join(done[:20]) or '-'}",
                       f"Retried {len(done)} job(s) of {queue}: {', '.join(done)}"
                       if done else None, problems)

    if all_failed:
        _change("queue.retry-failed", queue, every_failed)
    else:
        _change("queue.retry-selected", queue, selected)


@app.command()
def pause(queue: QueueArgument) -> None:
    """Pause a queue: workers take no new job from it (active ones finish)."""
    _pause_or_resume(queue, pause=True)


@app.command()
def resume(queue: QueueArgument) -> None:
    """Resume a paused queue."""
    _pause_or_resume(queue, pause=False)


def _pause_or_resume(queue: str, *, pause: bool) -> None:
    async def change(mail: MailManager) -> Outcome:
        if pause:
            await mail.queues.pause(queue)
        else:
            await mail.queues.resume(queue)
        return Outcome.done(f"{'Paused' if pause else 'Resumed'} {queue}", queue)

    _change("queue.pause" if pause else "queue.resume", queue, change)


@app.command()
def clean(
    queue: QueueArgument,
    older_than: Annotated[str | None, typer.Option(
        metavar="DURATION", show_default=False,
        help="Only jobs older than this: 30s, 15m, 1h, 2d (0 for all)",
    )] = None,
    state: Annotated[str, typer.Option(
        help=f"One of {', '.join(CLEANABLE_STATES)}", show_default=True,
        autocompletion=lambda: CLEANABLE_STATES,
    )] = "completed",
    limit: Annotated[int, typer.Option(help="Remove at most this many (0: no limit)")] = 0,
) -> None:
    """Remove a queue's jobs in one state that are older than --older-than."""
    _check_state(state, CLEANABLE_STATES, "cannot clean")
    _check_limit(limit, 0)
    # Required, but checked here: a forgotten --older-than must not mean "all of them", and
    # the reason is then our one line rather than a usage box.
    if older_than is None:
        fail("clean needs --older-than, like --older-than 1h (0 for every job)", USAGE_ERROR)
    try:
        grace_ms = parse_duration(older_than)
    except ValueError as exc:
        fail(f"--older-than: {exc}", USAGE_ERROR)

    async def change(mail: MailManager) -> Outcome:
        removed = await mail.queues.clean(queue, state, grace_ms, limit)
        return Outcome.done(f"Removed {len(removed)} {state} job(s) older than "
                            f"{older_than} from {queue}", queue)

    _change("queue.clean", queue, change)
