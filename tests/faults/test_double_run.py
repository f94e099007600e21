"""Two `mailqueue run` on one machine (issue 10): the second must not break the first.

The first `run` (REDIS_URL unset: its own embedded Redis under DATA_DIR, as `make run`) is
up. A second one on the same port fails with one line and exit code 2, and a third on
another port starts and stops; both find the first's Redis. Before the fix the second
removed the first's sink registration on its way out, and the first's worker then had no
SMTP server: every job was retried for ever. Afterwards the registration is still the
first's sink, `mailqueue send` is delivered to it, and its output (at LOG_LEVEL=INFO) has
no line per SMTP command.

A Redis answering on localhost:6379 would be used instead of an embedded one: the test never
touches it, and skips (loudly) in that case.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailqueue.redis_server import LOCAL_DEFAULT_URL, free_port, ping
from tests.faults.system import MailqueueProcess
from tests.waiting import eventually_sync


def test_a_second_run_does_not_break_the_first(tmp_path: Path, prefix: str) -> None:
    if ping(LOCAL_DEFAULT_URL, timeout=0.3):
        pytest.skip("SKIPPED LOUDLY: a Redis answers on localhost:6379, so `mailqueue run` "
                    "would use it instead of an embedded one; this test never touches it")
    port, other_port = free_port(), free_port()
    env = {"LOG_LEVEL": "INFO"}  # the default: what `make run` shows
    first = MailqueueProcess(tmp_path, ["run", "--port", str(port)], redis_url="",
                             prefix=prefix, **env)
    try:
        first.wait_for_output("Ctrl-C to stop", timeout=60)
        banner = re.search(r"SMTP: development sink on (smtp://\S+)", first.output())
        assert banner, first.output()
        first_sink = banner.group(1)

        second = MailqueueProcess(tmp_path, ["run", "--port", str(port)], redis_url="",
                                  prefix=prefix, **env)
        assert second.process.wait(60) == 2
        assert second.stop() == 2
        assert second.output().splitlines() == [
            f"mailqueue: port {port} on 127.0.0.1 is in use (by another program): pass "
            "--port or set DASHBOARD_PORT"
        ]

        third = MailqueueProcess(tmp_path, ["run", "--port", str(other_port)], redis_url="",
                                 prefix=prefix, **env)
        third.wait_for_output("Ctrl-C to stop", timeout=60)
        assert "Redis: redis://127.0.0.1:" in third.output()
        assert third.stop() == 0, third.output()

        # What a user would look at: the dashboard's outbox names the first's sink...
        base = f"http://127.0.0.1:{port}"
        outbox = httpx.get(f"{base}/api/outbox", timeout=5).json()
        assert outbox["sink"]["active"] and outbox["sink"]["url"] == first_sink, outbox
        # ...and `mailqueue send` (which finds the same embedded Redis) is delivered to it.
        cli_env = {**{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
                   "QUEUE_PREFIX": prefix, "DATA_DIR": str(tmp_path / "data")}
        sent = subprocess.run(
            [sys.executable, "-m", "mailqueue.cli", "send", "--to", "ada@example.com",
             "--var", "name=Ada"],
            env=cli_env,
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
        assert sent.returncode == 0, sent.stderr

        def delivered() -> list[dict[str, Any]]:
            messages = httpx.get(f"{base}/api/outbox", timeout=5).json()["messages"]
            return [m for m in messages if m["envelope_to"] == ["ada@example.com"]]

        eventually_sync(delivered, 30, "no mail in the outbox")
        status = subprocess.run(
            [sys.executable, "-m", "mailqueue.cli", "status", "--json"],
            env=cli_env,
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
        report = json.loads(status.stdout)
        assert report["queues"]["emails"]["counts"]["completed"] == 1, report
        assert report["queues"]["emails"]["counts"]["failed"] == 0, report
        assert report["smtp"]["source"] == "development sink", report
        assert report["smtp"]["reachable"] is True, report

        # Quiet: aiosmtpd's one line per SMTP command (logger mail.log) is not shown at INFO.
        output = first.output()
        assert "mail.log" not in output and "MAIL FROM" not in output, output
        assert "transient mail failure" not in output, output
        first.signal(signal.SIGTERM)
        assert first.process.wait(60) == 0
    finally:
        first.stop()
    assert "Traceback" not in first.output(), first.output()
