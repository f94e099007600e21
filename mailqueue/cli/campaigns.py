"""`mailqueue newsletter send` (a campaign from a file, followed with a progress bar) and
`mailqueue campaign list|show|pause|resume|cancel`.

The recipients file is CSV with a header row (an `email` or `to` column; every other column
is that recipient's template variable) or plain text, one address per line; `-` reads
stdin. Rows are read as they are enqueued: a file of millions stays in bounded memory.
Following a campaign only reads it: Ctrl-C stops watching, never sending.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from mailqueue.campaigns import Campaign, CampaignError, recipient_rows
from mailqueue.cli.common import USAGE_ERROR, _App, actor, app, fail, is_quiet
from mailqueue.cli.mail import _parse_vars
from mailqueue.cli.ops import JsonOption, _session
from mailqueue.mail.templates import TemplateRenderer
from mailqueue.manager import MailManager

newsletter_app = _App(help="Campaigns: one template to many recipients.",
                      no_args_is_help=True)
campaign_app = _App(help="List, follow, pause, resume or cancel campaigns.",
                    no_args_is_help=True)
app.add_typer(newsletter_app, name="newsletter")
app.add_typer(campaign_app, name="campaign")

CampaignId = Annotated[str, typer.Argument(help="The campaign's id", show_default=False)]
_POLL_S = 0.5


def read_recipients(path: str) -> Iterator[Any]:
    """Rows of a CSV file with a header (dicts) or lines of a text file (addresses)."""
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8-sig", newline="")
    try:
        yield from recipient_rows(stream)
    finally:
        if stream is not sys.stdin:
            stream.close()


@newsletter_app.command("send")
def newsletter_send(
    recipients: Annotated[str, typer.Option(
        help="CSV with an email (or to) column and a column per variable, or one address "
             "per line; - for stdin")],
    template: Annotated[str, typer.Option(help="The template to send")] = "newsletter",
    var: Annotated[list[str] | None, typer.Option(
        help="Template variable for everyone, key=value (repeatable)")] = None,
    name: Annotated[str, typer.Option(help="A name for the campaign")] = "",
    error_limit: Annotated[int, typer.Option(
        min=1, help="Pause after this many send errors in a row")] = 20,
    watch: Annotated[bool, typer.Option(
        help="Follow the campaign with a progress bar until it ends")] = True,
) -> None:
    """Enqueue a campaign and follow it. Workers (`mailqueue worker`) send it."""
    if recipients != "-" and not Path(recipients).is_file():
        fail(f"--recipients: no file {recipients!r}", USAGE_ERROR)
    variables = _parse_vars(var or [])

    async def main(mail: MailManager) -> int:
        renderer = TemplateRenderer(mail.settings.mail_template_dir)
        if not renderer.exists(template):
            fail(f"--template: no template {template!r}; templates: "
                 f"{', '.join(renderer.list_templates())}", USAGE_ERROR)
        console = Console(stderr=True, quiet=is_quiet())
        with console.status("Enqueuing...") as status:
            campaign = await mail.campaigns.create(
                template, read_recipients(recipients), variables=variables, name=name,
                created_by=actor(), error_limit=error_limit,
                on_batch=lambda done, bad: status.update(
                    f"Enqueuing: {done:,} recipients" + (f", {bad:,} invalid" if bad else "")))
        typer.echo(f"Campaign {campaign['id']}: {campaign['total']:,} recipients queued"
                   + (f", {campaign['invalid']:,} invalid skipped" if campaign["invalid"]
                      else ""))
        for reason in campaign["invalid_reasons"][:5]:
            typer.echo(f"  skipped: {reason}", err=True)
        if not watch or campaign["total"] == 0:
            return 0
        return await follow(mail, campaign["id"], console)

    _session(main)


async def follow(mail: MailManager, campaign_id: str, console: Console) -> int:
    """A progress bar until the campaign ends; Ctrl-C stops watching (exit 0)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"))
    last_state = ""
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("sending", total=None, detail="")
            while True:
                campaign = await mail.campaigns.get(campaign_id)
                progress.update(task, total=campaign["total"], completed=campaign["done"],
                                description=campaign["state"], detail=_detail(campaign))
                if campaign["state"] != last_state and campaign["state"] == "paused":
                    progress.console.print(f"Paused: {campaign['reason'] or 'by an operator'}")
                last_state = campaign["state"]
                if campaign["state"] in ("completed", "cancelled"):
                    break
                await asyncio.sleep(_POLL_S)
    except (KeyboardInterrupt, asyncio.CancelledError):
        typer.echo(f"Stopped watching; campaign {campaign_id} goes on "
                   f"(mailqueue campaign show {campaign_id}).")
        return 0
    typer.echo(_summary(campaign))
    return 0


def _detail(c: Campaign) -> str:
    eta = f", ETA {c['eta_s']:,} s" if c.get("eta_s") is not None else ""
    return (f"sent {c['sent']:,}  failed {c['failed']:,}  suppressed {c['suppressed']:,}  "
            f"{c['rate']:,.1f}/s{eta}")


def _summary(c: Campaign) -> str:
    return (f"Campaign {c['id']} {c['state']}: {c['sent']:,} sent, {c['failed']:,} failed, "
            f"{c['suppressed']:,} suppressed, {c['remaining']:,} not sent, of {c['total']:,}")


@campaign_app.command("list")
def campaign_list(as_json: JsonOption = False) -> None:
    """The newest campaigns with their progress."""

    async def main(mail: MailManager) -> int:
        found = await mail.campaigns.list()
        if as_json:
            typer.echo(json.dumps(found, indent=2))
        elif not found:
            typer.echo("(no campaigns)")
        for c in [] if as_json else found:
            typer.echo(f"{c['id']}  {c['state']:<9}  {c['done']:,}/{c['total']:,}  {c['name']}")
        return 0

    _session(main)


@campaign_app.command("show")
def campaign_show(campaign_id: CampaignId, as_json: JsonOption = False,
                  watch: Annotated[bool, typer.Option(help="Follow it until it ends")] = False
                  ) -> None:
    """One campaign's progress (or follow it with --watch)."""

    async def main(mail: MailManager) -> int:
        c = await _get(mail, campaign_id)
        if watch:
            return await follow(mail, campaign_id, Console(stderr=True, quiet=is_quiet()))
        typer.echo(json.dumps(c, indent=2) if as_json else
                   _summary(c) + (f"\n{c['reason']}" if c["reason"] else ""))
        return 0

    _session(main)


def _action(verb: str) -> Any:
    def command(campaign_id: CampaignId) -> None:
        async def main(mail: MailManager) -> int:
            await _get(mail, campaign_id)
            try:
                if verb == "pause":
                    c = await mail.campaigns.pause(campaign_id, f"paused by {actor()}")
                else:
                    c = await getattr(mail.campaigns, verb)(campaign_id)
            except CampaignError as exc:
                await mail.record_audit(actor(), f"campaign-{verb}", campaign_id, "refused",
                                        str(exc))
                fail(str(exc))
            await mail.record_audit(actor(), f"campaign-{verb}", campaign_id, "ok", "")
            typer.echo(_summary(c))
            return 0

        _session(main)

    command.__doc__ = {"pause": "Pause sending (jobs in flight finish).",
                       "resume": "Resume a paused campaign.",
                       "cancel": "Remove what has not been sent; jobs in flight finish."}[verb]
    return command


for _verb in ("pause", "resume", "cancel"):
    campaign_app.command(_verb)(_action(_verb))


async def _get(mail: MailManager, campaign_id: str) -> Campaign:
    try:
        return await mail.campaigns.get(campaign_id)
    except CampaignError as exc:
        fail(str(exc))

