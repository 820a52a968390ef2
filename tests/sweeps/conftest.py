"""Fixtures of the runner's tests, shared with the reuse tests: a toy sweep, no git calls."""

from __future__ import annotations

import pytest

from alrp_lab.sweeps.definition import SweepDefinition, parse_sweep
from alrp_lab.tracking import results as results_module
from tests.sweeps.test_runner import RAW


@pytest.fixture
def no_git(monkeypatch: pytest.MonkeyPatch) -> None:
    # Provenance is tested in tests/tracking; here it would only cost subprocess calls.
    monkeypatch.setattr(results_module, "git_state", lambda: results_module.GitState(None, None))


@pytest.fixture
def defn() -> SweepDefinition:
    """A 2 x 2 grid (IoU/GIoU x wr 1/5) of the toy definition ``RAW``."""
    return parse_sweep(RAW, name="toy")
