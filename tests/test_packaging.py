"""The wheel carries the configs and sweep definitions; every package folder is listed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_in_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {"alrp_lab"} | {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "alrp_lab").glob("*/__init__.py")
    }
    assert found | {"alrp_lab.conf", "alrp_lab.sweep_definitions"} == listed


@pytest.mark.slow
def test_the_wheel_ships_conf_and_sweeps(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("alrp_lab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (ROOT / "conf").rglob("*.yaml"):
        assert f"alrp_lab/conf/{path.relative_to(ROOT / 'conf')}" in names
    for path in (ROOT / "sweeps").glob("*.yaml"):
        assert f"alrp_lab/sweep_definitions/{path.name}" in names
    assert not any(n.startswith(("tests/", "results/", "bench/")) for n in names)
