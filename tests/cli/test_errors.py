"""Errors a person can read (issue 10): a mistake in a setting, an option or the machine (a
port in use) is one line on stderr, `mailqueue: ` and what to do, exit code 2, no traceback;
`send` refuses what the worker would refuse, exit code 1, and enqueues nothing.

Every test runs the real command, as a user would, and asserts the exact line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
