"""What the job page shows of a job: bounded texts, numbered stack traces, the attempts in
words and a timeline. A job's texts come from whoever added it (and its handler's errors):
each is cut to a size a page can hold."""

from __future__ import annotations

import json
from typing import Any, TypedDict

from mailqueue.types import JobView

from ..formatting import progress_percent

TEXT_CHARS = 16_000  # failure reason, each stack trace, the return value
PRETTY_CHARS = 64 * 1024  # the data as shown
STACKTRACES_SHOWN = 20


class StackTrace(TypedDict):
    attempt: int
    text: str


class TimelineRow(TypedDict):
    label: str
    at: int | None
    span: int | None
    note: str


class JobPresentation(TypedDict):
    """The job as the templates show it (`view` in their context)."""

    data_text: str
    data_cut: bool
    data_not_json: bool
    edit_text: str | None  # the data to edit: None when too big to edit on the page
    opts_text: str
    progress_percent: float | None
    progress_text: str | None
    return_text: str | None
    return_cut: bool
    failed_reason: str
    failure_current: bool
    attempts_text: str
    stacktraces: list[StackTrace]
    stacktraces_hidden: int
    timeline: list[TimelineRow]


def cut(text: str, limit: int) -> tuple[str, bool]:
    """`text` cut to `limit` characters, and whether it was."""
    return (text, False) if len(text) <= limit else (text[:limit], True)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def present_job(job: JobView) -> JobPresentation:
    """What the templates show of a job: bounded texts, numbered stack traces, a timeline."""
    if job["data_preview"] is not None:
        data_text, data_cut = job["data_preview"], job["data_truncated"]
        edit_text: str | None = None if job["data_truncated"] else job["data_preview"]
    else:
        pretty = _pretty(job["data"])
        data_text, data_cut = cut(pretty, PRETTY_CHARS)
        compact = json.dumps(job["data"], ensure_ascii=False, default=str)
        edit_text = pretty if not data_cut else (compact if len(compact) <= PRETTY_CHARS
                                                 else None)
    traces = job["stacktrace"][-STACKTRACES_SHOWN:]
    # The newest trace is of the newest failed attempt: the last one made, unless the job
    # then completed (its last attempt succeeded). bullmq keeps the traces of a job retried
    # by hand, so a completed job may carry some.
    last_failed = job["attempts_made"] - (1 if job["state"] == "completed" else 0)
    first_attempt = max(last_failed, len(job["stacktrace"])) - len(traces) + 1
    progress = job["progress"]
    numeric = isinstance(progress, int | float) and not isinstance(progress, bool)
    return_text, return_cut = cut(_pretty(job["return_value"]), TEXT_CHARS)
    reason, _ = cut(job["failed_reason"] or "", TEXT_CHARS)
    return {
        "data_text": data_text,
        "data_cut": data_cut,
        # A small payload comes back as a preview only when it is not JSON (another
        # producer wrote the hash): shown as it is, and said so.
        "data_not_json": job["data_preview"] is not None and not job["data_truncated"],
        "edit_text": edit_text,
        "opts_text": _pretty(job["opts"]),
        "progress_percent": progress_percent(job),
        "progress_text": None if numeric or progress is None
        else cut(_pretty(progress), TEXT_CHARS)[0],
        "return_text": return_text if job["return_value"] is not None else None,
        "return_cut": return_cut,
        "failed_reason": reason,
        # Red and open only while the job is failed; otherwise it is history.
        "failure_current": job["state"] == "failed",
        "attempts_text": attempts_text(job),
        "stacktraces": [
            {"attempt": first_attempt + i, "text": cut(t, TEXT_CHARS)[0]}
            for i, t in enumerate(traces)
        ],
        "stacktraces_hidden": len(job["stacktrace"]) - len(traces),
        "timeline": timeline(job),
    }


def attempts_text(job: JobView) -> str:
    """Attempts made, against the `attempts` option when set.

    bullmq counts attempts for the job's whole life: a retry by hand keeps attemptsMade
    (unless told to reset it), so a job with attempts 1 retried once has made 2; and that
    retry runs once, whatever `attempts` says, since attemptsMade already reached it.
    """
    made = int(job["attempts_made"] or 0)
    allowed = (job["opts"] or {}).get("attempts")
    if not isinstance(allowed, int) or isinstance(allowed, bool) or allowed < 1:
        return str(made)
    if made <= allowed:
        return f"{made} of {allowed}"
    extra = made - allowed
    after = "after a manual retry" if extra == 1 else "after manual retries"
    return f"{made} made: {allowed} allowed by its options, {extra} more {after}"


def timeline(job: JobView) -> list[TimelineRow]:
    """Added, delayed until, started, finished, each with the time since the previous step."""
    added = job["timestamp"] or None
    due = added + job["delay"] if added and job["delay"] else None
    started, finished = job["processed_on"], job["finished_on"]
    rows: list[TimelineRow] = [{"label": "Added", "at": added, "span": None, "note": ""}]
    if due:
        rows.append({"label": "Delayed until", "at": due, "span": job["delay"],
                     "note": "delay"})
    if started:
        rows.append({"label": "Started", "at": started,
                     "span": started - (due or added) if added else None,
                     "note": "waited"})
    if finished:
        rows.append({"label": "Finished", "at": finished,
                     "span": finished - started if started else None, "note": "ran"})
        if added:
            rows.append({"label": "Total", "at": None, "span": finished - added,
                         "note": "from added to finished"})
    return rows


