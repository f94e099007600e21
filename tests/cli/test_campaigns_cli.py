"""`mailqueue newsletter send` and `mailqueue campaign ...` (issue 13, point 4), run as an
operator runs them: the real command in a subprocess, the suite's Redis, a real worker
sending to the development sink."""

from __future__ import annotations

import asyncio
import getpass
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailqueue.mail.handlers import EmailHandlers, create_email_handlers
from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from tests.cli.test_errors import assert_one_line, cli, cli_env

ACTOR = f"cli:{getpass.getuser()}"


@pytest.fixture
def env(redis_url: str, prefix: str, tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path, REDIS_URL=redis_url, QUEUE_PREFIX=prefix)


@pytest.fixture
async def serving(mail: MailManager, sink: MailSink) -> AsyncIterator[EmailHandlers]:
    handlers = create_email_handlers(mail.settings.model_copy(update={"smtp_url": sink.url}))
    mail.serve_campaigns(handlers)
    yield handlers
    await mail.stop_serving_campaigns()
    await mail.workers.close()
    await handlers.close()


async def mq(args: list[str], env: dict[str, str], cwd: Path
             ) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, args, env, cwd)


async def test_newsletter_send_from_a_csv_follows_the_campaign_to_its_end(
    mail: MailManager, sink: MailSink, serving: EmailHandlers, env: dict[str, str],
    tmp_path: Path,
) -> None:
    csv = tmp_path / "readers.csv"
    rows = [f"r{i}@example.com,Reader {i}" for i in range(12)] + ["not-an-address,Nobody"]
    csv.write_text("email,name\n" + "\n".join(rows) + "\n")
    result = await mq(["newsletter", "send", "--recipients", str(csv),
                       "--var", "campaign=Winter news", "--name", "Winter"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "12 recipients queued, 1 invalid skipped" in result.stdout
    assert "completed: 12 sent, 0 failed, 0 suppressed, 0 not sent, of 12" in result.stdout
    assert await sink.outbox.count() == 12
    [campaign] = await mail.campaigns.list()
    assert campaign["name"] == "Winter" and campaign["created_by"] == ACTOR
    message = await sink.outbox.get_message(
        next(m["id"] for m in await sink.outbox.list_messages(20)
             if m["envelope_to"] == ["r3@example.com"]))
    assert message is not None and "Reader 3" in (message["text"] or "")
    assert "Winter news" in message["subject"]

    listed = await mq(["campaign", "list"], env, tmp_path)
    assert campaign["id"] in listed.stdout and "completed" in listed.stdout
    shown = json.loads((await mq(["campaign", "show", campaign["id"], "--json"], env,
                                  tmp_path)).stdout)
    assert shown["sent"] == 12 and shown["state"] == "completed"


async def test_pause_resume_cancel_from_the_command_line_are_audited(
    mail: MailManager, env: dict[str, str], tmp_path: Path
) -> None:
    addresses = tmp_path / "list.txt"
    addresses.write_text("# one per line\n" + "".join(f"a{i}@example.com\n" for i in range(5)))
    result = await mq(["newsletter", "send", "--recipients", str(addresses), "--no-watch"],
                      env, tmp_path)
    assert result.returncode == 0, result.stderr
    [campaign] = await mail.campaigns.list()  # nothing serves it: it waits
    assert campaign["total"] == 5 and campaign["state"] == "running"
    for verb, state in (("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")):
        done = await mq(["campaign", verb, campaign["id"]], env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert (await mail.campaigns.get(campaign["id"]))["state"] == state
    again = await mq(["campaign", "resume", campaign["id"]], env, tmp_path)
    assert_one_line(again, f"mailqueue: campaign {campaign['id']} is cancelled, not paused", 1)
    audit = [(e["actor"], e["action"], e["result"]) for e in await mail.get_audit_log(10)]
    for verb in ("pause", "resume", "cancel"):
        assert (ACTOR, f"campaign-{verb}", "ok") in audit
    assert (ACTOR, "campaign-resume", "refused") in audit


async def test_mistakes_get_one_line_and_an_exit_code(env: dict[str, str], tmp_path: Path
                                                      ) -> None:
    missing = await mq(["newsletter", "send", "--recipients", "nope.csv"], env, tmp_path)
    assert_one_line(missing, "mailqueue: --recipients: no file 'nope.csv'", 2)
    (tmp_path / "one.txt").write_text("a@example.com\n")
    bad = await mq(["newsletter", "send", "--recipients", "one.txt", "--template", "nah"],
                   env, tmp_path)
    assert bad.returncode == 2 and "--template: no template 'nah'" in bad.stderr
    unknown = await mq(["campaign", "show", "c0ffee"], env, tmp_path)
    assert_one_line(unknown, "mailqueue: no campaign 'c0ffee'", 1)
