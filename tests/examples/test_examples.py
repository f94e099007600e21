"""The examples run as is, against the suite's Redis, and print what they promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run_example(name: str, redis_url: str, prefix: str, tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SMTP_URL"}
    env.update(REDIS_URL=redis_url, QUEUE_PREFIX=prefix, DATA_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def test_basic_usage(redis_url: str, prefix: str, tmp_path: Path) -> None:
    out = _run_example("basic_usage.py", redis_url, prefix, tmp_path)
    assert "Queued job 1" in out
    assert "Scheduled daily-newsletter: 0 9 * * *" in out
    assert "E-mail sent: job 1 -> " in out and "message_id" in out
    assert "Healthy: True" in out


def test_workflows(redis_url: str, prefix: str, tmp_path: Path) -> None:
    out = _run_example("workflows.py", redis_url, prefix, tmp_path)
    assert "Workflow created: email-processing:" in out
    assert "email-workflow: completed -> {'steps': 2, 'all_ok': True}" in out
    assert "validate-email: completed -> {'valid': True, 'to': 'test@example.com'}" in out


@pytest.mark.timeout(120)
def test_scheduler(redis_url: str, prefix: str, tmp_path: Path) -> None:
    out = _run_example("scheduler.py", redis_url, prefix, tmp_path)
    assert "Schedule weekday-digest: 30 8 * * 1-5 (tz Europe/Paris)" in out
    assert "Report run 3" in out
    assert "schedules left: 0" in out
