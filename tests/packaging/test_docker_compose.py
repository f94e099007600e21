"""docker-compose.yml, checked without a Docker engine: restart policies, depends_on
service_healthy, pinned tags, a Redis as BullMQ needs it, health checks, required settings;
and `docker compose config` where the compose plugin (or docker-compose) is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailqueue.settings import Settings
from tests.packaging import docker_support
from tests.packaging.docker_support import (
    CHECKOUT,
    COMPOSE,
    Stage,
    compose_check,
    healthcheck_command,
    pinned,
    seconds,
)

# docker_support's fixtures: the Dockerfile and docker-compose.yml, read once per module.
stages = docker_support.stages
compose = docker_support.compose

RESTART_POLICIES = {"always", "unless-stopped", "on-failure"}


def test_compose_services_restart_and_are_health_checked(compose: dict[str, Any],
                                                         stages: list[Stage]) -> None:
    services = compose["services"]
    assert set(services) >= {"redis", "worker", "dashboard"}
    _, image_command = healthcheck_command(stages)
    for name, service in services.items():
        assert service.get("restart") in RESTART_POLICIES, f"{name}: restart policy"
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name}: no health check"
        for key in ("interval", "timeout"):
            seconds(check[key])
        if "build" in service:
            # The image's health check program, with the service's role.
            assert compose_check(compose, name)[0] == image_command[0]
            assert compose_check(compose, name)[1:] == [name], check["test"]
            assert seconds(check["timeout"]) < seconds(check["interval"])
        else:
            assert pinned(service["image"]), (
                f"{name}: pin the image tag, not {service['image']!r}")
    for name in ("worker", "dashboard"):
        assert services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}


def test_compose_redis_is_configured_as_bullmq_needs(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    pairs = dict(zip(command[1::2], command[2::2], strict=False))
    assert pairs.get("--maxmemory-policy") == "noeviction", command
    assert pairs.get("--appendonly") == "yes", command
    assert re.match(r"redis:7\.\d+\.\d+", redis["image"]), redis["image"]
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    assert any(v.endswith(":/data") for v in redis["volumes"]), "AOF files are not kept"


def test_compose_keeps_its_requirements_and_waits(compose: dict[str, Any]) -> None:
    worker, dashboard = compose["services"]["worker"], compose["services"]["dashboard"]
    assert worker["environment"]["SMTP_URL"].startswith("${SMTP_URL:?")
    assert dashboard["environment"]["DASHBOARD_AUTH"].startswith("${DASHBOARD_AUTH:?")
    assert all(str(p).startswith("127.0.0.1:") for p in dashboard["ports"]), dashboard["ports"]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for service in (worker, dashboard):
        assert service["environment"]["REDIS_URL"].startswith("redis://redis:")
        assert float(service["environment"]["REDIS_CONNECT_TIMEOUT_S"]) > 0
    # Active jobs get WORKER_CLOSE_TIMEOUT_S to finish before Docker kills the worker.
    assert seconds(worker["stop_grace_period"]) > defaults.worker_close_timeout_s


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=60).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed")
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    args = [*command, "--project-directory", str(CHECKOUT), "-f", str(COMPOSE), "config"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={**base, "SMTP_URL": "smtp://u:p@smtp.example.com:587",
                                 "DASHBOARD_AUTH": "admin:pw"})
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["services"]["dashboard"]["environment"]["DASHBOARD_AUTH"] == "admin:pw"
    # Without SMTP_URL, compose refuses with the file's own message.
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={**base, "DASHBOARD_AUTH": "admin:pw"})
    assert result.returncode != 0 and "set SMTP_URL" in result.stderr, result.stderr
