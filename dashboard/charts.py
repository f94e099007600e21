"""Charts as server-rendered SVG: no chart library, no script, no inline style (CSP).

What the templates draw from mailqueue.queues.stats: bars of jobs finished per bucket
(completed under failed) with a `<title>` per bucket for hover values, the overview's
sparklines, and wait/run time percentiles. Every chart has a text equivalent (an aria-label
summary, and a visually hidden table of the buckets that had jobs), and says where its
numbers come from. A bucket nobody can know is drawn as "unknown", never as a zero.

Colours are CSS classes over the page's custom properties, so dark mode needs nothing here.
"""

from __future__ import annotations

import functools
import math
import time
from datetime import UTC, datetime
from typing import Any, TypedDict

from mailqueue.manager import MailManager
from mailqueue.queues.stats import KINDS, NO_HISTORY, Durations, KindSeries, Series

from . import formatting
from .formatting import duration

BAR_STEP, CHART_H = 10, 100  # viewBox units per bucket, and the height (stretched by CSS)
SPARK_W, SPARK_H = 120, 22
class Bar(TypedDict):
    x: int
    title: str  # the bucket's hover text


class BarRow(TypedDict):
    label: str
    completed: str
    failed: str


class Totals(TypedDict):
    completed: str
    failed: str
    rate: str


class ThroughputChart(TypedDict):
    """One window's bar chart: SVG paths, hover titles, its text equivalent and notes."""

    title: str
    per: str
    window: str
    width: int
    height: int
    step: int
    completed: str  # SVG path data, as are failed and unknown
    failed: str
    unknown: str
    hits: list[Bar]
    rows: list[BarRow]
    peak: str
    from_label: str
    totals: Totals
    summary: str
    source: str
    note: str
    no_history: bool
    message: str


class Sparkline(TypedDict):
    ok: str  # SVG path data, as are bad and gaps
    bad: str
    gaps: str
    width: int
    height: int
    label: str
    no_history: bool
    message: str


class DurationRow(TypedDict):
    kind: str
    y: int
    p50: str
    p95: str
    x50: float
    x95: float
    known: bool


class Tick(TypedDict):
    x: float
    label: str


class DurationsChart(TypedDict):
    rows: list[DurationRow]
    ticks: list[Tick]
    width: int
    sample: str
    span: str
    empty: bool


class QueueCharts(TypedDict):
    throughput: list[ThroughputChart]  # the last hour, then the last day
    durations: DurationsChart


_SOURCE_NAMES = {"metrics": "BullMQ metrics", "set": "the {kind} set"}
_WINDOW_TITLES = {"hour": ("Last hour", "per minute", "minute"),
                  "day": ("Last 24 hours", "per 15 minutes", "quarter hour")}


def _hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M")


def _n(value: int) -> str:
    return f"{value:,}"


def _known(series: Series) -> list[tuple[int, int, int]]:
    """(bucket, completed, failed) of the buckets either kind knows (an unknown kind as 0)."""
    c, f = series["completed"]["values"], series["failed"]["values"]
    return [(i, c[i] or 0, f[i] or 0) for i in range(len(c))
            if c[i] is not None or f[i] is not None]


def _totals(series: Series) -> tuple[str, str, str]:
    """Completed, failed and the failure rate over the known buckets, as text; a kind
    nobody knows is "unknown" (and so is the rate), not 0."""
    sums = {}
    for kind in KINDS:
        values = series[kind]["values"]  # type: ignore[literal-required]
        known = [v for v in values if v is not None]
        sums[kind] = sum(known) if known else None
    c, f = sums["completed"], sums["failed"]
    if c is None or f is None or not c + f:
        rate = "–" if c is not None and f is not None else "unknown"
    else:
        rate = f"{f / (c + f) * 100:.1f} %"
    return ("unknown" if c is None else _n(c)), ("unknown" if f is None else _n(f)), rate


def _partial(series: Series, kind: KindSeries, i: int) -> bool:
    """Whether bucket i holds the moment the kind's history starts: a lower bound."""
    start = series["start"] + i * series["bucket_ms"]
    return kind["known_from"] is not None and start < kind["known_from"]


def source_text(series: Series) -> str:
    """Where each kind's numbers come from, e.g. "completed: BullMQ metrics and the
    completed set; failed: the failed set"."""
    parts = []
    for kind in KINDS:
        sources = series[kind]["sources"]  # type: ignore[literal-required]
        names = [_SOURCE_NAMES[s].format(kind=kind) for s in sources]
        parts.append(f"{kind}: {' and '.join(names) if names else 'nothing kept'}")
    return "From " + "; ".join(parts) + "."


def unknown_text(series: Series) -> str:
    """Why part of the window is unknown, or ""."""
    notes = []
    for kind in KINDS:
        ks: KindSeries = series[kind]  # type: ignore[literal-required]
        option = "removeOnComplete" if kind == "completed" else "removeOnFail"
        if all(v is None for v in ks["values"]):
            notes.append(f"{kind}: no history kept ({option}) — enable metrics")
        elif ks["known_from"] is not None:
            why = f"older jobs removed ({option})" if ks["jobs_removed"] else "metrics began then"
            notes.append(f"{kind} known since {_hhmm(ks['known_from'])} UTC: {why}")
    return "; ".join(notes) + ("." if notes else "")


def _bucket_title(series: Series, i: int, label: str) -> str:
    parts = []
    for kind in KINDS:
        ks: KindSeries = series[kind]  # type: ignore[literal-required]
        value = ks["values"][i]
        if value is None:
            parts.append(f"{kind} unknown")
        else:
            parts.append(f"{'at least ' if _partial(series, ks, i) else ''}{_n(value)} {kind}")
    return f"{label} UTC: " + ", ".join(parts)


def _redraw_when_bucket_ends(series: Series) -> None:
    """Tell a live render (formatting.relative_times) that this chart goes stale when its
    newest bucket ends: on a quiet queue the bars must still move left as time passes."""
    holder = formatting._changes_at.get()  # the live hub's hook for time-dependent text
    if holder is not None:
        n = len(series["completed"]["values"])
        ends_s = (series["start"] + n * series["bucket_ms"]) / 1000
        holder[0] = min(holder[0], ends_s)


def throughput_chart(series: Series) -> ThroughputChart:
    """A bar chart of one window: paths, hover titles, text equivalent, notes."""
    _redraw_when_bucket_ends(series)
    title, per, unit = _WINDOW_TITLES[series["window"]]
    width_ms = series["bucket_ms"]
    n = len(series["completed"]["values"])
    known = _known(series)
    top = max([1, *(c + f for _, c, f in known)])
    scale = (CHART_H - 2) / top
    ok: list[str] = []
    bad: list[str] = []
    unknown: list[str] = []
    hits: list[Bar] = []
    rows: list[BarRow] = []
    for i in range(n):
        start = series["start"] + i * width_ms
        label = (_hhmm(start) if width_ms <= 60_000
                 else f"{_hhmm(start)}–{_hhmm(start + width_ms)}")
        x = i * BAR_STEP
        c, f = series["completed"]["values"][i], series["failed"]["values"][i]
        if c is None and f is None:
            unknown.append(f"M{x + 1} {CHART_H}v-{CHART_H}h{BAR_STEP - 2}v{CHART_H}z")
        hc, hf = round((c or 0) * scale, 1), round((f or 0) * scale, 1)
        if hc:
            ok.append(f"M{x + 1} {CHART_H}v-{hc}h{BAR_STEP - 2}v{hc}z")
        if hf:
            bad.append(f"M{x + 1} {round(CHART_H - hc, 1)}v-{hf}h{BAR_STEP - 2}v{hf}z")
        hits.append({"x": x, "title": _bucket_title(series, i, label)})
        if c or f:
            rows.append({"label": label, "completed": _n(c or 0), "failed": _n(f or 0)})
    total_c, total_f, rate = _totals(series)
    peak = max(known, key=lambda k: k[1] + k[2], default=None)
    summary = f"{title}, {per}: {total_c} completed and {total_f} failed ({rate} failed)"
    if peak and peak[1] + peak[2]:
        summary += (f"; busiest {unit} {_hhmm(series['start'] + peak[0] * width_ms)} UTC "
                    f"with {_n(peak[1] + peak[2])}")
    if not known:
        summary = f"{title}: {NO_HISTORY}"
    return {"title": title, "per": per, "window": series["window"],
            "width": n * BAR_STEP, "height": CHART_H, "step": BAR_STEP,
            "completed": "".join(ok), "failed": "".join(bad), "unknown": "".join(unknown),
            "hits": hits, "rows": rows, "peak": _n(top if known else 0),
            "from_label": f"{_hhmm(series['start'])} UTC",
            "totals": {"completed": total_c, "failed": total_f, "rate": rate},
            "summary": summary + ".", "source": source_text(series),
            "note": unknown_text(series), "no_history": series["no_history"],
            "message": NO_HISTORY}


@functools.lru_cache(maxsize=8)
def _spark_xs(n: int) -> tuple[str, ...]:
    """The x coordinates of an n-point sparkline, formatted once."""
    step = SPARK_W / max(n - 1, 1)
    return tuple(f"{i * step:.1f}" for i in range(n))


def _spark_path(values: list[int | None], top: int) -> str:
    """A polyline as a path that lifts the pen over unknown buckets."""
    ys = {v: f"{SPARK_H - 1 - v / top * (SPARK_H - 2):.1f}" for v in set(values) if v is not None}
    parts, pen_down = [], False
    for x, v in zip(_spark_xs(len(values)), values, strict=True):
        if v is None:
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{x},{ys[v]}")
        pen_down = True
    return "".join(parts)


def sparkline(series: Series) -> Sparkline:
    """The overview's sparkline of the last hour: completed and failed per minute, oldest on
    the left, the current minute on the right; unknown minutes are a dotted baseline."""
    c, f = series["completed"]["values"], series["failed"]["values"]
    top = max([1, *(v for v in c if v), *(v for v in f if v)])
    xs = _spark_xs(len(c))
    gaps, i = [], 0
    while i < len(c):  # spans where neither kind is known
        if c[i] is None and f[i] is None:
            j = i
            while j + 1 < len(c) and c[j + 1] is None and f[j + 1] is None:
                j += 1
            gaps.append(f"M{xs[i]},{SPARK_H - 1}H{xs[j] if j > i else float(xs[i]) + 2}")
            i = j + 1
        else:
            i += 1
    total_c, total_f, rate = _totals(series)
    label = (f"last hour: {total_c} completed, {total_f} failed ({rate} failed). "
             f"{source_text(series)}")
    if (note := unknown_text(series)):
        label += " " + note[0].upper() + note[1:]
    return {"ok": _spark_path(c, top), "bad": _spark_path(f, top), "gaps": "".join(gaps),
            "width": SPARK_W, "height": SPARK_H, "label": label,
            "no_history": series["no_history"], "message": NO_HISTORY}


def _tick(exponent: int) -> str:
    """A label for 10**exponent ms on the log scale: 1 ms, 100 ms, 10 s, 17 min, 2.8 h."""
    ms = 10 ** exponent
    if ms < 1000:
        return f"{ms} ms"
    if ms < 1_000_000:
        return f"{ms // 1000} s"
    return f"{ms / 60_000:.0f} min" if ms < 10_000_000 else f"{ms / 3_600_000:.1f} h"


def durations_chart(d: Durations) -> DurationsChart:
    """Wait and run time p50/p95 on one log scale (milliseconds to hours), with numbers."""
    values: list[int] = [v for p in (d["wait"], d["run"]) for v in (p["p50"], p["p95"])
                         if v is not None]
    top_exp = max(3, math.ceil(math.log10(max([1, *values]) + 1)))  # at least 1 s
    width = 300

    def x(ms: int | None) -> float:
        return round(math.log10(max(ms or 0, 1)) / top_exp * width, 1)

    rows: list[DurationRow] = []
    for i, (kind, p) in enumerate((("wait", d["wait"]), ("run", d["run"]))):
        rows.append({"kind": kind, "y": 4 + i * 16, "p50": duration(p["p50"]),
                     "p95": duration(p["p95"]), "x50": x(p["p50"]), "x95": x(p["p95"]),
                     "known": p["p50"] is not None})
    ticks: list[Tick] = [{"x": round(e / top_exp * width, 1), "label": _tick(e)}
             for e in range(0, top_exp + 1, max(1, top_exp // 4))]
    span = ""
    if d["oldest"] is not None and d["newest"] is not None:
        # Absolute times: a relative one would make the live region re-render every second.
        oldest, newest = d["oldest"], d["newest"]
        same_day = oldest // 86_400_000 == newest // 86_400_000
        # Over midnight, "18:42–18:41" would read backwards: the older time gets its date.
        start = _hhmm(oldest) if same_day else \
            datetime.fromtimestamp(oldest / 1000, UTC).strftime("%b %-d %H:%M")
        span = f"finished {start}–{_hhmm(newest)} UTC"
    return {"rows": rows, "ticks": ticks, "width": width, "sample": _n(d["sample"]),
            "span": span, "empty": d["sample"] == 0}


# The live layer draws a queue page again each second while a relative time on it ticks;
# the charts change only when a job of the queue finishes (an event) or a minute ends. So a
# live render reuses the charts read at the same event count in the same minute.
_charts_seen: dict[tuple[int, str, int, int], Any] = {}


async def queue_charts(mail: MailManager, name: str, events_seen: int | None = None
                       ) -> QueueCharts:
    """The queue page's charts region: last hour and day of throughput, wait and run times.
    `events_seen`: the live layer's count of the queue's events, to reuse the last read."""
    key = (id(mail), name, events_seen if events_seen is not None else -1,
           int(time.time() // 60))
    data = _charts_seen.get(key) if events_seen is not None else None
    if data is None:
        data = await mail.queues.get_charts(name)
        if events_seen is not None:
            if len(_charts_seen) > 1000:
                _charts_seen.clear()
            _charts_seen[key] = data
    return {"throughput": [throughput_chart(data["hour"]), throughput_chart(data["day"])],
            "durations": durations_chart(data["durations"])}
