"""Errors a person can read (issue 10): a mistake in a setting, an option or the machine (a
port in use) is one line on stderr, `mailqueue: ` and what to do, exit code 2, no traceback;
`send` refuses what the worker would refuse, exit code 1, and enqueues nothing.

Every test runs the real command, as a user would, and asserts the exact line.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from mailqueue.mail.sink import MailSink
from mailqueue.manager import MailManager
from tests.faults.system import MailqueueProcess
from tests.waiting import eventually

MAILQUEUE = [sys.executable, "-m", "mailqueue.cli"]
EXPECTED_SMTP = "(expected smtp://user:pass@host:587?starttls=true or smtps://user:pass@host:465)"


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The user's environment without our settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("REDIS_", "SMTP_", "DASHBOARD_", "LOG_", "MAIL_"))}
    env.update(DATA_DIR=str(tmp_path / "data"), **extra)
    return env


def cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    # cwd: the test's own folder, so no stray .env is read.
    return subprocess.run([*MAILQUEUE, *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line(result: subprocess.CompletedProcess[str], line: str, code: int = 2) -> None:
    assert result.stderr.splitlines() == [line], result.stderr
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stdout + result.stderr


# --- settings -------------------------------------------------------------------------------

@pytest.mark.parametrize(("variable", "value", "line"), [
    ("LOG_LEVEL", "loud",
     "mailqueue: LOG_LEVEL: 'loud' is not a log level: use DEBUG, INFO, WARNING, ERROR, "
     "CRITICAL"),
    ("DASHBOARD_PORT", "abc",
     "mailqueue: DASHBOARD_PORT: 'abc' is not a port number: use 1-65535 (0: any free port)"),
    ("DASHBOARD_PORT", "70000",
     "mailqueue: DASHBOARD_PORT: '70000' is not a port number: use 1-65535 (0: any free port)"),
    ("SMTP_URL", "http://mailer:s3cret@mail.example.com",
     f"mailqueue: SMTP_URL: must start with smtp:// or smtps://, not http:// {EXPECTED_SMTP}"),
    ("SMTP_URL", "mail.example.com:587",
     f"mailqueue: SMTP_URL: no scheme: it must start with smtp:// or smtps:// {EXPECTED_SMTP}"),
    ("SMTP_URL", "smtp://mailer:s3cret@:587",
     f"mailqueue: SMTP_URL: no host {EXPECTED_SMTP}"),
    ("SMTP_URL", "smtp://mailer:s3cret@mail.example.com?startls=true",
     "mailqueue: SMTP_URL: unknown option 'startls'; did you mean starttls? " + EXPECTED_SMTP),
    ("SMTP_URL", "smtp://mailer:s3cret@mail.example.com:58x",
     f"mailqueue: SMTP_URL: port '58x' is not a port number (1-65535) {EXPECTED_SMTP}"),
    ("SMTP_URL", "smtp://mailer:s3cret@mail.example.com?timeout=soon",
     f"mailqueue: SMTP_URL: timeout='soon' should be a number of seconds {EXPECTED_SMTP}"),
    ("SMTP_URL", "smtps://mailer:s3cret@mail.example.com?starttls=true",
     f"mailqueue: SMTP_URL: smtps:// is implicit TLS; drop starttls=true {EXPECTED_SMTP}"),
])
def test_a_bad_setting_is_one_line_and_exit_2(variable: str, value: str, line: str,
                                              tmp_path: Path) -> None:
    result = cli(["run"], cli_env(tmp_path, **{variable: value}), tmp_path)
    assert_one_line(result, line)
    assert "s3cret" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["worker", "dashboard", "send --to a@example.com", "status"])
def test_every_command_checks_the_settings_alike(command: str, tmp_path: Path) -> None:
    result = cli(command.split(), cli_env(tmp_path, LOG_LEVEL="loud"), tmp_path)
    assert_one_line(result, "mailqueue: LOG_LEVEL: 'loud' is not a log level: use DEBUG, "
                            "INFO, WARNING, ERROR, CRITICAL")


def test_several_bad_settings_are_one_line_each(tmp_path: Path) -> None:
    env = cli_env(tmp_path, JOB_ATTEMPTS="0", WORKER_CONCURRENCY="many", LOG_LEVEL="chatty")
    result = cli(["worker"], env, tmp_path)
    assert sorted(result.stderr.splitlines()) == [
        "mailqueue: JOB_ATTEMPTS='0': input should be greater than or equal to 1",
        "mailqueue: LOG_LEVEL: 'chatty' is not a log level: use DEBUG, INFO, WARNING, ERROR, "
        "CRITICAL",
        "mailqueue: WORKER_CONCURRENCY='many': input should be a valid integer, unable to "
        "parse string as an integer",
    ]
    assert result.returncode == 2


def test_log_level_takes_any_case(tmp_path: Path, redis_url: str) -> None:
    result = cli(["status"], cli_env(tmp_path, LOG_LEVEL="warning", REDIS_URL=redis_url),
                 tmp_path)
    assert result.returncode == 0, result.stderr


# --- the dashboard's address ----------------------------------------------------------------

@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


@pytest.mark.parametrize("command", ["run", "dashboard"])
def test_a_port_in_use_is_one_line_and_nothing_starts(command: str, taken_port: int,
                                                      tmp_path: Path, redis_url: str,
                                                      prefix: str) -> None:
    env = cli_env(tmp_path, REDIS_URL=redis_url, QUEUE_PREFIX=prefix)
    in_use = (f"mailqueue: port {taken_port} on 127.0.0.1 is in use (by another program): "
              "pass --port or set DASHBOARD_PORT")
    assert_one_line(cli([command, "--port", str(taken_port)], env, tmp_path), in_use)
    env["DASHBOARD_PORT"] = str(taken_port)
    assert_one_line(cli([command], env, tmp_path), in_use)
    # Checked before anything started: no sink registered, no queue made, no key written.
    with redis.Redis.from_url(redis_url) as client:
        assert list(client.scan_iter(f"{prefix}:*")) == []


@pytest.mark.parametrize(("port", "line"), [
    ("70000", "mailqueue: --port: '70000' is not a port number: use 1-65535 (0: any free port)"),
    ("abc", "mailqueue: --port: 'abc' is not a port number: use 1-65535 (0: any free port)"),
    ("-1", "mailqueue: --port: '-1' is not a port number: use 1-65535 (0: any free port)"),
])
def test_an_invalid_port_option_is_one_line(port: str, line: str, tmp_path: Path) -> None:
    assert_one_line(cli(["run", f"--port={port}"], cli_env(tmp_path), tmp_path), line)


def test_an_address_not_of_this_machine_is_one_line(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): no machine has it. Credentials: off loopback
    # the dashboard refuses to start without them, which is checked first.
    env = cli_env(tmp_path, DASHBOARD_AUTH="admin:s3cret")
    assert_one_line(cli(["dashboard", "--host", "192.0.2.1"], env, tmp_path),
                    "mailqueue: cannot listen on 192.0.2.1: not an address of this machine: "
                    "pass --host or set DASHBOARD_HOST")


# --- a clean shutdown -----------------------------------------------------------------------

async def test_the_worker_closes_its_smtp_pool_at_shutdown(mail: MailManager, tmp_path: Path,
                                                           redis_url: str, prefix: str) -> None:
    """The pool's connections QUIT at shutdown: Python's development mode reports nothing
    (before, each open connection was a `ResourceWarning: unclosed transport`)."""
    async with MailSink(mail.client, prefix, register=False) as sink:
        worker = MailqueueProcess(tmp_path, ["worker", "--concurrency", "5"],
                                  redis_url=redis_url, prefix=prefix, SMTP_URL=sink.url,
                                  PYTHONDEVMODE="1")
        try:
            await asyncio.to_thread(worker.wait_for_output, "Ctrl-C to stop")
            for i in range(5):
                await mail.send("welcome", to=f"u{i}@example.com", name=f"U{i}")

            async def all_sent() -> bool:
                return await sink.outbox.count() == 5

            await eventually(all_sent, 30)
        finally:
            # In a thread: the sink, on this loop, must answer the pool's QUIT meanwhile.
            code = await asyncio.to_thread(worker.stop)
    output = worker.output()
    assert code == 0, output
    assert "Stopped." in output
    assert "ResourceWarning" not in output and "unclosed" not in output, output
