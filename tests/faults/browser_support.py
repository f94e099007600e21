"""tests/browser/conftest.py's Chromium fixtures for the fault scenarios, loaded by path (it
is a conftest of another folder): a test module that needs a browser assigns `chromium` and
`browser` from `load_browser_support()` to have them collected."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any


def load_browser_support() -> Any:
    """tests/browser/conftest.py by path (its Chromium fixtures), once."""
    name = "_mailqueue_tests_browser_support"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "browser" / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
