"""`mailqueue send` (enqueue one e-mail) and `mailqueue status` (the health check)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from mailqueue.cli.common import app, fail, load_settings, run_async
from mailqueue.manager import MailManager


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
        str, typer.Option(help="welcome, newsletter, reset-password or notification")
    ] = "welcome",
    var: Annotated[
        list[str] | None, typer.Option(help="Template variable key=value (repeatable)")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Template variables as a JSON object")
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Queue (default: the e-mail queue)")] = None,
) -> None:
    """Enqueue one e-mail; a worker renders and sends it."""
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

    async def main() -> int:
        async with MailManager(settings.for_short_command()) as mail:
            name = queue or settings.default_queue
            job = await mail.add_job(name, f"send-{template}", variables)
            typer.echo(f"Queued job {job.id} (send-{template}) on queue {name!r} for {to}")
        return 0

    run_async(main)


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


def _status_table(report: dict[str, Any]) -> str:
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
