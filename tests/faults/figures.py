"""A scenario's figures: one line in test-artifacts/reliability/<scenario>.json, and printed
(`pytest -s`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"


def report(scenario: str, figures: dict[str, Any]) -> None:
    """One line of figures in test-artifacts/reliability/<scenario>.json, and printed."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{scenario}.json").write_text(json.dumps(figures) + "\n")
    print(f"\n[{scenario}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))
