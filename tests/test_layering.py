"""The layers of docs/interfaces.md, checked in fresh interpreters: no hidden cycles."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_sweep_definitions_are_a_leaf():
    loaded = _loaded_after("import alrp_lab.sweeps.definition")
    assert not {m for m in loaded if m.startswith(("alrp_lab.report", "alrp_lab.engine"))}
    assert "alrp_lab.sweeps.runner" not in loaded and "torch" not in loaded


def test_the_report_does_not_pull_in_the_runner():
    loaded = _loaded_after("import alrp_lab.report.tables, alrp_lab.report.claims_table")
    assert "alrp_lab.sweeps.runner" not in loaded
    assert "torch" not in loaded


@pytest.mark.parametrize("module", ["alrp_lab.losses", "alrp_lab.ops"])
def test_losses_and_ops_import_no_config_logger_or_hydra(module):
    loaded = _loaded_after(f"import {module}")
    banned = ("alrp_lab.config", "alrp_lab.tracking", "hydra", "omegaconf", "wandb")
    assert not {m for m in loaded if m.startswith(banned)}
