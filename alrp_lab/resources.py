"""Where the shipped configs (``conf/``) and sweep definitions (``sweeps/``) are.

In the repository both sit at the top level, beside the package; a wheel (``pip install .``)
carries them inside it as ``alrp_lab/conf`` and ``alrp_lab/sweep_definitions`` (package data,
``pyproject.toml``). A source checkout or an editable install reads the repository's, so an
edit there is seen at once.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["conf_dir", "sweeps_dir"]

_PACKAGE = Path(__file__).resolve().parent


def _find(repo_name: str, packaged_name: str) -> Path:
    repo = _PACKAGE.parent / repo_name
    if repo.is_dir() and (_PACKAGE.parent / "pyproject.toml").is_file():
        return repo
    return _PACKAGE / packaged_name


def conf_dir() -> Path:
    """The folder of the Hydra configs (``config.yaml`` and the groups)."""
    return _find("conf", "conf")


def sweeps_dir() -> Path:
    """The folder of the shipped sweep definitions (``NAME.yaml``)."""
    return _find("sweeps", "sweep_definitions")
