"""`mailqueue messages` and `mailqueue suppress add|remove|list` (issue 13, points 1-2), as an
operator scripts them: the real command in a subprocess, the suite's Redis, mail sent by a
real worker to the development sink (Ada's first attempt refused with a 451), the audit log
(actor cli:<user>), and one line with exit code 2 (a bad option) or 1 (not on the list).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mailqueue.mail.message_log import Attempt, LogEntry
from mailqueue.manager import MailManager
from tests.cli.test_errors import assert_one_line, cli, cli_env
from tests.cli.test_ops import ACTOR, DEAD_REDIS, mq, ok
from tests.dashboard import test_messages_pages

# Ada's reset e-mail (deferred once, then sent) and Bob's notification, by a real worker.
sent = test_messages_pages.sent


@pytest.fixture
def env(redis_url: str, prefix: str, tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path, REDIS_URL=redis_url, QUEUE_PREFIX=prefix)


def lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.strip()]


async def test_did_ada_get_her_reset_email(mail: MailManager, sent: dict[str, Any],
                                           env: dict[str, str], tmp_path: Path) -> None:
    out = ok(await mq(["messages", "--to", "ADA@example.com"], env, tmp_path))
    header, newest, first = lines(out)
    assert header.split() == ["time", "(UTC)", "outcome", "recipients", "subject", "reply"]
    assert " sent " in newest and "Ada@example.com" in newest
    assert "Reset your mailqueue password" in newest and "250 Message accepted" in newest
    assert " deferred " in first and "451" in first
    data = json.loads(ok(await mq(["messages", "--to", "@example.com", "--json"], env,
                                  tmp_path)))
    assert data["searched"] == {"kind": "domain", "value": "@example.com"}
    assert [e["outcome"] for e in data["entries"]] == ["sent", "sent", "deferred"]
    assert data["next_before"] is None
    message_id = sent["reset"]["return_value"]["message_id"]
    by_id = json.loads(ok(await mq(["messages", "--message-id", message_id.strip("<>"),
                                    "--json"], env, tmp_path)))
    assert [e["job_id"] for e in by_id["entries"]] == [sent["reset"]["id"]] * 2
    only = ok(await mq(["messages", "--outcome", "deferred", "--since", "1h"], env, tmp_path))
    assert len(lines(only)) == 2 and " deferred " in only
    none = ok(await mq(["messages", "--to", "eve@example.com"], env, tmp_path))
    assert none == "(no entry in the delivery log for recipient eve@example.com)\n"


async def test_pages_of_the_log_follow_each_other(mail: MailManager, env: dict[str, str],
                                                  tmp_path: Path) -> None:
    for n in range(5):
        await mail.desk.messages.write([(
            LogEntry("sent", [f"u{n}@example.org"], 250, "250 OK"),
            Attempt(f"<q.{n}@x.example>", "q", str(n), 1, "welcome", f"Subject {n}"))])
    first = ok(await mq(["messages", "--limit", "2"], env, tmp_path))
    *rows, more = lines(first)
    assert [r.split()[-3] for r in rows[1:]] == ["4", "3"]  # the subject's number
    assert more.startswith("(older entries: --before ")
    cursor = more.split("--before ", 1)[1].rstrip(")")
    rest = json.loads(ok(await mq(["messages", "--before", cursor, "--limit", "10", "--json"],
                                  env, tmp_path)))
    assert [e["subject"] for e in rest["entries"]] == ["Subject 2", "Subject 1", "Subject 0"]
    template = json.loads(ok(await mq(["messages", "--template", "newsletter", "--json"], env,
                                      tmp_path)))
    assert template["entries"] == []


async def test_suppress_add_list_remove_audited_as_the_cli_user(
    mail: MailManager, env: dict[str, str], tmp_path: Path
) -> None:
    await mail.desk.suppressions.add("gone@example.com", "bounce", by="smtp",
                                     reply="550 5.1.1 No such user", code=550)
    added = ok(await mq(["suppress", "add", "Ada@Example.com", "--reason", "complaint",
                         "--note", "reported as spam"], env, tmp_path))
    assert added == "Added ada@example.com to the suppression list (complaint)\n"
    entry = await mail.desk.suppressions.get("ada@example.com")
    assert entry is not None and entry.by == ACTOR and entry.note == "reported as spam"
    again = ok(await mq(["suppress", "add", "ada@example.com"], env, tmp_path))
    assert again.startswith("ada@example.com was on the suppression list already "
                            "(complaint, since ")

    listed = ok(await mq(["suppress", "list"], env, tmp_path))
    counts, header, *rows = lines(listed)
    assert counts == "2 suppressed: 1 bounce, 0 unsubscribe, 0 manual, 1 complaint"
    assert header.split()[:3] == ["address", "reason", "since"]
    assert sorted(r.split()[0] for r in rows) == ["ada@example.com", "gone@example.com"]
    assert any("550 5.1.1 No such user" in r for r in rows)
    found = json.loads(ok(await mq(["suppress", "list", "--search", "GONE", "--json"], env,
                                   tmp_path)))
    assert [e["address"] for e in found["entries"]] == ["gone@example.com"]
    assert found["total"] == 2 and found["more"] is False
    by_reason = json.loads(ok(await mq(["suppress", "list", "--reason", "complaint",
                                        "--json"], env, tmp_path)))
    assert [e["address"] for e in by_reason["entries"]] == ["ada@example.com"]

    removed = ok(await mq(["suppress", "remove", "ADA@example.com"], env, tmp_path))
    assert removed.startswith("Removed ada@example.com from the suppression list (was "
                              "complaint")
    absent = await mq(["suppress", "remove", "ada@example.com"], env, tmp_path)
    assert_one_line(absent, "mailqueue: ada@example.com is not on the suppression list", 1)
    quiet = await mq(["suppress", "add", "bob@example.com", "-q"], env, tmp_path)
    assert ok(quiet) == ""
    audit = [(e["actor"], e["action"], e["target"], e["result"])
             for e in await mail.get_audit_log(5)]
    assert audit == [(ACTOR, "suppress", "bob@example.com", "ok"),
                     (ACTOR, "unsuppress", "ada@example.com", "absent"),
                     (ACTOR, "unsuppress", "ada@example.com", "ok"),
                     (ACTOR, "suppress", "ada@example.com", "already"),
                     (ACTOR, "suppress", "ada@example.com", "ok")]


SINCE = ("must be a span like 24h or 7d, or a UTC date like 2026-12-01 "
         "(or 2026-12-01T08:30), not")


@pytest.mark.parametrize(("args", "line"), [
    (["messages", "--since", "yesterday"], f"mailqueue: --since {SINCE} 'yesterday'"),
    (["messages", "--until", "2026-13-45"], f"mailqueue: --until {SINCE} '2026-13-45'"),
    (["messages", "--since", "2026-12-02", "--until", "2026-12-01"],
     "mailqueue: --since must come before --until"),
    (["messages", "--outcome", "bounced"],
     "mailqueue: --outcome must be one of sent, deferred, failed, suppressed"),
    (["messages", "--to", "<m@x>"], "mailqueue: --to must be an address or @domain"),
    (["messages", "--to", "a b@example.com"],
     "mailqueue: --to: search for an address, an @domain or a Message-ID, without spaces"),
    (["messages", "--to", "a@example.com", "--message-id", "m@x"],
     "mailqueue: give --to or --message-id, not both"),
    (["messages", "--before", "yesterday"],
     "mailqueue: --before must be an entry id like 1733300000000-0"),
    (["messages", "--limit", "0"], "mailqueue: --limit must be 1 or more, not 0"),
    (["suppress", "add", "nope"],
     "mailqueue: address: 'nope' is not a valid e-mail address: An email address must have "
     "an @-sign."),
    (["suppress", "add", "a@example.com", "--reason", "bounce"],
     "mailqueue: --reason must be manual or complaint, not 'bounce'"),
    (["suppress", "remove", ""], "mailqueue: an e-mail address is required"),
    (["suppress", "list", "--reason", "spam"],
     "mailqueue: --reason must be one of bounce, unsubscribe, manual, complaint, not 'spam'"),
])
def test_a_bad_option_is_one_line_and_exit_2(args: list[str], line: str,
                                             tmp_path: Path) -> None:
    # A dead Redis: a bad option is refused before anything connects.
    result = cli(args, cli_env(tmp_path, REDIS_URL=DEAD_REDIS), tmp_path)
    assert_one_line(result, line, 2)
    assert result.stdout == ""


@pytest.mark.parametrize("args", [["messages"], ["suppress", "list"],
                                  ["suppress", "add", "a@example.com"]])
def test_redis_gone_is_one_line_and_exit_1(args: list[str], tmp_path: Path) -> None:
    result = cli(args, cli_env(tmp_path, REDIS_URL=DEAD_REDIS), tmp_path)
    assert_one_line(result, f"mailqueue: Redis at {DEAD_REDIS} (REDIS_URL) does not answer: "
                            "Connection refused", 1)


def test_the_commands_document_the_shared_options(tmp_path: Path) -> None:
    wide = cli_env(tmp_path, COLUMNS="200")
    for command in (["messages"], ["suppress", "add"], ["suppress", "remove"],
                    ["suppress", "list"]):
        text = ok(cli([*command, "--help"], wide, tmp_path))
        for option in ("--redis-url", "--quiet", "-q"):
            assert f" {option} " in text, (command, option)
        assert "Exit codes: 0 done; 1 failed at run time" in text, command
    top = ok(cli(["--help"], wide, tmp_path))
    assert " messages " in top and " suppress " in top
