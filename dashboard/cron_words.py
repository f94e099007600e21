"""Cron patterns and intervals in plain English, for the schedules page.

Only the common forms are put into words ("At 09:00 every day", "Every 5 minutes",
"At 08:30 on Monday through Friday"); anything else comes back as the raw pattern, which is
always right, rather than as a sentence that might be wrong.
"""

from __future__ import annotations

import re

DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
_DAY_ABBR = {d[:3].lower(): i for i, d in enumerate(DAYS)}
_MONTH_ABBR = {m[:3].lower(): i + 1 for i, m in enumerate(MONTHS)}
_NUMBER = re.compile(r"^\d+$")
_STEP = re.compile(r"^\*/(\d+)$")
_RANGE = re.compile(r"^(\w+)-(\w+)$")


class _Unsupported(ValueError):
    """A pattern outside the forms put into words."""


def cron_to_words(pattern: str | None) -> str:
    """`0 9 * * *` -> `At 09:00 every day`; an unusual pattern comes back unchanged."""
    if not pattern:
        return ""
    try:
        return _describe(pattern.split())
    except _Unsupported:
        return pattern


def every_to_words(ms: int | float | None) -> str:
    """An interval in milliseconds: `Every 5 minutes`, `Every 30 seconds`, `Every 1500 ms`."""
    if not ms or ms <= 0:
        return ""
    ms = int(ms)
    for unit, size in (("day", 86_400_000), ("hour", 3_600_000), ("minute", 60_000),
                       ("second", 1000)):
        if ms % size == 0:
            return _every(ms // size, unit)
    return f"Every {ms} ms"


def _every(n: int, unit: str) -> str:
    return f"Every {unit}" if n == 1 else f"Every {n} {unit}s"


def _describe(fields: list[str]) -> str:
    if len(fields) == 6:
        second, fields = fields[0], fields[1:]
        step = _STEP.match(second)
        if second == "*" and all(f == "*" for f in fields):
            return "Every second"
        if step and all(f == "*" for f in fields):
            return _every(int(step.group(1)), "second")
        if second != "0":
            raise _Unsupported(second)
    if len(fields) != 5:
        raise _Unsupported("field count")
    minute, hour, dom, month, dow = fields
    when = _day_words(dom, month, dow)

    # Sub-daily repetition: every N minutes / hours, every day.
    if hour == "*" and minute == "*":
        return _join("Every minute", when)
    if (step := _STEP.match(minute)) and hour == "*":
        return _join(_every(int(step.group(1)), "minute"), when)
    if hour == "*" and _NUMBER.match(minute):
        m = _int(minute, 0, 59)
        return _join("Every hour, on the hour" if m == 0 else
                     f"At {m} minutes past every hour", when)
    if (step := _STEP.match(hour)) and _NUMBER.match(minute):
        m = _int(minute, 0, 59)
        text = _every(int(step.group(1)), "hour")
        return _join(text if m == 0 else f"{text}, at {m} minutes past", when)

    # At fixed times of day.
    minutes = [_int(m, 0, 59) for m in _list(minute)]
    hours = [_int(h, 0, 23) for h in _list(hour)]
    if len(minutes) * len(hours) > 6:
        raise _Unsupported("too many times")
    times = [f"{h:02d}:{m:02d}" for h in hours for m in minutes]
    return _join(f"At {_and(times)}", when or "every day")


def _day_words(dom: str, month: str, dow: str) -> str:
    if dom != "*" and dow not in ("*", "?"):
        raise _Unsupported("day of month and day of week")  # cron ORs them: too subtle
    parts = []
    if dow not in ("*", "?"):
        parts.append(f"on {_weekdays(dow)}")
    if dom not in ("*", "?"):
        days = [str(_int(d, 1, 31)) for d in _list(dom)]
        if month not in ("*", "?"):
            months = [MONTHS[_month(m) - 1] for m in _list(month)]
            return f"on {_and(days)} {_and(months)}"
        parts.append(f"on day {_and(days)} of the month")
    if month not in ("*", "?"):
        parts.append(f"in {_and([MONTHS[_month(m) - 1] for m in _list(month)])}")
    return " ".join(parts)


def _weekdays(dow: str) -> str:
    if (rng := _RANGE.match(dow)) and "," not in dow:
        first, last = _weekday(rng.group(1)), _weekday(rng.group(2))
        return f"{DAYS[first]} through {DAYS[last]}"
    return _and([DAYS[_weekday(d)] for d in _list(dow)])


def _weekday(value: str) -> int:
    value = value.lower()
    if value in _DAY_ABBR:
        return _DAY_ABBR[value]
    return _int(value, 0, 7) % 7


def _month(value: str) -> int:
    value = value.lower()
    return _MONTH_ABBR[value] if value in _MONTH_ABBR else _int(value, 1, 12)


def _list(field: str) -> list[str]:
    items = field.split(",")
    if any(not item or not re.match(r"^\w+$", item) for item in items):
        raise _Unsupported(field)
    return items


def _int(value: str, low: int, high: int) -> int:
    if not _NUMBER.match(value) or not low <= int(value) <= high:
        raise _Unsupported(value)
    return int(value)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _join(head: str, tail: str) -> str:
    return f"{head} {tail}" if tail else head
