"""Scenario 7's figures, from the tests of this folder: pytest collects a folder's files by
name, so this one runs last. Printed (`pytest -s`) and written to
test-artifacts/reliability/security.json.
"""

from __future__ import annotations

from tests.faults.figures import report
from tests.faults.security.security_support import STATS


def test_write_figures() -> None:
    """Last in the folder: the run's figures."""
    report("security", dict(STATS))
