"""Tests that need a tool from outside Python (Node, Chromium, a TLS-capable redis-server):
without it they skip, loudly; under CI (the `CI` environment variable set) they fail instead,
so CI can never pass with them silently skipped."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def tool_missing(tests: str, reason: str, install: str) -> NoReturn:
    """Skip (fail under CI) saying which `tests` did not run, why, and how to `install`."""
    message = f"{tests} NOT RUN: {reason}"
    if under_ci():
        pytest.fail(f"{message} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(f"{message}. {install}")
