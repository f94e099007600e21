"""`/health` (JSON, 200 or 503) and `/metrics` (Prometheus text exposition format 0.0.4)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailqueue.manager import MailManager

from ..context import mail_of

log = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def health(request: Request) -> Response:
    report = await mail_of(request).health_check()
    return JSONResponse(report, status_code=200 if report["healthy"] else 503)


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Exposition:
    """Metric families in order, each with its HELP and TYPE lines once."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


async def _queue_samples(mail: MailManager) -> dict[str, Any]:
    metrics, workers, stats = await asyncio.gather(
        mail.get_all_queue_metrics(), mail.workers.list_workers(), mail.get_event_stats()
    )
    per_queue: dict[str, int] = {name: 0 for name in metrics}
    for worker in workers:
        per_queue[worker["queue"]] = per_queue.get(worker["queue"], 0) + 1
    return {"metrics": metrics, "workers": per_queue, "stats": stats}


async def render_metrics(mail: MailManager) -> str:
    """Every mailqueue metric in the Prometheus text format."""
    out = _Exposition()
    try:
        await mail.monitoring.ping()
        data = await _queue_samples(mail)
        up = 1
    except Exception as exc:  # metrics are scraped, never raised: say Redis is down
        log.warning("metrics: Redis unavailable: %s", exc)
        data, up = None, 0
    out.family("mailqueue_redis_up", "gauge", "Whether Redis answers (1) or not (0).",
               [({}, up)])
    if data is None:
        return out.text()
    metrics = data["metrics"]
    out.family("mailqueue_jobs", "gauge", "Jobs in each queue by state.", [
        ({"queue": name, "state": state}, count)
        for name, m in metrics.items() for state, count in m["counts"].items()
    ])
    out.family("mailqueue_completed_total", "counter",
               "Jobs completed, as counted by the workers' metrics.",
               [({"queue": name}, m["completed"]["count"]) for name, m in metrics.items()])
    out.family("mailqueue_failed_total", "counter",
               "Jobs failed, as counted by the workers' metrics.",
               [({"queue": name}, m["failed"]["count"]) for name, m in metrics.items()])
    out.family("mailqueue_workers", "gauge", "Live workers (Python and Node) per queue.",
               [({"queue": name}, n) for name, n in sorted(data["workers"].items())])
    out.family("mailqueue_queue_paused", "gauge", "Whether the queue is paused (1) or not (0).",
               [({"queue": name}, 1 if m["paused"] else 0) for name, m in metrics.items()])
    out.family("mailqueue_event_reader_lag_ms", "gauge",
               "Delay between an event's write and its reading by this process (last event).",
               [({}, data["stats"]["lag_ms"]["last"])])
    return out.text()


async def metrics(request: Request) -> Response:
    text = await render_metrics(mail_of(request))
    return Response(text, media_type=PROMETHEUS_CONTENT_TYPE)
