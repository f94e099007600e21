"""The `mailqueue` command as a user runs it: real processes, the suite's Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mailqueue.redis_server import free_port

MAILQUEUE = [sys.executable, "-m", "mailqueue.cli"]


def _env(redis_url: str | None, prefix: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SMTP_URL")}
    env.update(QUEUE_PREFIX=prefix, DATA_DIR=str(tmp_path / "data"), **extra)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def _cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAILQUEUE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_status_reports_healthy_redis_and_queues(redis_url: str, prefix: str,
                                                 tmp_path: Path) -> None:
    env = _env(redis_url, prefix, tmp_path)
    sent = _cli(["send", "--to", "ada@example.com", "--var", "name=Ada"], env, tmp_path)
    assert sent.returncode == 0, sent.stderr
    assert "Queued job 1 (send-welcome) on queue 'emails' for ada@example.com" in sent.stdout

    result = _cli(["status"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Status: healthy" in result.stdout
    assert f"Redis:  {redis_url} (REDIS_URL)" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("emails"))
    assert row.split()[1:3] == ["1", "0"]  # one waiting, none active


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://localhost:6379", "must start with redis://"),
        ("redis://localhost:notaport", "is malformed"),
        ("redis://127.0.0.1:1", "does not answer"),
    ],
)
def test_bad_redis_url_is_one_line_and_exit_1(url: str, expected: str, prefix: str,
                                              tmp_path: Path) -> None:
    result = _cli(["status"], _env(url, prefix, tmp_path), tmp_path)
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_send_rejects_bad_input_clearly(redis_url: str, prefix: str, tmp_path: Path) -> None:
    env = _env(redis_url, prefix, tmp_path)
    bad_var = _cli(["send", "--to", "a@example.com", "--var", "novalue"], env, tmp_path)
    assert bad_var.returncode == 1 and "--var takes key=value" in bad_var.stderr
    bad_json = _cli(["send", "--to", "a@example.com", "--data", "{nope"], env, tmp_path)
    assert bad_json.returncode == 1 and "--data is not JSON" in bad_json.stderr
    bad_queue = _cli(["send", "--to", "a@example.com", "--queue", "a:b"], env, tmp_path)
    assert bad_queue.returncode == 1 and "Bad queue name" in bad_queue.stderr


def test_dashboard_refuses_public_bind_without_auth(prefix: str, tmp_path: Path,
                                                    redis_url: str) -> None:
    result = _cli(["dashboard", "--host", "0.0.0.0"], _env(redis_url, prefix, tmp_path),
                  tmp_path)
    assert result.returncode == 1
    assert "without DASHBOARD_AUTH" in result.stderr


def test_help_on_every_command(tmp_path: Path) -> None:
    for command in ("run", "worker", "dashboard", "send", "status"):
        result = _cli([command, "--help"], dict(os.environ), tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout


def test_run_serves_sends_and_stops_cleanly(redis_url: str, prefix: str,
                                            tmp_path: Path) -> None:
    """`mailqueue run`: dashboard up, a sent e-mail is processed, SIGTERM stops everything."""
    port = free_port()
    env = _env(redis_url, prefix, tmp_path)
    proc = subprocess.Popen(
        [*MAILQUEUE, "run", "--port", str(port)], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        banner = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            banner.append(line)
            if line.startswith("Ctrl-C"):
                break
        text = "".join(banner)
        assert f"Dashboard: http://127.0.0.1:{port}" in text, text + proc.stderr.read()
        assert "SMTP: development sink on smtp://127.0.0.1:" in text

        sent = _cli(["send", "--to", "grace@example.com", "--var", "name=Grace"], env, tmp_path)
        assert sent.returncode == 0, sent.stderr

        deadline = time.monotonic() + 30
        completed = 0
        while time.monotonic() < deadline and not completed:
            page = httpx.get(f"http://127.0.0.1:{port}/api/queues", timeout=5).json()
            emails = next(q for q in page["queues"] if q["name"] == "emails")
            completed = emails["counts"]["completed"]
            failed = emails["counts"]["failed"]
            assert not failed, "the welcome e-mail failed"
            time.sleep(0.2)
        assert completed == 1
        html = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
        assert ">emails<" in html

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=40)
        assert proc.returncode == 0, err
        assert "Stopped." in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
