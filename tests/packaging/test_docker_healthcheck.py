"""The image's health check program, `mailqueue-healthcheck` (mailqueue/healthcheck.py, a
console script of the wheel: no code hidden in the Dockerfile), installed as the image
installs it and run as the HEALTHCHECK and compose's per-service `test:` lines run it,
against a real `mailqueue dashboard` and `mailqueue worker`: it passes when they are healthy
and fails when they are not, and never waits past its timeout.
"""

from __future__ import annotations

import os
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailqueue.redis_server import free_port
from tests.faults.system import MailqueueProcess, own_redis, start_worker
from tests.packaging import docker_support
from tests.packaging.docker_support import (
    CHECKOUT,
    Stage,
    compose_check,
    healthcheck_command,
    seconds,
)
from tests.packaging.test_wheel import dists, installed  # noqa: F401 (test_wheel's fixtures)
from tests.waiting import eventually_sync

# docker_support's fixtures: the Dockerfile and docker-compose.yml, read once per module.
stages = docker_support.stages
compose = docker_support.compose

# Where this venv's console scripts are (after `pip install --editable .`).
DEV_BIN = Path(sysconfig.get_path("scripts"))


class HealthCheck:
    """The image's health check program, run as Docker would run a `test:` or HEALTHCHECK
    command line, with a container's environment; each run must end within --timeout.

    The program is the console script installed with the package (the dev venv's
    bin/mailqueue-healthcheck here, /usr/local/bin/mailqueue-healthcheck in the image)."""

    def __init__(self, stages: list[Stage], tmp_path: Path,
                 bin_dir: Path = DEV_BIN) -> None:
        opts, self.image_command = healthcheck_command(stages)
        self.timeout = seconds(opts["timeout"])
        self.program = self.image_command[0]
        self.script = bin_dir / self.program
        assert self.script.is_file() and os.access(self.script, os.X_OK), (
            f"{self.script} is not installed: pip install --editable . (pyproject's scripts)")
        self.cwd = tmp_path  # the image's WORKDIR: an empty folder (no .env)

    def run(self, command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        assert command[0] == self.program, f"{command} does not run the image's check"
        started = time.monotonic()
        result = subprocess.run([str(self.script), *command[1:]], env=env,
                                cwd=self.cwd, capture_output=True, text=True,
                                timeout=self.timeout + 30)
        elapsed = time.monotonic() - started
        assert elapsed < self.timeout, (
            f"{command} took {elapsed:.1f} s, over the HEALTHCHECK timeout ({self.timeout} s)")
        return result


@pytest.fixture
def healthcheck(stages: list[Stage], tmp_path: Path) -> HealthCheck:
    workdir = tmp_path / "healthcheck"
    workdir.mkdir()
    return HealthCheck(stages, workdir)


def container_env(compose: dict[str, Any], service: str, tmp_path: Path, **values: str
                  ) -> dict[str, str]:
    """A service's environment as compose gives it (REDIS_CONNECT_TIMEOUT_S included), with
    the test's Redis, prefix, port and credentials in place of the container's."""
    env = {k: str(v) for k, v in compose["services"][service]["environment"].items()
           if "${" not in str(v)}
    assert env.get("REDIS_CONNECT_TIMEOUT_S"), f"{service}: REDIS_CONNECT_TIMEOUT_S not set"
    env.update({"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
                "DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "WARNING"})
    env.update(values)
    return env


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"unhealthy:\n{result.stdout}{result.stderr}"
    return result.stdout


def _fails(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, f"exit {result.returncode}:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture
def dashboard_port() -> int:
    return free_port()


@pytest.fixture
def dashboard(tmp_path: Path, redis_url: str, prefix: str, dashboard_port: int
              ) -> Iterator[MailqueueProcess]:
    """`mailqueue dashboard` as compose runs it: on all addresses, with credentials (a
    user:password and a token)."""
    process = MailqueueProcess(
        tmp_path, ["dashboard", "--host", "0.0.0.0", "--port", str(dashboard_port)],
        redis_url=redis_url, prefix=prefix, DASHBOARD_AUTH="admin:s3cret,t0ken-abc")
    try:
        process.wait_for_output("Ctrl-C to stop")
        yield process
    finally:
        process.stop()


def test_healthcheck_passes_on_a_healthy_dashboard_and_fails_once_it_is_down(
        healthcheck: HealthCheck, compose: dict[str, Any], dashboard: MailqueueProcess,
        dashboard_port: int, redis_url: str, prefix: str, tmp_path: Path) -> None:
    def env(auth: str) -> dict[str, str]:
        return container_env(compose, "dashboard", tmp_path, REDIS_URL=redis_url,
                             QUEUE_PREFIX=prefix, DASHBOARD_PORT=str(dashboard_port),
                             DASHBOARD_AUTH=auth)

    image_check, dashboard_check = healthcheck.image_command, compose_check(compose, "dashboard")
    # The dashboard asks every request for credentials, /health too: the check sends the
    # first of DASHBOARD_AUTH (basic or bearer), and a wrong one fails.
    assert "answered 200" in _ok(healthcheck.run(image_check, env("admin:s3cret")))
    assert "answered 200" in _ok(healthcheck.run(dashboard_check, env("admin:s3cret")))
    _ok(healthcheck.run(dashboard_check, env("t0ken-abc")))
    assert "401" in _fails(healthcheck.run(dashboard_check, env("admin:wrong")))
    # A dashboard container has no worker: the worker role's check is not fooled by it.
    assert "no worker" in _fails(healthcheck.run(compose_check(compose, "worker"),
                                                 env("admin:s3cret")))

    assert dashboard.stop() == 0, dashboard.output()
    assert "nothing listens" in _fails(healthcheck.run(dashboard_check, env("admin:s3cret")))
    out = _fails(healthcheck.run(image_check, env("admin:s3cret")))
    assert "nothing listens" in out and "no worker" in out, out


def test_healthcheck_fails_when_the_dashboard_has_lost_redis(
        healthcheck: HealthCheck, compose: dict[str, Any], tmp_path: Path, prefix: str) -> None:
    redis = own_redis(tmp_path / "redis")
    port = free_port()
    process = MailqueueProcess(tmp_path, ["dashboard", "--port", str(port)],
                               redis_url=redis.url, prefix=prefix, DASHBOARD_AUTH="admin:pw")
    try:
        process.wait_for_output("Ctrl-C to stop")
        env = container_env(compose, "dashboard", tmp_path, REDIS_URL=redis.url,
                            QUEUE_PREFIX=prefix, DASHBOARD_PORT=str(port),
                            DASHBOARD_AUTH="admin:pw")
        _ok(healthcheck.run(compose_check(compose, "dashboard"), env))
        redis.stop()
        # /health answers 503 while Redis is away: unhealthy, and the check returns at once.
        assert "503" in _fails(healthcheck.run(compose_check(compose, "dashboard"), env))
    finally:
        process.stop()
        redis.stop()


def test_healthcheck_passes_while_this_hosts_worker_is_connected(
        healthcheck: HealthCheck, compose: dict[str, Any], tmp_path: Path, redis_url: str,
        prefix: str) -> None:
    # Nothing listens on the dashboard port of a worker container.
    env = container_env(compose, "worker", tmp_path, REDIS_URL=redis_url, QUEUE_PREFIX=prefix,
                        DASHBOARD_PORT=str(free_port()))
    worker_check = compose_check(compose, "worker")
    assert "no worker of this host" in _fails(healthcheck.run(worker_check, env))

    worker = start_worker(tmp_path, redis_url=redis_url, prefix=prefix, concurrency=2)
    try:
        assert "1 connected" in _ok(healthcheck.run(worker_check, env))
        # The image's HEALTHCHECK (no role named) finds no dashboard, and checks the worker.
        out = _ok(healthcheck.run(healthcheck.image_command, env))
        assert "nothing listens" in out and "1 connected" in out, out
    finally:
        assert worker.stop() == 0, worker.output()

    # Once its connections are gone from Redis (at once, or nearly), the check fails.
    result = eventually_sync(lambda: healthcheck.run(worker_check, env), 30,
                             "the worker check failing with no worker",
                             accept=lambda run: run.returncode != 0, interval=0.2)
    assert "no worker of this host" in _fails(result)


def test_healthcheck_does_not_wait_for_an_absent_redis(
        healthcheck: HealthCheck, compose: dict[str, Any], tmp_path: Path, prefix: str) -> None:
    """REDIS_CONNECT_TIMEOUT_S (set for the processes) must not make a check outlast its
    timeout: a Redis that does not answer is unhealthy at once."""
    env = container_env(compose, "worker", tmp_path, QUEUE_PREFIX=prefix,
                        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
                        DASHBOARD_PORT=str(free_port()))
    assert float(env["REDIS_CONNECT_TIMEOUT_S"]) > healthcheck.timeout
    assert "cannot list workers" in _fails(healthcheck.run(compose_check(compose, "worker"),
                                                           env))
    assert "cannot list workers" in _fails(healthcheck.run(healthcheck.image_command, env))


def test_healthcheck_refuses_an_unknown_role(healthcheck: HealthCheck, compose: dict[str, Any],
                                            tmp_path: Path) -> None:
    """A misspelt role in a `test:` line is unhealthy (exit 1: Docker reserves 2), never a
    check that passes without checking anything."""
    env = container_env(compose, "worker", tmp_path, DASHBOARD_PORT=str(free_port()))
    assert "usage" in _fails(healthcheck.run([healthcheck.program, "workr"], env))


def test_the_wheel_installs_the_healthcheck_command_and_it_stays_light(
        request: pytest.FixtureRequest, stages: list[Stage], compose: dict[str, Any],
        tmp_path: Path) -> None:
    """The wheel (as test_wheel.py installs it in a fresh venv, as the image's pip does)
    puts the HEALTHCHECK's program on the bin path, usable outside Docker too (systemd, a
    Kubernetes exec probe); it runs every 30 s, so it never loads the web layer."""
    bin_dir: Path = request.getfixturevalue("installed")  # the wheel's venv's bin/
    env = container_env(compose, "worker", tmp_path, DASHBOARD_PORT=str(free_port()),
                        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    check = HealthCheck(stages, tmp_path, bin_dir=bin_dir)
    assert str(CHECKOUT) not in check.script.read_text()  # the wheel's, not the checkout's
    assert "usage" in _fails(check.run([check.program, "workr"], env))
    assert "nothing listens" in _fails(check.run([check.program, "dashboard"], env))
    out = _fails(check.run(check.image_command, env))
    assert "nothing listens" in out and "cannot list workers" in out, out

    code = (
        "import sys\n"
        "from mailqueue.healthcheck import main\n"
        "codes = [main(['dashboard']), main(['worker']), main([])]\n"
        "assert codes == [1, 1, 1], codes\n"
        "heavy = ('starlette', 'sse_starlette', 'uvicorn', 'mailqueue.dashboard', 'dashboard')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy\n"
        "                or m.startswith('mailqueue.dashboard'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([str(bin_dir / "python"), "-c", code], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
