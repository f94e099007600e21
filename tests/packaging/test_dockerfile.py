"""The Dockerfile, checked without a Docker engine (none runs here, so the image is never
built or started): pinned base images, a final stage that installs the wheel built in the
build stage and nothing else, a non-root user, EXPOSE, HEALTHCHECK and ENTRYPOINT.
"""

from __future__ import annotations

import re
from typing import Any

from mailqueue.settings import Settings
from tests.packaging import docker_support
from tests.packaging.docker_support import (
    HEALTHCHECK_ENTRY_POINT,
    Stage,
    console_scripts,
    healthcheck_command,
    pinned,
    seconds,
)

# docker_support's fixtures: the Dockerfile and docker-compose.yml, read once per module.
stages = docker_support.stages
compose = docker_support.compose


def test_base_images_are_pinned(stages: list[Stage]) -> None:
    names: set[str] = set()
    for stage in stages:
        if stage.image not in names:
            assert pinned(stage.image), (
                f"FROM {stage.image}: pin an exact tag (python:3.11.13-slim-bookworm) or digest")
        if stage.name:
            names.add(stage.name)
    assert len(stages) >= 2, "a build stage and a final stage"


def test_build_stage_builds_the_wheel_and_the_final_stage_installs_only_it(
        stages: list[Stage]) -> None:
    build, final = stages[-2], stages[-1]
    build_runs = " ".join(run.args for run in build.all("RUN"))
    assert "python -m build" in build_runs or "pip wheel" in build_runs, build_runs

    installs = [run for run in final.all("RUN") if "pip install" in run.args]
    assert len(installs) == 1, [run.args for run in final.all("RUN")]
    install = installs[0].args
    # From the build stage's wheels alone: no index (nothing else, nothing compiled).
    assert f"from={build.name}" in install, install
    assert "--no-index" in install and "--find-links" in install, install
    wheel_dir = re.search(r"--find-links[= ](\S+)", install)
    assert wheel_dir, install
    assert f"--wheel-dir {wheel_dir[1]}" in build_runs, (wheel_dir[1], build_runs)
    assert "--editable" not in install and not re.search(r"\s-e\s", install), install
    # The base image's build tools are removed; none are added.
    assert re.search(r"pip uninstall (--yes|-y) .*setuptools", " ".join(
        run.args for run in final.all("RUN"))), "the final stage keeps setuptools"
    for run in final.all("RUN"):
        assert "apt-get install" not in run.args and "pip install build" not in run.args
    # No source tree: the final stage copies nothing from the build context, and no program
    # hides in a heredoc (out of reach of ruff, mypy and the wheel): every command is the
    # wheel's.
    for copy in final.all("COPY") + final.all("ADD"):
        assert "--from=" in copy.args and not copy.heredocs, f"final stage copies {copy.args!r}"
    for stage in stages:
        assert not [i.args for i in stage.instructions if i.heredocs], "a heredoc"


def test_runs_as_a_non_root_user(stages: list[Stage]) -> None:
    final = stages[-1]
    user = final.last("USER").args.split(":")[0]
    assert user not in ("root", "0", ""), f"USER {user}"
    after_user = final.instructions[final.instructions.index(final.last("USER")):]
    assert not [i for i in after_user if i.keyword == "USER" and
                i.args.split(":")[0] in ("root", "0")]
    if user.isdigit():  # a numeric USER (what Kubernetes' runAsNonRoot can verify) exists
        runs = " ".join(run.args for run in final.all("RUN"))
        assert re.search(rf"useradd .*--uid {user}\b", runs), "USER's uid is never created"


def test_expose_healthcheck_and_entrypoint(stages: list[Stage], compose: dict[str, Any]
                                          ) -> None:
    final = stages[-1]
    port = Settings(_env_file=None).dashboard_port  # type: ignore[call-arg]
    assert final.last("EXPOSE").args.split() == [str(port)]
    # compose's dashboard serves that same port, which the health check reads from
    # DASHBOARD_PORT (unset in compose: the default).
    command = compose["services"]["dashboard"]["command"]
    assert command[command.index("--port") + 1] == str(port), command
    assert "DASHBOARD_PORT" not in compose["services"]["dashboard"].get("environment", {})

    opts, command = healthcheck_command(stages)
    for option in ("interval", "timeout", "start-period", "retries"):
        assert option in opts, f"HEALTHCHECK without --{option}"
    assert seconds(opts["timeout"]) < seconds(opts["interval"])
    # The health check is a console script the wheel installs (on the image's PATH).
    assert console_scripts().get(command[0]) == HEALTHCHECK_ENTRY_POINT, command
    assert final.last("ENTRYPOINT").exec_form() == ["mailqueue"]
    assert console_scripts().get("mailqueue") == "mailqueue.cli:app"
