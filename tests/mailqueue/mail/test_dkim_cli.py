"""DKIM at the command line: a bad key or bad settings stop `mailqueue worker`, a worker pool
and `mailqueue run` at start with one line and exit code 2, before anything is written to
Redis; a started worker signs what it sends; `mailqueue send` needs no key.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import dkim
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import rsa

from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from tests.cli.test_errors import assert_one_line, cli, cli_env
from tests.faults.system import MailqueueProcess
from tests.mailqueue.mail.dkim_support import (
    DOMAIN,
    SELECTOR,
    bad_key_files,
    delivered,
    dns_with,
    write_key,
)
from tests.waiting import eventually


def _dkim_env(tmp_path: Path, key_file: Path | None = None, **extra: str) -> dict[str, str]:
    env = cli_env(tmp_path, **{"MAIL_DKIM_DOMAIN": DOMAIN, "MAIL_DKIM_SELECTOR": SELECTOR,
                               **extra})
    if key_file is not None:
        env["MAIL_DKIM_KEY_FILE"] = str(key_file)
    return env


@pytest.mark.parametrize("name", ["missing", "garbage", "public", "encrypted", "damaged"])
def test_a_bad_key_stops_the_worker_with_one_line_and_exit_2(
    name: str, tmp_path: Path, dkim_key: rsa.RSAPrivateKey, redis_url: str, prefix: str
) -> None:
    content, problem = bad_key_files(dkim_key)[name]
    path = write_key(tmp_path, name, content)
    env = _dkim_env(tmp_path, path, REDIS_URL=redis_url, QUEUE_PREFIX=prefix)
    assert_one_line(cli(["worker"], env, tmp_path),
                    f"mailqueue: MAIL_DKIM_KEY_FILE: {path}: {problem}")
    # Checked before anything started: no queue made, no worker registered, no key written.
    with redis.Redis.from_url(redis_url) as client:
        assert list(client.scan_iter(f"{prefix}:*")) == []


@pytest.mark.parametrize("args", [["run", "--port", "0"], ["worker", "--processes", "2"]])
def test_run_and_a_worker_pool_check_the_key_before_starting(
    args: list[str], tmp_path: Path, dkim_key: rsa.RSAPrivateKey
) -> None:
    content, problem = bad_key_files(dkim_key)["ed25519"]
    path = write_key(tmp_path, "ed25519", content)
    assert_one_line(cli(args, _dkim_env(tmp_path, path), tmp_path),
                    f"mailqueue: MAIL_DKIM_KEY_FILE: {path}: {problem}")


@pytest.mark.parametrize(("env", "line"), [
    ({"MAIL_DKIM_KEY_FILE": ""},
     "mailqueue: DKIM signing needs MAIL_DKIM_DOMAIN, MAIL_DKIM_SELECTOR and "
     "MAIL_DKIM_KEY_FILE together: MAIL_DKIM_KEY_FILE is not set"),
    ({"MAIL_DKIM_SELECTOR": "mail_2026", "MAIL_DKIM_KEY_FILE": "/nonexistent/key.pem"},
     "mailqueue: MAIL_DKIM_SELECTOR: 'mail_2026' is not a selector: 'mail_2026' is not a DNS "
     "label (letters, digits and inner hyphens, at most 63)"),
])
def test_bad_dkim_settings_stop_the_worker_with_one_line(env: dict[str, str], line: str,
                                                         tmp_path: Path) -> None:
    assert_one_line(cli(["worker"], _dkim_env(tmp_path, **env), tmp_path), line)


async def test_mailqueue_worker_signs_what_it_sends(
    mail: MailManager, tmp_path: Path, dkim_key_file: Path, dkim_key: rsa.RSAPrivateKey,
    redis_url: str, prefix: str
) -> None:
    """End to end: the CLI's start check passes, and the worker's messages verify."""
    async with MailSink(mail.client, prefix, register=False) as sink:
        worker = MailqueueProcess(
            tmp_path, ["worker"], redis_url=redis_url, prefix=prefix, SMTP_URL=sink.url,
            LOG_LEVEL="INFO", MAIL_DKIM_DOMAIN=DOMAIN, MAIL_DKIM_SELECTOR=SELECTOR,
            MAIL_DKIM_KEY_FILE=str(dkim_key_file),
        )
        try:
            await asyncio.to_thread(worker.wait_for_output, "Ctrl-C to stop")
            await mail.send("welcome", to="Zoë <zoe@example.com>", name="Zoë")

            async def sent() -> bool:
                return await sink.outbox.count() == 1

            await eventually(sent, 30)
        finally:
            code = await asyncio.to_thread(worker.stop)
        [raw] = await delivered(sink)
    assert code == 0, worker.output()
    assert dkim.verify(raw, dnsfunc=dns_with(dkim_key)) is True
    output = worker.output()
    # Read once: the start check's line, not one more for the handlers.
    assert output.count("DKIM signing on: d=example.com, s=mq2026, 2048-bit RSA key") == 1, output


def test_send_enqueues_without_the_key(tmp_path: Path, redis_url: str, prefix: str) -> None:
    """Only workers sign: a producer's host with the shared settings needs no key file."""
    env = _dkim_env(tmp_path, tmp_path / "only-on-the-workers.pem", REDIS_URL=redis_url,
                    QUEUE_PREFIX=prefix)
    result = cli(["send", "--to", "ada@example.com", "--var", "name=Ada"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Queued job" in result.stdout
