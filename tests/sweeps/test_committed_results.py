"""The results files behind the README's tables (results/NAME) are what the current sweep
definitions compute: a definition or config change that would make them stale fails here,
so the tables are rerun rather than silently outdated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alrp_lab.sweeps.definition import load_sweep
from alrp_lab.sweeps.runner import run_sweep

RESULTS = Path(__file__).resolve().parents[2] / "results"
FOLDERS = sorted(p.parent for p in RESULTS.glob("*/sweep.json"))


def test_the_readme_tables_have_their_results_files():
    assert (RESULTS / "figure4" / "sweep.json").is_file()


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_committed_runs_are_current(folder):
    saved = json.loads((folder / "sweep.json").read_text())
    defn = load_sweep(saved["name"])
    # Raises when a completed run's recorded config differs from what the sweep composes.
    report = run_sweep(
        defn,
        root=folder,
        dry_run=True,
        seeds=saved["seeds"],
        extra_overrides=saved["extra_overrides"],
    )
    assert report.skipped, f"{folder} holds no completed run of the current definition"
