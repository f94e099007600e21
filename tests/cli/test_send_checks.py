"""`mailqueue send` refuses what the worker would refuse (issue 10): an unknown template, a
missing variable, an invalid address. One line, exit code 1, and nothing in Redis. The
checks are the worker's own code (MailService.prepare), so the two never disagree.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.cli.test_errors import assert_one_line, cli, cli_env

INVALID = "is not a valid e-mail address: An email address must have an @-sign."


@pytest.fixture
def env(tmp_path: Path, redis_url: str, prefix: str) -> dict[str, str]:
    return cli_env(tmp_path, REDIS_URL=redis_url, QUEUE_PREFIX=prefix)


def redis_keys(redis_url: str, prefix: str) -> list[bytes]:
    with redis.Redis.from_url(redis_url) as client:
        return list(client.scan_iter(f"{prefix}:*"))


@pytest.mark.parametrize(("args", "line"), [
    (["--template", "invoice"],
     "no e-mail template 'invoice'; templates: newsletter, notification, reset-password, "
     "welcome"),
    (["--template", "reset-password"],
     "template 'reset-password' needs 'reset_url' (or 'resetUrl') in the job data (the job "
     "has: to; see docs/mail.md)"),
    (["--template", "reset-password", "--data", json.dumps({"firstName": "Ada"})],
     "template 'reset-password' needs 'resetUrl' in the job data (the job has: firstName, "
     "to; see docs/mail.md)"),
    (["--template", "reset-password", "--var", "first_name=Ada", "--var", "reset_url= "],
     "template 'reset-password' needs 'reset_url' in the job data (the job has: first_name, "
     "reset_url, to; see docs/mail.md)"),
    (["--template", "notification", "--var", "title=Disk full"],
     "template 'notification' needs 'message' in the job data (the job has: title, to; see "
     "docs/mail.md)"),
    (["--data", json.dumps({"replyTo": "help"})], f"replyTo: 'help' {INVALID}"),
    (["--data", json.dumps({"cc": ["ok@example.com", "bad"]})], f"cc[1]: 'bad' {INVALID}"),
    (["--data", json.dumps({"unsubscribeUrl": "javascript:alert(1)"})],
     "unsubscribeUrl 'javascript:alert(1)': expected an https:// (RFC 8058) or mailto: URL"),
])
def test_send_refuses_what_the_worker_would_and_enqueues_nothing(
    args: list[str], line: str, env: dict[str, str], tmp_path: Path, redis_url: str,
    prefix: str,
) -> None:
    result = cli(["send", "--to", "ada@example.com", *args], env, tmp_path)
    assert_one_line(result, f"mailqueue: {line}", code=1)
    assert result.stdout == ""
    assert redis_keys(redis_url, prefix) == []


def test_an_invalid_recipient_is_refused(env: dict[str, str], tmp_path: Path, redis_url: str,
                                         prefix: str) -> None:
    result = cli(["send", "--to", "ada.example.com", "--var", "name=Ada"], env, tmp_path)
    assert_one_line(result, f"mailqueue: to: 'ada.example.com' {INVALID}", code=1)
    assert redis_keys(redis_url, prefix) == []


def test_a_valid_job_is_queued_and_its_id_printed(env: dict[str, str], tmp_path: Path,
                                                  redis_url: str, prefix: str) -> None:
    data = {"resetUrl": "https://app.example/reset?t=1", "replyTo": "help@example.com"}
    result = cli(["send", "--to", "ada@example.com", "--template", "reset-password",
                  "--data", json.dumps(data)], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Queued job 1 (send-reset-password) on queue 'emails' for ada@example.com"
    ]
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        job = client.hgetall(f"{prefix}:emails:1")
    assert job["name"] == "send-reset-password"
    assert json.loads(job["data"]) == {**data, "to": "ada@example.com"}


def test_a_template_of_the_template_dir_goes_to_send_email(
    env: dict[str, str], tmp_path: Path, redis_url: str, prefix: str
) -> None:
    folder = tmp_path / "templates" / "invoice"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Invoice {{ number }}")
    (folder / "body.txt").write_text("Invoice #{{ number }}")
    (folder / "body.html").write_text("<p>Invoice #{{ number }}</p>")
    env["MAIL_TEMPLATE_DIR"] = str(tmp_path / "templates")

    missing = cli(["send", "--to", "ada@example.com", "--template", "invoice"], env, tmp_path)
    assert_one_line(missing, "mailqueue: template 'invoice' (subject.txt): 'number' is undefined; "
                             "add it to the job data (each template's variables are listed in "
                             "docs/mail.md)", code=1)
    assert redis_keys(redis_url, prefix) == []

    sent = cli(["send", "--to", "ada@example.com", "--template", "invoice", "--var",
                "number=12"], env, tmp_path)
    assert sent.returncode == 0, sent.stderr
    assert "Queued job 1 (send-email) on queue 'emails'" in sent.stdout
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        job = client.hgetall(f"{prefix}:emails:1")
    assert json.loads(job["data"])["template"] == "invoice"
