"""The Docker image and docker-compose.yml, checked without a Docker engine.

No engine runs here, so the image is never built or started. What can be checked is:
- the Dockerfile's properties (pinned base images, a final stage that installs the wheel
  built in the build stage and nothing else, a non-root user, EXPOSE, HEALTHCHECK);
- the build context (.dockerignore + the build stage's COPY lines) holds every source file
  the wheel is built from, and the build stage's command builds a wheel from exactly it;
- the image's health check program, `mailqueue-healthcheck` (mailqueue/healthcheck.py, a
  console script of the wheel: no code hidden in the Dockerfile), installed as the image
  installs it and run as the HEALTHCHECK and compose's per-service `test:` lines run it,
  against a real `mailqueue dashboard` and `mailqueue worker`: it passes when they are
  healthy and fails when they are not;
- docker-compose.yml's properties (restart policies, depends_on service_healthy, pinned
  tags, a Redis as BullMQ needs it, health checks), and `docker compose config` where the
  compose plugin (or docker-compose) is installed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailqueue.redis_server import free_port
from mailqueue.settings import Settings
from tests.faults.system import MailqueueProcess, own_redis, start_worker
from tests.packaging.test_wheel import dists, installed  # noqa: F401 (test_wheel's fixtures)
from tests.waiting import eventually_sync

CHECKOUT = Path(__file__).resolve().parents[2]
DOCKERFILE = CHECKOUT / "Dockerfile"
COMPOSE = CHECKOUT / "docker-compose.yml"
PYPROJECT = CHECKOUT / "pyproject.toml"
HEALTHCHECK_ENTRY_POINT = "mailqueue.healthcheck:main"
# Where this venv's console scripts are (after `pip install --editable .`).
DEV_BIN = Path(sysconfig.get_path("scripts"))
DOCKERIGNORE = CHECKOUT / ".dockerignore"

# name:1.2.3-anything or name@sha256:...; `redis:7`, `python:3.11-slim` or `latest` are not pins.
PINNED = re.compile(r"^[\w./-]+(:\d+\.\d+\.\d+[\w.-]*)?(@sha256:[0-9a-f]{64})?$")


def pinned(image: str) -> bool:
    return bool(PINNED.match(image)) and (":" in image or "@" in image)


RESTART_POLICIES = {"always", "unless-stopped", "on-failure"}


# --- the Dockerfile, parsed ----------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    heredocs: list[tuple[str, str]] = field(default_factory=list)  # (delimiter, content)

    def exec_form(self, text: str | None = None) -> list[str]:
        value = json.loads(self.args if text is None else text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), value
        return value


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.image}"
        return found[-1]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages and their instructions: continuation lines joined, heredocs read (BuildKit)."""
    lines = text.splitlines()
    stages: list[Stage] = []
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1].rstrip()
            while index < len(lines) and lines[index].strip().startswith("#"):
                index += 1  # comment lines inside an instruction are dropped
            if index < len(lines):
                line += " " + lines[index].strip()
                index += 1
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        for dash, delimiter in re.findall(r"<<(-?)[\"']?(\w+)[\"']?", args):
            body: list[str] = []
            while index < len(lines) and (lines[index].strip() if dash else lines[index]) \
                    != delimiter:
                body.append(lines[index])
                index += 1
            assert index < len(lines), f"heredoc {delimiter} is not closed"
            index += 1
            instruction.heredocs.append((delimiter, "\n".join(body) + "\n"))
        if instruction.keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{keyword} before any FROM"
            stages[-1].instructions.append(instruction)
    return stages


def options(args: str) -> tuple[dict[str, str], str]:
    """`--a=1 --b=2 rest` -> ({"a": "1", "b": "2"}, "rest")."""
    found: dict[str, str] = {}
    rest = args
    while match := re.match(r"--([\w-]+)=(\S+)\s+", rest):
        found[match[1]] = match[2]
        rest = rest[match.end():]
    return found, rest


def seconds(duration: str) -> float:
    """A Docker duration: 30s, 1m30s, 500ms."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def healthcheck_command(stages: list[Stage]) -> tuple[dict[str, str], list[str]]:
    """The HEALTHCHECK's options and its command line (exec form)."""
    opts, rest = options(stages[-1].last("HEALTHCHECK").args)
    assert rest.startswith("CMD "), f"HEALTHCHECK must be CMD [...], not {rest!r}"
    return opts, Instruction("CMD", rest[4:]).exec_form()


def console_scripts() -> dict[str, str]:
    """pyproject.toml's [project.scripts]: the commands the wheel installs."""
    scripts: dict[str, str] = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    return scripts


# --- the Dockerfile -------------------------------------------------------------------------


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


# --- the build context ----------------------------------------------------------------------


def _ignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            patterns.append((negated, line.lstrip("!").strip("/")))
    return patterns


def _excluded(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negated, pattern in patterns:
        tail = pattern[3:] if pattern.startswith("**/") else None
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, pattern) or (tail is not None and any(
                    fnmatch.fnmatchcase("/".join(candidate.split("/")[n:]), tail)
                    for n in range(len(candidate.split("/"))))):
                excluded = not negated
                break
    return excluded


def _build_stage_sources(stages: list[Stage]) -> list[str]:
    sources = []
    for copy in stages[-2].all("COPY"):
        opts, rest = options(copy.args)
        if "from" not in opts and not copy.heredocs:
            sources += [s.rstrip("/") for s in shlex.split(rest)[:-1]]
    return sources


def _source_files() -> list[str]:
    """The checkout's files that git knows or would add (tracked, or new and not ignored)."""
    if shutil.which("git") is None or not (CHECKOUT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=CHECKOUT, capture_output=True, text=True, check=True).stdout.split("\0")
    return sorted(p for p in listed if p and (CHECKOUT / p).is_file())


def _what_the_build_reads() -> set[str]:
    """Top-level paths the wheel is built from, as pyproject.toml says."""
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())
    tool = project["tool"]["setuptools"]
    paths = {"pyproject.toml", project["project"]["readme"], *project["project"]["license-files"]}
    paths |= {p.split(".")[0] for p in tool["packages"]}
    paths |= {p.split("/")[0] for p in tool.get("package-dir", {}).values()}
    return paths


@pytest.fixture(scope="module")
def context(stages: list[Stage], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the build stage sees: the checkout's files that .dockerignore lets into the build
    context, and of those, what the build stage's COPY lines copy."""
    patterns = _ignore_patterns()
    sources = _build_stage_sources(stages)
    root = tmp_path_factory.mktemp("docker-build-context")
    for path in _source_files():
        if _excluded(path, patterns):
            continue
        if any(path == s or path.startswith(s + "/") for s in sources):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(CHECKOUT / path, root / path)
    return root


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    patterns = _ignore_patterns()
    for path in (".env", ".venv/bin/python", "tests/conftest.py", "test-artifacts/x.log",
                 "mailqueue/__pycache__/cli.cpython-311.pyc", ".git/config",
                 "mailqueue.egg-info/PKG-INFO", "dashboard/views/__pycache__/x.pyc"):
        assert _excluded(path, patterns), f"{path} would be sent to the build"
    for path in ("pyproject.toml", "mailqueue/cli/__init__.py", "static/app.css"):
        assert not _excluded(path, patterns), f"{path} would not reach the build"


def test_build_context_holds_every_file_the_wheel_is_built_from(
        stages: list[Stage], context: Path) -> None:
    sources = set(_build_stage_sources(stages))
    needed = _what_the_build_reads()
    assert needed <= sources, f"the build stage does not COPY {sorted(needed - sources)}"
    missing = [p for p in _source_files()
               if p.split("/")[0] in needed and not (context / p).is_file()]
    assert not missing, f"kept out of the image's build by .dockerignore: {missing}"


def test_build_stage_command_builds_the_wheel_from_the_context(
        stages: list[Stage], context: Path, tmp_path: Path) -> None:
    """What the build stage's `python -m build` does, on exactly the build context."""
    build_runs = " ".join(run.args for run in stages[-2].all("RUN"))
    assert "python -m build --outdir /dist ." in build_runs, build_runs
    out = tmp_path / "dist"
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(context)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheels = list(out.glob("mailqueue-*.whl"))
    assert len(wheels) == 1, list(out.iterdir())
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    for expected in ("mailqueue/cli/__init__.py", "mailqueue/dashboard/app.py",
                     "mailqueue/dashboard/templates/base.html",
                     "mailqueue/dashboard/static/app.css",
                     "mailqueue/mail/templates/welcome/body.html",
                     "mailqueue/healthcheck.py"):
        assert expected in names, f"{expected} missing from the image's wheel"
    # The image's HEALTHCHECK command is a console script of that wheel.
    entry_points = zipfile.ZipFile(wheels[0]).read(next(
        n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    program = healthcheck_command(stages)[1][0]
    assert f"{program} = {HEALTHCHECK_ENTRY_POINT}" in entry_points, entry_points


# --- the health check, run ------------------------------------------------------------------


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


def compose_check(compose: dict[str, Any], service: str) -> list[str]:
    test = compose["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD", test
    return list(test[1:])


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


# --- docker-compose.yml ---------------------------------------------------------------------


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
