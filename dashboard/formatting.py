"""Jinja2 filters that turn raw job fields into what a person reads."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import jinja2


def timestamp(ms: int | float | None) -> str:
    """Epoch milliseconds as `2026-11-28 16:51:07 UTC`: the zone is said on every absolute
    time, or an operator in another zone misreads it by hours."""
    if not ms:
        return "–"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(ms: int | float | None, now_ms: float | None = None) -> str:
    """Epoch milliseconds as `5 s ago`, `3 min 10 s ago`, `2 h 5 min ago`, `in 4 min 2 s`.

    Whole units that tick at a known pace (every second under an hour, then every minute,
    then every hour past two days): a live page renders a region holding one again when its
    text changes (`relative_times`). The exact time is in the cell's title.
    """
    if not ms:
        return "–"
    now = now_ms if now_ms is not None else time.time() * 1000
    delta = (now - ms) / 1000
    age = abs(delta)
    text, unit = _relative(age)
    holder = _changes_at.get()
    if holder is not None:
        # When this text stops being true: the next whole unit for a past time, the
        # previous one for a future time counting down.
        wait = unit - age % unit if delta >= 0 else (age % unit or unit)
        holder[0] = min(holder[0], now / 1000 + wait)
    return f"in {text}" if delta < 0 else f"{text} ago"


def _relative(age_s: float) -> tuple[str, int]:
    """An age as text, and the unit (s) its text moves by."""
    whole = int(age_s)
    if whole < 60:
        return f"{whole} s", 1
    minutes, whole = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {whole} s", 1
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min", 60
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h", 3600


# While a live region renders: [the wall-clock second at which the first relative time in it
# changes its text] (a list, so `ago` can lower it from inside the template).
_changes_at: ContextVar[list[float] | None] = ContextVar("mailqueue_changes_at", default=None)


@contextlib.contextmanager
def relative_times() -> Iterator[list[float]]:
    """Collect, while rendering in this block, when its relative times stop being true.

    Yields a one-item list: the wall-clock time (s) at which the first `ago` text rendered
    inside changes, `math.inf` if none was rendered. The live hub renders a region again then,
    without waiting for a queue event: a quiet page's "5 s ago" would freeze otherwise.
    """
    holder = [math.inf]
    token = _changes_at.set(holder)
    try:
        yield holder
    finally:
        _changes_at.reset(token)


def duration(ms: int | float | None) -> str:
    """A span in milliseconds as `850 ms`, `12.3 s`, `4 min 10 s`, `2 h 5 min`, `3 d 4 h`."""
    if ms is None:
        return "–"
    ms = float(ms)
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def seconds(s: int | float | None) -> str:
    """Whole seconds, as Redis counts them (CLIENT LIST age and idle, uptime): `< 1 s`,
    `45 s`, `4 min 10 s`, `2 h 5 min`. Never milliseconds: Redis gives none."""
    if s is None:
        return "–"
    whole = int(s)
    if whole < 1:
        return "< 1 s"
    if whole < 60:
        return f"{whole} s"
    return duration(whole * 1000)


def progress_percent(job: Mapping[str, Any]) -> int | float | None:
    """A job's numeric progress clamped to 0..100, for a progress bar; None for no bar.

    No bar either for 0 when the job never ran or failed: an empty bar says "stuck at 0%"
    of a job that never reported progress at all.
    """
    progress = job.get("progress")
    if not isinstance(progress, int | float) or isinstance(progress, bool):
        return None
    if progress <= 0 and (not job.get("processed_on") or job.get("state") == "failed"):
        return None
    return max(0, min(100, progress))


def pretty_json(value: Any, limit: int = 64 * 1024) -> str:
    """Indented JSON, cut at `limit` characters (the page says when it was cut)."""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit]


def compact(n: int | float | None) -> str:
    """Exact below 100,000 (4,998 — an operator counting failures wants the number, not
    "5k"); 123k, 1.5M above, where the last digits tell nobody anything."""
    if n is None:
        return "0"
    n = float(n)
    if abs(n) < 100_000:
        return f"{n:,.0f}"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}".rstrip("0").rstrip(".") + unit
    return f"{n:,.0f}"


def css_id(value: object) -> str:
    """Text as part of an element id that is also a plain CSS selector (`#id`), one to one:
    ASCII letters, digits and '-' as they are, any other character as `_xx` (its UTF-8 bytes
    in hex). htmx finds `hx-preserve` elements by `#id`: a job id holding '%', '.', '/' or a
    space made an invalid selector, and the live swap of the rows threw."""
    return "".join(
        c if (c.isascii() and c.isalnum()) or c == "-"
        else "".join(f"_{b:02x}" for b in c.encode())
        for c in str(value)
    )


def install(env: jinja2.Environment) -> None:
    env.filters.update(
        timestamp=timestamp, ago=ago, duration=duration, pretty_json=pretty_json,
        compact=compact, seconds=seconds, progress_percent=progress_percent, css_id=css_id,
    )
