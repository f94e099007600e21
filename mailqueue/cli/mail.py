"""`mailqueue send` (enqueue one e-mail) and `mailqueue status` (the health check)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Annotated, Any

import typer

from mailqueue.cli.common import app, fail, load_settings, run_async
from mailqueue.errors import MailQueueError
from mailqueue.mail.handlers import MailService
from mailqueue.mail.templates import BUILTIN_TEMPLATES
from mailqueue.manager import MailManager
from mailqueue.settings import Settings


def _parse_vars(pairs: list[str]) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--var takes key=value, not {pair!r}")
        variables[key.strip()] = value
    return variables


@app.command()
def send(
    to: Annotated[str, typer.Option(help="Recipient address")],
    template: Annotated[
        str, typer.Option(help="welcome, newsletter, reset-password, notification, or a "
                               "template of MAIL_TEMPLATE_DIR")
    ] = "welcome",
    var: Annotated[
        list[str] | None, typer.Option(help="Template variable key=value (repeatable)")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Job data as a JSON object: variables and message "
                                      "options (camelCase or snake_case, see docs/mail.md)")
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Queue (default: the e-mail queue)")] = None,
) -> None:
    """Enqueue one e-mail; a worker renders and sends it. Checked first: exit 1, nothing queued."""
    settings = load_settings()
    variables: dict[str, Any] = {}
    if data:
        try:
            loaded = json.loads(data)
        except json.JSONDecodeError as exc:
            fail(f"--data is not JSON: {exc}")
        if not isinstance(loaded, dict):
            fail("--data must be a JSON object")
        variables.update(loaded)
    variables.update(_parse_vars(var or []))
    variables["to"] = to
    name = queue or settings.default_queue
    job_name = _check(settings, name, template, variables)

    async def main() -> int:
        async with MailManager(settings.for_short_command()) as mail:
            job = await mail.add_job(name, job_name, variables)
            typer.echo(f"Queued job {job.id} ({job_name}) on queue {name!r} for {to}")
        return 0

    run_async(main)


def _check(settings: Settings, queue: str, template: str, data: dict[str, Any]) -> str:
    """What the worker would refuse, refused now (the worker's own code): the job's name.

    A built-in template has its own job (`send-welcome`...); another one, from
    MAIL_TEMPLATE_DIR, goes to `send-email` with `template` in the data, as `MailManager.send`
    does. Nothing is sent and Redis is not touched.
    """
    if template in BUILTIN_TEMPLATES:
        job_name = f"send-{template}"
    else:
        job_name = "send-email"
        data["template"] = template
    # Unsigned: signing is the worker's business, and the host that enqueues needs no DKIM key.
    unsigned = settings.model_copy(update=dict.fromkeys(
        ("mail_dkim_domain", "mail_dkim_selector", "mail_dkim_key_file")))
    try:
        MailService(unsigned).prepare(data, template, _CheckedJob(queue))
    except MailQueueError as exc:
        fail(str(exc))
    return job_name


class _CheckedJob:
    """What building a message needs of a job: a queue name and an id (for the Message-ID)."""

    id = "check"

    def __init__(self, queue: str) -> None:
        self.queue = SimpleNamespace(name=queue)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Health check: Redis, and counts and workers per queue. Exit 1 when unhealthy."""
    settings = load_settings()

    async def main() -> int:
        async with MailManager(settings.for_short_command()) as mail:
            report = await mail.health_check()
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            typer.echo(_status_table(report))
        return 0 if report["healthy"] else 1

    run_async(main)


def _status_table(report: Mapping[str, Any]) -> str:
    r = report.get("redis", {})
    lines = [
        f"Status: {'healthy' if report['healthy'] else 'UNHEALTHY'}",
        f"Redis:  {r.get('url')} ({r.get('source')}), version {r.get('version')}, "
        f"ping {r.get('ping_ms')} ms",
    ]
    if report.get("error"):
        lines.append(f"Error:  {report['error']}")
    columns = ("waiting", "active", "delayed", "completed", "failed", "paused")
    header = f"{'queue':<24}" + "".join(f"{c:>11}" for c in columns) + f"{'workers':>9}"
    lines += ["", header, "-" * len(header)]
    for name, q in sorted(report.get("queues", {}).items()):
        counts = q["counts"]
        lines.append(
            f"{name[:24]:<24}" + "".join(f"{counts.get(c, 0):>11}" for c in columns)
            + f"{q['workers']:>9}"
        )
    if not report.get("queues"):
        lines.append("(no queues yet)")
    return "\n".join(lines)
