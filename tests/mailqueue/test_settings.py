"""Settings: `.env.example` lists every one, misspelt `.env` keys are reported, and no repr,
log line or status output shows a password."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values

from mailqueue.settings import Settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / ".env.example"
_SETTING_LINE = re.compile(r"^# ?([A-Z][A-Z0-9_]*)=(.*)$")


def _example_lines() -> list[str]:
    return EXAMPLE.read_text().splitlines()


# --- .env.example -------------------------------------------------------------------------


def test_env_example_lists_every_setting_once_and_nothing_else() -> None:
    names = [m.group(1) for line in _example_lines() if (m := _SETTING_LINE.match(line))]
    assert sorted(names) == sorted(name.upper() for name in Settings.model_fields)
    assert len(names) == len(set(names)), "a setting is listed twice"


def test_env_example_shows_each_default_and_marks_the_unset_ones() -> None:
    lines = _example_lines()
    # The file with every setting uncommented, read the way `.env` is read.
    values = dotenv_values(stream=io.StringIO("\n".join(
        m.group(1) + "=" + m.group(2) for line in lines if (m := _SETTING_LINE.match(line))
    )))
    for name, field in Settings.model_fields.items():
        value = values[name.upper()]
        # MAIL_UNSUBSCRIBE_URL is refused without the secret that signs its links.
        needs = {"mail_unsubscribe_secret": "x" * 16} if name == "mail_unsubscribe_url" else {}
        parsed = getattr(Settings(_env_file=None, **{name: value}, **needs),  # type: ignore[call-arg]
                         name)
        if field.default is None or field.default_factory is not None:
            # No plain default: the line is an example, and the comment above it says so.
            index = next(i for i, line in enumerate(lines) if line.startswith(f"# {name.upper()}="))
            above = "\n".join(lines[max(0, index - 3):index]).lower()
            assert "unset" in above or "default:" in above, f"{name.upper()}: say it has no default"
        else:
            assert parsed == field.default, f"{name.upper()}: .env.example says {value!r}"


# --- unknown keys ---------------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "mailqueue.settings" and r.levelno == logging.WARNING]


def test_a_misspelt_env_file_key_is_a_warning_naming_the_closest_setting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = tmp_path / ".env"
    env.write_text("REDIS_ULR=redis://localhost:6379\nmail_form=a@example.com\n"
                   "WORKER_CONCURENCY=3\nDASHBOARD_PORT=3001\n"
                   # Other tools' keys in a shared .env are none of our business.
                   "NODE_ENV=production\nDATABASE_URL=postgres://db\nDEBUG=1\n")
    with caplog.at_level(logging.WARNING, logger="mailqueue.settings"):
        settings = Settings(_env_file=env)  # type: ignore[call-arg]
    assert settings.dashboard_port == 3001
    messages = _warnings(caplog)
    assert len(messages) == 3, messages
    assert any("REDIS_ULR" in m and "did you mean REDIS_URL?" in m for m in messages)
    assert any("MAIL_FORM" in m and "did you mean MAIL_FROM?" in m for m in messages)
    assert any("WORKER_CONCURENCY" in m and "WORKER_CONCURRENCY" in m for m in messages)
    assert all(".env" in m for m in messages)


def test_only_mailqueue_prefixed_environment_variables_are_checked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("REDIS_ULR", "redis://x")  # someone else's business in the environment
    monkeypatch.setenv("MAILQUEUE_REDIS_URL", "redis://x")
    monkeypatch.setenv("MAILQUEUE_SMTP_URK", "smtp://x")
    with caplog.at_level(logging.WARNING, logger="mailqueue.settings"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    messages = _warnings(caplog)
    assert len(messages) == 2, messages
    assert any("MAILQUEUE_REDIS_URL" in m and "no MAILQUEUE_ prefix: use REDIS_URL" in m
               for m in messages)
    assert any("MAILQUEUE_SMTP_URK" in m and "SMTP_URL" in m for m in messages)


def test_the_cli_shows_the_warning_at_start(redis_url: str, prefix: str, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"REDIS_URL={redis_url}\nQUEUE_PREFIX={prefix}\n"
                                   "REDIS_ULR=redis://elsewhere:6379\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDIS_", "QUEUE_", "MAILQUEUE_"))}
    result = subprocess.run([sys.executable, "-m", "mailqueue.cli", "status"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Unknown setting REDIS_ULR in .env: ignored (did you mean REDIS_URL?)" in \
        result.stderr


# --- secrets ----------------------------------------------------------------------------------


def test_repr_and_str_show_no_password_or_token() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url="rediss://alice:redis-s3cret@redis.internal:6380/0?ssl_cert_reqs=required",
        smtp_url="smtp://mailer:smtp-s3cret@smtp.example.com:587?starttls=true",
        dashboard_auth="admin:dash-s3cret,bearer-token-s3cret",
        dashboard_viewer_auth="viewer:view-s3cret",
    )
    for shown in (repr(settings), str(settings), f"{settings}", repr([settings])):
        assert "s3cret" not in shown
        assert "rediss://alice:***@redis.internal:6380/0?ssl_cert_reqs=required" in shown
        assert "smtp://mailer:***@smtp.example.com:587" in shown
        assert "dashboard_auth='***'" in shown
    # The values themselves are intact for the code that uses them.
    assert settings.redis_url is not None and "redis-s3cret" in settings.redis_url
    assert settings.dashboard_auth == "admin:dash-s3cret,bearer-token-s3cret"


def test_short_commands_fail_fast_unless_the_wait_is_set(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    assert Settings(_env_file=None).for_short_command().redis_connect_timeout_s == 0  # type: ignore[call-arg]
    monkeypatch.setenv("REDIS_CONNECT_TIMEOUT_S", "12")
    assert Settings(_env_file=None).for_short_command().redis_connect_timeout_s == 12  # type: ignore[call-arg]
