"""Scenario 7 of the fault suite (who may change what, and what can never run): the
CLI refuses to serve the dashboard on a non-loopback address without credentials.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailqueue.redis_server import free_port
from tests.faults.security.security_support import STATS

CLI_CASES = [
    ("0.0.0.0", {}, "dashboard"), ("::", {}, "dashboard"), ("0.0.0.0", {}, "run"),
    ("0.0.0.0", {"DASHBOARD_AUTH": ""}, "dashboard"),
    ("0.0.0.0", {"DASHBOARD_AUTH": " "}, "dashboard"),
    ("0.0.0.0", {"DASHBOARD_AUTH": ","}, "dashboard"),
    ("::", {"DASHBOARD_AUTH": " , "}, "run"),
    ("0.0.0.0", {"DASHBOARD_VIEWER_AUTH": "viewer:secret"}, "dashboard"),
    ("0.0.0.0", {"DASHBOARD_AUTH": "admin:"}, "dashboard"),
]


@pytest.mark.parametrize(("host", "auth_env", "command"), CLI_CASES,
                         ids=[f"{c}-{h}-{'+'.join(f'{k}={v!r}' for k, v in e.items()) or 'unset'}"
                              for h, e, c in CLI_CASES])
def test_cli_refuses_a_public_address_without_credentials(
    host: str, auth_env: dict[str, str], command: str, tmp_path: Path, redis_url: str,
    prefix: str
) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DASHBOARD_") and k not in ("REDIS_URL", "SMTP_URL")}
    env.update(REDIS_URL=redis_url, QUEUE_PREFIX=prefix, DATA_DIR=str(tmp_path / "data"),
               DASHBOARD_PORT=str(free_port()), **auth_env)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "mailqueue.cli", command, "--host", host], env=env,
            cwd=tmp_path, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`mailqueue {command} --host {host}` with {auth_env} started serving")
    assert result.returncode == 1, (result.stdout, result.stderr[-2000:])
    expected = "DASHBOARD_AUTH" if "admin:" in auth_env.values() else \
        "refusing to serve the dashboard"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    STATS["cli_refusals"] += 1
