"""Where a run came from: the digest of its config, the git state of the code, the versions.

Nothing here imports torch at module level (``environment_versions`` asks for it lazily).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

from alrp_lab.utils.io import to_jsonable

PathLike = str | os.PathLike[str]

__all__ = ["RESULTS_FOLDER", "GitState", "config_digest", "environment_versions", "git_state"]

# The repository's folder of committed run records (results.json, sweep.json, curves): data
# the tool writes, not code, so a change there does not make the tree dirty.
RESULTS_FOLDER = "results"


def config_digest(config: Mapping[str, Any]) -> str:
    """sha256 hex digest of ``config``'s canonical JSON.

    Canonical: keys sorted, no whitespace, ASCII only, tuples as lists, non-finite floats as
    null; so two configs that would be written identically have the same digest.
    """
    canonical = json.dumps(
        to_jsonable(config, "config"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


class GitState(NamedTuple):
    """``revision``: the HEAD commit (40 hex digits) or None; ``dirty``: None when unknown."""

    revision: str | None
    dirty: bool | None


def _git(args: list[str], cwd: Path) -> str | None:
    """stdout of ``git args`` in ``cwd``, or None when git is missing or the command fails."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(folder: PathLike | None = None) -> GitState:
    """Commit and dirtiness of the git repository that tracks ``folder``.

    ``folder`` defaults to the installed ``alrp_lab`` package. It must itself be tracked: a
    copy installed in a virtualenv that happens to sit inside some repository is not that
    repository's code, so it reports ``GitState(None, None)``. Never raises.

    Dirty means a tracked file differs from HEAD outside the repository's top-level
    :data:`RESULTS_FOLDER`: the committed records of runs live there, and a sweep rewrites
    its tracked ``sweep.json`` before its first run starts, so counting them would mark
    every run trained into a committed sweep folder as trained by changed code.
    """
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parents[1]
    if not folder.is_dir() or _git(["ls-files", "--error-unmatch", "."], folder) is None:
        return GitState(None, None)
    revision = _git(["rev-parse", "HEAD"], folder)
    if revision is None:  # a repository without commits
        return GitState(None, None)
    # --no-literal-pathspecs: with GIT_LITERAL_PATHSPECS=1 in the environment the magic
    # pathspecs below would name no file, and every tree would read clean.
    status = _git(
        [
            "--no-literal-pathspecs",
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ":(top)",
            f":(top,exclude){RESULTS_FOLDER}",
        ],
        folder,
    )
    return GitState(revision, None if status is None else bool(status))


def environment_versions() -> dict[str, str | None]:
    """Versions that decide whether two runs are comparable: python, torch, CUDA, numpy."""
    import torch  # a training process has it loaded already

    def installed(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "numpy": installed("numpy"),
        "alrp_lab": installed("alrp-lab"),
    }
