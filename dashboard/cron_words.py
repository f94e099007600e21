"""Cron patterns and intervals in plain English, for the schedules page.

Cron patterns are put into words by cron-descriptor (`0 9 * * 1-5` -> "At 09:00, Monday
through Friday"; 24-hour times, seconds fields, L, W, # and steps included); a pattern it
cannot read comes back as it is, which is always right. Intervals (`every`, in ms) are
ours: cron-descriptor does not do them.
"""

from __future__ import annotations

from cron_descriptor import ExpressionDescriptor, Options

_OPTIONS = Options()
_OPTIONS.use_24hour_time_format = True
_OPTIONS.verbose = False


def cron_to_words(pattern: str | None) -> str:
    """`0 9 * * 1-5` -> `At 09:00, Monday through Friday`; one it cannot read, unchanged."""
    if not pattern:
        return ""
    try:
        return str(ExpressionDescriptor(pattern, _OPTIONS).get_description())
    except Exception:  # cron-descriptor's FormatError, and anything odd it may raise
        return pattern


def every_to_words(ms: int | float | None) -> str:
    """An interval in milliseconds: `Every 5 minutes`, `Every 30 seconds`, `Every 1500 ms`."""
    if not ms or ms <= 0:
        return ""
    ms = int(ms)
    for unit, size in (("day", 86_400_000), ("hour", 3_600_000), ("minute", 60_000),
                       ("second", 1000)):
        if ms % size == 0:
            n = ms // size
            return f"Every {unit}" if n == 1 else f"Every {n} {unit}s"
    return f"Every {ms} ms"
