"""What the Docker tests share: the Dockerfile parsed into stages and instructions, and
docker-compose.yml loaded (the `stages` and `compose` fixtures), Docker's image pins and
durations, the HEALTHCHECK's command and compose's `test:` lines, pyproject's console
scripts. No Docker engine is needed: the files are read as Docker reads them.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

CHECKOUT = Path(__file__).resolve().parents[2]
DOCKERFILE = CHECKOUT / "Dockerfile"
COMPOSE = CHECKOUT / "docker-compose.yml"
PYPROJECT = CHECKOUT / "pyproject.toml"
HEALTHCHECK_ENTRY_POINT = "mailqueue.healthcheck:main"

# name:1.2.3-anything or name@sha256:...; `redis:7`, `python:3.11-slim` or `latest` are not pins.
PINNED = re.compile(r"^[\w./-]+(:\d+\.\d+\.\d+[\w.-]*)?(@sha256:[0-9a-f]{64})?$")


def pinned(image: str) -> bool:
    return bool(PINNED.match(image)) and (":" in image or "@" in image)


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


def compose_check(compose: dict[str, Any], service: str) -> list[str]:
    test = compose["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD", test
    return list(test[1:])
