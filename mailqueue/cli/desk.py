"""The mail desk from a terminal: `mailqueue messages` (the delivery log) and
`mailqueue suppress add|remove|list` (the suppression list).

"Did Ada get her reset e-mail?" is `mailqueue messages --to ada@example.com`. Changes to the
suppression list are written to the audit log by the manager layer (MailDesk) with the
actor `cli:<os user>`, as the dashboard writes them with the operator's name. A bad option
(an address, an outcome, a time) is one line and exit code 2; an address that is not on the
list when removing it, exit code 1.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, cast

import typer

from mailqueue.cli.common import USAGE_ERROR, _App, actor, app, fail, is_quiet
from mailqueue.cli.ops import JsonOption, _session, _table
from mailqueue.desk import InvalidSearchError
from mailqueue.desk_query import MessageQuery, list_suppressions, resolve, search_messages
from mailqueue.mail.errors import InvalidMailDataError
from mailqueue.mail.message_log import OUTCOMES, MessageEntry
from mailqueue.mail.suppressions import REASONS, Reason, Suppression, normalize_address
from mailqueue.manager import MailManager

OPERATOR_REASONS = ("manual", "complaint")  # bounces and unsubscribes are the system's to say
PAGE_MAX = 500  # entries per read of the log (MailDesk's limit)
SUBJECT_CHARS = 48
REPLY_CHARS = 60

suppress_app = _App(help="The suppression list: addresses that get no mail.",
                    no_args_is_help=True)
app.add_typer(suppress_app, name="suppress")

AddressArgument = Annotated[str, typer.Argument(help="The e-mail address", show_default=False)]


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cut(text: str, chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[:chars - 1] + "…"


def _as_options(message: str, query: MessageQuery) -> str:
    """A search check's line in the command's words: `since must ...` -> `--since must ...`."""
    first = message.split(" ", 1)[0]
    if first in ("to", "since", "until", "outcome", "before", "limit"):
        return "--" + message.replace("before until", "before --until")
    return f"{'--to' if query.to else '--message-id'}: {message}"


# --- the delivery log ---------------------------------------------------------------------


@app.command()
def messages(
    to: Annotated[str, typer.Option(
        "--to", metavar="ADDRESS|@DOMAIN", help="Entries for this recipient, or domain")] = "",
    message_id: Annotated[str, typer.Option(
        "--message-id", metavar="ID", help="Every attempt of one message (<> optional)")] = "",
    outcome: Annotated[str, typer.Option(
        metavar="OUTCOME", help=f"One of {', '.join(OUTCOMES)}",
        autocompletion=lambda: OUTCOMES)] = "",
    template: Annotated[str, typer.Option(metavar="NAME", help="Sent with this template")
                        ] = "",
    since: Annotated[str, typer.Option(
        metavar="WHEN", help="A span back from now (90m, 24h, 7d) or a UTC date (2026-12-01)")
                     ] = "",
    until: Annotated[str, typer.Option(
        metavar="WHEN", help="Up to: a span back from now or a UTC date (its whole day)")] = "",
    before: Annotated[str, typer.Option(
        metavar="ENTRY", help="Older than this entry id (the cursor a page ends with)")] = "",
    limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Send attempts from the delivery log, newest first: time, outcome, recipients, subject,
    SMTP reply. `mailqueue messages --to ada@example.com` answers "did Ada get it?"."""
    if to and message_id:
        fail("give --to or --message-id, not both", USAGE_ERROR)
    if limit < 1:
        fail(f"--limit must be 1 or more, not {limit}", USAGE_ERROR)
    query = MessageQuery(to=to, message_id=message_id, outcome=outcome, template=template,
                         since=since, until=until, before=before, limit=min(limit, PAGE_MAX))
    try:
        resolve(query)  # every filter checked before anything connects
    except InvalidSearchError as exc:
        fail(_as_options(str(exc), query), USAGE_ERROR)

    async def main(mail: MailManager) -> int:
        search = await search_messages(mail.desk, query)
        entries, cursor = list(search.entries), search.next_before
        while cursor and len(entries) < limit:  # more than one read's worth
            query.before, query.limit = cursor, min(limit - len(entries), PAGE_MAX)
            page = await search_messages(mail.desk, query)
            entries += page.entries
            cursor = page.next_before
        if as_json:
            typer.echo(json.dumps({"searched": {"kind": search.kind or None,
                                                "value": search.value or None},
                                   "entries": entries, "next_before": cursor}, indent=2))
            return 0
        if not entries:
            what = f" for {search.described}" if search.described else ""
            typer.echo(f"(no entry in the delivery log{what})")
            return 0
        typer.echo(_messages_table(entries))
        if cursor and not is_quiet():
            typer.echo(f"(older entries: --before {cursor})")
        return 0

    _session(main)


def _recipients(recipients: list[str]) -> str:
    shown = ", ".join(recipients[:2])
    return shown + (f" +{len(recipients) - 2}" if len(recipients) > 2 else "")


def _reply(entry: MessageEntry) -> str:
    reply, code = entry["reply"] or "", entry["code"]
    if code and not reply.startswith(str(code)):
        reply = f"{code} {reply}"
    return _cut(reply, REPLY_CHARS) or "-"


def _messages_table(entries: list[MessageEntry]) -> str:
    header = ["time (UTC)", "outcome", "recipients", "subject", "reply"]
    rows = [[_when(e["at"]), e["outcome"], _recipients(e["recipients"]),
             _cut(e["subject"], SUBJECT_CHARS) or "-", _reply(e)] for e in entries]
    return _table(header, rows, right=set())


# --- the suppression list -----------------------------------------------------------------


def _address(value: str) -> str:
    try:
        return normalize_address(value)
    except InvalidMailDataError as exc:
        fail(str(exc), USAGE_ERROR)


def _entry_words(entry: Suppression) -> str:
    return f"{entry.reason}, since {_when(entry.at)} UTC, by {entry.by}"


@suppress_app.command("add")
def suppress_add(
    address: AddressArgument,
    reason: Annotated[str, typer.Option(
        help=f"One of {', '.join(OPERATOR_REASONS)}", autocompletion=lambda: OPERATOR_REASONS,
    )] = "manual",
    note: Annotated[str, typer.Option(metavar="TEXT", help="Why, for whoever looks later")
                    ] = "",
) -> None:
    """Put an address on the suppression list: no mail goes to it.

    Templates set to ignore the list (a password reset) still reach it."""
    if reason not in OPERATOR_REASONS:
        fail(f"--reason must be {' or '.join(OPERATOR_REASONS)}, not {reason!r}",
             USAGE_ERROR)
    email = _address(address)

    async def main(mail: MailManager) -> int:
        added = await mail.desk.suppress(email, actor=actor(), reason=cast(Reason, reason),
                                         note=note)
        if not is_quiet():
            if added:
                typer.echo(f"Added {email} to the suppression list ({reason})")
            else:
                entry = await mail.desk.suppressions.get(email)
                typer.echo(f"{email} was on the suppression list already"
                           + (f" ({_entry_words(entry)})" if entry else ""))
        return 0

    _session(main)


@suppress_app.command("remove")
def suppress_remove(address: AddressArgument) -> None:
    """Take an address off the suppression list: mail to it goes out again."""
    email = _address(address)

    async def main(mail: MailManager) -> int:
        removed = await mail.desk.remove_suppression(email, actor=actor())
        if removed is None:
            typer.echo(f"mailqueue: {email} is not on the suppression list", err=True)
            return 1
        if not is_quiet():
            typer.echo(f"Removed {email} from the suppression list (was "
                       f"{_entry_words(removed)})")
        return 0

    _session(main)


@suppress_app.command("list")
def suppress_list(
    search: Annotated[str, typer.Option(metavar="TEXT", help="Addresses containing this")
                      ] = "",
    reason: Annotated[str, typer.Option(
        metavar="REASON", help=f"One of {', '.join(REASONS)}", autocompletion=lambda: REASONS,
    )] = "",
    limit: Annotated[int, typer.Option(help="At most this many")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Suppressed addresses (newest first within what is read) and how many per reason."""
    if reason and reason not in REASONS:
        fail(f"--reason must be one of {', '.join(REASONS)}, not {reason!r}", USAGE_ERROR)
    if limit < 1:
        fail(f"--limit must be 1 or more, not {limit}", USAGE_ERROR)

    async def main(mail: MailManager) -> int:
        found: list[Suppression] = []
        cursor = 0
        while True:
            page, cursor = await list_suppressions(mail.desk.suppressions, search,
                                                   reason or None, cursor, min(limit, 500))
            found += page
            if cursor == 0 or len(found) >= limit:
                break
        found = sorted(found, key=lambda e: e.at, reverse=True)[:limit]
        counts = await mail.desk.suppressions.counts()
        total = await mail.desk.suppressions.count()
        if as_json:
            typer.echo(json.dumps({"total": total, "counts": counts,
                                   "entries": [e.as_dict() for e in found],
                                   "more": cursor != 0}, indent=2))
            return 0
        if not is_quiet():
            typer.echo(f"{total} suppressed: "
                       + ", ".join(f"{n} {r}" for r, n in counts.items()))
        if found:
            typer.echo(_suppressions_table(found))
        else:
            typer.echo("(no suppressed address" + (" matches" if search or reason else "")
                       + ")")
        if cursor != 0 and not is_quiet():
            typer.echo(f"(more: --limit {limit * 2})")
        return 0

    _session(main)


def _suppressions_table(found: list[Suppression]) -> str:
    header = ["address", "reason", "since (UTC)", "by", "note or reply"]
    rows = [[e.address, e.reason, _when(e.at), e.by,
             _cut(e.note or (f"{e.code} " if e.code and not e.reply.startswith(str(e.code))
                             else "") + e.reply, REPLY_CHARS) or "-"] for e in found]
    return _table(header, rows, right=set())
