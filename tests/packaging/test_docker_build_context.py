"""The image's build context: .dockerignore keeps secrets and clutter out, the context (with
the build stage's COPY lines) holds every source file the wheel is built from, and the build
stage's command builds a wheel from exactly it.
"""

from __future__ import annotations

import fnmatch
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.packaging import docker_support
from tests.packaging.docker_support import (
    CHECKOUT,
    HEALTHCHECK_ENTRY_POINT,
    Stage,
    healthcheck_command,
    options,
)

# docker_support's fixtures: the Dockerfile and docker-compose.yml, read once per module.
stages = docker_support.stages

DOCKERIGNORE = CHECKOUT / ".dockerignore"


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
