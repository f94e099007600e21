"""The failed list's rows: under each failure reason the first line of its stack trace (the
frame that raised), the whole trace one click away (a <details> per row).

Stack traces are untrusted text like every job field: the templates escape them. Each row
carries at most STACK_CHARS of the newest trace (a page of 50 failed rows stays light); the
job page has them all.
"""

from __future__ import annotations

import re
from typing import Any

from mailqueue.manager import MailManager

STACK_CHARS = 4000
STACK_LINE_CHARS = 300

# Node (V8): "    at send (/app/mail.js:12:5)"; Python: '  File "/app/x.py", line 3, in f'.
_V8_FRAME = re.compile(r"^\s*at\s+\S")
_PY_FRAME = re.compile(r'^\s*File "[^"]*", line \d+')


def first_stack_line(stack: str, reason: str | None = None) -> str:
    """The line of a stack trace that says where the error was raised.

    - Node and browsers (V8) write the message, then the frames innermost first: the first
      `at ...` line.
    - Python writes "Traceback (most recent call last):", the frames outermost first, then
      the message: the last `File "...", line N, in f` line (the innermost frame).
    - Anything else: the first line that is not the failure reason itself.
    """
    lines = [line.strip() for line in stack.splitlines() if line.strip()]
    for line in lines:
        if _V8_FRAME.match(line):
            return _cut(line)
    python = [line for line in lines if _PY_FRAME.match(line)]
    if python:
        return _cut(python[-1])
    reason_lines = {line.strip() for line in (reason or "").splitlines()}
    for line in lines:
        if line in reason_lines or line.startswith("Traceback (most recent call last)"):
            continue
        if any(line.endswith(": " + r) or line == f"Error: {r}" for r in reason_lines if r):
            continue  # "RuntimeError: <the reason>": the reason again
        return _cut(line)
    return ""


def _cut(line: str) -> str:
    return line if len(line) <= STACK_LINE_CHARS else line[:STACK_LINE_CHARS] + "…"


async def add_failure_stacks(mail: MailManager, queue: str, jobs: list[dict[str, Any]]
                             ) -> None:
    """Give each row its newest stack trace (`stack`, `stack_cut`) and the line of it that
    says where it failed (`stack_line`); one round trip for the whole page."""
    traces = await mail.queues.get_last_stacktraces(queue, [str(j["id"]) for j in jobs],
                                                    STACK_CHARS)
    for job in jobs:
        stack, cut = traces.get(str(job["id"]), ("", False))
        job["stack"], job["stack_cut"] = stack, cut
        job["stack_line"] = first_stack_line(stack, job.get("failed_reason")) if stack else ""
