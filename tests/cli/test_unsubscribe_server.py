"""`mailqueue unsubscribe-server` as a user runs it: a real process, the suite's Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from mailqueue.mail.suppressions import suppression_keys
from mailqueue.mail.unsubscribe import make_token
from mailqueue.redis_server import free_port

MAILQUEUE = [sys.executable, "-m", "mailqueue.cli"]
SECRET = "a-long-random-secret-for-tests"


def _env(redis_url: str, prefix: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "SMTP_URL") and not k.startswith("MAIL_UNSUBSCRIBE")}
    env.update(REDIS_URL=redis_url, QUEUE_PREFIX=prefix, DATA_DIR=str(tmp_path / "data"),
               **extra)
    return env


def _wait_for_port(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Until something accepts on 127.0.0.1:port (the process still running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # polling the port, not waiting a fixed time
    raise AssertionError(f"nothing listens on {port}")


def test_unsubscribe_server_serves_the_app_alone_and_stops_cleanly(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    env = _env(redis_url, prefix, tmp_path, MAIL_UNSUBSCRIBE_SECRET=SECRET,
               MAIL_UNSUBSCRIBE_URL=f"http://127.0.0.1:{port}")
    proc = subprocess.Popen([*MAILQUEUE, "unsubscribe-server", "--port", str(port)], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_for_port(port, proc)
        base = f"http://127.0.0.1:{port}"
        token = make_token(SECRET, "Ada@Example.com", expires=int(time.time()) + 3600)
        page = httpx.get(f"{base}/{token}", timeout=5)
        assert page.status_code == 200 and "a*a@example.com" in page.text
        assert page.headers["referrer-policy"] == "no-referrer"
        done = httpx.post(f"{base}/{token}", data={"List-Unsubscribe": "One-Click"}, timeout=5)
        assert done.status_code == 200
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            assert '"reason": "unsubscribe"' in (
                client.hget(suppression_keys(prefix)[0], "ada@example.com") or "")
        finally:
            client.close()
        for path in ("/", "/queues", "/api/queues", "/health"):
            assert httpx.get(base + path, timeout=5).status_code == 404
        forged = make_token("another-secret-of-length", "ada@example.com",
                            expires=int(time.time()) + 3600)
        assert httpx.get(f"{base}/{forged}", timeout=5).status_code == 400

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert f"Unsubscribe app: http://127.0.0.1:{port}" in out
        assert token not in out + err  # no access log: the token stays out of the logs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_unsubscribe_server_refuses_a_missing_secret_with_one_line(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    for extra in ({}, {"MAIL_UNSUBSCRIBE_URL": "https://news.example.org/u"}):
        result = subprocess.run(
            [*MAILQUEUE, "unsubscribe-server", "--port", str(free_port())],
            env=_env(redis_url, prefix, tmp_path, **extra), cwd=tmp_path,
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "MAIL_UNSUBSCRIBE_SECRET" in lines[0], result.stderr
        assert "Traceback" not in result.stderr


def test_unsubscribe_server_refuses_a_bad_port_and_a_taken_one(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    env = _env(redis_url, prefix, tmp_path, MAIL_UNSUBSCRIBE_SECRET=SECRET)
    bad = subprocess.run([*MAILQUEUE, "unsubscribe-server", "--port", "70000"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--port" in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run([*MAILQUEUE, "unsubscribe-server", "--port", str(port)],
                              env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
    assert busy.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert len(busy.stderr.strip().splitlines()) == 1
